"""Out-of-memory fallback (injected) and optimization presets recorded in run.json."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import assert_batch_equivalent, compose_config, read_manifest, read_run_json
from diffsweep import devices
from diffsweep.execution import core
from diffsweep.execution.cache import PipelineCache
from diffsweep.planning.plan import Batch
from diffsweep.run.local import run_sweep

ARGS = ["sweep.params.num_inference_steps=2", "sweep.grid.seed=[0,1,2,3]", "sweep.grid.prompt=[a fox]"]


def _pixels(run_dir: Path) -> dict[str, np.ndarray]:
    return {r["item_id"]: np.asarray(Image.open(run_dir / r["outputs"][0])) for r in read_manifest(run_dir)}


def _oom_above(limit: int, monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Make every pipeline call with more than `limit` items run out of memory; returns call sizes."""
    real, sizes = core.generate, []

    def generate(pipe: Any, batch: Batch, *args: Any, **kwargs: Any) -> Any:
        sizes.append(len(batch.items))
        if len(batch.items) > limit:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return real(pipe, batch, *args, **kwargs)

    monkeypatch.setattr(core, "generate", generate)
    return sizes


def test_out_of_memory_splits_the_batch_and_outputs_stay_identical(tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    clean = run_sweep(compose_config(ARGS, tmp_path / "clean"), out=io.StringIO()).run_dir
    sizes = _oom_above(1, monkeypatch)
    result = run_sweep(compose_config(ARGS, tmp_path / "oom"), out=io.StringIO())
    assert result.status == "complete" and result.exit_code == 0
    assert sizes == [4, 2, 1, 1, 2, 1, 1]  # halves, down to one item
    events = read_run_json(result.run_dir)["attempts"][-1]["oom_events"]
    assert [e["action"] for e in events] == ["split", "split", "split"]
    clean_pixels, split_pixels = _pixels(clean), _pixels(result.run_dir)
    assert clean_pixels.keys() == split_pixels.keys()
    for key, image in clean_pixels.items():
        assert_batch_equivalent(image, split_pixels[key])


def test_out_of_memory_for_one_item_fails_only_those_items(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _oom_above(0, monkeypatch)
    result = run_sweep(compose_config(ARGS, tmp_path / "oom"), out=io.StringIO())
    assert result.status == "failed" and result.exit_code == 1
    records = read_manifest(result.run_dir)
    assert len(records) == 4 and all(r["status"] == "failed" for r in records)
    assert all("OutOfMemoryError" in r["error"] for r in records)
    assert read_run_json(result.run_dir)["attempts"][-1]["oom_events"][-1]["action"] == "failed"


def test_oom_fallback_can_be_turned_off(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    sizes = _oom_above(1, monkeypatch)
    result = run_sweep(compose_config([*ARGS, "optimization.oom_fallback=false"], tmp_path / "r"), out=io.StringIO())
    assert sizes == [4] and result.counts["failed"] == 4


def test_presets_record_what_they_applied_and_lossy_ones_change_identity(tmp_path: Path) -> None:
    cache = PipelineCache()
    runs = {name: run_sweep(compose_config([*ARGS, f"optimization={name}"], tmp_path / name), out=io.StringIO(),
                            cache=cache).run_dir for name in ("none", "low_vram", "fp8_storage")}
    applied = {name: {a["option"]: a for a in read_run_json(d)["builders"][0]["optimization"]}
               for name, d in runs.items()}
    assert applied["none"] == {}
    assert applied["low_vram"]["offload"]["status"] == "skipped"  # no accelerator here
    assert applied["low_vram"]["vae_slicing"]["status"] == "applied"
    assert applied["fp8_storage"]["layerwise_casting"]["status"] == "applied"
    hashes = {name: read_run_json(d)["builders"][0]["hash"] for name, d in runs.items()}
    assert len(set(hashes.values())) == 3  # tiling (low_vram) and fp8 storage change pixels: new identities
    assert cache.stats.loads == 3  # different optimizations never share a loaded pipeline


def test_model_offload_after_oom_is_recorded_and_does_not_stay_on_the_cached_pipeline(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """One item needs the offload fallback: run.json names it, and later batches and later runs in the
    process get the pipeline as configured, not the offloaded one the cache used to keep."""
    # A CPU has no accelerator to offload from: the offload itself is marked on the pipeline; choosing
    # it, recording it and what the cache keeps afterwards are the real code path.
    monkeypatch.setattr(devices, "can_offload", lambda device: True)
    monkeypatch.setattr(core, "offload_model", lambda pipe, device: setattr(pipe, "offloaded_for_test", True))
    real, used = core.generate, []

    def generate(pipe: Any, batch: Batch, *args: Any, **kwargs: Any) -> Any:
        offloaded = getattr(pipe, "offloaded_for_test", False)
        used.append((batch.items[0].seed, offloaded))
        if batch.items[0].seed == 1 and not offloaded:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return real(pipe, batch, *args, **kwargs)

    monkeypatch.setattr(core, "generate", generate)
    cache = PipelineCache()
    result = run_sweep(compose_config([*ARGS, "sweep.batch_size=1"], tmp_path / "a"), out=io.StringIO(), cache=cache)
    assert result.status == "complete"
    assert used == [(0, False), (1, False), (1, True), (2, False), (3, False)]
    index = next(r["index"] for r in read_manifest(result.run_dir) if r["seed"] == 1)
    info = read_run_json(result.run_dir)
    assert info["builders"][0]["oom_offload_items"] == [index]
    assert [e["action"] for e in info["attempts"][-1]["oom_events"]] == ["offload"]
    assert cache.stats.loads == 2  # the offloaded pipeline was dropped and loaded again as configured
    used.clear()
    again = run_sweep(compose_config([*ARGS, "sweep.batch_size=1", "sweep.grid.seed=[0,2]"], tmp_path / "b"),
                      out=io.StringIO(), cache=cache)
    assert used == [(0, False), (2, False)]
    assert "oom_offload_items" not in read_run_json(again.run_dir)["builders"][0]
