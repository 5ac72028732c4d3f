"""The pipeline cache (LRU within a memory budget) and device/dtype selection."""

from __future__ import annotations

import gc
import subprocess
import sys
import weakref

import pytest
import torch

from diffsweep.devices import pipeline_nbytes, resolve_device, resolve_dtype
from diffsweep.errors import DiffsweepError
from diffsweep.execution.cache import PipelineCache
from diffsweep.providers import get

pytestmark = pytest.mark.quick  # unit tests: part of make test-fast

CPU = torch.device("cpu")
SD = get("stable_diffusion")


def _loader(tiny: str):
    return lambda: SD.load({"model": f"tiny:{tiny}", "pipeline": "StableDiffusionPipeline"}, torch.float32)


def test_cache_keeps_several_pipelines_and_evicts_least_recently_used_within_budget() -> None:
    one = pipeline_nbytes(_loader("sd")())
    cache = PipelineCache(budget_bytes=int(one * 2.5))
    first, _, loaded = cache.get("sd", _loader("sd"), CPU)
    assert loaded
    cache.get("v2", _loader("sd_v2"), CPU)
    assert cache.get("sd", _loader("sd"), CPU)[0] is first  # hit: both fit, nothing reloaded
    assert cache.stats.loads == 2 and cache.stats.hits == 1

    released = weakref.ref(cache.entries["v2"].pipeline)
    cache.get("sdxl-sized", _loader("sd"), CPU)  # a third does not fit: the least recently used goes
    gc.collect()
    assert "v2" not in cache and "sd" in cache and "sdxl-sized" in cache
    assert released() is None, "an evicted pipeline must be freed, not kept alive by the cache"
    assert cache.stats.evictions == 1


def test_device_auto_prefers_cuda_then_mps_then_cpu_and_missing_accelerators_are_clear_errors() -> None:
    expected = "cuda" if torch.cuda.is_available() else "mps" if torch.backends.mps.is_available() else "cpu"
    assert resolve_device("auto").type == expected
    missing = f"cuda:{torch.cuda.device_count()}"  # one past the last device: cuda:0 where there is none
    with pytest.raises(DiffsweepError, match="CUDA is not available|CUDA device"):
        resolve_device(missing)


def test_default_dtype_per_device() -> None:
    assert resolve_dtype("auto", CPU) == "float32"
    assert resolve_dtype("bfloat16", CPU) == "bfloat16"


def test_what_exists_before_the_first_load_is_frozen_once_and_pipelines_never_are(tmp_path) -> None:
    """Full collections skip the libraries and the plan, which live as long as the process; an evicted pipeline,
    even one held in a reference cycle (as hooks and adapters make), is still collected. In a fresh process, since
    the freeze happens once a process."""
    script = """
import gc, weakref, torch
from diffsweep.execution.cache import PipelineCache
from diffsweep.providers import get
SD = get("stable_diffusion")
load = lambda: SD.load({"model": "tiny:sd", "pipeline": "StableDiffusionPipeline"}, torch.float32)
assert gc.get_freeze_count() == 0
cache = PipelineCache()
pipe, _, _ = cache.get("a", load, torch.device("cpu"))
frozen = gc.get_freeze_count()
assert frozen > 100_000, frozen  # torch and diffusers: far more than the pipeline itself
pipe.cycle = pipe  # garbage only the cyclic collector can free
released = weakref.ref(pipe)
del pipe
cache.get("b", load, torch.device("cpu"))
assert gc.get_freeze_count() == frozen, "frozen once, before the first load only"
cache.evict("a", torch.device("cpu"))
assert released() is None, "an evicted pipeline must be collectable"
print("ok")
"""
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0 and done.stdout.strip().endswith("ok"), done.stderr[-3000:]
