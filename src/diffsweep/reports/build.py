"""Every report of a run folder at once: what follows an attempt (scores, sheets, viewer, tracking), and the
viewer rebuilt on its own."""


from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from diffsweep import devices
from diffsweep.config.model import RunConfig
from diffsweep.reports import score_stats, scoring, sheets, tracking, viewer
from diffsweep.reports.sheets import SHEET
from diffsweep.reports.viewer import PlannedItems
from diffsweep.store.folder import SCORES, RunFolder
from diffsweep.store.records import RunInfo

log = logging.getLogger("diffsweep")


def after_attempt(run: RunFolder, config: RunConfig, info: RunInfo, *, score: bool, redraw: bool,
                  device: Any = None, plan: PlannedItems | None = None) -> None:
    """What follows an attempt: scores when it was not interrupted (before the viewer, which shows them, and tracking,
    which logs their summaries), the sheets and viewer unless the records they are drawn from are as they were, then
    tracking. `plan`, where the caller has it, names the items not made yet in the viewer."""
    if score:
        score_run_end(run, config, device)
    if redraw:
        try:
            write_reports(run.path, plan)
        except Exception as error:  # noqa: BLE001 - a drawing is a convenience; the run's records stand
            log.warning("could not write the contact sheet or viewer: %s", error)
    tracking.track_run(run, config, info)


def score_run_end(run: RunFolder, config: RunConfig, device: Any = None) -> None:
    """score.metrics at the end of a run. Failing to score does not change the run's outcome, and `diffsweep-runs
    score` finishes what is missing."""
    settings = config.score_settings()
    if not settings.metrics:
        return
    try:
        outcome = scoring.score_folder(run, settings, device or devices.resolve_device(config.device))
        score_stats.write_summary(run.path)
    except Exception as error:  # noqa: BLE001
        log.error("scoring failed: %s; finish it with: diffsweep-runs score %s", error, run.path)
        return
    log.info("scored %d (item, metric) pair(s), %d skipped: %s", outcome.scored, outcome.skipped, run.path / SCORES)


def write_reports(run_dir: Path, plan: PlannedItems | None = None) -> None:
    """Write the labelled sheets (only when some item has an output) and the viewer (index.html, data.js)."""
    run_dir = Path(run_dir)
    layout = sheets.run_layout(run_dir)  # the folder read once for both
    if any(record.outputs for record in layout.records):
        sheets.write_sheets(run_dir, layout=layout)
    write_viewer(run_dir, plan, layout)


def write_viewer(run_dir: Path, plan: PlannedItems | None = None, layout: sheets.RunLayout | None = None) -> None:
    """(Re)write the run viewer, index.html and data.js, from what is on disk (`layout`, when the caller has just read
    it); records stay untouched. Items not made yet are shown with their planned ids where the caller has the plan
    (the end of a run); the viewer command reads the folder as data only and shows them by their place in the grid."""
    run_dir = Path(run_dir)
    layout = layout or sheets.run_layout(run_dir)
    name = _sweep(layout.config).get("name")
    title = name if isinstance(name, str) else run_dir.parent.name
    viewer.write_viewer(run_dir, title, layout, (run_dir / SHEET).is_file(), plan)


def _sweep(config: Mapping[str, Any]) -> Mapping[str, Any]:
    sweep = config.get("sweep")
    return sweep if isinstance(sweep, Mapping) else {}
