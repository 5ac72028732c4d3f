"""Run reports: a contact sheet and the run viewer (diffsweep.viewer), built from a run folder alone.

Both read only what is on disk (config.yaml, run.json, manifest.jsonl, items/), so they can be
rebuilt for any past, resumed or interrupted run; a missing or torn input degrades the report
instead of failing it. Every file is written atomically.
"""

from __future__ import annotations

import io
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from PIL import Image, ImageDraw, ImageFont

from diffsweep import viewer
from diffsweep.grid import Axis, Grid, expand_range
from diffsweep.errors import ConfigError, DiffsweepError
from diffsweep.records import ItemRecord, RunInfo
from diffsweep.rundir import RunFolder, write_atomic

SHEET = "contact_sheet.png"
CONFIG = "config.yaml"

THUMB = 256  # longest thumbnail side, px
MIN_CELL = 96  # cells never shrink below this, so "missing" and captions stay legible
GAP = 4
FONT_SIZE = 12
LINE_H = 16  # one text line: captions, footer
HEADER_H = 24  # column headers
ROW_LABEL_W = 160  # row labels
MAX_CELLS = 400
MAX_COLUMNS = 16  # a labelled axis with more values than this is laid out flat instead

BACKGROUND = (255, 255, 255)
INK = (0, 0, 0)
GREY = (160, 160, 160)  # failed and missing items
SLATE = (70, 80, 100)  # video, audio and other non-image outputs
PLACEHOLDER_INK = {GREY: INK, SLATE: BACKGROUND}

KINDS = {".png": "image", ".mp4": "video", ".wav": "audio"}

Font = ImageFont.FreeTypeFont | ImageFont.ImageFont
Tile = Image.Image | str  # a thumbnail, or the word printed on a placeholder box


@dataclass(frozen=True)
class SweepGrid:
    """The grid axes saved in config.yaml; maps a grid index back to each axis position."""

    axes: list[Axis]
    positions: Grid  # the same grid over position numbers, so repeated values stay distinct

    @property
    def size(self) -> int:
        return len(self.positions)

    @property
    def mode(self) -> str:
        return self.positions.mode

    @property
    def varying(self) -> list[Axis]:
        return [axis for axis in self.axes if len(axis.values) > 1]

    def position(self, index: int, axis: Axis) -> int:
        return self.positions.point(index)[axis.name]

    def caption(self, index: int) -> tuple[str, ...]:
        """`name=value` of every varying axis at `index`."""
        point = self.positions.point(index)
        return tuple(f"{axis.name}={_text(axis.values[point[axis.name]])}" for axis in self.varying)


@dataclass(frozen=True)
class Cell:
    index: int
    row: int
    col: int
    caption: tuple[str, ...] = ()  # lines printed under the cell (flat layout)


@dataclass(frozen=True)
class Layout:
    """Which grid index goes in which cell, and the labels around the cells."""

    rows: int
    cols: int
    cells: list[Cell]
    col_labels: list[str]
    row_labels: list[str]
    caption_lines: int
    hidden: int  # cells cut by MAX_CELLS


def write_reports(run_dir: Path) -> None:
    """Write contact_sheet.png (only when some item has an output) and the viewer (index.html, data.js)
    into `run_dir`."""
    run_dir = Path(run_dir)
    records = read_manifest(run_dir)
    config = _read_config(run_dir)
    run = _read_info(run_dir)
    if any(record.outputs for record in records):
        grid = sweep_grid(config, records)
        total = grid.size if grid else max([run.counts.planned if run else 0] + [r.index + 1 for r in records])
        write_atomic(run_dir / SHEET, contact_sheet(run_dir, records, plan_layout(grid, total)))
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


# --- reading ------------------------------------------------------------------------------------


def read_manifest(run_dir: Path) -> list[ItemRecord]:
    """Committed, well-formed records, the latest of each item, in grid order."""
    try:
        latest = RunFolder(run_dir).items()
    except OSError:
        return []
    return sorted(latest.values(), key=lambda record: record.index)


def _read_info(run_dir: Path) -> RunInfo | None:
    try:
        return RunFolder(run_dir).read_info()
    except DiffsweepError:
        return None


def _read_config(run_dir: Path) -> dict[str, Any]:
    try:
        value = yaml.safe_load((run_dir / CONFIG).read_text(encoding="utf-8"))
    except (OSError, ValueError, yaml.YAMLError):
        return {}
    return value if isinstance(value, dict) else {}


def _sweep(config: Mapping[str, Any]) -> Mapping[str, Any]:
    sweep = config.get("sweep")
    return sweep if isinstance(sweep, Mapping) else {}


def sweep_grid(config: Mapping[str, Any], records: Sequence[ItemRecord]) -> SweepGrid | None:
    """The saved grid, or None when it is absent, malformed or does not match the manifest."""
    sweep = _sweep(config)
    spec = sweep.get("grid")
    if not isinstance(spec, Mapping):
        return None
    try:
        axes = [Axis(str(name), tuple(_axis_values(values))) for name, values in spec.items()]
        mode = "zip" if sweep.get("mode") == "zip" else "product"
        grid = SweepGrid(axes, Grid([Axis(a.name, tuple(range(len(a.values)))) for a in axes], mode))
    except (ConfigError, KeyError, TypeError, ValueError, ZeroDivisionError):
        return None
    if any(record.index >= grid.size for record in records):
        return None
    return grid


def _axis_values(spec: Any) -> list[Any]:
    if isinstance(spec, Mapping):
        return expand_range(spec)
    if isinstance(spec, list):
        # savedconfig escapes "${" so Hydra reads values literally; show them as the user wrote them
        return [v.replace("\\${", "${") if isinstance(v, str) else v for v in spec]
    raise TypeError(f"not an axis: {spec!r}")


def _text(value: Any) -> str:
    """One-line display form of a parameter value."""
    text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False, default=str)
    return " ".join(text.split())


def _kind(path: str) -> str:
    return KINDS.get(Path(path).suffix.lower(), "file")


# --- contact sheet ------------------------------------------------------------------------------


def plan_layout(grid: SweepGrid | None, total: int) -> Layout:
    """Labelled rows x columns for 1-2 varying product axes; otherwise grid-index order, near-square."""
    axes = _labelled_axes(grid)
    if grid is not None and axes is not None:
        return _labelled_layout(grid, *axes)
    return _flat_layout(grid, total)


def _labelled_axes(grid: SweepGrid | None) -> tuple[Axis | None, Axis] | None:
    """(row axis, column axis): the axis with fewer values (later one on a tie) runs across."""
    if grid is None or grid.mode != "product" or not 1 <= len(grid.varying) <= 2:
        return None
    col = min(reversed(grid.varying), key=lambda axis: len(axis.values))
    if len(col.values) > MAX_COLUMNS:
        return None
    row = next((axis for axis in grid.varying if axis is not col), None)
    return row, col


def _labelled_layout(grid: SweepGrid, row: Axis | None, col: Axis) -> Layout:
    rows = min(len(row.values) if row else 1, MAX_CELLS // len(col.values))
    placed = (Cell(i, grid.position(i, row) if row else 0, grid.position(i, col)) for i in range(grid.size))
    cells = [cell for cell in placed if cell.row < rows]
    col_labels = [f"{col.name}={_text(v)}" for v in col.values]
    row_labels = [f"{row.name}={_text(v)}" for v in row.values[:rows]] if row else []
    return Layout(rows, len(col.values), cells, col_labels, row_labels, 0, grid.size - len(cells))


def _flat_layout(grid: SweepGrid | None, total: int) -> Layout:
    shown = min(total, MAX_CELLS)
    cols = max(1, math.ceil(math.sqrt(shown)))
    cells = [Cell(i, i // cols, i % cols, grid.caption(i) if grid else ()) for i in range(shown)]
    lines = len(grid.varying) if grid else 0
    return Layout(max(1, math.ceil(shown / cols)), cols, cells, [], [], lines, total - shown)


def contact_sheet(run_dir: Path, records: Sequence[ItemRecord], layout: Layout) -> bytes:
    """PNG bytes of the sheet: one thumbnail or placeholder per cell, labels around them."""
    by_index = {record.index: record for record in records}
    tiles = {cell.index: _tile(run_dir, by_index.get(cell.index)) for cell in layout.cells}
    thumbs = [tile for tile in tiles.values() if isinstance(tile, Image.Image)]
    cell_w = max([MIN_CELL] + [t.width for t in thumbs])
    cell_h = max([MIN_CELL] + [t.height for t in thumbs])
    sheet = _Sheet(layout, cell_w, cell_h)
    for cell in layout.cells:
        sheet.draw_cell(cell, tiles[cell.index])
    sheet.draw_labels()
    buffer = io.BytesIO()
    sheet.image.save(buffer, format="PNG")
    return buffer.getvalue()


def _tile(run_dir: Path, record: ItemRecord | None) -> Tile:
    if record is None:
        return "missing"
    if record.status != "ok":
        return "failed"
    if not record.outputs:
        return "missing"
    kind = _kind(record.outputs[0])
    if kind != "image":
        return kind
    try:
        with Image.open(run_dir / record.outputs[0]) as image:
            image.thumbnail((THUMB, THUMB))
            return image.convert("RGBA")
    except (OSError, ValueError, Image.DecompressionBombError):
        return "missing"


class _Sheet:
    """The canvas and its geometry: fixed-size cells after an optional row-label column and header."""

    def __init__(self, layout: Layout, cell_w: int, cell_h: int):
        self.layout, self.cell_w, self.cell_h = layout, cell_w, cell_h
        self.left = ROW_LABEL_W if layout.row_labels else 0
        self.top = HEADER_H if layout.col_labels else 0
        self.pitch_x = cell_w + GAP
        self.pitch_y = cell_h + layout.caption_lines * LINE_H + GAP
        width = self.left + GAP + layout.cols * self.pitch_x
        height = self.top + GAP + layout.rows * self.pitch_y + (LINE_H + GAP if layout.hidden else 0)
        self.image = Image.new("RGB", (width, height), BACKGROUND)
        self.draw = ImageDraw.Draw(self.image)
        self.font = _font()

    def origin(self, row: int, col: int) -> tuple[int, int]:
        return self.left + GAP + col * self.pitch_x, self.top + GAP + row * self.pitch_y

    def draw_cell(self, cell: Cell, tile: Tile) -> None:
        x, y = self.origin(cell.row, cell.col)
        if isinstance(tile, Image.Image):
            self.image.paste(tile, (x + (self.cell_w - tile.width) // 2, y + (self.cell_h - tile.height) // 2), tile)
        else:
            fill = GREY if tile in ("failed", "missing") else SLATE
            self.draw.rectangle((x, y, x + self.cell_w - 1, y + self.cell_h - 1), fill=fill)
            self.text((x, y, self.cell_w, self.cell_h), tile, PLACEHOLDER_INK[fill])
        for line, caption in enumerate(cell.caption):
            self.text((x, y + self.cell_h + line * LINE_H, self.cell_w, LINE_H), caption)

    def draw_labels(self) -> None:
        for col, label in enumerate(self.layout.col_labels):
            x, _ = self.origin(0, col)
            self.text((x, 0, self.cell_w, HEADER_H), label)
        for row, label in enumerate(self.layout.row_labels):
            _, y = self.origin(row, 0)
            self.text((GAP, y, ROW_LABEL_W - 2 * GAP, self.cell_h), label)
        if self.layout.hidden:
            footer = f"+{self.layout.hidden} more (see index.html)"
            self.text((GAP, self.image.height - LINE_H - GAP, self.image.width - 2 * GAP, LINE_H), footer)

    def text(self, box: tuple[int, int, int, int], text: str, fill: tuple[int, int, int] = INK) -> None:
        """`text` centred in box (x, y, width, height), cut to fit its width."""
        x, y, width, height = box
        text = _fit(text, width, self.font)
        left = x + (width - self.font.getlength(text)) / 2
        self.draw.text((left, y + (height - FONT_SIZE) / 2), text, fill=fill, font=self.font)


def _font() -> Font:
    try:
        return ImageFont.load_default(size=FONT_SIZE)
    except TypeError:  # Pillow < 10.1 has no sized default font
        return ImageFont.load_default()


def _fit(text: str, width: float, font: Font) -> str:
    """`text` cut to `width` pixels with a trailing '...', so long prompts never spill over."""
    if font.getlength(text) <= width:
        return text
    text = text[: max(1, int(width) // 3)]  # no glyph is under ~3 px wide: bounds the loop below
    while text and font.getlength(text + "...") > width:
        text = text[:-1]
    return text + "..."
