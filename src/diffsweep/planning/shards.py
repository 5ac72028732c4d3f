"""A plan cut into shards of whole batches, for one sweep on many processes: each shard is a run of the plan's
batches in plan order, and a builder's items stay together where they can."""

from __future__ import annotations

import bisect
import itertools
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Protocol

from diffsweep.planning.plan import Batch, Plan


class BatchRange(Protocol):
    """A run of the plan's batches: `first_batch` up to (not including) `stop_batch`."""

    @property
    def first_batch(self) -> int: ...

    @property
    def stop_batch(self) -> int: ...


@dataclass(frozen=True)
class Shard:
    """One shard of a plan: its batches, how many items they hold, and the builders they load."""

    first_batch: int
    stop_batch: int
    planned: int
    builders: tuple[str, ...]


def cut_shards(plan: Plan, count: int) -> list[Shard]:
    """Cut the plan's batches, in plan order, into `count` runs of whole batches with about equal items; a cut
    moves to the nearest change of builder within half a shard, so each worker loads as few builders as it can
    (two builders on two workers: one each)."""
    sizes: list[int] = []
    owners: list[str] = []
    for batch in plan.batches():
        sizes.append(len(batch.items))
        owners.append(batch.builder.hash)
    before = list(itertools.accumulate(sizes, initial=0))  # items before batch j
    total, batches = before[-1], len(sizes)
    builder_changes = [j for j in range(1, batches) if owners[j] != owners[j - 1]]
    cuts = [0]
    for k in range(1, count):
        target = total * k / count
        j = bisect.bisect_left(before, target, lo=cuts[-1])
        candidates = [c for c in (j - 1, j) if cuts[-1] <= c <= batches]
        best = min(candidates, key=lambda c: abs(before[c] - target)) if candidates else cuts[-1]
        near = [c for c in builder_changes if c >= cuts[-1] and abs(before[c] - target) <= total / count / 2]
        if near:
            best = min(near, key=lambda c: abs(before[c] - target))
        cuts.append(max(best, cuts[-1]))
    cuts.append(batches)
    return [Shard(first, stop, before[stop] - before[first], tuple(dict.fromkeys(owners[first:stop])))
            for first, stop in zip(cuts[:-1], cuts[1:], strict=True)]


def shard_batches(plan: Plan, shard: BatchRange, skip: Iterable[str] = ()) -> Iterator[Batch]:
    """The shard's batches as a one-process run makes them, less the items in `skip`."""
    first, stop = shard.first_batch, shard.stop_batch
    skip = set(skip)
    for ordinal, batch in enumerate(plan.batches()):
        if ordinal >= stop:
            return
        if ordinal >= first:
            items = [item for item in batch.items if item.item_id not in skip]
            if items:
                yield Batch(batch.builder, items)
