"""Executing a sweep: validate → plan → execute → record → report.

`run_sweep` is the whole job as a plain function (the CLI and tests call it); `resume_run`
continues a run folder in place, generating only what is missing or failed.
"""

from __future__ import annotations

import dataclasses
import inspect
import io
import json
import logging
import os
import signal
import socket
import sys
import threading
import time
import traceback
from collections.abc import Callable, Container, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

import torch
from PIL import Image
from tqdm import tqdm

from diffsweep import devices, lora, previews, report, schedulers, tracking
from diffsweep.cache import PipelineCache, process_cache
from diffsweep.errors import (
    EXIT_FAILED_ITEMS,
    EXIT_OK,
    ConfigError,
    ConfigIssue,
    DiffsweepError,
    ModelUnavailableError,
)
from diffsweep.hashing import canonical_json
from diffsweep.labels import BuilderLabel
from diffsweep.metrics import ScoreSettings, check_metrics
from diffsweep.optimize import is_oom, place_and_optimize
from diffsweep.paths import conf_dir
from diffsweep.plan import Batch, BuilderPlan, Plan, absolutise_inputs, draw_random_seeds, load_grid
from diffsweep.providers.base import Generated, hub_offline, hub_token, is_single_file
from diffsweep.record import ItemWriter, WriteJob, item_stem, software_versions
from diffsweep.records import (
    Attempt,
    AttemptCounts,
    BuilderRecord,
    CacheStats,
    Counts,
    ItemRecord,
    RunInfo,
    now,
)
from diffsweep.rundir import RunFolder, allocate, write_atomic
from diffsweep.savedconfig import dump_run_config
from diffsweep.truncation import prompt_truncation
from diffsweep.validate import normalise, validate_config

log = logging.getLogger("diffsweep")


def _quiet_library_progress_bars() -> None:
    """diffsweep shows one progress bar for the sweep; loading and saving bars would bury it. Called
    where a pipeline is loaded, not on import: a dry run or a resume with nothing to do loads no
    diffusers at all."""
    import diffusers
    import transformers

    diffusers.utils.logging.disable_progress_bar()
    transformers.utils.logging.disable_progress_bar()


SourceOf = Callable[[str], "str | None"]


@dataclass
class RunResult:
    run_dir: Path | None
    status: str
    counts: dict[str, int] = field(default_factory=dict)
    code: int | None = None  # set where the outcome is not just "some items failed" (a distributed run)

    @property
    def exit_code(self) -> int:
        if self.code is not None:
            return self.code
        return EXIT_FAILED_ITEMS if self.counts.get("failed") else EXIT_OK


def _no_source(_: str) -> None:
    return None


def prepare(doc: Mapping[str, Any], *, source_of: SourceOf = _no_source,
            base_dir: Path | None = None) -> tuple[dict[str, Any], Plan]:
    """Validate and plan a resolved config; raises ConfigError before anything is written."""
    doc = normalise(doc)
    validate_config(doc, source_of)
    settings = ScoreSettings.from_config(doc)
    check_metrics(settings.metrics, settings.allowed_modules)
    tracking.check_available(doc["tracking"], source_of)
    base_dirs = [base_dir or Path.cwd(), conf_dir()]
    doc = absolutise_inputs(draw_random_seeds(dict(doc)), base_dirs)
    doc["builder"]["loras"] = lora.absolutise(doc["builder"].get("loras") or [], base_dirs)
    grid = load_grid(doc, base_dirs, source_of)
    for axis in grid.axes:  # inline file axes so config.yaml reruns without the file
        if isinstance(doc["sweep"]["grid"][axis.name], Mapping) and "file" in doc["sweep"]["grid"][axis.name]:
            doc["sweep"]["grid"][axis.name] = list(axis.values)
    doc["output"]["root"] = str(Path(doc["output"]["root"]).expanduser().absolute())
    device = devices.resolve_device(doc["device"])
    return doc, Plan(doc, grid, device, source_of)


def check_output_root(root: Path, name: str, source_of: SourceOf = _no_source) -> None:
    """The run folder `<root>/<name>/vNNNN` can be made: every existing part of the way is a writable
    folder. Checked before anything loads, dry runs included."""
    where, source = "output.root", source_of("output.root")
    existing = root
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if existing.exists() and not existing.is_dir():
        raise ConfigError(ConfigIssue(where, f"{existing} is a file, not a folder; set output.root to a folder "
                                             f"(it is created if missing)", source))
    sweep_dir = root / name
    if sweep_dir.exists() and not sweep_dir.is_dir():
        raise ConfigError(ConfigIssue(where, f"{sweep_dir} is a file, but run folders of sweep '{name}' go there; "
                                             f"move it or choose another output.root or sweep.name", source))
    writable = sweep_dir if sweep_dir.is_dir() else existing
    if not os.access(writable, os.W_OK | os.X_OK):
        raise ConfigError(ConfigIssue(where, f"{writable} is not writable (read-only file system or no permission); "
                                             f"set output.root to a folder you can write", source))


SELECTED = "selected_items"  # run.json: the item ids a rerun of single items was narrowed to
DRY_RUN_ITEMS = 10  # items a dry run lists; the counts cover all of them


def print_plan(plan: Plan, out: TextIO) -> None:
    summary = plan.summary()
    out.write(f"dry run: {summary['items']} items, {len(summary['builders'])} builder(s), "
              f"{summary['batches']} batches ({summary['calls']} pipeline calls); nothing written\n")
    for b in summary["builders"]:
        out.write(f"  builder {b['hash']}  {b['label']}  ({b['provider']}/{b['pipeline']}  {b['model']}  "
                  f"dtype={b['dtype']})  items={b['items']}  batch_size={b['batch_size']}\n")
    labels = {h[:12]: label.label for h, label in plan.builder_labels().items()}
    varying = [axis.name for axis in plan.grid.axes if len(axis.values) > 1]
    first = [plan.item(index) for index in range(min(DRY_RUN_ITEMS, plan.total))]
    more = f" (first {len(first)} of {plan.total})" if plan.total > len(first) else ""
    out.write(f"  items{more}, by grid index:\n")
    for item in first:
        shown = {name: item.params[name] for name in varying if name in item.params}
        shown["seed"] = item.seed
        values = "  ".join(f"{name}={json.dumps(value, ensure_ascii=False)}" for name, value in shown.items())
        builder = item.builder_hash[:12]
        out.write(f"    #{item.index:<4} {item.item_id[:12]}  builder {builder} [{labels[builder]}]  {values}\n")
    out.write(f"  output: {Path(plan.doc['output']['root']) / plan.doc['sweep']['name']}/v<next>\n")


def check_models_available(plan: Plan) -> None:
    """Fail before any folder is created when a hub model cannot be had (offline and not cached)."""
    from huggingface_hub import try_to_load_from_cache

    for builder in plan.builders.values():
        source = builder.provider.resolve_source(builder.config)
        if is_single_file(source) and hub_offline() and not builder.config.get("single_file_config"):
            raise ModelUnavailableError(
                f"single-file checkpoint '{builder.config['model']}' needs builder.single_file_config offline: a "
                f"local diffusers-format folder (or cached repo) with the component configs, which diffusers "
                f"would otherwise fetch from the hub")
        if isinstance(source, str) and hub_offline():
            cached = try_to_load_from_cache(source, "model_index.json", revision=builder.config.get("revision"))
            if not isinstance(cached, str):
                raise ModelUnavailableError(
                    f"model '{source}' is not available offline: HF_HUB_OFFLINE is set and it is not in the local "
                    f"Hugging Face cache ({os.environ.get('HF_HOME') or '~/.cache/huggingface'}); download it first "
                    f"with `hf download {source}` or point builder.model at a local folder")


def run_sweep(doc: Mapping[str, Any], *, overrides: list[str] | None = None, source_of: SourceOf = _no_source,
              base_dir: Path | None = None, out: TextIO = sys.stdout, cache: PipelineCache | None = None,
              only: Sequence[str | int] | None = None, preset: str | None = None) -> RunResult:
    """Run a composed config into a new versioned run folder (or print the plan on dry_run, or what the
    builder takes on describe; `preset` names the provider preset for that); `only` narrows it to some
    items, by item id or grid index (see Plan.select).

    Started as one of several processes by torchrun or `accelerate launch`, this process runs its
    shard of the sweep; with `distribute=local|slurm` the shards are submitted as a job array."""
    if doc.get("describe"):
        from diffsweep.describe import describe, print_description

        doc = normalise(doc)
        validate_config(doc, source_of)
        print_description(describe(doc, preset), out, as_json=doc["describe"] == "json")
        return RunResult(None, "describe")
    from diffsweep import distribute

    if only and distribute.started_as_one_of_many():
        raise ConfigError(ConfigIssue("--item/--index", "a rerun of single items runs in one process; start it "
                                                        "without torchrun or accelerate launch"))
    state = distribute.launched_state(doc["device"])
    if state is not None:
        return distribute.run_launched(normalise(doc), state, overrides=overrides or [], source_of=source_of,
                                       base_dir=base_dir, out=out, cache=cache)
    doc, plan = prepare(doc, source_of=source_of, base_dir=base_dir)
    if only:
        plan.select(only)
    check_output_root(Path(doc["output"]["root"]), doc["sweep"]["name"], source_of)
    if doc["dry_run"]:
        print_plan(plan, out)
        return RunResult(None, "dry_run", {"planned": plan.total})
    check_models_available(plan)
    if only and doc["distribute"]["backend"] != "none":
        # a few items are not worth a job array: they are made here, and config.yaml says so
        log.info("a rerun of single items runs here, in one process, not as a %s job array",
                 doc["distribute"]["backend"])
        doc = {**doc, "distribute": {**doc["distribute"], "backend": "none"}}
    if doc["distribute"]["backend"] != "none":
        return distribute.submit_run(doc, plan, overrides=overrides or [], out=out)
    run = RunFolder(allocate(Path(doc["output"]["root"]), doc["sweep"]["name"]))
    with run.locked():
        write_atomic(run.path / "config.yaml", dump_run_config(doc, run.path))
        write_atomic(run.path / "overrides.yaml", "".join(f"- {json.dumps(o)}\n" for o in (overrides or [])))
        info = new_run_info(run, plan)
        if plan.selected is not None:  # a resume of this folder makes these items, not the whole grid
            info.extra[SELECTED] = sorted(plan.selected)
        return execute(run, plan, info, new_attempt("run"), done={}, cache=cache or process_cache(), out=out)


def resume_run(run_dir: Path, *, out: TextIO = sys.stdout, cache: PipelineCache | None = None,
               here: bool = False) -> RunResult:
    """Finish a run in place: items with a committed manifest line and intact files are kept, the
    rest generated; the attempt is added to the run's history in run.json. A distributed run runs
    only its unfinished shards again (resubmitted when it was submitted, unless `here`)."""
    from diffsweep.savedconfig import load_run_config

    run = RunFolder(run_dir)
    if run.read_layout() is not None:
        from diffsweep.distribute import resume_distributed

        return resume_distributed(run, here=here, cache=cache, out=out)
    with run.locked():
        doc, plan = prepare(load_run_config(run.path), source_of=lambda _: str(run.path / "config.yaml"),
                            base_dir=run.path)
        removed = run.clean_temps()
        if removed:
            log.info("removed %d temporary file(s) left by an interrupted writer", removed)
        run.repair_manifest()
        done = run.done_items()  # one streaming pass: ids, not records
        try:
            info = run.read_info()
        except DiffsweepError as error:  # killed before its first run.json: start the record afresh
            log.warning("%s; starting a new run record", error)
            info = new_run_info(run, plan)
        if isinstance(info.extra.get(SELECTED), list):
            plan.select(info.extra[SELECTED])
        return execute(run, plan, info, new_attempt("resume"), done=done, cache=cache or process_cache(), out=out,
                       settled=info.status == "complete" and done.compact)


def is_intact(run: RunFolder, record: ItemRecord) -> bool:
    """An ok item whose every output is still on disk and not empty."""
    return record.ok and all((run.path / o).is_file() and (run.path / o).stat().st_size > 0 for o in record.outputs)


def new_run_info(run: RunFolder, plan: Plan) -> RunInfo:
    return RunInfo(status="running", name=plan.doc["sweep"]["name"], version=run.path.name, started=now(),
                   device=str(plan.device), counts=Counts(planned=plan.total, skipped=plan.total),
                   builders=builder_entries(plan), versions=software_versions(),
                   command=invocation(), optimization=dict(plan.doc["optimization"]))


def invocation() -> list[str]:
    """The command as the user typed it: `diffsweep ...`, or `python -m diffsweep ...` (not a venv path)."""
    program = Path(sys.argv[0])
    if program.suffix == ".py":
        module = program.parent.name if program.stem == "__main__" else f"{program.parent.name}.{program.stem}"
        return ["python", "-m", module, *sys.argv[1:]]
    return [program.name, *sys.argv[1:]]


def new_attempt(kind: str) -> Attempt:
    return Attempt(kind=kind, command=invocation(), started=now(), host=socket.gethostname(), pid=os.getpid())


@dataclass
class Execution:
    """One attempt at a run in progress: where it writes, what it records, what it loads with."""

    run: RunFolder
    plan: Plan
    info: RunInfo
    attempt: Attempt
    cache: PipelineCache
    writer: ItemWriter
    offloaded: set[str] = field(default_factory=set)  # cache keys switched to model offload by an OOM
    # per item index: the prompts its pipeline's text encoders cut (measured once, before its first call)
    truncated: dict[int, dict[str, Any]] = field(default_factory=dict)


def execute(run: RunFolder, plan: Plan, info: RunInfo, attempt: Attempt, *, done: Container[str],
            cache: PipelineCache, out: TextIO, settled: bool = False) -> RunResult:
    """Generate every item whose id is not in `done`, committing each through the writer, and record
    the attempt. `settled`: the run was complete with a compact manifest before this attempt, so an
    attempt with nothing to do leaves the manifest and reports as they are."""
    device = plan.device
    handler = _attach_run_log(run.path / "run.log")
    kept = plan.count_in(done)
    attempt.counts = AttemptCounts(planned=plan.total, kept=kept)
    info.attempts.append(attempt)
    info.status, info.finished = "running", None
    run.write_info(info)
    log.info("run folder %s: %d planned, %d already done", run.path, plan.total, kept)
    nothing_to_do = kept == plan.total
    if nothing_to_do:
        log.info("nothing to do: all %d planned item(s) are done", plan.total)
    loads_before, hits_before = cache.stats.loads, cache.stats.hits

    def committed(record: ItemRecord) -> None:
        attempt.counts.count(record)
        progress.update(1)

    progress = tqdm(total=plan.total - kept, unit="item", desc=plan.doc["sweep"]["name"], file=sys.stderr,
                    dynamic_ncols=True, disable=None)
    writer = ItemWriter(run, plan.index_width, {"name": plan.doc["sweep"]["name"], "version": run.path.name},
                        on_done=committed)
    job = Execution(run, plan, info, attempt, cache, writer)
    devices.reset_peak_memory(device)
    interrupted = False
    previous_sigterm = _sigterm_as_interrupt()
    try:
        if not nothing_to_do:
            for batch in plan.batches(skip=done):
                _run_batch(batch, job)
        writer.close()
    except KeyboardInterrupt:
        interrupted = True
        writer.close()
        raise
    finally:
        if previous_sigterm is not None:
            signal.signal(signal.SIGTERM, previous_sigterm)
        progress.close()
        attempt.cache = CacheStats(cache.stats.loads - loads_before, cache.stats.hits - hits_before)
        attempt.timings.peak_memory_bytes = devices.peak_memory_bytes(device)
        unchanged = settled and nothing_to_do and not interrupted
        if unchanged:  # every planned item done and intact, the manifest already compact
            info.counts = Counts(planned=plan.total, done=plan.total)
        else:
            records = run.items() if interrupted else run.compact_manifest()
            info.counts = Counts.of(plan.total, (r for r in records.values() if not r.ok or is_intact(run, r)))
        status = "interrupted" if interrupted else ("failed" if info.counts.failed or info.counts.skipped
                                                    else "complete")
        attempt.status, attempt.finished = status, now()
        info.status, info.finished = status, attempt.finished
        run.write_info(info)
        if not interrupted:
            _score(run, plan)  # before the viewer, which shows scores, and tracking, which logs their summaries
        if not unchanged:  # the records the reports are drawn from are as they were
            _write_reports(run.path)
        tracking.track_run(run, plan.doc, info)
        counts = info.counts
        made = (f" ({attempt.counts.generated} generated, {attempt.counts.kept} kept from earlier attempts)"
                if attempt.kind == "resume" else "")
        log.info("%s: %d done, %d failed of %d%s", status, counts.done, counts.failed, counts.planned, made)
        if interrupted:
            log.info("resume with: diffsweep-runs resume %s", run.path)
        logging.getLogger().removeHandler(handler)
        handler.close()
    out.write(f"{run.path}\n")
    return RunResult(run.path, status, info.counts.to_json())


def builder_entries(plan: Plan) -> list[dict[str, Any]]:
    """run.json's builders, each named by what differs from the others (`label`, `identity`)."""
    labels = plan.builder_labels()
    return [_builder_entry(b, labels[b.hash]) for b in plan.builders.values()]


def _builder_entry(builder: BuilderPlan, label: BuilderLabel) -> dict[str, Any]:
    return BuilderRecord(hash=builder.hash, provider=builder.provider.name, pipeline=builder.spec.name,
                         model=builder.config["model"], revision=builder.identity.get("revision"),
                         dtype=builder.identity["dtype"], label=label.label, identity=label.identity,
                         full_identity=builder.identity).to_json()


def _run_batch(batch: Batch, job: Execution) -> None:
    started = time.perf_counter()
    try:
        pipe = pipeline_for(batch.builder, job.cache, job.plan.device, job.plan.doc["optimization"], job)
    except ModelUnavailableError as error:
        _fail(batch, job.writer, str(error), time.perf_counter() - started)
        return
    try:
        _call(pipe, batch, job)
    finally:
        if batch.builder.cache_key in job.offloaded:
            # the offload was for these items only: the cached pipeline is dropped, so later batches
            # (and later runs in this process) load it again as configured and recorded
            job.offloaded.discard(batch.builder.cache_key)
            job.cache.evict(batch.builder.cache_key, job.plan.device)


def _call(pipe: Any, batch: Batch, job: Execution) -> None:
    """Generate a batch and hand its outputs to the writer. Out of memory, it retries in halves down
    to one item, then once with model offload; any other failure fails just these items."""
    plan, device, writer = job.plan, job.plan.device, job.writer
    every = plan.doc["previews"]["every"]
    _measure_prompts(pipe, batch, job)
    started = time.perf_counter()
    try:
        generated = generate(pipe, batch, every, _preview_writer(writer, batch) if every else None)
    except Exception as error:  # noqa: BLE001 - one failed batch must not stop the sweep
        devices.empty_cache(device)
        if plan.doc["optimization"]["oom_fallback"] and is_oom(error):
            indices = [item.index for item in batch.items]
            if len(batch.items) > 1:
                half = len(batch.items) // 2
                _record_oom(job, indices, "split", f"retrying as {half} + {len(batch.items) - half}")
                for part in (batch.items[:half], batch.items[half:]):
                    _call(pipe, Batch(batch.builder, part, batch.keep), job)
                return
            if devices.can_offload(device) and batch.builder.cache_key not in job.offloaded:
                _record_oom(job, indices, "offload", "retrying with model CPU offload")
                job.offloaded.add(batch.builder.cache_key)
                offload_model(pipe, device)
                _call(pipe, batch, job)
                return
            _record_oom(job, indices, "failed", "out of memory even for one item")
        log.error("batch of %d item(s) failed: %s\n%s", len(batch.items), error, traceback.format_exc())
        _fail(batch, writer, f"{type(error).__name__}: {error}", time.perf_counter() - started, job.truncated)
        return
    seconds = time.perf_counter() - started
    builder_record = job.info.builder(batch.builder.hash)
    if batch.builder.cache_key in job.offloaded and builder_record is not None:
        # run.json says which items this builder made with model offload on (the rest ran as configured)
        builder_record.setdefault("oom_offload_items", []).extend(item.index for item in batch.items)
    timings = job.attempt.timings
    if not timings.made_calls:
        log.info("first call (%d item(s)) took %.2fs", len(batch.items), seconds)
    timings.call(seconds, len(batch.items))
    scheduler = type(pipe.scheduler).__name__ if hasattr(pipe, "scheduler") else None
    for item, output in zip(batch.items, generated, strict=True):
        if batch.commits(item):
            writer.submit(WriteJob(item, batch.builder, output, seconds / len(batch.items), scheduler=scheduler,
                                   prompt_truncated=job.truncated.pop(item.index, None)))


def offload_model(pipe: Any, device: torch.device) -> None:
    """The out-of-memory fallback's last resort: whole models move to the device only while they run."""
    pipe.enable_model_cpu_offload(device=device)


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
    job.attempt.oom_events.append({"items": indices, "action": action, "detail": detail})


def pipeline_for(builder: BuilderPlan, cache: PipelineCache, device: torch.device, optimization: Mapping[str, Any],
                 job: Execution | None = None) -> Any:
    """The loaded pipeline of a builder, from the cache or loaded once (recorded in run.json)."""
    pipe, entry, loaded = cache.get(builder.cache_key, lambda: _materialise(builder), device,
                                    place=lambda p: place_and_optimize(p, optimization, device))
    use_scheduler(pipe, entry, builder)
    if loaded:
        log.info("loaded %s/%s %s (%s) in %.2fs", builder.provider.name, builder.spec.name, builder.config["model"],
                 builder.short, entry.load_seconds)
        for applied in entry.applied:
            log.info("  %s=%s %s%s", applied.option, applied.value, applied.status,
                     f": {applied.detail}" if applied.detail else "")
        if job is not None:
            job.attempt.timings.load_seconds += entry.load_seconds
    record = job.info.builder(builder.hash) if job else None
    if record is not None and record["model_path"] is None:  # first use in this run (earlier attempts' stay)
        record.update(model_path=builder.provider.model_path(builder.config),
                      load_seconds=round(entry.load_seconds, 4) if loaded else 0.0, reused_from_cache=not loaded,
                      optimization=[dataclasses.asdict(a) for a in entry.applied])
    return pipe


def use_scheduler(pipe: Any, entry: Any, builder: BuilderPlan) -> None:
    """Put the builder's scheduler on a cached pipeline; the weights stay loaded."""
    if entry.scheduler_key is None:  # first use: the pipeline carries the model's own scheduler
        entry.base_scheduler_config = dict(pipe.scheduler.config)
        entry.scheduler_key = canonical_json(None)
    wanted = builder.config.get("scheduler")
    key = canonical_json(wanted)
    if entry.scheduler_key == key:
        return
    pipe.scheduler = (schedulers.build(wanted, entry.base_scheduler_config) if wanted
                      else schedulers.restore(entry.base_scheduler_config))
    entry.scheduler_key = key
    log.info("scheduler for %s: %s", builder.short, wanted["name"] if wanted else "the model's own")


def generate(pipe: Any, batch: Batch, preview_every: int = 0,
             on_preview: Callable[[int, list[Any]], None] | None = None) -> list[Generated]:
    """One pipeline call for a batch; each item draws its noise from its own CPU generator.

    With previews on, a step callback projects the latents to RGB every `preview_every` steps;
    with them off no callback is installed at all, so they cost nothing."""
    builder = batch.builder
    shared = batch.items[0].params
    lora.apply_scales(pipe, builder.loras, shared)
    generators = [torch.Generator("cpu").manual_seed(item.seed) for item in batch.items]
    kwargs = builder.provider.call_kwargs(builder.spec, [item.params for item in batch.items], generators)
    builder.provider.prepare_call(pipe, builder.spec, shared)
    if preview_every and on_preview and "callback_on_step_end" in inspect.signature(pipe.__call__).parameters:
        unpack = builder.provider.preview_unpacker(pipe, builder.spec, shared)
        kwargs["callback_on_step_end"] = previews.make_callback(
            preview_every, builder.provider.preview_space(builder.spec), on_preview, unpack)
        kwargs["callback_on_step_end_tensor_inputs"] = ["latents"]
    with torch.inference_mode():
        result = pipe(**kwargs)
    return builder.provider.outputs(builder.spec, result, pipe)


def _preview_writer(writer: ItemWriter, batch: Batch) -> Callable[[int, list[Any]], None]:
    """Write each item's preview under items/<stem>.previews/ as the steps go by."""
    def write(step: int, images: list[Any]) -> None:
        for item, image in zip(batch.items, images, strict=True):
            folder = writer.run.path / "items" / f"{item_stem(item, writer.index_width)}.previews"
            buffer = io.BytesIO()
            Image.fromarray(image).save(buffer, format="PNG")
            write_atomic(folder / f"step_{step:04d}.png", buffer.getvalue())
        log.info("preview at step %d for item(s) %s", step, ", ".join(str(i.index) for i in batch.items))

    return write


def _materialise(builder: BuilderPlan) -> Any:
    """Load a builder's pipeline on the CPU, LoRAs included; placement comes after eviction."""
    _quiet_library_progress_bars()
    pipe = builder.provider.load(builder.config, devices.torch_dtype(builder.identity["dtype"]))
    if builder.loras:
        lora.load(pipe, builder.loras, hub_token())  # before fuse_qkv, which then leaves adapters alone
    pipe.set_progress_bar_config(disable=True)
    return pipe


def _fail(batch: Batch, writer: ItemWriter, message: str, seconds: float,
          truncated: dict[int, dict[str, Any]] | None = None) -> None:
    for item in batch.items:
        if batch.commits(item):
            writer.submit(WriteJob(item, batch.builder, None, seconds / len(batch.items), message,
                                   prompt_truncated=(truncated or {}).pop(item.index, None)))


def _sigterm_as_interrupt() -> Any:
    """Let SIGTERM (Slurm preemption, `kill`) end a run like Ctrl-C: items so far stay committed."""
    if threading.current_thread() is not threading.main_thread():
        return None

    def interrupt(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    return signal.signal(signal.SIGTERM, interrupt)


def _write_reports(run_dir: Path) -> None:
    """Galleries are a convenience: failing to draw one must not hide the run's own outcome."""
    try:
        report.write_reports(run_dir)
    except Exception as error:  # noqa: BLE001
        log.warning("could not write the contact sheet or gallery: %s", error)


def _score(run: RunFolder, plan: Plan) -> None:
    """score.metrics at the end of a run. Scores judge the outputs; failing to score does not change the
    run's outcome, and `diffsweep-runs score` finishes what is missing."""
    from diffsweep import score_stats, scoring

    settings = ScoreSettings.from_config(plan.doc)
    if not settings.metrics:
        return
    try:
        outcome = scoring.score_folder(run, settings, plan.device)
        score_stats.write_summary(run.path)
    except Exception as error:  # noqa: BLE001
        log.error("scoring failed: %s; finish it with: diffsweep-runs score %s", error, run.path)
        return
    log.info("scored %d (item, metric) pair(s), %d skipped: %s", outcome.scored, outcome.skipped,
             run.path / scoring.SCORES)


def _attach_run_log(path: Path) -> logging.Handler:
    handler = logging.FileHandler(path, encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    handler.setLevel(logging.INFO)
    logging.getLogger().addHandler(handler)
    logging.getLogger("diffsweep").setLevel(logging.INFO)
    return handler
