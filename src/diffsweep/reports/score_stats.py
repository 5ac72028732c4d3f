"""Per-axis statistics of a scored run: `scores_summary.csv` and plots under `scores/`.

For each metric and each varying grid axis, every value of the axis gets the items that have it
(all other axes pooled): n, mean, sample standard deviation and a 95% confidence interval of the mean,
a Student t-interval over those items (mean ± t(0.975, n−1)·sd/√n; none when n < 2). Skipped scores
(null values) are left out.

Plots (matplotlib, one PNG per metric and axis, `scores/<metric>_by_<axis>.png`): a numeric axis (seeds
excepted) is
drawn as lines of the mean against its values with one line per value of a second varying axis
(the one with fewest values) and the interval as error bars; a categorical axis as bars.
"""

from __future__ import annotations

import csv
import io
import json
import math
import re
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from diffsweep.labels import shorten_all, shorten_per_group
from diffsweep.planning.grid import Axis
from diffsweep.reports.sheets import SweepGrid, run_layout
from diffsweep.store.atomic import write_atomic
from diffsweep.store.folder import RunFolder
from diffsweep.store.records import ScoreRecord

SUMMARY = "scores_summary.csv"
PLOTS = "scores"
CI_METHOD = "t-interval over items, 95%"
COLUMNS = ("metric", "axis", "value", "n", "mean", "std", "ci_low", "ci_high")
MAX_LINES = 8  # a second axis with more values than this is pooled instead of drawn as lines


@dataclass(frozen=True)
class AxisStat:
    """The scores of one metric over the items that share one value of one axis."""

    metric: str
    axis: str
    value: Any  # the axis value as configured (number, string, null, mapping)
    n: int
    mean: float
    std: float | None  # sample standard deviation; None when n < 2
    ci_low: float | None
    ci_high: float | None

    @property
    def label(self) -> str:
        return value_label(self.value)

    def row(self) -> dict[str, Any]:
        return {"metric": self.metric, "axis": self.axis, "value": self.label, "n": self.n, "mean": self.mean,
                "std": self.std, "ci_low": self.ci_low, "ci_high": self.ci_high}


def value_label(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False, sort_keys=True)


def t_interval(values: Sequence[float]) -> tuple[float, float | None, float | None, float | None]:
    """(mean, sample sd, CI low, CI high) of values; sd and CI are None below two values."""
    from scipy import stats  # noqa: PLC0415 - optional extra (scores): loaded only to score or plot

    n = len(values)
    mean = math.fsum(values) / n
    if n < 2:
        return mean, None, None, None
    sd = math.sqrt(math.fsum((v - mean) ** 2 for v in values) / (n - 1))
    half = float(stats.t.ppf(0.975, n - 1)) * sd / math.sqrt(n)
    return mean, sd, mean - half, mean + half


def run_grid(run_dir: Path) -> tuple[SweepGrid | None, dict[str, int]]:
    """The saved grid and the grid index of each item that fits it."""
    layout = run_layout(Path(run_dir))
    return layout.grid, {r.item_id: r.index for r in layout.records}


@dataclass(frozen=True)
class ScoredItem:
    metric: str
    value: float
    point: Mapping[str, int]  # axis name -> position of this item's value on the axis


def scored_items(run_dir: Path) -> tuple[list[ScoredItem], list[Axis]]:
    """Every non-skipped score with the item's value on each varying axis, and those axes."""
    grid, index_of = run_grid(run_dir)
    if grid is None:
        return [], []
    varying = [axis for axis in grid.axes if len(axis.values) > 1]
    found = []
    for score in RunFolder(run_dir).read_scores():
        if score.value is None or score.item_id not in index_of:
            continue
        positions = grid.positions.point(index_of[score.item_id])
        found.append(ScoredItem(score.metric, score.value,
                                {axis.name: positions[axis.name] for axis in varying}))
    return found, varying


def summarise(run_dir: Path) -> list[AxisStat]:
    """Per metric, per varying axis, per axis value (in the axis's order): n, mean, sd, 95% t-interval."""
    scores, axes = scored_items(run_dir)
    stats = []
    for metric in sorted({s.metric for s in scores}):
        mine = [s for s in scores if s.metric == metric]
        for axis in axes:
            for position, value in enumerate(axis.values):
                values = [s.value for s in mine if s.point[axis.name] == position]
                if values:
                    stats.append(AxisStat(metric, axis.name, value, len(values), *t_interval(values)))
    return stats


def summary_csv(stats: Sequence[AxisStat]) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=COLUMNS, lineterminator="\n")
    writer.writeheader()
    for stat in stats:
        writer.writerow({k: "" if v is None else (repr(v) if isinstance(v, float) else v)
                         for k, v in stat.row().items()})
    return buffer.getvalue()


def readable_number(value: float) -> str:
    """Four significant digits, but a value of 10,000 or more in whole digits, never in e-notation."""
    return f"{value:.0f}" if abs(value) >= 1e4 else f"{value:.4g}"


def summary_table(stats: Sequence[AxisStat], scores: Sequence[ScoreRecord] = ()) -> list[str]:
    """Aligned text lines of the summary, for `diffsweep-runs show` and `score`; without any statistic, the reason
    (from the run's `scores`), not a table of nothing."""
    def number(value: float | None) -> str:
        return "-" if value is None else readable_number(value)

    if not stats:
        return [_why_no_summary(scores, number)]

    shown = shorten_per_group(((s.axis, s.label) for s in stats), 40)
    rows = [(s.metric, s.axis, shown[s.axis, s.label], str(s.n), number(s.mean), number(s.std),
             "-" if s.ci_low is None else f"[{number(s.ci_low)}, {number(s.ci_high)}]") for s in stats]
    header = ("metric", "axis", "value", "n", "mean", "std", "95% CI (t)")
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
    return ["  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
            for row in [header, *rows]]


def _why_no_summary(scores: Sequence[ScoreRecord], number: Any) -> str:
    values = [s for s in scores if s.value is not None]
    if not values:
        reasons = Counter(s.skipped for s in scores if s.skipped)
        said = "; ".join(f"{reason} ({count})" for reason, count in reasons.most_common(3))
        return f"no values to summarise: every score was skipped{f': {said}' if said else ''}"
    means = "; ".join(f"{metric} mean {number(math.fsum(vs) / len(vs))} over {len(vs)} item(s)"
                      for metric, vs in _by_metric(values).items())
    return f"no axis varies, so no per-axis summary: {means}"


def _by_metric(scores: Sequence[ScoreRecord]) -> dict[str, list[float]]:
    found: dict[str, list[float]] = {}
    for score in sorted(scores, key=lambda s: s.metric):
        if score.value is not None:
            found.setdefault(score.metric, []).append(float(score.value))
    return found


CATEGORICAL = ("seed",)  # numbers that name things: nothing lies between two seeds


def is_numeric(axis: Axis) -> bool:
    return axis.name not in CATEGORICAL and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in axis.values)


def plot_name(metric: str, axis: str) -> str:
    safe = re.sub(r"[^A-Za-z0-9._-]+", "_", f"{metric}_by_{axis}")
    return f"{safe}.png"


def figures(run_dir: Path) -> dict[str, Any]:
    """File name -> matplotlib Figure of every plot of a scored run (nothing saved; no pyplot, so no GUI backend)."""
    scores, axes = scored_items(run_dir)
    drawn = {}
    for metric in sorted({s.metric for s in scores}):
        mine = [s for s in scores if s.metric == metric]
        for axis in axes:
            others = sorted((a for a in axes if a is not axis and len(a.values) <= MAX_LINES),
                            key=lambda a: len(a.values))
            drawn[plot_name(metric, axis.name)] = (_line_figure(metric, axis, others[0] if others else None, mine)
                                                   if is_numeric(axis) else _bar_figure(metric, axis, mine))
    return drawn


def _stat(values: Sequence[float]) -> tuple[float, float]:
    """(mean, CI half-width, 0 when undefined)."""
    mean, _, low, _ = t_interval(values)
    return mean, 0.0 if low is None else mean - low


def _line_figure(metric: str, axis: Axis, by: Axis | None, scores: Sequence[ScoredItem]) -> Any:
    from matplotlib.figure import Figure  # noqa: PLC0415 - optional extra (scores): loaded only to score or plot

    figure = Figure(figsize=(6, 4), dpi=100, layout="constrained")
    ax = figure.add_subplot()
    groups = [(None, list(scores))] if by is None else [(v, [s for s in scores if s.point[by.name] == p])
                                                         for p, v in enumerate(by.values)]
    by_texts = [value_label(value) for value in by.values] if by is not None else []
    by_labels = dict(zip(by_texts, shorten_all(by_texts, 30), strict=True))
    for value, members in groups:
        xs, means, halves = [], [], []
        for position, x in enumerate(axis.values):
            values = [s.value for s in members if s.point[axis.name] == position]
            if values:
                mean, half = _stat(values)
                xs.append(x)
                means.append(mean)
                halves.append(half)
        label = None if by is None else f"{by.name}={by_labels[value_label(value)]}"
        ax.errorbar(xs, means, yerr=halves, marker="o", capsize=3, label=label)
    ax.set_xlabel(axis.name)
    ax.set_ylabel(f"{metric} (mean, 95% CI)")
    ax.set_title(f"{metric} by {axis.name}")
    if by is not None:
        ax.legend(fontsize="small")
    return figure


def _bar_figure(metric: str, axis: Axis, scores: Sequence[ScoredItem]) -> Any:
    from matplotlib.figure import Figure  # noqa: PLC0415 - optional extra (scores): loaded only to score or plot

    figure = Figure(figsize=(max(4, 1 + 1.2 * len(axis.values)), 4), dpi=100, layout="constrained")
    ax = figure.add_subplot()
    labels, means, halves = [], [], []
    for position, value in enumerate(axis.values):
        values = [s.value for s in scores if s.point[axis.name] == position]
        if values:
            mean, half = _stat(values)
            labels.append(value_label(value))
            means.append(mean)
            halves.append(half)
    labels = shorten_all(labels, 30)
    ax.bar(range(len(labels)), means, yerr=halves, capsize=4)
    ax.set_xticks(range(len(labels)), labels, rotation=20, ha="right", fontsize="small")
    ax.set_xlabel(axis.name)
    ax.set_ylabel(f"{metric} (mean, 95% CI)")
    ax.set_title(f"{metric} by {axis.name}")
    return figure


def write_summary(run_dir: Path) -> list[AxisStat]:
    """Write scores_summary.csv and the plots into the run folder; returns the statistics."""
    run_dir = Path(run_dir)
    stats = summarise(run_dir)
    write_atomic(run_dir / SUMMARY, summary_csv(stats))
    for name, figure in figures(run_dir).items():
        buffer = io.BytesIO()
        figure.savefig(buffer, format="png")
        write_atomic(run_dir / PLOTS / name, buffer.getvalue())
    return stats
