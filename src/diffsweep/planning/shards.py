"""A plan cut into shards of whole batches, for one sweep on many processes: each shard is a run of the plan's
batches in plan order, and a builder's items stay together where they can."""

from __future__ import annotations

import bisect
import itertools
from collections.abc import Iterable, Iterator

from diffsweep.planning.plan import Batch, Plan
from diffsweep.store.records import ShardLayout


def cut_shards(plan: Plan, count: int) -> ShardLayout:
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
    ranges = list(zip(cuts[:-1], cuts[1:], strict=True))
    return ShardLayout.of(ranges, [before[stop] - before[first] for first, stop in ranges],
                          [list(dict.fromkeys(owners[first:stop])) for first, stop in ranges])


def shard_batches(plan: Plan, layout: ShardLayout, shard: int, skip: Iterable[str] = ()) -> Iterator[Batch]:
    """The shard's batches as a one-process run makes them, less the items in `skip`."""
    first, stop = layout.shards[shard].first_batch, layout.shards[shard].stop_batch
    skip = set(skip)
    for ordinal, batch in enumerate(plan.batches()):
        if ordinal >= stop:
            return
        if ordinal >= first:
            items = [item for item in batch.items if item.item_id not in skip]
            if items:
                yield Batch(batch.builder, items)
