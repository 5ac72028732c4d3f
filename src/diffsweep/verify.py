"""`diffsweep-runs verify`: regenerate saved items and compare them with what is on disk.

Images compare decoded pixels exactly, audio compares encoded bytes, video compares decoded
frames (the codec is lossy, so both sides are decoded from MP4 before comparing).
"""

from __future__ import annotations

import io
import logging
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from diffsweep import media
from diffsweep.cache import process_cache
from diffsweep.plan import Batch
from diffsweep.record import encode
from diffsweep.rundir import RunFolder
from diffsweep.runner import generate, pipeline_for, prepare
from diffsweep.savedconfig import load_run_config

log = logging.getLogger("diffsweep")


def _decoded(kind: str, data: bytes) -> Any:
    if kind == "image":
        with Image.open(io.BytesIO(data)) as image:
            return np.asarray(image.convert("RGB"))
    if kind == "video":
        return media.decode_mp4(data)
    return data


def verify_run(run_dir: Path, limit: int | None = None) -> list[int]:
    """Regenerate the run's ok items (the first `limit` by index) and return mismatching indices."""
    run = RunFolder(run_dir)
    doc, plan = prepare(load_run_config(run.path), source_of=lambda _: str(run.path / "config.yaml"), base_dir=run.path)
    saved = {r["item_id"]: r for r in run.read_manifest() if r.get("status") == "ok"}
    wanted = sorted(saved.values(), key=lambda r: r["index"])[:limit]
    wanted_ids = {r["item_id"] for r in wanted}
    mismatches: list[int] = []
    checked = 0
    cache = process_cache()
    for batch in plan.batches(skip=set(saved) - wanted_ids):
        batch = Batch(batch.builder, [i for i in batch.items if i.item_id in wanted_ids])
        if not batch.items:
            continue
        outputs = generate(pipeline_for(batch.builder, cache, plan.device), batch)
        for item, generated in zip(batch.items, outputs, strict=True):
            path = run.path / saved[item.item_id]["outputs"][0]
            fresh = encode(generated, item, batch.builder, {})
            same = path.is_file() and np.array_equal(_decoded(generated.kind, fresh),
                                                      _decoded(generated.kind, path.read_bytes()))
            checked += 1
            if not same:
                mismatches.append(item.index)
                log.warning("item %d (%s) differs from %s", item.index, item.item_id[:12], path.name)
    print(f"verified {checked} item(s): {checked - len(mismatches)} identical, {len(mismatches)} different")
    return mismatches
