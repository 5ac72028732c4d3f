"""`diffsweep-runs verify`: regenerate saved items and compare them with what is on disk.

Images and video compare decoded pixels (MP4 on both sides, since the codec is lossy), audio its
samples, a video with sound both (its AAC track decoded on both sides too). An item regenerated in a
differently composed batch has the same noise and weights but batched kernels round differently, so
"equivalent" allows a few values one step apart; anything beyond that is a difference.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from diffsweep import hashing, media
from diffsweep.execution.cache import process_cache
from diffsweep.execution.core import parent_inputs
from diffsweep.execution.pipelines import generate, pipeline_for
from diffsweep.planning.plan import Batch
from diffsweep.planning.prepare import prepare
from diffsweep.run.attempts import check_config_unchanged, trusted_config
from diffsweep.run.sources import check_sources_unchanged, source_reader
from diffsweep.store.folder import RunFolder
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


@dataclass
class Verification:
    """What verify found: verdicts of the items it regenerated, and items whose saved output is not as committed."""

    verdicts: dict[str, int] = field(default_factory=lambda: dict.fromkeys(VERDICTS, 0))
    different: list[int] = field(default_factory=list)
    damaged: list[tuple[int, str, str]] = field(default_factory=list)  # (index, item id, what is wrong)

    @property
    def checked(self) -> int:
        return sum(self.verdicts.values()) + len(self.damaged)

    @property
    def passed(self) -> bool:
        """Every item checked is as saved, and some item was checked."""
        return self.checked > 0 and not self.different and not self.damaged


def _compare_latents(fresh: Any, saved: Path) -> str:
    """A chain's undecoded latents against those saved: equal, equal up to float rounding in batched kernels, or
    different."""
    import torch  # noqa: PLC0415 - start-up time, as above
    from safetensors.torch import load_file  # noqa: PLC0415 - start-up time: only a chain's latents need it

    kept = load_file(str(saved))["latents"]
    if torch.equal(kept, fresh.to(kept.dtype)):
        return "identical"
    return "equivalent" if torch.allclose(kept, fresh.to(kept.dtype), atol=1e-4, rtol=1e-4) else "different"


def verify_run(run_dir: Path, limit: int | None = None, trust: bool = False) -> Verification:
    """Regenerate the run's ok items (the first `limit` by index) and compare them with their saved outputs. An
    output that is missing, cut or altered since it was committed is named, not regenerated; a config.yaml edited
    since the run started is refused; verify that finds nothing to check does not pass."""
    run = RunFolder(run_dir)
    info = run.check_is_run()
    doc, _ = trusted_config(run, trust)
    check_config_unchanged(run, info)
    plan = prepare(doc, source_of=run.config_source, base_dir=run.path, read_source=source_reader(run.path))
    check_sources_unchanged(plan, info, run.config_source)
    saved = {item_id: r for item_id, r in run.items().items() if r.ok and plan.is_planned(r.index, r.item_id)}
    wanted = sorted(saved.values(), key=lambda r: r.index)[:limit]
    found = Verification()
    for record in wanted:
        problem = run.damage(record)
        if problem is not None:
            found.damaged.append((record.index, record.item_id, problem))
            log.error("item %d (%s): %s", record.index, record.item_id, problem)
    wanted_ids = {r.item_id for r in wanted} - {item_id for _, item_id, _ in found.damaged}
    cache = process_cache()
    for batch in plan.batches(skip=set(saved) - wanted_ids):
        batch = Batch(batch.builder, [i for i in batch.items if i.item_id in wanted_ids])
        if not batch.items:
            continue
        inputs = parent_inputs(plan, run.path, batch)  # a chain's later stage: from its parent as saved
        if inputs is None:
            continue
        outputs = generate(pipeline_for(batch.builder, cache, plan.device, plan.config.optimization).pipeline, batch,
                           inputs=inputs)
        for item, generated in zip(batch.items, outputs, strict=True):
            if generated.kind == "latents":
                verdict = _compare_latents(generated.array, run.path / saved[item.item_id].outputs[-1])
                path = run.path / saved[item.item_id].outputs[-1]
            else:
                path = run.path / saved[item.item_id].outputs[0]
                fresh = media.decode_streams(generated.kind, encode(generated, item, batch.builder, {}))
                verdict = compare_all(fresh, media.decode_streams(generated.kind, path.read_bytes()))
            found.verdicts[verdict] += 1
            if verdict == "different":
                found.different.append(item.index)
                log.warning("item %d (%s) differs from %s", item.index, hashing.short(item.item_id), path.name)
    verdicts = found.verdicts
    print(f"verified {sum(verdicts.values())} item(s): {verdicts['identical']} identical, "
          f"{verdicts['equivalent']} equivalent up to batch rounding, {verdicts['different']} different"
          + (f"; {len(found.damaged)} saved output(s) missing or altered" if found.damaged else ""))
    if not found.checked:
        print("nothing to verify: the run has no item made ok" + (" in the first --items" if limit else ""))
    return found
