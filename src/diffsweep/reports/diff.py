"""`diffsweep-runs diff RUN_A RUN_B`: what changed between two runs.

- config: every key of the two config.yaml files, flattened to dotted paths (lists compared whole);
- builders: the identity fields of each builder (from the item sidecars), paired in order of appearance;
- items with the same item id in both: `identical` bytes, `equivalent` (decoded pixels or samples at most
  one level apart on at most 1% of values: the rounding of batched kernels, as `verify` allows), or
  `different`, with the mean absolute difference in levels (0-255 for pixels, 16-bit for audio; a video with
  sound is compared on its frames and its samples, and the mean is its frames');
- items in only one of the runs (a changed seed, prompt or guidance makes new item ids);
- score deltas (B − A) of each metric's mean per axis value, when both runs are scored.

The runs "differ" (exit 1) when an item is different or in only one run.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

import numpy as np

from diffsweep import media
from diffsweep.hashing import short
from diffsweep.labels import builder_labels, shorten_per_group
from diffsweep.reports.score_stats import readable_number, summarise
from diffsweep.reports.sheets import run_layout
from diffsweep.store.folder import RunFolder
from diffsweep.store.records import ItemRecord
from diffsweep.store.runconfig import read_config_data

ABSENT = "<absent>"
HYDRA_KEYS = ("defaults", "hydra")


@dataclass(frozen=True)
class Change:
    key: str
    a: Any
    b: Any


@dataclass(frozen=True)
class ItemComparison:
    item_id: str
    index_a: int
    index_b: int
    verdict: str  # identical | equivalent | different
    mean_abs_diff: float  # in levels; 0 when identical
    note: str = ""


@dataclass(frozen=True)
class ScoreDelta:
    metric: str
    axis: str
    value: str
    mean_a: float
    mean_b: float

    @property
    def delta(self) -> float:
        return self.mean_b - self.mean_a


@dataclass
class RunDiff:
    run_a: Path
    run_b: Path
    config: list[Change] = field(default_factory=list)
    builders: list[Change] = field(default_factory=list)
    items: list[ItemComparison] = field(default_factory=list)
    only_a: list[ItemRecord] = field(default_factory=list)
    only_b: list[ItemRecord] = field(default_factory=list)
    scores: list[ScoreDelta] = field(default_factory=list)
    damaged: list[str] = field(default_factory=list)  # outputs that are not what their record says, named
    # builder hash -> what tells it from the other builders of both runs; empty when both runs have one builder
    builder_names: dict[str, str] = field(default_factory=dict)

    @property
    def items_differ(self) -> bool:
        return bool(self.only_a or self.only_b or self.damaged or any(c.verdict == "different" for c in self.items))


def flatten(value: Any, prefix: str = "") -> dict[str, Any]:
    """Nested mappings as {"a.b.c": leaf}; lists and scalars are leaves."""
    if isinstance(value, Mapping) and value:
        flat: dict[str, Any] = {}
        for key, sub in value.items():
            flat.update(flatten(sub, f"{prefix}.{key}" if prefix else str(key)))
        return flat
    return {prefix: value}


def changes(a: Mapping[str, Any], b: Mapping[str, Any], prefix: str = "") -> list[Change]:
    flat_a, flat_b = flatten(a), flatten(b)
    keys = sorted(flat_a.keys() | flat_b.keys())
    return [Change(f"{prefix}{key}", flat_a.get(key, ABSENT), flat_b.get(key, ABSENT)) for key in keys
            if flat_a.get(key, ABSENT) != flat_b.get(key, ABSENT)]


def builder_identities(run_dir: Path, records: list[ItemRecord]) -> dict[str, dict[str, Any]]:
    """Builder hash -> identity, from the first sidecar of each builder, in grid order."""
    identities: dict[str, dict[str, Any]] = {}
    for record in sorted(records, key=lambda r: r.index):
        if record.builder_hash in identities or not record.outputs:
            continue
        sidecar = RunFolder(run_dir).sidecar(record)
        if sidecar is not None:
            identities[record.builder_hash] = dict(sidecar.builder.identity)
    return identities


def builder_changes(a: dict[str, dict[str, Any]], b: dict[str, dict[str, Any]]) -> list[Change]:
    """Identity fields that differ between builders paired in order of appearance (those the runs share drop out)."""
    only_a = [h for h in a if h not in b]
    only_b = [h for h in b if h not in a]
    found = []
    for hash_a, hash_b in zip(only_a, only_b, strict=False):
        found += changes(a[hash_a], b[hash_b], prefix=f"{short(hash_a)} → {short(hash_b)}: ")
    found += [Change(short(h), json.dumps(a[h], sort_keys=True), ABSENT) for h in only_a[len(only_b):]]
    found += [Change(short(h), ABSENT, json.dumps(b[h], sort_keys=True)) for h in only_b[len(only_a):]]
    return found


def compare_item(run_a: Path, a: ItemRecord, run_b: Path, b: ItemRecord) -> ItemComparison:
    def verdict(name: str, diff: float = 0.0, note: str = "") -> ItemComparison:
        return ItemComparison(a.item_id, a.index, b.index, name, diff, note)

    if not (a.ok and b.ok and a.outputs and b.outputs):
        same = a.ok == b.ok
        return verdict("identical" if same else "different",
                       note=f"status {a.status} in A, {b.status} in B" if not same else f"{a.status} in both")
    try:
        bytes_a, bytes_b = (run_a / a.outputs[0]).read_bytes(), (run_b / b.outputs[0]).read_bytes()
    except OSError as error:  # missing or not a file: named in RunDiff.damaged too
        return verdict("different", note=f"unreadable output: {error.strerror}: {error.filename}")
    if bytes_a == bytes_b:
        return verdict("identical")
    kind = media.kind_of(a.outputs[0], a.has_sound)  # a video with sound is compared on its frames and its samples
    try:
        streams_a, streams_b = media.decode_streams(kind, bytes_a), media.decode_streams(kind, bytes_b)
    except Exception as error:  # noqa: BLE001 - an output that does not decode is a difference, named
        return verdict("different", note=f"{a.outputs[0]} or {b.outputs[0]} does not decode: {error}")
    for stream_a, stream_b in zip(streams_a, streams_b, strict=True):
        if stream_a.shape != stream_b.shape:
            return verdict("different", note=f"shape {stream_a.shape} in A, {stream_b.shape} in B")
    diffs = [np.abs(x.astype(np.int32) - y.astype(np.int32)) for x, y in zip(streams_a, streams_b, strict=True)]
    if not any(diff.any() for diff in diffs):
        return verdict("identical", note="same decoded content, different file bytes (metadata)")
    rounding = all(diff.max() <= 1 and (diff > 0).mean() <= 0.01 for diff in diffs)
    note = "" if diffs[0].any() else "the same pictures; the sound differs"
    return verdict("equivalent" if rounding else "different", float(diffs[0].mean()), note)


def score_deltas(run_a: Path, run_b: Path) -> list[ScoreDelta]:
    stats_a = {(s.metric, s.axis, s.label): s for s in summarise(run_a)}
    return [ScoreDelta(s.metric, s.axis, s.label, stats_a[key].mean, s.mean) for s in summarise(run_b)
            if (key := (s.metric, s.axis, s.label)) in stats_a]


def builder_names(identities: Mapping[str, Mapping[str, Any]]) -> dict[str, str]:
    """Builder hash -> its label among all of them, when there is more than one to tell apart."""
    if len(identities) < 2:
        return {}
    hashes = list(identities)
    labels = builder_labels([identities[h] for h in hashes], hashes)
    return {h: label.label for h, label in zip(hashes, labels, strict=True)}


def diff_runs(run_a: Path, run_b: Path) -> RunDiff:
    # the items each run planned: a line outside a run's grid is named and left out (sheets.placed)
    items_a = {r.item_id: r for r in run_layout(run_a).records}
    items_b = {r.item_id: r for r in run_layout(run_b).records}
    identities_a = builder_identities(run_a, list(items_a.values()))
    identities_b = builder_identities(run_b, list(items_b.values()))
    result = RunDiff(run_a, run_b, config=changes(read_config_data(run_a), read_config_data(run_b)),
                     builders=builder_changes(identities_a, identities_b),
                     builder_names=builder_names({**identities_a, **identities_b}))
    by_index = sorted(items_a.values(), key=lambda r: r.index)
    result.items = [compare_item(run_a, r, run_b, items_b[r.item_id]) for r in by_index if r.item_id in items_b]
    result.damaged = [f"{side}: item {record.item_id}: {problem}"
                      for side, run, items in (("A", run_a, items_a), ("B", run_b, items_b))
                      for record in sorted(items.values(), key=lambda r: r.index)
                      if record.ok and (problem := RunFolder(run).damage(record))]
    result.only_a = [r for r in by_index if r.item_id not in items_b]
    result.only_b = sorted((r for r in items_b.values() if r.item_id not in items_a), key=lambda r: r.index)
    result.scores = score_deltas(run_a, run_b)
    return result


def _show(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False, sort_keys=True)


def print_diff(diff: RunDiff, out: TextIO) -> None:
    out.write(f"A  {diff.run_a}\nB  {diff.run_b}\n")
    out.write(f"config: {len(diff.config) or 'no'} key(s) changed\n")
    for change in diff.config:
        out.write(f"  {change.key}: {_show(change.a)} → {_show(change.b)}\n")
    out.write(f"builders: {len(diff.builders) or 'no'} identity field(s) changed\n")
    for change in diff.builders:
        out.write(f"  {change.key}: {_show(change.a)} → {_show(change.b)}\n")
    _print_items(diff, out)
    for side, records in (("A", diff.only_a), ("B", diff.only_b)):
        for record in records[:20]:
            out.write(f"  only in {side} #{record.index} {short(record.item_id)}  "
                      f"{_params(record, diff.builder_names.get(record.builder_hash))}\n")
        if len(records) > 20:
            out.write(f"  only in {side}: {len(records) - 20} more\n")
    if diff.damaged:
        out.write(f"outputs not as committed: {len(diff.damaged)}\n")
        for line in diff.damaged:
            out.write(f"  {line}\n")
    if diff.scores:
        out.write("score means per axis value (B − A):\n")
        shown = shorten_per_group(((d.axis, d.value) for d in diff.scores), 40)
        for delta in diff.scores:
            sign = "+" if delta.delta >= 0 else "-"
            out.write(f"  {delta.metric}  {delta.axis}={shown[delta.axis, delta.value]}  "
                      f"{readable_number(delta.mean_a)} → {readable_number(delta.mean_b)}  "
                      f"({sign}{readable_number(abs(delta.delta))})\n")
    out.write("runs differ\n" if diff.items_differ else "no item differs\n")


def _print_items(diff: RunDiff, out: TextIO) -> None:
    counts = {v: sum(1 for c in diff.items if c.verdict == v) for v in ("identical", "equivalent", "different")}
    out.write(f"items in both: {len(diff.items)} ({counts['identical']} identical, {counts['equivalent']} equal up "
              f"to batch rounding, {counts['different']} different); only in A: {len(diff.only_a)}; "
              f"only in B: {len(diff.only_b)}\n")
    for comparison in diff.items:
        if comparison.verdict != "identical":
            note = f"  ({comparison.note})" if comparison.note else ""
            out.write(f"  {comparison.verdict:<10} #{comparison.index_a} {short(comparison.item_id)}  mean |A−B| "
                      f"{comparison.mean_abs_diff:.4f} levels{note}\n")


def _params(record: ItemRecord, builder: str | None) -> str:
    shown = {k: record.params[k] for k in ("prompt", "seed", "guidance_scale", "num_inference_steps")
             if k in record.params}
    text = "  ".join(f"{k}={json.dumps(v, ensure_ascii=False)}" for k, v in shown.items())
    return f"builder={json.dumps(builder, ensure_ascii=False)}  {text}" if builder else text
