"""A plan cut into shards of whole batches, for one sweep on many processes: each shard is a run of the plan's
batches in plan order, and a builder's items stay together where they can.

A chain of stages is cut over its root batches (see StagedPlan.root_batches) instead: a shard holds a run of them
and every descendant of their items, so a parent and its children are made by one worker. A job array has no
barrier between one stage and the next, and so no worker ever waits for another's output.
"""

from __future__ import annotations

import bisect
import itertools
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

from diffsweep.planning.plan import Batch, Plan
from diffsweep.planning.stages import StagedPlan


class BatchRange(Protocol):
    """A run of the plan's batches (of a chain: of its root batches): `first_batch` up to (not including)
    `stop_batch`."""

    @property
    def first_batch(self) -> int: ...

    @property
    def stop_batch(self) -> int: ...


@dataclass(frozen=True)
class Shard:
    """One shard of a plan: its batches, how many items they hold, and the builders they load; of a chain, the
    items of each stage it holds."""

    first_batch: int
    stop_batch: int
    planned: int
    builders: tuple[str, ...]
    stages: Mapping[str, int] | None = None


@dataclass(frozen=True)
class _Unit:
    """What a cut never splits: a batch, or of a chain a root batch with every descendant of its items."""

    items: int
    builder: str  # its (root) batch's builder: a cut moves to where this changes
    builders: tuple[str, ...]  # every builder its items load, in order
    stages: Counter[str]  # its items per stage (empty without stages)


def _units(plan: Plan) -> list[_Unit]:
    if not isinstance(plan, StagedPlan):
        return [_Unit(len(batch.items), batch.builder.hash, (batch.builder.hash,), Counter())
                for batch in plan.batches()]
    units = []
    for batch, descendants in plan.families():
        family = [*batch.items, *descendants]
        units.append(_Unit(len(family), batch.builder.hash, tuple(dict.fromkeys(i.builder_hash for i in family)),
                           Counter(item.stage or plan.first_stage for item in family)))
    return units


def cut_shards(plan: Plan, count: int) -> list[Shard]:
    """Cut the plan's batches (of a chain: its root batches, each weighing as many items as it and its descendants
    hold), in plan order, into `count` runs with about equal items; a cut moves to the nearest change of builder
    within half a shard, so each worker loads as few builders as it can (two builders on two workers: one each)."""
    units = _units(plan)
    before = list(itertools.accumulate((unit.items for unit in units), initial=0))  # items before unit j
    cuts = _cuts(before, [unit.builder for unit in units], count)
    stage_names = plan.stage_names() if isinstance(plan, StagedPlan) else None
    return [_shard(units[first:stop], first, stop, stage_names) for first, stop in zip(cuts[:-1], cuts[1:], strict=True)]


def _cuts(before: Sequence[int], owners: Sequence[str], count: int) -> list[int]:
    """The `count + 1` unit positions where shards begin and end, from the items before each unit."""
    total, units = before[-1], len(owners)
    builder_changes = [j for j in range(1, units) if owners[j] != owners[j - 1]]
    cuts = [0]
    for k in range(1, count):
        target = total * k / count
        j = bisect.bisect_left(before, target, lo=cuts[-1])
        candidates = [c for c in (j - 1, j) if cuts[-1] <= c <= units]
        best = min(candidates, key=lambda c: abs(before[c] - target)) if candidates else cuts[-1]
        near = [c for c in builder_changes if c >= cuts[-1] and abs(before[c] - target) <= total / count / 2]
        if near:
            best = min(near, key=lambda c: abs(before[c] - target))
        cuts.append(max(best, cuts[-1]))
    cuts.append(units)
    return cuts


def _shard(units: Sequence[_Unit], first: int, stop: int, stage_names: Sequence[str] | None) -> Shard:
    builders = tuple(dict.fromkeys(h for unit in units for h in unit.builders))
    stages = None if stage_names is None else {name: sum(unit.stages[name] for unit in units) for name in stage_names}
    return Shard(first, stop, sum(unit.items for unit in units), builders, stages)


def shard_batches(plan: Plan, shard: BatchRange, skip: Iterable[str] = ()) -> Iterator[Batch]:
    """The shard's batches as a one-process run makes them, less the items in `skip`."""
    first, stop = shard.first_batch, shard.stop_batch
    skip = set(skip)
    if isinstance(plan, StagedPlan):
        yield from plan.family_batches(first, stop, skip)
        return
    for ordinal, batch in enumerate(plan.batches()):
        if ordinal >= stop:
            return
        if ordinal >= first:
            items = [item for item in batch.items if item.item_id not in skip]
            if items:
                yield Batch(batch.builder, items)
