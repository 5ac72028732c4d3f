"""`diffsweep-runs verify`: regenerate saved items and compare them with what is on disk.

Images and video compare decoded pixels (MP4 on both sides, since the codec is lossy), audio its
samples, a video with sound both (its AAC track decoded on both sides too). An item regenerated in a
differently composed batch has the same noise and weights but batched kernels round differently, so
"equivalent" allows a few values one step apart; anything beyond that is a difference.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from diffsweep import hashing, media
from diffsweep.execution.cache import process_cache
from diffsweep.execution.pipelines import generate, pipeline_for
from diffsweep.planning.plan import Batch
from diffsweep.planning.prepare import prepare
from diffsweep.store.folder import RunFolder
from diffsweep.store.runconfig import read_run_config
from diffsweep.store.writer import encode

log = logging.getLogger("diffsweep")


VERDICTS = ("identical", "equivalent", "different")  # from best to worst


def compare_all(fresh: list[np.ndarray], saved: list[np.ndarray]) -> str:
    """The worst verdict over an output's streams (video and its sound)."""
    return max((compare(a, b) for a, b in zip(fresh, saved, strict=True)), key=VERDICTS.index)


def compare(fresh: np.ndarray, saved: np.ndarray) -> str:
    """"identical", "equivalent" (rounding-level: ≤ 1 step on ≤ 1% of values) or "different"."""
    if fresh.shape != saved.shape:
        return "different"
    diff = np.abs(fresh.astype(np.int32) - saved.astype(np.int32))
    if not diff.any():
        return "identical"
    return "equivalent" if diff.max() <= 1 and (diff > 0).mean() <= 0.01 else "different"


def verify_run(run_dir: Path, limit: int | None = None) -> list[int]:
    """Regenerate the run's ok items (the first `limit` by index) and return mismatching indices."""
    run = RunFolder(run_dir)
    plan = prepare(read_run_config(run.path), source_of=run.config_source, base_dir=run.path)
    saved = {item_id: r for item_id, r in run.items().items() if r.ok}
    wanted = sorted(saved.values(), key=lambda r: r.index)[:limit]
    wanted_ids = {r.item_id for r in wanted}
    mismatches: list[int] = []
    verdicts = {"identical": 0, "equivalent": 0, "different": 0}
    cache = process_cache()
    for batch in plan.batches(skip=set(saved) - wanted_ids):
        batch = Batch(batch.builder, [i for i in batch.items if i.item_id in wanted_ids])
        if not batch.items:
            continue
        outputs = generate(pipeline_for(batch.builder, cache, plan.device, plan.config.optimization).pipeline, batch)
        for item, generated in zip(batch.items, outputs, strict=True):
            path = run.path / saved[item.item_id].outputs[0]
            fresh = media.decode_streams(generated.kind, encode(generated, item, batch.builder, {}))
            saved_streams = media.decode_streams(generated.kind, path.read_bytes()) if path.is_file() else None
            verdict = compare_all(fresh, saved_streams) if saved_streams is not None else "different"
            verdicts[verdict] += 1
            if verdict == "different":
                mismatches.append(item.index)
                log.warning("item %d (%s) differs from %s", item.index, hashing.short(item.item_id), path.name)
    print(f"verified {sum(verdicts.values())} item(s): {verdicts['identical']} identical, "
          f"{verdicts['equivalent']} equivalent up to batch rounding, {verdicts['different']} different")
    return mismatches
