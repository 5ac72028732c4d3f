"""Labelled grids of a run (X/Y/Z sheets), built from the run folder alone.

Any varying axis of the grid can run across (X), down (Y) or between titled sub-grids set side
by side (Z); one sheet is drawn per combination of the other varying axes, into `sheets/`, and
`contact_sheet.png` is the first of them. Labels are wrapped, and shortened from the middle only
around what tells values apart. Images show as thumbnails, videos as strips of frames, audio as
waveforms; failed items and items not made as marked cells. A pixel cap shrinks thumbnails (then the
whole sheet) and says so on the sheet and in the log.
"""

from __future__ import annotations

import io
import logging
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw

from diffsweep import media
from diffsweep.errors import ConfigError, ConfigIssue, DiffsweepError
from diffsweep.labels import axis_title, axis_value_labels, compact, fit_all
from diffsweep.planning.grid import Axis, Grid, expand_range, range_length
from diffsweep.reports import MAX_PIXELS, MAX_REPORT_ITEMS
from diffsweep.reports.fonts import Typeface
from diffsweep.store.atomic import write_atomic
from diffsweep.store.folder import RunFolder
from diffsweep.store.records import ItemRecord, RunInfo
from diffsweep.store.runconfig import read_config_data

log = logging.getLogger(__name__)

SHEET = "contact_sheet.png"
SHEETS_DIR = "sheets"

THUMB = 256  # longest side of an image thumbnail, px
MIN_CELL = 96  # cells never shrink below this for layout, so labels and marks stay legible
MIN_THUMB = 32  # the pixel cap shrinks thumbnails no further; past that it scales the whole sheet
MAX_COLUMNS = 16  # a lone axis with more values runs down instead of across
VIDEO_FRAMES = 4  # frames in a video's strip
FONT_SIZE = 16  # px: reads at 100%
LABEL_WORD_W = 200  # px a column may widen to so that no word of its label is broken
LABEL_LINES = 3  # column labels, titles: wrapped to at most this many lines
LEGEND_LINES = 8
ROW_LABEL_W = 240  # row labels wrap within this width
MIN_ROW_LABEL_W = 48
PAD = 10
GAP = 4
ZGAP = 28

BACKGROUND = (255, 255, 255)
INK = (0, 0, 0)
TITLE_INK = (20, 40, 90)
MUTED = (90, 90, 90)
MISSING = (200, 200, 200)  # not made yet (or its file is gone)
NOT_MADE = "not made"  # the viewer's word for such a cell too
FAILED = (190, 60, 60)
SLATE = (50, 60, 80)  # background of waveforms and unknown outputs
WAVE = (140, 210, 255)
MARK_INK = {MISSING: INK, FAILED: BACKGROUND, SLATE: BACKGROUND}

# --- the run's grid as sheets see it ----------------------------------------------------------


@dataclass(frozen=True)
class SheetAxis:
    """An axis a sheet can lay out: one varying grid axis, or the zipped ones as one."""

    name: str  # as `--x` takes it
    title: str
    labels: tuple[str, ...]
    names: tuple[str, ...]  # the grid axes it stands for

    def __len__(self) -> int:
        return len(self.labels)


@dataclass(frozen=True)
class RunGrid:
    """Varying axes and the position of every grid index on each."""

    axes: list[SheetAxis]
    coords: list[dict[str, int]]  # grid index -> axis name -> position
    mode: str

    @property
    def total(self) -> int:
        return len(self.coords)

    def axis(self, name: str) -> SheetAxis | None:
        return next((a for a in self.axes if a.name == name or name in a.names), None)


def _sweep(config: Mapping[str, Any]) -> Mapping[str, Any]:
    sweep = config.get("sweep")
    return sweep if isinstance(sweep, Mapping) else {}


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

    def position(self, index: int, axis: Axis) -> int:
        return self.point(index)[axis.name]

    def point(self, index: int) -> dict[str, int]:
        """Axis name -> position of the item at a grid index."""
        return self.positions.point(index)


NOT_ON_AXIS = "—"  # a chain's item on an axis of another stage: the label of that axis's last position
STAGE_AXIS = "stage"


@dataclass(frozen=True)
class ChainGrid(SweepGrid):
    """A chain of stages laid out as one grid: a `stage` axis, the first stage's axes (a later item sits where its
    first-stage ancestor does), and each later stage's own axes (named `<stage>.<axis>` where two stages share a name);
    an item on an axis of another stage sits at its last position, labelled NOT_ON_AXIS."""

    table: list[dict[str, int]] = field(default_factory=list)

    @property
    def size(self) -> int:
        return len(self.table)

    @property
    def mode(self) -> str:
        return "product"

    def point(self, index: int) -> dict[str, int]:
        return self.table[index]


def _stage_sizes(first: str, size: int, chain: Mapping[str, Any]) -> tuple[
        dict[str, int], dict[str, tuple[list[Axis], Grid]], dict[str, str]] | None:
    """Each stage's item count, grid and source stage; None for a stage fed from another run (its size is that
    run's, not in the config)."""
    sizes, grids, sources = {first: size}, {}, {}
    for name, stage in chain.items():
        if not isinstance(stage, Mapping) or not isinstance(stage.get("source"), str) or stage["source"] not in sizes:
            return None
        axes, positions = _stage_grid(stage.get("grid"), stage.get("mode"))
        grids[str(name)], sources[str(name)] = (axes, positions), str(stage["source"])
        zipped = positions.mode == "zip" and axes
        sizes[str(name)] = sizes[sources[str(name)]] * (1 if zipped else len(positions))
    return sizes, grids, sources


def _stage_grid(spec: Any, mode: Any) -> tuple[list[Axis], Grid]:
    if not isinstance(spec, Mapping):
        spec = {}
    axes = [Axis(str(name), tuple(_axis_values(values))) for name, values in spec.items()]
    return axes, Grid([Axis(a.name, tuple(range(len(a.values)))) for a in axes], "zip" if mode == "zip" else "product")


def chain_grid(config: Mapping[str, Any], base: SweepGrid, planned: int | None) -> ChainGrid | None:
    """The grid of a chain of stages, from its config alone (read as data): the index arithmetic of its plan (a later
    stage's items follow in source-item order, each fanned out over the stage's grid, or zipped with it)."""
    stages = config.get("stages")
    chain = stages.get("chain") if isinstance(stages, Mapping) else None
    if not isinstance(chain, Mapping) or not chain:
        return None
    first = str(stages.get("first") or "base") if isinstance(stages, Mapping) else "base"
    names = [first, *map(str, chain)]
    found = _stage_sizes(first, base.size, chain)
    if found is None:
        return None
    sizes, grids, sources = found
    total = sum(sizes.values())
    if total > MAX_REPORT_ITEMS or (planned is not None and total != planned):
        return None
    taken = {a.name for a in base.axes} | {STAGE_AXIS}
    named: dict[tuple[str, str], str] = {}
    all_axes = [Axis(STAGE_AXIS, tuple(names)), *base.axes]
    for name, (axes, _) in grids.items():
        for axis in axes:
            if len(axis.values) < 2:  # one value: the stage's legend, not an axis beside NOT_ON_AXIS
                continue
            label = axis.name if axis.name not in taken else f"{name}.{axis.name}"
            taken.add(label)
            named[name, axis.name] = label
            all_axes.append(Axis(label, (*axis.values, NOT_ON_AXIS)))
    empty = {a.name: len(a.values) - 1 for a in all_axes}
    base_missing = {a.name: len(a.values) for a in base.axes}  # base axes have no NOT_ON_AXIS position

    def coords(stage: str, local: int) -> dict[str, int]:
        if stage == first:
            return {**{k: v for k, v in empty.items() if k not in base_missing}, **base.point(local),
                    STAGE_AXIS: 0}
        axes, positions = grids[stage]
        zipped = positions.mode == "zip" and axes
        parent, position = (local, local) if zipped else divmod(local, len(positions))
        found = coords(sources[stage], parent)
        found[STAGE_AXIS] = names.index(stage)
        found.update({named[stage, axis]: p for axis, p in positions.point(position).items() if (stage, axis) in named})
        return found

    table = [coords(name, local) for name in names for local in range(sizes[name])]
    return ChainGrid(all_axes, base.positions, [{a.name: point[a.name] for a in all_axes} for point in table])


def sweep_grid(config: Mapping[str, Any], planned: int | None = None) -> SweepGrid | None:
    """The saved grid, or None when it is absent, malformed, larger than a report lays out, or of another size than
    the run planned (`planned`, from run.json). Its size is measured before any axis is made. A chain of stages is a
    ChainGrid."""
    stages = config.get("stages")
    if isinstance(stages, Mapping) and isinstance(stages.get("chain"), Mapping) and stages["chain"]:
        base = sweep_grid({k: v for k, v in config.items() if k != "stages"})
        try:
            return chain_grid(config, base, planned) if base else None
        except (ConfigError, KeyError, TypeError, ValueError, ZeroDivisionError, OverflowError):
            return None
    sweep = _sweep(config)
    spec = sweep.get("grid")
    if not isinstance(spec, Mapping):
        return None
    mode = "zip" if sweep.get("mode") == "zip" else "product"
    try:
        lengths = [_axis_length(values) for values in spec.values()]
        size = (min(lengths) if lengths else 0) if mode == "zip" else math.prod(lengths)
        if size > MAX_REPORT_ITEMS or (planned is not None and size != planned):
            return None
        axes = [Axis(str(name), tuple(_axis_values(values))) for name, values in spec.items()]
        return SweepGrid(axes, Grid([Axis(a.name, tuple(range(len(a.values)))) for a in axes], mode))
    except (ConfigError, KeyError, TypeError, ValueError, ZeroDivisionError, OverflowError):
        return None


def _axis_length(spec: Any) -> int:
    if isinstance(spec, Mapping):
        return range_length(spec)
    if isinstance(spec, list):
        return len(spec)
    raise TypeError(f"not an axis: {spec!r}")


def placed(records: Sequence[ItemRecord], size: int) -> list[ItemRecord]:
    """The records a report can place in a grid of `size` items: one per index inside it. A line whose index lies
    outside, or a second item at a taken index, is not this run's: it is named in a warning and left out."""
    kept: dict[int, ItemRecord] = {}
    stray = []
    for record in records:
        if record.index >= size or kept.setdefault(record.index, record).item_id != record.item_id:
            stray.append(record)
    if stray:
        log.warning("%d manifest line(s) do not fit the run's grid of %d item(s) (%s); they are left out",
                    len(stray), size, ", ".join(f"#{r.index} {r.item_id[:12]}" for r in stray[:5]))
    return sorted(kept.values(), key=lambda record: record.index)


def _axis_values(spec: Any) -> list[Any]:
    if isinstance(spec, Mapping):
        return expand_range(spec)
    if isinstance(spec, list):
        # savedconfig escapes "${" so Hydra reads values literally; show them as the user wrote them
        return [v.replace("\\${", "${") if isinstance(v, str) else v for v in spec]
    raise TypeError(f"not an axis: {spec!r}")


def run_grid(config: Mapping[str, Any], planned: int) -> RunGrid:
    """The sheet axes of a run of `planned` items. Without a usable saved grid, items go in grid-index order, in
    rows."""
    saved = sweep_grid(config, planned)
    if saved is None:
        total = max(planned, 1)
        cols = max(1, math.ceil(math.sqrt(total)))
        rows = math.ceil(total / cols)
        across = SheetAxis("column", "item", tuple(f"+{c}" for c in range(cols)), ("column",))
        down = SheetAxis("row", "item", tuple(f"#{r * cols}" for r in range(rows)), ("row",))
        coords = [{"row": i // cols, "column": i % cols} for i in range(total)]
        return RunGrid([a for a in (down, across) if len(a) > 1] or [across], coords, "product")
    mode = saved.mode
    varying = [a for a in saved.axes if len(a.values) > 1]
    sheet_axes = [SheetAxis(a.name, axis_title(a.name), tuple(axis_value_labels(a.name, a.values)), (a.name,))
                  for a in varying]
    points = [saved.point(i) for i in range(saved.size)]
    if mode == "zip" and len(sheet_axes) > 1:  # zipped axes move together: one axis of points
        labels = tuple(" · ".join(f"{a.title}={a.labels[point[a.name]]}" for a in sheet_axes) for point in points)
        name = ",".join(a.name for a in sheet_axes)
        zipped = SheetAxis(name, " · ".join(a.title for a in sheet_axes), labels, tuple(a.name for a in sheet_axes))
        return RunGrid([zipped], [{name: i} for i in range(len(points))], mode)
    return RunGrid(sheet_axes, [{a.name: point[a.name] for a in sheet_axes} for point in points], mode)


# --- which axis goes where ---------------------------------------------------------------------


@dataclass(frozen=True)
class Choice:
    x: SheetAxis | None
    y: SheetAxis | None
    z: SheetAxis | None
    rest: list[SheetAxis]  # one sheet per combination of their values

    def describe(self) -> str:
        parts = [f"{k}={a.name}" for k, a in (("x", self.x), ("y", self.y), ("z", self.z)) if a is not None]
        if self.rest:
            parts.append(f"one sheet per {' × '.join(a.name for a in self.rest)}")
        return ", ".join(parts) or "one item"


def default_choice(grid: RunGrid) -> Choice:
    """The last varying axis of the grid runs across, the one before it down, the one before that
    as Z sub-grids; earlier ones get a sheet per value. An axis too long to run across runs down."""
    axes = list(grid.axes)
    x = axes.pop() if axes else None
    y = axes.pop() if axes else None
    z = axes.pop() if axes else None
    if x is not None and len(x) > MAX_COLUMNS and (y is None or len(y) < len(x)):
        x, y = y, x
    return Choice(x, y, z, axes)


def choose(grid: RunGrid, x: str | None, y: str | None, z: str | None) -> Choice:
    """The axes a user named (`--x/--y/--z`); the other varying axes get a sheet per value."""
    if x is None and y is None and z is None:
        return default_choice(grid)
    issues: list[ConfigIssue] = []
    picked: dict[str, SheetAxis] = {}
    for flag, name in (("--x", x), ("--y", y), ("--z", z)):
        if name is None:
            continue
        axis = grid.axis(name)
        names = ", ".join(a.name for a in grid.axes) or "none (every item has the same parameters)"
        if axis is None:
            issues.append(ConfigIssue(flag, f"'{name}' is not a varying axis of this run; varying axes: {names}"))
        elif axis in picked.values():
            issues.append(ConfigIssue(flag, f"'{name}' is already used as another axis"))
        else:
            picked[flag] = axis
    if issues:
        raise ConfigError(issues)
    used = list(picked.values())
    return Choice(picked.get("--x"), picked.get("--y"), picked.get("--z"), [a for a in grid.axes if a not in used])


# --- pages: one sheet per combination of the rest axes -----------------------------------------


@dataclass
class Page:
    rest: tuple[int, ...]  # positions on the rest axes
    cells: dict[tuple[int, int, int], int] = field(default_factory=dict)  # (z, y, x) -> grid index


def pages(grid: RunGrid, choice: Choice) -> list[Page]:
    """Sheets in order of their rest-axis positions, each with the grid indices of its cells."""
    found: dict[tuple[int, ...], Page] = {}
    for index, coords in enumerate(grid.coords):
        rest = tuple(coords[a.name] for a in choice.rest)
        page = found.setdefault(rest, Page(rest))
        key = tuple(coords[a.name] if a is not None else 0 for a in (choice.z, choice.y, choice.x))
        page.cells.setdefault(key, index)  # type: ignore[arg-type]
    return [found[key] for key in sorted(found)]


def page_values(choice: Choice, page: Page) -> list[tuple[str, str]]:
    return [(axis.title, axis.labels[position]) for axis, position in zip(choice.rest, page.rest, strict=True)]


def page_file_name(number: int, choice: Choice, page: Page) -> str:
    """`03_seed=1_prompt=a_red_fox.png`: numbered in order, named by its values, safe on any file system."""
    parts = [f"{_safe(axis.name, 24)}={_safe(axis.labels[p], 40)}" for axis, p in zip(choice.rest, page.rest,
                                                                                       strict=True)]
    return "_".join([f"{number:03d}", *parts])[:200] + ".png"


def _safe(text: str, limit: int) -> str:
    cleaned = re.sub(r"[^\w.+-]+", "_", text).strip("._") or "x"
    return cleaned[:limit].rstrip("._") or "x"


# --- cells -------------------------------------------------------------------------------------

Tile = Image.Image | str  # a thumbnail, or the word printed on a marked cell


def tile(run_dir: Path, record: ItemRecord | None) -> Tile:
    """The thumbnail of an item: image, strip of video frames, or audio waveform; else a mark."""
    if record is None:
        return NOT_MADE
    if not record.ok:
        return "failed"
    if not record.outputs:
        return NOT_MADE
    path = run_dir / record.outputs[0]
    if path.is_symlink():  # a run folder is data: its records name files in it, not elsewhere
        return "not a file"
    kind = media.kind_of(record.outputs[0], record.has_sound)
    try:
        if kind == "image":
            with Image.open(path) as image:
                image.thumbnail((THUMB, THUMB))
                output = image.convert("RGB")
            controls = [run_dir / prepared.path for prepared in record.control_prepared or []]
            return beside(output, controls) if controls else output
        if kind in media.KINDS and media.KINDS[kind].moving:  # video, with or without sound: its frames
            return video_strip(path)
        if kind == "audio":
            return waveform(path)
    except (OSError, ValueError, RuntimeError, Image.DecompressionBombError) as error:
        log.debug("no thumbnail for %s: %s", path, error)
        return "file gone" if not path.is_file() else "unreadable"
    return kind


def beside(output: Image.Image, controls: Sequence[Path]) -> Image.Image:
    """An output with the control images it was conditioned on to its right (each at the output's height), fitted
    in a cell as wide as a video strip's. A control image that cannot be read, or is a link, is left out, not the
    cell."""
    parts = [output]
    for path in controls:
        if path.is_symlink():  # a run folder is data: its records name files in it, not elsewhere
            continue
        try:
            with Image.open(path) as control:
                control.thumbnail((output.width * 4, output.height))
                parts.append(control.convert("RGB"))
        except (OSError, ValueError, Image.DecompressionBombError) as error:
            log.debug("control image %s not drawn: %s", path, error)
    row = Image.new("RGB", (sum(p.width for p in parts) + 2 * (len(parts) - 1), output.height), BACKGROUND)
    x = 0
    for part in parts:
        row.paste(part, (x, 0))
        x += part.width + 2
    row.thumbnail((2 * THUMB, THUMB))
    return row


def video_strip(path: Path, frames: int = VIDEO_FRAMES) -> Image.Image:
    """Evenly spaced frames side by side, the strip fitted to 2 thumbnails wide by 1 high."""
    import imageio_ffmpeg  # noqa: PLC0415 - start-up time: codecs load only for the media that need them

    reader = imageio_ffmpeg.read_frames(str(path))
    meta = next(reader)
    width, height = meta["size"]
    raw = [np.frombuffer(frame, np.uint8).reshape(height, width, 3) for frame in reader]
    if not raw:
        raise ValueError(f"{path} has no frames")
    picks = sorted({round(i * (len(raw) - 1) / max(1, frames - 1)) for i in range(min(frames, len(raw)))})
    strip = Image.new("RGB", (len(picks) * width + (len(picks) - 1) * 2, height), BACKGROUND)
    for slot, pick in enumerate(picks):
        strip.paste(Image.fromarray(raw[pick]), (slot * (width + 2), 0))
    strip.thumbnail((2 * THUMB, THUMB))
    return strip


def envelope(path: Path, columns: int) -> list[tuple[float, float]]:
    """(min, max) of an audio file's samples (channels mixed) in each of `columns` columns, scaled so that the
    loudest sample is 1: what sheets draw as its waveform, and the viewer too."""
    import soundfile  # noqa: PLC0415 - start-up time: codecs load only for the media that need them

    samples, _ = soundfile.read(str(path), dtype="float32", always_2d=True)
    mono = samples.mean(axis=1)
    if not mono.size:
        return []
    peak = max(float(np.abs(mono).max()), 1e-6)
    return [(float(chunk.min()) / peak, float(chunk.max()) / peak)
            for chunk in np.array_split(mono, columns) if chunk.size]


def waveform(path: Path, size: tuple[int, int] = (THUMB, THUMB // 2)) -> Image.Image:
    """The samples' envelope (min and max per pixel column) on a dark ground."""
    width, height = size
    image = Image.new("RGB", size, SLATE)
    draw = ImageDraw.Draw(image)
    middle = height / 2
    draw.line((0, middle, width, middle), fill=MUTED)
    for x, (low, high) in enumerate(envelope(path, width)):
        draw.line((x, middle - high * (middle - 2), x, middle - low * (middle - 2)), fill=WAVE)
    return image


# --- layout ------------------------------------------------------------------------------------

Box = tuple[int, int, int, int]  # x, y, width, height


@dataclass
class SheetLayout:
    """Where everything on one sheet goes; tests read the label boxes and sizes from here."""

    width: int
    height: int
    cell: tuple[int, int]
    title: Box | None
    title_lines: list[str]
    z_titles: list[tuple[Box, list[str]]]
    x_titles: list[tuple[Box, list[str]]]
    y_titles: list[tuple[Box, list[str]]]
    col_labels: list[tuple[Box, list[str]]]
    row_labels: list[tuple[Box, list[str]]]
    cells: dict[tuple[int, int, int], Box]
    legend: Box | None
    legend_lines: list[str]
    note: Box | None = None
    note_lines: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class Texts:
    """Everything a sheet says besides its cells."""

    title: str
    legend: str


class Fonts:
    def __init__(self, size: int = FONT_SIZE):
        self.text = Typeface(size)
        self.bold = Typeface(size, bold=True)
        self.line = self.text.line_height


def _wrap_all(face: Typeface, texts: Sequence[str], width: int, lines: int, prefix: str = "") -> list[list[str]]:
    """Each text (after `prefix`, which is never shortened) wrapped to `width`; one that needs more than
    `lines` lines is shortened from the middle, around what tells it from the others, until it fits."""
    width = max(width, 8)
    fitted = fit_all(texts, lambda text: len(face.wrap(prefix + text, width)) <= lines)
    return [face.wrap(prefix + text, width) for text in fitted]


def _column_width(choice: Choice, width: int, fonts: Fonts) -> int:
    """Columns widen (up to LABEL_WORD_W) so a label's longest word is not broken."""
    if not choice.x:
        return width
    words = [word for label in choice.x.labels for word in label.split()]
    return max(width, min(LABEL_WORD_W, math.ceil(max(fonts.text.width(w) for w in words)) + 2 * GAP))


def _row_label_width(choice: Choice, fonts: Fonts) -> int:
    """As wide as the longest row label or title needs, up to ROW_LABEL_W; none without rows."""
    if not choice.y:
        return 0
    widest = max(fonts.bold.width(choice.y.title), *(fonts.text.width(label) for label in choice.y.labels))
    return min(ROW_LABEL_W, max(MIN_ROW_LABEL_W, math.ceil(widest) + 3 * GAP))


def layout_sheet(choice: Choice, page: Page, cell: tuple[int, int], texts: Texts, fonts: Fonts,
                 note: str = "") -> SheetLayout:
    """Geometry of one sheet for cells of `cell` (w, h) px."""
    line = fonts.line
    cw, ch = _column_width(choice, cell[0], fonts), cell[1]
    nx = len(choice.x) if choice.x else 1
    ny = len(choice.y) if choice.y else 1
    nz = len(choice.z) if choice.z else 1
    row_w = _row_label_width(choice, fonts)
    sub_w = row_w + nx * (cw + GAP)
    width = max(2 * PAD + nz * sub_w + (nz - 1) * ZGAP, 2 * PAD + 320)
    inner = width - 2 * PAD

    title_lines = _wrap_all(fonts.bold, [texts.title], inner, LABEL_LINES)[0] if texts.title else []
    y = PAD
    title = (PAD, y, inner, len(title_lines) * line) if title_lines else None
    y += len(title_lines) * line + (GAP * 2 if title_lines else 0)

    z_lines = (_wrap_all(fonts.bold, list(choice.z.labels), sub_w, 2, prefix=f"{choice.z.title}: ")
               if choice.z else [[] for _ in range(nz)])
    z_h = max(len(lines) for lines in z_lines) * line + (GAP if choice.z else 0)
    x_title = _wrap_all(fonts.bold, [choice.x.title], nx * (cw + GAP), 2)[0] if choice.x else []
    x_h = len(x_title) * line
    col_lines = _wrap_all(fonts.text, list(choice.x.labels), cw - 2, LABEL_LINES) if choice.x else []
    col_h = max([len(lines) for lines in col_lines] + [0]) * line + (GAP if choice.x else 0)
    row_lines = (_wrap_all(fonts.text, list(choice.y.labels), row_w - 2 * GAP, max(1, ch // line))
                 if choice.y else [])
    y_title = _wrap_all(fonts.bold, [choice.y.title], row_w - 2 * GAP, max(1, (x_h + col_h) // line))[0] \
        if choice.y else []

    grid_top = y + z_h + x_h + col_h
    layout = SheetLayout(width, 0, (cw, ch), title, title_lines, [], [], [], [], [], {}, None, [])
    for zi in range(nz):
        left = PAD + zi * (sub_w + ZGAP)
        cells_left = left + row_w
        if choice.z:
            layout.z_titles.append(((left, y, sub_w, z_h - GAP), z_lines[zi]))
        if choice.x:
            layout.x_titles.append(((cells_left, y + z_h, nx * (cw + GAP) - GAP, x_h), x_title))
            for xi, lines in enumerate(col_lines):
                layout.col_labels.append(((cells_left + xi * (cw + GAP), y + z_h + x_h, cw, col_h - GAP), lines))
        if choice.y:
            layout.y_titles.append(((left, y + z_h, row_w - GAP, x_h + col_h - GAP), y_title))
            for yi, lines in enumerate(row_lines):
                layout.row_labels.append(((left, grid_top + yi * (ch + GAP), row_w - GAP, ch), lines))
        for yi in range(ny):
            for xi in range(nx):
                layout.cells[(zi, yi, xi)] = (cells_left + xi * (cw + GAP), grid_top + yi * (ch + GAP), cw, ch)
    _place_footer(layout, grid_top + ny * (ch + GAP) + GAP, inner, texts.legend, note, fonts)
    return layout


def _place_footer(layout: SheetLayout, y: int, inner: int, legend: str, note: str, fonts: Fonts) -> None:
    """The legend of fixed parameters and the note, under the grid; the sheet's height follows."""
    line = fonts.line
    legend_lines = fonts.text.wrap(legend, inner) if legend else []
    if len(legend_lines) > LEGEND_LINES:
        legend_lines = legend_lines[:LEGEND_LINES - 1] + ["… (the rest in config.yaml)"]
    if legend_lines:
        layout.legend, layout.legend_lines = (PAD, y, inner, len(legend_lines) * line), legend_lines
        y += len(legend_lines) * line + GAP
    if note:
        layout.note_lines = fonts.text.wrap(note, inner)
        layout.note = (PAD, y, inner, len(layout.note_lines) * line)
        y += len(layout.note_lines) * line + GAP
    layout.height = y + PAD - GAP


# --- drawing -----------------------------------------------------------------------------------


def _scaled(item: Tile, factor: float) -> Tile:
    if not isinstance(item, Image.Image) or factor >= 1:
        return item
    return item.resize((max(1, round(item.width * factor)), max(1, round(item.height * factor))), Image.Resampling.LANCZOS)


def _cell_size(tiles: Sequence[Tile], factor: float) -> tuple[int, int]:
    images = [t for t in tiles if isinstance(t, Image.Image)]
    floor = max(MIN_THUMB, round(MIN_CELL * min(1.0, factor)))
    return (max([floor] + [max(1, round(t.width * min(1.0, factor))) for t in images]),
            max([floor] + [max(1, round(t.height * min(1.0, factor))) for t in images]))


@dataclass
class DrawnSheet:
    image: Image.Image
    layout: SheetLayout  # the geometry drawn, before a final scaling of the whole sheet (see note)
    note: str  # why it was scaled down ("" when it was not)


def draw_sheet(choice: Choice, page: Page, tiles: Mapping[int, Tile], texts: Texts, fonts: Fonts,
               max_pixels: int = MAX_PIXELS) -> DrawnSheet:
    """Lay out and draw one sheet within `max_pixels`: thumbnails shrink first (down to MIN_THUMB),
    then the whole sheet is scaled; either way the reason is printed on it."""
    full = cell = _cell_size(list(tiles.values()), 1.0)
    factor, note = 1.0, ""
    layout = layout_sheet(choice, page, full, texts, fonts)
    full_size = f"{layout.width}x{layout.height} px"
    while layout.width * layout.height > max_pixels and max(cell) > MIN_THUMB:
        # labels keep their size, so shrink the cells by the area they must give up, then check again
        factor *= max(0.5, min(0.95, math.sqrt(max_pixels / (layout.width * layout.height))))
        cell = _cell_size(list(tiles.values()), factor)
        note = (f"Cells shrunk to {max(cell)} px (from {max(full)} px): at full size this sheet would be "
                f"{full_size}, over the cap of {max_pixels:,} pixels "
                f"(--max-pixels).")
        layout = layout_sheet(choice, page, cell, texts, fonts, note)
    image = render(layout, page, {i: _scaled(t, factor) for i, t in tiles.items()}, fonts)
    if image.width * image.height > max_pixels:
        reason = (f"The whole sheet is scaled down: at {image.width}x{image.height} px it is over the cap of "
                  f"{max_pixels:,} pixels (--max-pixels) even with {max(cell)} px cells.")
        note = f"{note} {reason}".strip()
        layout = layout_sheet(choice, page, layout.cell, texts, fonts, note)
        image = render(layout, page, {i: _scaled(t, factor) for i, t in tiles.items()}, fonts)
        scale = math.sqrt(max_pixels / (image.width * image.height))
        image = image.resize((max(1, int(image.width * scale)), max(1, int(image.height * scale))), Image.Resampling.LANCZOS)
    return DrawnSheet(image, layout, note)


def render(layout: SheetLayout, page: Page, tiles: Mapping[int, Tile], fonts: Fonts) -> Image.Image:
    image = Image.new("RGB", (layout.width, layout.height), BACKGROUND)
    draw = ImageDraw.Draw(image)
    for key, box in layout.cells.items():
        index = page.cells.get(key)
        _draw_tile(image, draw, box, NOT_MADE if index is None else tiles.get(index, NOT_MADE), fonts)
    if layout.title:
        _text(image, layout.title, layout.title_lines, fonts.bold, TITLE_INK, centre=False)
    for box, lines in layout.z_titles:
        _text(image, box, lines, fonts.bold, TITLE_INK)
        draw.line((box[0], box[1] + box[3] + GAP // 2, box[0] + box[2], box[1] + box[3] + GAP // 2), fill=MUTED)
    for box, lines in layout.x_titles + layout.y_titles:
        _text(image, box, lines, fonts.bold, INK)
    for box, lines in layout.col_labels + layout.row_labels:
        _text(image, box, lines, fonts.text, INK)
    if layout.legend:
        _text(image, layout.legend, layout.legend_lines, fonts.text, MUTED, centre=False)
    if layout.note:
        _text(image, layout.note, layout.note_lines, fonts.text, FAILED, centre=False)
    return image


def _draw_tile(image: Image.Image, draw: ImageDraw.ImageDraw, box: Box, item: Tile, fonts: Fonts) -> None:
    x, y, w, h = box
    if isinstance(item, Image.Image):
        image.paste(item, (x + (w - item.width) // 2, y + (h - item.height) // 2))
        return
    fill = {NOT_MADE: MISSING, "file gone": MISSING, "failed": FAILED}.get(item, SLATE)
    draw.rectangle((x, y, x + w - 1, y + h - 1), fill=fill)
    _text(image, box, [item], fonts.bold, MARK_INK[fill])


def _text(image: Image.Image, box: Box, lines: Sequence[str], face: Typeface, fill: tuple[int, int, int],
          centre: bool = True) -> None:
    """Lines in a box: centred both ways (labels) or from its top-left (title, legend)."""
    x, y, w, h = box
    top = y + (h - len(lines) * face.line_height) / 2 if centre else y
    for number, line in enumerate(lines):
        left = x + (w - face.width(line)) / 2 if centre else x
        face.draw(image, (left, top + number * face.line_height + (face.line_height - face.size) / 2 - 2), line,
                  fill)


# --- from a run folder -------------------------------------------------------------------------


@dataclass
class Written:
    """What write_sheets drew: the files, and each sheet's page and drawing (in sheet order)."""

    paths: list[Path]
    choice: Choice
    pages: list[Page]
    drawn: list[DrawnSheet]

    @property
    def notes(self) -> list[str]:
        return [d.note for d in self.drawn if d.note]


def read_records(run_dir: Path) -> list[ItemRecord]:
    """Committed, well-formed records, the latest of each item, in grid order."""
    try:
        latest = RunFolder(run_dir).items()
    except OSError:
        return []
    return sorted(latest.values(), key=lambda record: record.index)


@dataclass(frozen=True)
class RunLayout:
    """What a report lays out: the run's size, its saved grid (None when unusable) and the records that fit it."""

    size: int
    grid: SweepGrid | None
    records: list[ItemRecord]
    info: RunInfo | None
    config: Mapping[str, Any]


def run_layout(run_dir: Path) -> RunLayout:
    """The run as a report sees it, sized by what the run planned (run.json, else its saved grid), never by an index
    a manifest line states; a run larger than a report lays out is refused."""
    info, config = read_info(run_dir), read_config_data(run_dir)
    records = read_records(run_dir)
    # a rerun of single items, or a chain that makes some of its stages (stages.make), plans part of the whole grid
    # (run.json says its size; runs of earlier versions only their selected items), which reports still lay out whole
    whole = info is not None and info.selected_items is None and info.plan_size is None
    grid = sweep_grid(config, info.counts.planned if info and whole else None)
    size = grid.size if grid else (info.plan_size or info.counts.planned) if info else len(records)
    if size > MAX_REPORT_ITEMS:
        raise DiffsweepError(f"{run_dir} plans {size:,} items, more than a report lays out ({MAX_REPORT_ITEMS:,})")
    return RunLayout(size, grid, placed(records, size), info, config)


def read_info(run_dir: Path) -> RunInfo | None:
    try:
        return RunFolder(run_dir).read_info()
    except DiffsweepError:
        return None


def legend_text(records: Sequence[ItemRecord], choice: Choice, info: RunInfo | None) -> str:
    """The parameters every item shares (what the axes leave fixed), and the builder when there is one."""
    shown = {name for axis in (choice.x, choice.y, choice.z, *choice.rest) if axis for name in axis.names}
    parts = []
    builders = info.builders if info else []
    if len(builders) == 1:
        b = builders[0]
        parts.append(f"builder={b.label} ({b.provider}/{b.pipeline}, {b.dtype})")
    if records:
        first = records[0].params
        for key, value in first.items():
            if key not in shown and all(compact(r.params.get(key)) == compact(value) for r in records[1:]):
                parts.append(f"{key}={compact(value)}")
    return ("fixed: " + " · ".join(parts)) if parts else ""


def write_sheets(run_dir: Path, x: str | None = None, y: str | None = None, z: str | None = None,
                 max_pixels: int = MAX_PIXELS, layout: RunLayout | None = None) -> Written:
    """Draw the run's sheets: `contact_sheet.png` and, when the rest axes make several, `sheets/` (from `layout`,
    when the caller has just read the folder).

    Raises ConfigError (nothing written) when a named axis is not a varying axis of the run."""
    run_dir = Path(run_dir)
    layout = layout or run_layout(run_dir)
    records, info = layout.records, layout.info
    grid = run_grid(layout.config, layout.size)
    choice = choose(grid, x, y, z)
    by_index = {record.index: record for record in records}
    fonts = Fonts()
    legend = legend_text(records, choice, info)
    name = f"{info.name or run_dir.parent.name} {info.version or run_dir.name}" if info else \
        f"{run_dir.parent.name} {run_dir.name}"
    found = pages(grid, choice)
    folder = run_dir / SHEETS_DIR
    written, drawings, names = [], [], []
    for number, page in enumerate(found, 1):
        values = page_values(choice, page)
        where = f" · sheet {number} of {len(found)}: " + " · ".join(f"{t} = {v}" for t, v in values) if values else ""
        tiles = {index: tile(run_dir, by_index.get(index)) for index in page.cells.values()}
        drawn = draw_sheet(choice, page, tiles, Texts(name + where, legend), fonts, max_pixels)
        data = _png(drawn.image)
        drawings.append(drawn)
        if drawn.note:
            log.info("sheet %d: %s", number, drawn.note)
        if number == 1:
            write_atomic(run_dir / SHEET, data)
            written.append(run_dir / SHEET)
        if len(found) > 1:
            file_name = page_file_name(number, choice, page)
            write_atomic(folder / file_name, data)
            written.append(folder / file_name)
            names.append(file_name)
    if folder.is_dir():  # sheets of an earlier layout would be mistaken for this one's
        for stale in folder.glob("*.png"):
            if stale.name not in names:
                stale.unlink()
    return Written(written, choice, found, drawings)


def _png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()

