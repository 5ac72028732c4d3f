"""Records: what goes into run.json, the manifest and each item's sidecar, and writing items.

The writer runs on its own thread so the accelerator never waits on encoding or disk; it writes
an item's files atomically, then its sidecar, and only then its manifest line.
"""

from __future__ import annotations

import logging
import platform
import queue
import threading
import traceback
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

from diffsweep import __version__, hashing, media
from diffsweep.plan import BuilderPlan, Item
from diffsweep.providers.base import Generated
from diffsweep.rundir import RunFolder, write_atomic, write_json

log = logging.getLogger(__name__)

SCHEMA_VERSION = 1


def now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds")


def software_versions() -> dict[str, Any]:
    """Library and hardware versions that decide whether a rerun can reproduce bytes."""
    import diffusers
    import torch
    import transformers

    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    return {"python": platform.python_version(), "torch": torch.__version__, "diffusers": diffusers.__version__,
            "transformers": transformers.__version__, "diffsweep": __version__,
            "cuda": torch.version.cuda, "gpu": gpu, "platform": platform.platform()}


def item_stem(item: Item, width: int) -> str:
    """`<zero-padded grid index>-<short item id>`: sorts in grid order, unique per item."""
    return f"{item.index:0{width}d}-{hashing.short(item.item_id)}"


def manifest_record(item: Item, status: str, outputs: list[str], seconds: float,
                    error: str | None = None) -> dict[str, Any]:
    record = {"index": item.index, "item_id": item.item_id, "builder_hash": item.builder_hash, "status": status,
              "params": item.params, "seed": item.seed, "outputs": outputs, "seconds": round(seconds, 4)}
    if error is not None:
        record["error"] = error
    return record


def sidecar_record(record: Mapping[str, Any], builder: BuilderPlan, run_ref: Mapping[str, Any],
                   scheduler: str | None = None) -> dict[str, Any]:
    """The item record plus everything needed to rebuild it: builder identity, scheduler and generator."""
    return {"schema_version": SCHEMA_VERSION, **record,
            "builder": {"hash": builder.hash, "identity": builder.identity, "config": builder.config},
            "scheduler": scheduler, "generator": {"device": "cpu", "seed": record["seed"]},
            "run": dict(run_ref), "created": now()}


@dataclass
class WriteJob:
    item: Item
    builder: BuilderPlan
    generated: Generated | None
    seconds: float
    error: str | None = None
    scheduler: str | None = None  # the scheduler class that sampled it (the model's own or a swapped one)


class ItemWriter:
    """Background writer: encodes outputs and commits items in the order they arrive."""

    def __init__(self, run: RunFolder, index_width: int, run_ref: Mapping[str, Any],
                 on_done: Callable[[dict[str, Any]], None], depth: int = 64):
        self.run = run
        self.index_width = index_width
        self.run_ref = dict(run_ref)
        self.on_done = on_done
        self.queue: queue.Queue[WriteJob | None] = queue.Queue(maxsize=depth)
        self.failure: BaseException | None = None
        self.thread = threading.Thread(target=self._work, name="diffsweep-writer", daemon=True)
        self.thread.start()

    def submit(self, job: WriteJob) -> None:
        if self.failure is not None:
            raise RuntimeError("the item writer stopped") from self.failure
        self.queue.put(job)

    def close(self) -> None:
        """Wait until every submitted item is committed."""
        self.queue.put(None)
        self.thread.join()
        if self.failure is not None:
            raise RuntimeError(f"the item writer failed: {self.failure}") from self.failure

    def _work(self) -> None:
        while (job := self.queue.get()) is not None:
            try:
                self.on_done(self.commit(job))
            except BaseException as error:  # noqa: BLE001 - surfaced by close()/submit()
                log.error("writing item %d failed: %s", job.item.index, traceback.format_exc())
                self.failure = error
                return

    def commit(self, job: WriteJob) -> dict[str, Any]:
        item, stem = job.item, item_stem(job.item, self.index_width)
        outputs = [] if job.generated is None else [f"items/{stem}{media.EXTENSIONS[job.generated.kind]}"]
        record = manifest_record(item, "failed" if job.generated is None else "ok", outputs, job.seconds, job.error)
        sidecar = sidecar_record(record, job.builder, self.run_ref, job.scheduler)
        if job.generated is not None:
            write_atomic(self.run.path / outputs[0], encode(job.generated, item, job.builder, sidecar))
        write_json(self.run.path / f"items/{stem}.json", sidecar)
        self.run.append_manifest(record)  # last: the line is the commit
        return record


def encode(generated: Generated, item: Item, builder: BuilderPlan, sidecar: Mapping[str, Any]) -> bytes:
    if generated.kind == "image":
        parameters = media.a1111_parameters(item.params, builder.config, builder.hash, sidecar.get("scheduler"))
        return media.encode_png(generated, parameters, sidecar)
    if generated.kind == "video":
        return media.encode_mp4(generated.array, fps=int(item.params.get("fps", 16)))
    return media.encode_wav(generated.array, generated.sample_rate or 16000)


class Stopwatch:
    """Load, first-call and steady-state timings for run.json."""

    def __init__(self) -> None:
        self.load_seconds = 0.0
        self.first_call_seconds: float | None = None
        self.steady_items = 0
        self.steady_seconds = 0.0

    def call(self, seconds: float, items: int) -> None:
        if self.first_call_seconds is None:
            self.first_call_seconds = seconds
        else:
            self.steady_items += items
            self.steady_seconds += seconds

    def as_dict(self, peak_memory: int | None) -> dict[str, Any]:
        steady = self.steady_items / self.steady_seconds if self.steady_seconds > 0 else None
        return {"load_seconds": round(self.load_seconds, 4),
                "first_call_seconds": None if self.first_call_seconds is None else round(self.first_call_seconds, 4),
                "steady_items_per_second": None if steady is None else round(steady, 3),
                "peak_memory_bytes": peak_memory}

