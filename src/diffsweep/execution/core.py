"""The execution core: one attempt at running a set of batches into a run folder.

It is the one attempt loop. A single process, a rank of a torchrun / accelerate launch and a task of a job array
are its three callers: each chooses its batches (the whole plan, or a shard) and the record it fills in (an
`Attempt` of run.json, or a shard's `Worker`), and each finishes its own records afterwards. Here, and only here:
SIGTERM turned into an orderly interrupt, the progress bar, the out-of-memory policy, the pipeline cache and
scheduler swapping (through `diffsweep.execution.pipelines`), the writer thread that commits items, and the
attempt record's counts, loads, timings and peak memory.
"""

from __future__ import annotations

import io
import logging
import signal
import sys
import threading
import time
import traceback
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from PIL import Image
from tqdm import tqdm

from diffsweep import devices, quantize
from diffsweep.errors import ModelUnavailableError
from diffsweep.execution.cache import PipelineCache
from diffsweep.execution.pipelines import generate, offload_model, pipeline_for
from diffsweep.inputs import load_image
from diffsweep.optimize import is_oom
from diffsweep.planning.plan import Batch, Plan
from diffsweep.planning.stages import UPSCALE, StagedPlan
from diffsweep.previews import latents_to_rgb
from diffsweep.store.atomic import write_atomic
from diffsweep.store.folder import RunFolder
from diffsweep.store.records import (
    AppliedOption,
    Attempt,
    BuilderRecord,
    CacheStats,
    ItemRecord,
    OomEvent,
    QuantizationRecord,
    StageTimes,
)
from diffsweep.store.writer import ItemWriter, PendingItem, item_stem
from diffsweep.truncation import prompt_truncation

log = logging.getLogger("diffsweep")


@dataclass
class Execution:
    """One attempt in progress: where it commits, the records it fills in, what it loads with.

    `lock` is held while the records change, so a caller's heartbeat thread can write them at any time."""

    run: RunFolder
    plan: Plan
    attempt: Attempt  # a Worker when the attempt is a shard's
    builders: dict[str, BuilderRecord]  # by hash: filled in when each is first used in this run
    cache: PipelineCache
    manifest: Path | None = None  # a shard's own manifest; None: the run's
    lock: threading.Lock = field(default_factory=threading.Lock)
    offloaded: set[str] = field(default_factory=set)  # cache keys switched to model offload by an OOM
    # per item index: the prompts its pipeline's text encoders cut (measured once, before its first call)
    truncated: dict[int, dict[str, Any]] = field(default_factory=dict)
    # builder hash -> why it could not be loaded: its items are not made (a load failure, not item failures)
    load_failures: dict[str, str] = field(default_factory=dict)
    writer: ItemWriter | None = None
    stage: str | None = None  # a chain: the stage whose batches run now
    stage_times: dict[str, StageTimes] = field(default_factory=dict)  # a chain: this attempt's work per stage
    # reuse: items an earlier version of the sweep made, committed before any batch (the batches skip them)
    reused: list[PendingItem] = field(default_factory=list)


@dataclass
class Outcome:
    """How an attempt ended: `interrupted` by Ctrl-C, SIGTERM or a failure that stopped it (`error`)."""

    interrupted: bool = False
    error: BaseException | None = None

    def reraise(self) -> None:
        """Once the caller has recorded the attempt: the interrupt or failure goes on up."""
        if self.error is not None:
            raise self.error
        if self.interrupted:
            raise KeyboardInterrupt


def execute(job: Execution, batches: Iterable[Batch], *, todo: int, label: str) -> Outcome:
    """Run `batches`, committing every item through the writer, and record the attempt (counts as items commit;
    loads, hits and peak memory at the end). Never raises for an interrupt: the caller records how the attempt
    ended, then calls `Outcome.reraise`."""
    progress = tqdm(total=todo, unit="item", desc=label, file=sys.stderr, dynamic_ncols=True, disable=None)

    chained = isinstance(job.plan, StagedPlan)
    if chained:
        assert isinstance(job.plan, StagedPlan)
        job.stage_times = {name: StageTimes() for name in job.plan.stage_names()}
        job.attempt.stages = job.stage_times

    def committed(record: ItemRecord) -> None:
        with job.lock:
            job.attempt.counts.count(record)
            if record.stage in job.stage_times:
                times = job.stage_times[record.stage]
                times.reused += record.reused_from is not None
                times.generated += record.ok and record.reused_from is None
                times.failed += not record.ok
        progress.update(1)

    job.writer = ItemWriter(job.run, job.plan.index_width, {"name": job.plan.config.sweep.name,
                                                            "version": job.run.path.name},
                            on_done=committed, manifest=job.manifest)
    stats = job.cache.stats
    loads_before, hits_before = stats.loads, stats.hits
    devices.reset_peak_memory(job.plan.device)
    outcome = Outcome()
    previous_sigterm = _sigterm_as_interrupt()
    try:
        for pending in job.reused:
            job.writer.submit(pending)
        for batch in batches:
            run_batch(batch, job)
            with job.lock:
                job.attempt.cache = CacheStats(loads=stats.loads - loads_before, hits=stats.hits - hits_before)
        job.writer.close()
    except BaseException as error:  # noqa: BLE001 - recorded by the caller, then re-raised through the outcome
        outcome.interrupted = True
        outcome.error = None if isinstance(error, KeyboardInterrupt) else error
        job.writer.close(quiet=True)  # what was generated is still committed
    finally:
        if previous_sigterm is not None:
            signal.signal(signal.SIGTERM, previous_sigterm)
        progress.close()
        with job.lock:
            job.attempt.cache = CacheStats(loads=stats.loads - loads_before, hits=stats.hits - hits_before)
            job.attempt.timings.peak_memory_bytes = devices.peak_memory_bytes(job.plan.device)
    return outcome


def run_batch(batch: Batch, job: Execution) -> None:
    """One batch: its builder's pipeline (loaded once), then its call. A builder that cannot be loaded is recorded
    once, with its cause in the run log, and its items are left not made: they are not item failures, and a resume
    makes them once the model can be had."""
    builder = batch.builder
    if builder.hash in job.load_failures:
        return
    _enter_stage(batch, job)
    inputs = _parent_inputs(batch, job)
    if inputs is None:
        return
    try:
        loaded = pipeline_for(builder, job.cache, job.plan.device, job.plan.config.optimization)
    except Exception as error:  # noqa: BLE001 - recorded as the builder's load failure; the run goes on without it
        reason = str(error) if isinstance(error, ModelUnavailableError) else (
            f"model '{builder.config['model']}' could not be loaded: {type(error).__name__}: {error}")
        log.error("%s", reason)
        log.info("the cause, in full:\n%s", traceback.format_exc(), extra={"console": False})
        with job.lock:
            job.load_failures[builder.hash] = reason
            record = job.builders.get(builder.hash)
            if record is not None:
                record.load_error = reason
        return
    with job.lock:
        if loaded.fresh:
            job.attempt.timings.load_seconds += loaded.entry.load_seconds
            if batch.stage in job.stage_times:
                job.stage_times[batch.stage].loads += 1
                job.stage_times[batch.stage].load_seconds += loaded.entry.load_seconds
        record = job.builders.get(batch.builder.hash)
        if record is not None and not record.loaded:  # first use in this run (earlier attempts' stay)
            record.model_path = batch.builder.provider.model_path(batch.builder.config)
            record.load_seconds = round(loaded.entry.load_seconds, 4) if loaded.fresh else 0.0
            record.reused_from_cache = not loaded.fresh
            record.optimization = [AppliedOption.model_validate(vars(a)) for a in loaded.entry.applied]
            measured = quantize.measure(loaded.pipeline, batch.builder.config, batch.builder.identity["dtype"])
            record.quantization = QuantizationRecord.model_validate(measured) if measured else None
    try:
        _call(loaded.pipeline, batch, job, inputs)
    finally:
        if batch.builder.cache_key in job.offloaded:
            # the offload was for these items only: the cached pipeline is dropped, so later batches (and later
            # runs in this process) load it again as configured and recorded
            job.offloaded.discard(batch.builder.cache_key)
            job.cache.evict(batch.builder.cache_key, job.plan.device)


def _enter_stage(batch: Batch, job: Execution) -> None:
    """A chain: before a stage's first batch, what earlier batches committed is on disk (its parents' outputs); in
    breadth order the stage before it is finished, so its pipelines no later stage uses are unloaded."""
    plan = job.plan
    if not isinstance(plan, StagedPlan) or batch.stage == job.stage:
        if batch.items and batch.items[0].parent is not None and job.writer is not None:
            job.writer.flush()  # depth first: the parents were made by the batch just before
        return
    if job.writer is not None:
        job.writer.flush()
    if plan.order == "breadth" and job.stage is not None:
        for builder in plan.released_after(job.stage):
            if builder.cache_key in job.cache:
                log.info("stage %s finished: unloading %s", job.stage, builder.short)
                job.cache.evict(builder.cache_key, plan.device)
    job.stage = batch.stage


def _parent_inputs(batch: Batch, job: Execution) -> dict[str, Any] | None:
    """What a later stage's batch takes from its parent; None (and the items counted as waiting) when the parent's
    output is not there."""
    inputs = parent_inputs(job.plan, job.run.path, batch)
    if inputs is None:
        first = batch.items[0]
        log.warning("stage %s: item(s) %s wait for their parent %s, whose output is not there", first.stage,
                    ", ".join(str(item.index) for item in batch.items), (first.parent or "")[:12])
        with job.lock:
            job.stage_times[first.stage or ""].waiting += len(batch.items)
    return inputs


def parent_inputs(plan: Plan, run_dir: Path, batch: Batch) -> dict[str, Any] | None:
    """What a later stage's batch takes from its parent (its items share one), as call arguments: the parent's file
    (read as any input file is), its image resized (`upscale`), or its latents loaded; {} for a batch with no parent;
    None when the parent's output is not there (it failed, or is not made yet)."""
    first = batch.items[0]
    if first.parent is None or not isinstance(plan, StagedPlan):
        return {}
    stage = plan.stage_of(first.stage or "")
    assert stage is not None
    into, take = stage.settings.into, stage.settings.take
    path = Path(first.params[into])
    path = path if path.is_absolute() else run_dir / path
    if not path.is_file():
        return None
    if take == "latents":
        from safetensors.torch import load_file  # noqa: PLC0415 - start-up time: only a chain handing latents on

        return {into: load_file(str(path))["latents"].unsqueeze(0)}
    factor = first.params.get(UPSCALE)
    if factor is not None:  # a hires fix: the source image resized before it is denoised again
        multiple = batch.builder.provider.size_multiple(batch.builder.spec, batch.builder.config)
        image = load_image(path)
        size = tuple(max(multiple, round(side * factor / multiple) * multiple) for side in image.size)
        return {into: image.resize(size, Image.Resampling.LANCZOS)}
    return {into: str(path)}


def _call(pipe: Any, batch: Batch, job: Execution, inputs: dict[str, Any] | None = None) -> None:
    """Generate a batch and hand its outputs to the writer. Out of memory, it retries in halves down to one item,
    then once with model offload; any other failure fails just these items."""
    device = job.plan.device
    every = job.plan.config.previews.every
    _measure_prompts(pipe, batch, job)
    started = time.perf_counter()
    try:
        generated = generate(pipe, batch, every, _preview_writer(job, batch) if every else None, inputs)
    except Exception as error:  # noqa: BLE001 - one failed batch must not stop the sweep
        devices.empty_cache(device)
        if job.plan.config.optimization.get("oom_fallback") and is_oom(error):
            indices = [item.index for item in batch.items]
            if len(batch.items) > 1:
                half = len(batch.items) // 2
                _record_oom(job, indices, "split", f"retrying as {half} + {len(batch.items) - half}")
                for part in (batch.items[:half], batch.items[half:]):
                    _call(pipe, Batch(batch.builder, part, batch.keep, batch.stage), job, inputs)
                return
            if devices.can_offload(device) and batch.builder.cache_key not in job.offloaded:
                _record_oom(job, indices, "offload", "retrying with model CPU offload")
                job.offloaded.add(batch.builder.cache_key)
                offload_model(pipe, device)
                _call(pipe, batch, job, inputs)
                return
            _record_oom(job, indices, "failed", "out of memory even for one item")
        log.error("batch of %d item(s) failed: %s\n%s", len(batch.items), error, traceback.format_exc())
        _fail(batch, job, f"{type(error).__name__}: {error}", time.perf_counter() - started)
        return
    seconds = time.perf_counter() - started
    with job.lock:
        record = job.builders.get(batch.builder.hash)
        if batch.builder.cache_key in job.offloaded and record is not None:
            # run.json says which items this builder made with model offload on (the rest ran as configured)
            record.oom_offload_items = [*(record.oom_offload_items or []), *(item.index for item in batch.items)]
        timings = job.attempt.timings
        if not timings.made_calls:
            log.info("first call (%d item(s)) took %.2fs", len(batch.items), seconds)
        timings.call(seconds, len(batch.items))
        if batch.stage in job.stage_times:
            job.stage_times[batch.stage].calls += 1
            job.stage_times[batch.stage].call_seconds += seconds
    _submit(batch, generated, seconds, type(pipe.scheduler).__name__ if hasattr(pipe, "scheduler") else None, job)


def _submit(batch: Batch, generated: list[Any], seconds: float, scheduler: str | None, job: Execution) -> None:
    """A batch's outputs to the writer; latents with their cheap RGB preview."""
    assert job.writer is not None
    for item, output in zip(batch.items, generated, strict=True):
        if batch.commits(item):
            preview = (latents_to_rgb(output.array.unsqueeze(0), batch.builder.provider.preview_space(
                batch.builder.spec))[0] if output.kind == "latents" else None)
            job.writer.submit(PendingItem(item, batch.builder, output, seconds / len(batch.items), scheduler=scheduler,
                                     prompt_truncated=job.truncated.pop(item.index, None), preview=preview))


def _measure_prompts(pipe: Any, batch: Batch, job: Execution) -> None:
    """Say (run log) and keep (item record) what the text encoders will cut from each item's prompts."""
    for item in batch.items:
        if item.index in job.truncated or not batch.commits(item):
            continue  # measured before an out-of-memory retry, or only sharing the call
        cut = job.truncated[item.index] = prompt_truncation(pipe, item.params)
        for key, by_tokenizer in cut.items():
            for slot, what in by_tokenizer.items():
                log.warning("item %d: %s is %d tokens, %s takes %d; dropped: %r", item.index, key, what["tokens"],
                            slot, what["used_tokens"], what["dropped_text"])


def _record_oom(job: Execution, indices: list[int], action: str, detail: str) -> None:
    log.warning("out of memory on item(s) %s: %s", indices, detail)
    with job.lock:
        job.attempt.oom_events.append(OomEvent.model_validate({"items": indices, "action": action, "detail": detail}))


def _fail(batch: Batch, job: Execution, message: str, seconds: float) -> None:
    assert job.writer is not None
    for item in batch.items:
        if batch.commits(item):
            job.writer.submit(PendingItem(item, batch.builder, None, seconds / len(batch.items), message,
                                     prompt_truncated=job.truncated.pop(item.index, None)))


def _preview_writer(job: Execution, batch: Batch) -> Callable[[int, list[Any]], None]:
    """Write each item's preview under items/<stem>.previews/ as the steps go by."""
    def write(step: int, images: list[Any]) -> None:
        for item, image in zip(batch.items, images, strict=True):
            folder = job.run.path / "items" / f"{item_stem(item, job.plan.index_width)}.previews"
            buffer = io.BytesIO()
            Image.fromarray(image).save(buffer, format="PNG")
            write_atomic(folder / f"step_{step:04d}.png", buffer.getvalue())
        log.info("preview at step %d for item(s) %s", step, ", ".join(str(i.index) for i in batch.items))

    return write


def _sigterm_as_interrupt() -> Any:
    """Let SIGTERM (Slurm preemption, `kill`) end an attempt like Ctrl-C: items so far stay committed."""
    if threading.current_thread() is not threading.main_thread():
        return None

    def interrupt(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    return signal.signal(signal.SIGTERM, interrupt)


@contextmanager
def run_log(path: Path) -> Iterator[None]:
    """Everything diffsweep logs while the block runs also goes to `path` (run.log, a shard's worker.log)."""
    handler = logging.FileHandler(path, encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    handler.setLevel(logging.INFO)
    logging.getLogger().addHandler(handler)
    logging.getLogger("diffsweep").setLevel(logging.INFO)
    try:
        yield
    finally:
        logging.getLogger().removeHandler(handler)
        handler.close()
