"""The pipeline cache: each builder is materialised at most once per process.

Several pipelines stay loaded; when a new one would not fit the memory budget, the least
recently used ones are released first (moved off the accelerator, dropped, memory returned).
The cache lives for the process, so Hydra multirun jobs in one process share it.
"""

from __future__ import annotations

import contextlib
import gc
import logging
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch

from diffsweep import devices, hashing
from diffsweep.devices import pipeline_nbytes

log = logging.getLogger(__name__)


@dataclass
class CacheCounters:
    """What the process cache has done since it was made (run.json counts per attempt: store.records.CacheStats)."""

    loads: int = 0
    hits: int = 0
    evictions: int = 0


@dataclass
class Entry:
    pipeline: Any
    nbytes: int
    load_seconds: float
    applied: list[Any] = field(default_factory=list)  # optimize.Applied records
    base_scheduler_config: Any = None  # the scheduler the weights came with, to swap from
    scheduler_key: str | None = None  # which scheduler is on the pipeline now


class PipelineCache:
    """LRU cache of loaded pipelines keyed by builder hash, bounded by a byte budget."""

    def __init__(self, budget_bytes: int | None = None):
        self.budget_bytes = budget_bytes
        self.entries: OrderedDict[str, Entry] = OrderedDict()
        self.stats = CacheCounters()

    def __contains__(self, key: str) -> bool:
        return key in self.entries

    def get(self, key: str, load: Callable[[], Any], device: torch.device,
            place: Callable[[Any], list[Any]] | None = None) -> tuple[Any, Entry, bool]:
        """(pipeline, entry, was_loaded) for `key`. On a miss `load()` materialises it on the CPU,
        older entries make room, and only then `place()` puts it on the device (returning what it
        applied), so eviction frees memory before the new weights arrive."""
        if key in self.entries:
            self.entries.move_to_end(key)
            self.stats.hits += 1
            return self.entries[key].pipeline, self.entries[key], False
        started = time.perf_counter()
        freeze_before_first_load()
        pipeline = load()
        nbytes = pipeline_nbytes(pipeline)
        self._make_room(nbytes, device)
        applied = place(pipeline) if place is not None else []
        entry = Entry(pipeline, nbytes, time.perf_counter() - started, applied)
        self.entries[key] = entry
        self.stats.loads += 1
        return pipeline, entry, True

    def _make_room(self, incoming: int, device: torch.device) -> None:
        while self.entries:
            held = sum(e.nbytes for e in self.entries.values())
            free = devices.free_memory_bytes(device)
            over_budget = self.budget_bytes is not None and held + incoming > self.budget_bytes
            short_on_device = free is not None and free < incoming
            if not (over_budget or short_on_device):
                return
            self.evict_oldest(device)

    def evict_oldest(self, device: torch.device) -> None:
        self.evict(next(iter(self.entries)), device)

    def evict(self, key: str, device: torch.device) -> None:
        """Drop one pipeline and give its memory back."""
        entry = self.entries.pop(key)
        log.info("releasing pipeline %s (%.1f MB) to make room", hashing.short(key), entry.nbytes / 2**20)
        with contextlib.suppress(Exception):  # offloaded pipelines may refuse .to(); dropping is enough
            entry.pipeline.to("cpu")
        del entry
        gc.collect()
        devices.empty_cache(device)
        self.stats.evictions += 1

    def clear(self, device: torch.device) -> None:
        while self.entries:
            self.evict_oldest(device)


_PROCESS_CACHE: PipelineCache | None = None
_FROZEN = False


def freeze_before_first_load() -> None:
    """Move what exists before the process's first pipeline (the libraries, the config, the plan) out of the cyclic
    collector's reach, once. Those objects live until the process ends, yet each full collection would walk all of
    them again: with torch and diffusers imported that is about 0.2 s, paid again whenever the run's own garbage
    triggers one. Pipelines are never frozen: they are loaded after this, so evicting one still frees its memory."""
    global _FROZEN
    if not _FROZEN:
        _FROZEN = True
        gc.freeze()


def process_cache() -> PipelineCache:
    """The cache shared by every run in this process (multirun jobs included)."""
    global _PROCESS_CACHE
    if _PROCESS_CACHE is None:
        _PROCESS_CACHE = PipelineCache()
    return _PROCESS_CACHE
