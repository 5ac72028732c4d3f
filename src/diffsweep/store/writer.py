"""Writing items: their output files, sidecars and manifest lines, and the software versions.

The writer runs on its own thread so the accelerator never waits on encoding or disk; it writes
an item's files atomically, then its sidecar, and only then its manifest line. Output files embed
only what a rerun reproduces (no timestamps or durations), so a rerun of a deterministic pipeline
writes the same bytes; the sidecar carries the volatile rest.
"""

from __future__ import annotations

import hashlib
import json
import logging
import platform
import queue
import threading
import traceback
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from diffsweep import __version__, control, hashing, media
from diffsweep.inputs import named_paths
from diffsweep.media import Generated
from diffsweep.planning.plan import BuilderPlan, Item
from diffsweep.planning.stages import LATENTS_EXTENSION
from diffsweep.store.atomic import write_atomic, write_json
from diffsweep.store.folder import RunFolder
from diffsweep.store.records import FileCheck, ItemRecord, Made, PreparedControl, Sidecar, Truncation, now

log = logging.getLogger(__name__)

VOLATILE_FIELDS = ("seconds", "created", "run", "reused_from")  # differ between reruns that make the same pixels
LATENTS = "latents"  # the kind of a chain's intermediate output that a later stage takes undecoded


def software_versions() -> dict[str, Any]:
    """Library and hardware versions that decide whether a rerun can reproduce bytes."""
    import diffusers  # noqa: PLC0415 - start-up time: torch and diffusers load only with a pipeline
    import torch  # noqa: PLC0415 - start-up time: torch and diffusers load only with a pipeline
    import transformers  # noqa: PLC0415 - start-up time: torch and diffusers load only with a pipeline

    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    return {"python": platform.python_version(), "torch": torch.__version__, "diffusers": diffusers.__version__,
            "transformers": transformers.__version__, "diffsweep": __version__,
            "cuda": torch.version.cuda, "gpu": gpu, "platform": platform.platform()}


def item_stem(item: Item, width: int) -> str:
    """`<zero-padded grid index>-<short item id>`: sorts in grid order, unique per item."""
    return f"{item.index:0{width}d}-{hashing.short(item.item_id)}"


def item_record(item: Item, status: str, outputs: list[str], seconds: float, error: str | None = None,
                made: Mapping[str, int | float] | None = None, prompt_truncated: Mapping[str, Any] | None = None,
                control_prepared: list[dict[str, Any]] | None = None, reused_from: str | None = None) -> ItemRecord:
    return ItemRecord.model_validate({
        "index": item.index, "item_id": item.item_id, "builder_hash": item.builder_hash, "status": status,
        "params": item.params, "seed": item.seed, "outputs": outputs, "seconds": seconds, "error": error,
        "stage": item.stage, "parent": item.parent,
        "made": Made.model_validate(made) if made is not None else None,
        "prompt_truncated": {key: {slot: Truncation.model_validate(cut) for slot, cut in by_slot.items()}
                             for key, by_slot in prompt_truncated.items()} if prompt_truncated else None,
        "control_prepared": [PreparedControl.model_validate(p) for p in control_prepared] if control_prepared else None,
        "reused_from": reused_from})


def prepared_controls(params: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The records of an item's prepared control images (none when its control images are used as given)."""
    if not control.active(params):
        return []
    return [control.record(path, params) for _, path in named_paths("control_image", params.get("control_image"))]


def measured(generated: Generated) -> dict[str, int | float]:
    """What an output holds, read off the generated array: the truth where a pipeline sized it from an input
    (img2img, edit) or from its own defaults rather than from a recorded parameter."""
    shape = generated.array.shape
    if generated.kind == LATENTS:  # what the latents decode to is not known here: the next stage's record says
        return {}
    if generated.kind == "image":
        return {"width": int(shape[1]), "height": int(shape[0])}
    if generated.kind == "video":
        return {"width": int(shape[2]), "height": int(shape[1]), "frames": int(shape[0])}
    if generated.kind == "video_audio":
        return {**measured(Generated("video", generated.array)), **_sound(generated.audio, generated.sample_rate)}
    return _sound(generated.array, generated.sample_rate)


def _sound(samples: Any, sample_rate: int | None) -> dict[str, int | float]:
    """Samples per channel, the rate and the length in seconds (to the millisecond) of an audio output."""
    count, rate = int(samples.shape[-1]), int(sample_rate or media.DEFAULT_SAMPLE_RATE)
    return {"samples": count, "sample_rate": rate, "duration": round(count / rate, 3)}


def sidecar_record(record: ItemRecord, builder: BuilderPlan, run_ref: Mapping[str, Any],
                   scheduler: str | None = None) -> dict[str, Any]:
    """The item record plus everything needed to rebuild it: builder identity, scheduler and generator."""
    return Sidecar.of(record, builder.identity, builder.config, scheduler, dict(run_ref), now()).to_json()


def reproducible(sidecar: Mapping[str, Any]) -> dict[str, Any]:
    """The sidecar without what changes from one rerun to the next: what output files embed."""
    return {key: value for key, value in sidecar.items() if key not in VOLATILE_FIELDS}


@dataclass
class PendingItem:
    """An item the execution core hands to the writer: its output (None when it failed) and what to record."""

    item: Item
    builder: BuilderPlan
    generated: Generated | None
    seconds: float
    error: str | None = None
    scheduler: str | None = None  # the scheduler class that sampled it (the model's own or a swapped one)
    prompt_truncated: Mapping[str, Any] | None = None  # what a text encoder cut (diffsweep.truncation)
    preview: Any = None  # latents: their cheap RGB projection (uint8 H,W,3), written beside them
    reused_from: str | None = None  # reuse: the earlier run whose output this is (diffsweep.run.reuse)


class ItemWriter:
    """Background writer: encodes outputs and commits items in the order they arrive."""

    def __init__(self, run: RunFolder, index_width: int, run_ref: Mapping[str, Any],
                 on_done: Callable[[ItemRecord], None], depth: int = 64, manifest: Path | None = None):
        self.run = run
        self.manifest = manifest  # a worker of a distributed run commits to its shard's manifest
        self.index_width = index_width
        self.run_ref = dict(run_ref)
        self.on_done = on_done
        self.queue: queue.Queue[PendingItem | threading.Event | None] = queue.Queue(maxsize=depth)
        self.failure: BaseException | None = None
        self.thread = threading.Thread(target=self._work, name="diffsweep-writer", daemon=True)
        self.thread.start()

    def submit(self, pending: PendingItem) -> None:
        if self.failure is not None:
            raise RuntimeError("the item writer stopped") from self.failure
        self.queue.put(pending)

    def flush(self) -> None:
        """Wait until every item submitted so far is committed (a later stage reads its parents' files)."""
        reached = threading.Event()
        self.queue.put(reached)
        while not reached.wait(0.05):
            if not self.thread.is_alive():
                raise RuntimeError(f"the item writer failed: {self.failure}") from self.failure

    def close(self, quiet: bool = False) -> None:
        """Wait until every submitted item is committed; a writer that failed raises, unless `quiet` (the attempt
        is ending on another failure, which is the one to report)."""
        self.queue.put(None)
        self.thread.join()
        if self.failure is not None and not quiet:
            raise RuntimeError(f"the item writer failed: {self.failure}") from self.failure

    def _work(self) -> None:
        while (pending := self.queue.get()) is not None:
            if isinstance(pending, threading.Event):
                pending.set()
                continue
            try:
                self.on_done(self.commit(pending))
            except BaseException as error:  # noqa: BLE001 - surfaced by close()/submit()
                log.error("writing item %d failed: %s", pending.item.index, traceback.format_exc())
                self.failure = error
                return

    def commit(self, pending: PendingItem) -> ItemRecord:
        """The item's output file, then its sidecar, then its manifest line (the commit). The output embeds the
        record as it stands before the file exists; the sidecar and the line add the file's size and SHA-256."""
        item, stem = pending.item, item_stem(pending.item, self.index_width)
        generated = pending.generated
        if generated is not None and generated.kind == LATENTS:  # a preview to look at, the latents to hand on
            outputs = [f"items/{stem}.png", f"items/{stem}{LATENTS_EXTENSION}"]
        else:
            outputs = [] if generated is None else [f"items/{stem}{media.EXTENSIONS[generated.kind]}"]
        made = None if generated is None else (measured(generated) or None)
        prepared = prepared_controls(item.params)
        for entry in prepared:  # one file per prepared image, shared by every item that uses it
            target = self.run.path / entry["path"]
            if not target.is_file():
                write_atomic(target, control.png(control.prepared(entry["source"], item.params)))
        record = item_record(item, "failed" if generated is None else "ok", outputs, pending.seconds, pending.error,
                             made, pending.prompt_truncated, prepared, pending.reused_from)
        if generated is not None:
            sidecar = sidecar_record(record, pending.builder, self.run_ref, pending.scheduler)
            if generated.kind == LATENTS:
                blobs = [encode(Generated("image", pending.preview), item, pending.builder, sidecar),
                         latents_bytes(generated.array, reproducible(sidecar))]
            else:
                blobs = [encode(generated, item, pending.builder, sidecar)]
            checks = {}
            for output, data in zip(outputs, blobs, strict=True):
                write_atomic(self.run.path / output, data)
                checks[output] = FileCheck(bytes=len(data), sha256=hashlib.sha256(data).hexdigest())
            record = record.model_copy(update={"files": checks})
        write_json(self.run.path / f"items/{stem}.json",
                   sidecar_record(record, pending.builder, self.run_ref, pending.scheduler))
        self.run.append_item(record, self.manifest)  # last: the line is the commit
        return record


def latents_bytes(latents: Any, record: Mapping[str, Any]) -> bytes:
    """An item's latents as safetensors (tensor `latents`, as the pipeline gave them, undecoded), with the item's
    reproducible record as metadata."""
    from safetensors.torch import save  # noqa: PLC0415 - start-up time: torch loads only with a pipeline

    return save({"latents": latents.detach().to("cpu").contiguous()},
                metadata={"diffsweep": json.dumps(record, sort_keys=True, ensure_ascii=False)})


def encode(generated: Generated, item: Item, builder: BuilderPlan, sidecar: Mapping[str, Any]) -> bytes:
    if generated.kind == "image":
        parameters = media.a1111_parameters(item.params, builder.config, builder.hash, sidecar.get("scheduler"),
                                            size=(generated.array.shape[1], generated.array.shape[0]))
        return media.encode_png(generated, parameters, reproducible(sidecar))
    if generated.kind == "video":
        return media.encode_mp4(generated.array, fps=int(item.params.get("fps", 16)))
    if generated.kind == "video_audio":
        return media.encode_mp4_with_audio(generated.array, int(item.params.get("fps", 16)), generated.audio,
                                           generated.sample_rate or media.DEFAULT_SAMPLE_RATE)
    return media.encode_wav(generated.array, generated.sample_rate or media.DEFAULT_SAMPLE_RATE)
