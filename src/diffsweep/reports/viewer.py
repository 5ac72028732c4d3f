"""The run viewer: `index.html` and its data, `data.js`, built from a run folder alone.

The page is static and offline: templates/viewer.html (with viewer.css and viewer.js inlined)
reads `window.DIFFSWEEP_RUN` from data.js beside it. data.js holds the grid axes with their values
in grid order and one entry per planned item (made, failed or not yet made), so the page can lay
any axes against any others. Reading never changes the run's records; both files are written
atomically.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol

from jinja2 import Environment, PackageLoader, select_autoescape
from markupsafe import Markup

from diffsweep import hashing, media
from diffsweep.labels import axis_value_labels
from diffsweep.reports.sheets import (
    NOT_ON_AXIS,
    STAGE_AXIS,
    ChainGrid,
    RunGrid,
    RunLayout,
    SheetAxis,
    SweepGrid,
    default_choice,
    envelope,
)
from diffsweep.store.atomic import write_atomic
from diffsweep.store.folder import RunFolder
from diffsweep.store.records import BuilderRecord, ItemRecord, RunInfo, ScoreRecord, Sidecar

log = logging.getLogger("diffsweep")

INDEX = "index.html"
DATA = "data.js"
DATA_SCHEMA = 1
WAVEFORM_COLUMNS = 64  # an audio cell's envelope: enough for its shape, small in data.js


class PlannedItems(Protocol):
    """What the viewer asks of a plan, where the caller has one: the item at a grid index."""

    def item(self, index: int) -> Any: ...


def write_viewer(run_dir: Path, title: str, layout: RunLayout, sheet: bool, plan: PlannedItems | None = None) -> None:
    """Write data.js, then index.html, into `run_dir`. `layout` is the run as reports see it (sheets.run_layout);
    `plan`, where the caller has it, gives the ids and parameters of items not made yet."""
    run_dir = Path(run_dir)
    payload = run_payload(run_dir, title, layout, sheet, plan)
    write_atomic(run_dir / DATA, data_js(payload))
    write_atomic(run_dir / INDEX, index_html(title, run_dir.name))


def data_js(payload: Mapping[str, Any]) -> str:
    # `<` is escaped so no value can close a <script> element if the data is ever inlined
    text = json.dumps(payload, ensure_ascii=False, allow_nan=False, separators=(",", ":")).replace("<", "\\u003c")
    return f"window.DIFFSWEEP_RUN = {text};\n"


def index_html(title: str, version: str) -> str:
    loader = PackageLoader("diffsweep", "templates")
    env = Environment(loader=loader, autoescape=select_autoescape(["html"]))
    # the script and style go in as text, not as templates: `{#` in them means nothing to Jinja
    script, style = (Markup(loader.get_source(env, name)[0]) for name in ("viewer.js", "viewer.css"))
    return env.get_template("viewer.html").render(title=title, version=version, data=DATA, script=script, style=style)


# --- the payload ------------------------------------------------------------------------------


def run_payload(run_dir: Path, title: str, layout: RunLayout, sheet: bool,
                plan: PlannedItems | None = None) -> dict[str, Any]:
    run, records, grid = layout.info, layout.records, layout.grid
    builders = _builders(run, records)
    sidecars = RunFolder(run_dir).sidecars()
    scores: dict[str, dict[str, ScoreRecord]] = {}
    for score in RunFolder(run_dir).read_scores():  # the latest line of each (item, metric)
        scores.setdefault(score.item_id, {})[score.metric] = score
    by_index = {record.index: record for record in records}
    items = []
    for index in range(layout.size):
        record = by_index.get(index)
        coords = [grid.position(index, axis) for axis in grid.axes] if grid else [index]
        if record is None:
            items.append(_unmade_item(index, coords, plan.item(index) if plan else None, grid))
        else:
            items.append(_made_item(run_dir, record, coords, sidecars.get(record.item_id),
                                    scores.get(record.item_id, {})))
    if grid:
        axes = [{"name": axis.name, "values": axis_value_labels(axis.name, axis.values),  # as the sheets say them
                 "full": [_full_text(v) for v in axis.values]} for axis in grid.axes]
    else:  # without the saved grid the items are laid out by grid index alone
        indices = [str(i) for i in range(layout.size)]
        axes = [{"name": "index", "values": indices, "full": indices}]
    metrics = sorted({metric for per_item in scores.values() for metric in per_item})
    return {
        "schema": DATA_SCHEMA, "title": title, "version": run_dir.name, "run_dir": str(run_dir.absolute()),
        "status": run.status if run else "unknown", "counts": run.counts.model_dump() if run else None,
        "mode": grid.mode if grid else "product", "view": default_view(grid, axes), "sheet": sheet, "axes": axes,
        "metrics": metrics, "not_on_axis": NOT_ON_AXIS if isinstance(grid, ChainGrid) else None,
        "builders": list(builders.values()), "fixed": _fixed_params(records, grid), "items": items,
    }


def default_view(grid: SweepGrid | None, axes: Sequence[Mapping[str, Any]]) -> dict[str, str]:
    """The viewer's first view: what contact_sheet.png shows. The sheet's titled sub-grids (Z) are the viewer's X,
    with the sheet's X inside them (X2), and its Y is Y; the axes it draws a sheet per value of stay pinned."""
    varying = [SheetAxis(a["name"], a["name"], tuple(a["values"]), (a["name"],)) for a in axes if len(a["values"]) > 1]
    if grid is None:  # items laid out by grid index alone
        return {"x": varying[0].name} if varying else {}
    if isinstance(grid, ChainGrid):  # a chain: its stages down, a first-stage axis across, a later one inside it
        others = [a.name for a in varying if a.name != STAGE_AXIS]
        firsts = [a.name for a in grid.axes[1:] if a.values[-1:] != (NOT_ON_AXIS,) and a.name in others]
        laters = [name for name in others if name not in firsts]
        view = {"y": STAGE_AXIS, "x": (firsts or laters or [""])[0], "x2": (laters or [""])[0]}
        return {key: name for key, name in view.items() if name and (key != "x2" or name != view["x"])}
    choice = default_choice(RunGrid(varying, [], grid.mode))
    outer, inner = (choice.z, choice.x) if choice.z else (choice.x, None)
    return {key: axis.name for key, axis in (("x", outer), ("x2", inner), ("y", choice.y)) if axis is not None}


def _made_item(run_dir: Path, record: ItemRecord, coords: list[int], sidecar: Sidecar | None,
               scores: Mapping[str, ScoreRecord]) -> dict[str, Any]:
    identity = dict(sidecar.builder.identity) if sidecar else None
    return {
        "index": record.index, "item_id": record.item_id, "coords": coords, "status": record.status,
        **_lineage(record.stage, record.parent),
        "params": dict(record.params), "seed": record.seed, "builder": record.builder_hash,
        "identity": identity, "scheduler": sidecar.scheduler if sidecar else None,
        "outputs": [_output(run_dir, path, media.kind_of(path, record.has_sound)) for path in record.outputs],
        # prepared control images (run-relative paths the record's schema allows only under control/)
        "controls": [{"path": c.path, "preprocess": c.preprocess, "settings": c.settings}
                     for c in record.control_prepared or []],
        "error": record.error, "seconds": record.seconds, "created": sidecar.created if sidecar else None,
        "scores": {metric: {"value": s.value, "model": s.model, "revision": s.revision, "skipped": s.skipped}
                   for metric, s in scores.items()},
    }


def _output(run_dir: Path, path: str, kind: str) -> dict[str, Any]:
    """An output as the page shows it; audio with its waveform, which the page cannot read from a file:// page."""
    output: dict[str, Any] = {"path": path, "kind": kind}
    if kind == "audio":
        try:
            output["waveform"] = [[round(low, 3), round(high, 3)] for low, high in
                                  envelope(run_dir / path, WAVEFORM_COLUMNS)]
        except (OSError, RuntimeError, ValueError) as error:  # a cell without its waveform, not a viewer without cells
            log.info("no waveform for %s: %s", path, error)
    return output


def _lineage(stage: str | None, parent: str | None) -> dict[str, str]:
    """A chain's item: its stage and its parent's id (none for an item of a sweep without stages)."""
    return {key: value for key, value in (("stage", stage), ("parent", parent)) if value is not None}


def _unmade_item(index: int, coords: list[int], planned: Any, grid: SweepGrid | None) -> dict[str, Any]:
    stage = parent = None
    if planned is not None:
        item_id, builder, params = planned.item_id, planned.builder_hash, dict(planned.params)
        stage, parent = getattr(planned, "stage", None), getattr(planned, "parent", None)
    else:  # read as data only: what the grid says of this item
        item_id, builder = None, None
        params = {axis.name: axis.values[c] for axis, c in zip(grid.axes, coords, strict=True)
                  if axis.values[c] != NOT_ON_AXIS} if grid else {}
        stage = params.pop(STAGE_AXIS, None) if isinstance(grid, ChainGrid) else None
    return {"index": index, "item_id": item_id, "coords": coords, "status": "missing", "params": params,
            **_lineage(stage, parent),
            "seed": params.get("seed"), "builder": builder, "identity": None, "scheduler": None, "outputs": [],
            "controls": [], "error": None, "seconds": None, "created": None, "scores": {}}


def _builders(run: RunInfo | None, records: Sequence[ItemRecord]) -> dict[str, dict[str, Any]]:
    """Each builder by hash, with its short label (run.json's `label`, else the hash prefix)."""
    found = {b.hash: _builder_entry(b) for b in (run.builders if run else [])}
    for record in records:
        found.setdefault(record.builder_hash, {"hash": record.builder_hash, "label": hashing.short(record.builder_hash),
                                               "identity": None, "full_identity": None, "provider": None,
                                               "pipeline": None, "model": None, "revision": None, "dtype": None})
    return found


def _builder_entry(builder: BuilderRecord) -> dict[str, Any]:
    return {"hash": builder.hash, "label": builder.label, "identity": builder.identity,
            "full_identity": builder.full_identity, "provider": builder.provider, "pipeline": builder.pipeline,
            "model": builder.model, "revision": builder.revision, "dtype": builder.dtype}


def _fixed_params(records: Sequence[ItemRecord], grid: SweepGrid | None) -> dict[str, str]:
    """Parameters every item shares (one-value axes included): the legend of the whole grid."""
    varying = {axis.name for axis in grid.axes if len(axis.values) > 1} if grid else set()
    if not records:
        return {}
    fixed = {key: value for key, value in records[0].params.items() if key not in varying}
    for record in records[1:]:
        fixed = {key: value for key, value in fixed.items() if key in record.params and record.params[key] == value}
    return {key: _full_text(value) for key, value in fixed.items()}


def _full_text(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False, default=str)
