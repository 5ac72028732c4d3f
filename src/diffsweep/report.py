"""Run reports: labelled sheets (diffsweep.sheets) and the run viewer (diffsweep.viewer), built from a run
folder alone.

Both read only what is on disk (config.yaml, run.json, manifest.jsonl, items/), so they can be
rebuilt for any past, resumed or interrupted run; a missing or torn input degrades the report
instead of failing it. Every file is written atomically.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from diffsweep import sheets, viewer
from diffsweep.sheets import SHEET, SweepGrid, sweep_grid
from diffsweep.sheets import read_config as _read_config
from diffsweep.sheets import read_info as _read_info
from diffsweep.sheets import read_records as read_manifest

__all__ = ["SweepGrid", "read_manifest", "write_reports", "write_viewer"]


def write_reports(run_dir: Path) -> None:
    """Write the labelled sheets (only when some item has an output) and the viewer (index.html, data.js)
    into `run_dir`."""
    run_dir = Path(run_dir)
    if any(record.outputs for record in read_manifest(run_dir)):
        sheets.write_sheets(run_dir)
    write_viewer(run_dir)


def write_viewer(run_dir: Path) -> None:
    """(Re)write the run viewer, index.html and data.js, from what is on disk; records stay untouched."""
    run_dir = Path(run_dir)
    records = read_manifest(run_dir)
    config = _read_config(run_dir)
    name = _sweep(config).get("name")
    title = name if isinstance(name, str) else run_dir.parent.name
    viewer.write_viewer(run_dir, title, _read_info(run_dir), records, sweep_grid(config, records),
                        (run_dir / SHEET).is_file())


def _sweep(config: Mapping[str, Any]) -> Mapping[str, Any]:
    sweep = config.get("sweep")
    return sweep if isinstance(sweep, Mapping) else {}
