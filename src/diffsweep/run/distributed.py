"""One sweep on many processes: the plan cut into shards, each run by a worker into the same run folder.

Workers come from an existing engine: torchrun or `accelerate launch` (every process runs `diffsweep`; rank 0
allocates the run folder and shares it), a submitit job array (Slurm, or local processes), or `diffsweep-runs
resume` running unfinished shards itself. Each worker is one attempt of the execution core at its shard: it locks
the shard, commits items to the shard's own manifest (never a file another process appends to), rewrites its
worker.json as a heartbeat, and writes it with `finished` set last: the completion marker. The worker that finds
every shard finished merges them into manifest.jsonl and run.json, and writes the run's reports. A chain's shard
holds whole families (a first-stage batch and every descendant of its items), so its worker makes a parent's
children itself and never waits for another worker.
"""

from __future__ import annotations

import itertools
import logging
import os
import socket
import sys
import threading
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, TextIO

from diffsweep import __version__, hashing
from diffsweep.config.model import DistributeSettings
from diffsweep.config.schema import normalise
from diffsweep.console import configure_logging
from diffsweep.errors import (
    EXIT_CONFIG,
    EXIT_FAILED_ITEMS,
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_RUNTIME,
    ConfigError,
    ConfigIssue,
    DiffsweepError,
    RunLockedError,
    SourceOf,
)
from diffsweep.execution.cache import PipelineCache, process_cache
from diffsweep.execution.core import Execution, execute, run_log
from diffsweep.planning.plan import Plan
from diffsweep.planning.prepare import check_models_available, check_output_root, prepare, print_plan, validated
from diffsweep.planning.shards import cut_shards, shard_batches
from diffsweep.planning.stages import StagedPlan
from diffsweep.reports import build as reports
from diffsweep.run.attempts import (
    RunResult,
    builder_records,
    count_stages,
    invocation,
    new_attempt,
    new_run_info,
    read_info_or_rebuild,
    stage_records,
    trusted_config,
)
from diffsweep.run.reuse import find_reusable
from diffsweep.run.sources import check_sources_unchanged, source_reader
from diffsweep.store.folder import CONFIG, RUN_LOG, SHARDS, RunFolder, allocate
from diffsweep.store.records import AttemptCounts, Counts, RunInfo, ShardLayout, Status, Worker, now
from diffsweep.store.runconfig import write_overrides, write_run_config

log = logging.getLogger("diffsweep")

HEARTBEAT_SECONDS = 5.0  # how often a worker rewrites worker.json (RunFolder.shard_state reads it)
WORKER_LOG = "worker.log"


class WorkerRefused(DiffsweepError):
    """A worker may not join this run (another diffsweep version, another config); nothing was written."""

    exit_code = EXIT_CONFIG


# --- the run folder of a distributed run ---------------------------------------------------------


def create_run(plan: Plan, overrides: list[str], shards: int, trusted: Sequence[str] = ()) -> RunFolder:
    """Allocate the run folder and write everything a worker needs before any starts: config.yaml, the shard
    layout and run.json (with the config's hash that workers must match)."""
    config = plan.config
    run = RunFolder(allocate(Path(config.output.root), config.sweep.name))
    with run.locked():
        config_hash, config_keys = write_run_config(run.path, config.to_doc())
        write_overrides(run.path, overrides)
        layout = ShardLayout.of(cut_shards(plan, shards))
        run.write_layout(layout)
        run.manifest_path.touch()  # a run folder has a manifest from the start; workers append to their shards'
        info = new_run_info(run, plan)
        info.shards, info.config_hash, info.config_keys = layout.count, config_hash, config_keys
        info.attempts.append(new_attempt("run", trusted))
        run.write_info(info)
    # run.log holds what the run as a whole did (its plan, its merge); each worker logs to its shard's worker.log
    with run_log(run.path / RUN_LOG):
        log.info("run folder %s: %d planned in %d shard(s) (%s items)", run.path, plan.total, layout.count,
                 ", ".join(map(str, layout.planned)))
        idle = layout.planned.count(0)
        if idle:  # a shard is whole batches: fewer batches than workers leaves some without work
            units = ("first-stage batches (a parent's children go with it)" if layout.cut == "root_batches"
                     else "batches")
            log.warning("%d of %d shard(s) have no items: the plan has fewer %s than workers; a smaller "
                        "sweep.batch_size gives each worker some", idle, layout.count, units)
    return run


def check_worker_may_join(run: RunFolder, info: RunInfo) -> None:
    """Refuse a worker of another diffsweep version, or one whose run config is not the run's own."""
    theirs = info.versions.diffsweep if info.versions else None
    if theirs != __version__:
        raise WorkerRefused(f"{run.path} was started by diffsweep {theirs}; this worker is diffsweep {__version__} "
                            f"and would make other items; run the workers with diffsweep {theirs}")
    config = run.path / CONFIG
    if info.config_hash is not None and hashing.file_digest(config) != info.config_hash:
        raise WorkerRefused(f"{config} is not the config the run started with (its hash differs from "
                            f"config_hash in run.json); a worker runs only the run's own config")


# --- a worker --------------------------------------------------------------------------------------


def work_on_shard(run_dir: Path, shard: int, *, kind: str = "run", rank: int | None = None,
                  device: Any = None, cache: PipelineCache | None = None, trust: bool = False) -> Worker:
    """Run one shard of a distributed run into its folder; returns the finished worker record.

    Refused, before anything is written, when the run's diffsweep version or config differs from this worker's,
    when the config names code the user did not trust, or when another live worker holds the shard. A shard that
    is finished with every item done is left as it is (nothing is written)."""
    run = RunFolder(run_dir)
    info = run.check_is_run()
    check_worker_may_join(run, info)
    layout = run.read_layout()
    if layout is None or not 0 <= shard < layout.count:
        raise ConfigError(ConfigIssue("--shard", f"{run.path} has no shard {shard} (shards: "
                                                 f"{layout.count if layout else 0})"))
    doc, trusted = trusted_config(run, trust)
    plan = _plan(run, doc)
    check_sources_unchanged(plan, info, run.config_source)  # a stage fed from another run takes what the run read
    if device is not None:
        plan.device = device
    lock = run.shard_lock(shard)
    lock.acquire()  # a second worker on this shard is refused, naming the holder
    try:
        run.repair_manifest(run.shard_manifest(shard))
        done = run.done_items().ids  # every shard's committed, intact items (one streaming pass)
        previous = run.read_worker(shard)
        if previous is not None and previous.finished_ok and all(
                item.item_id in done for batch in shard_batches(plan, layout.shards[shard]) for item in batch.items):
            log.info("shard %d of %s is finished with every item done; nothing to do", shard, run.path)
            return previous
        return _work(run, plan, layout, shard, done, info, kind, rank, cache or process_cache(), trusted)
    finally:
        lock.release()


def _work(run: RunFolder, plan: Plan, layout: ShardLayout, shard: int, done: set[str], info: RunInfo, kind: str,
          rank: int | None, cache: PipelineCache, trusted: list[str]) -> Worker:
    """The shard as one attempt of the execution core, its worker.json rewritten as a heartbeat meanwhile."""
    worker = Worker.started_now(kind, invocation(), socket.gethostname(), os.getpid(), shard=shard,
                                attempt=len(info.attempts) - 1, rank=rank, device=str(plan.device), heartbeat=now(),
                                loaded=[], trusted=trusted,
                                manifest_offset=run.manifest_size(run.shard_manifest(shard)))
    mine = [item.item_id for batch in shard_batches(plan, layout.shards[shard]) for item in batch.items]
    kept = sum(1 for item_id in mine if item_id in done)
    worker.counts = AttemptCounts(planned=len(mine), kept=kept)
    # builder records of this worker alone (run.json's are merged from every worker at the end)
    job = Execution(run, plan, worker, {b.hash: b for b in builder_records(plan)}, cache,
                    manifest=run.shard_manifest(shard))
    skip = done
    if plan.config.reuse:  # what other versions of the sweep made, of this shard's items
        held = set(mine)
        job.reused = [pending for pending in find_reusable(plan, run, done) if pending.item.item_id in held]
        skip = done | {pending.item.item_id for pending in job.reused}

    def save() -> None:
        with job.lock:
            worker.heartbeat = now()
            worker.builders = [b.model_copy() for b in job.builders.values() if b.loaded or b.load_error]
            worker.loaded = [b.hash for b in worker.builders if not b.reused_from_cache]
            run.write_worker(worker)

    stop_beating = threading.Event()

    def beat() -> None:
        while not stop_beating.wait(HEARTBEAT_SECONDS):
            save()

    save()
    with run_log(run.shard_dir(shard) / WORKER_LOG):
        log.info("shard %d of %s: %d planned, %d already done, on %s", shard, run.path, len(mine), kept, plan.device)
        heart = threading.Thread(target=beat, name="diffsweep-heartbeat", daemon=True)
        heart.start()
        try:
            outcome = execute(job, shard_batches(plan, layout.shards[shard], skip=skip), todo=len(mine) - kept,
                              label=f"{info.name} shard {shard}")
        finally:
            stop_beating.set()
            heart.join()
        status: Status = ("interrupted" if outcome.interrupted
                          else "failed" if worker.counts.failed or job.load_failures else "complete")
        worker.status, worker.finished = status, now()
        save()  # the completion marker: written after the shard's last manifest line
        log.info("shard %d %s: %d generated, %d failed, %d kept, %d reused", shard, status, worker.counts.generated,
                 worker.counts.failed, worker.counts.kept, worker.counts.reused)
    outcome.reraise()
    return worker


def run_shard_task(run_dir: str, shard: int, kind: str, trust: bool) -> str:
    """One task of a job array (its own process): its shard, then the run's end if it is the last to finish. `trust`
    is what the submitting command was told, never what the folder says."""
    configure_logging(hydra_logs=False)
    worker = work_on_shard(Path(run_dir), shard, kind=kind, trust=trust)
    finalize(RunFolder(Path(run_dir)), trust=trust)
    return worker.status


# --- the end of a distributed run ----------------------------------------------------------------


def finalize(run: RunFolder, trust: bool = False) -> RunInfo | None:
    """Once every shard is finished, merge the shards: manifest.jsonl gets every committed item once, run.json the
    counts, cache, timings and builder records of every worker; then the run's reports. Returns run.json, or None
    while some shard is not finished (the last worker to finish does this)."""
    layout = _layout(run)
    with run.locked(wait=True):
        workers = [run.read_worker(shard) for shard in range(layout.count)]
        info = run.read_info()
        if info.status != "running" or any(w is None or w.finished is None for w in workers):
            return info if info.status != "running" else None
        finished = [w for w in workers if w is not None]
        plan = _plan(run, trusted_config(run, trust)[0])
        records = run.compact_manifest(lambda r: plan.is_planned(r.index, r.item_id), add_checks=True)
        counted = [r for r in records.values() if not r.ok or run.is_intact(r)]
        info.counts = Counts.of(info.counts.planned, counted)
        info.merge_workers(finished)
        if isinstance(plan, StagedPlan):
            info.stages = stage_records(plan, info, counted)
        attempt = info.attempts[-1]
        attempt.counts.planned = info.counts.planned
        attempt.counts.kept = max(0, info.counts.done - attempt.counts.generated - attempt.counts.reused)
        this_attempt = [w for w in finished if w.attempt == len(info.attempts) - 1]
        for entry in info.builders:
            if not entry.loaded:
                loaded = next((b for w in finished for b in w.builders if b.hash == entry.hash), None)
                if loaded is not None:
                    entry.model_path, entry.load_seconds = loaded.model_path, loaded.load_seconds
                    entry.reused_from_cache, entry.optimization = loaded.reused_from_cache, loaded.optimization
                    entry.load_error = loaded.load_error
            offloaded = sorted({i for w in this_attempt for b in w.builders if b.hash == entry.hash
                                for i in b.oom_offload_items or []} | set(entry.oom_offload_items or []))
            if offloaded:  # items any worker made with model offload switched on after running out of memory
                entry.oom_offload_items = offloaded
        interrupted = any(w.status == "interrupted" for w in finished)
        status: Status = ("interrupted" if interrupted else "failed" if info.counts.failed or info.counts.skipped
                          or any(b.load_error for b in info.builders) else "complete")
        attempt.status, attempt.finished = status, now()
        info.status, info.finished = status, attempt.finished
        run.write_info(info)
    with run_log(run.path / RUN_LOG):
        reports.after_attempt(run, plan.config, info, score=not interrupted, redraw=True, plan=plan)
        counts = info.counts
        log.info("%s: %d done, %d failed of %d (%d worker(s))", status, counts.done, counts.failed, counts.planned,
                 len(this_attempt))
    return info


def _plan(run: RunFolder, doc: Mapping[str, Any]) -> Plan:
    """The run's plan, as every worker and the merge make it from its config.yaml (a stage fed from another run
    folder reads that folder, a relative path taken from the run folder)."""
    return prepare(doc, source_of=run.config_source, base_dir=run.path, read_source=source_reader(run.path))


def _layout(run: RunFolder) -> ShardLayout:
    layout = run.read_layout()
    if layout is None:
        raise DiffsweepError(f"{run.path} is not a distributed run: it has no {SHARDS}/layout.json")
    return layout


def wait_for_run(run: RunFolder, poll_seconds: float = 0.5) -> RunInfo:
    """Wait until the run is finalized, or stop at the first dead shard (then the run is interrupted)."""
    layout = _layout(run)
    while True:
        info = run.read_info()
        if info.status != "running":
            return info
        dead = [k for k in range(layout.count) if run.shard_state(k) in ("dead", "interrupted")]
        if dead:
            log.error("the worker of shard(s) %s died; finish the run with: diffsweep-runs resume %s",
                      ", ".join(map(str, dead)), run.path)
            info.status = "interrupted"
            return info
        time.sleep(poll_seconds)


def exit_code(info: RunInfo) -> int:
    """0 complete; 1 every item made, some failed; 3 some shard did not finish; 130 a worker died or was stopped."""
    if info.status == "complete":
        return EXIT_OK
    if info.status == "failed":
        return EXIT_RUNTIME if info.counts.skipped else EXIT_FAILED_ITEMS
    return EXIT_INTERRUPTED


# --- torchrun / accelerate launch --------------------------------------------------------------------


def started_as_one_of_many() -> bool:
    """Whether a launcher (torchrun, accelerate launch) started this process as one of several."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def launched_state(device_name: str) -> Any:
    """accelerate's PartialState when this process is one of several started by torchrun or `accelerate launch`,
    else None (a plain one-process run)."""
    if "LOCAL_RANK" not in os.environ and "WORLD_SIZE" not in os.environ:
        return None  # started by hand: no launcher, nothing to join
    import torch  # noqa: PLC0415 - start-up time: only a launched process needs torch and accelerate here
    from accelerate import PartialState  # noqa: PLC0415 - start-up time, as torch above

    state = PartialState(cpu=device_name == "cpu" or not torch.cuda.is_available())
    return state if state.num_processes > 1 else None


def run_launched(doc: Mapping[str, Any], state: Any, *, overrides: list[str], source_of: SourceOf,
                 base_dir: Path | None, out: TextIO, cache: PipelineCache | None,
                 trusted: Sequence[str] = ()) -> RunResult:
    """One process of a torchrun / accelerate launch: rank 0 validates, plans and allocates the run folder, then
    shares it; every rank runs the shard of its rank; rank 0 waits for the whole run."""
    import torch.distributed as dist  # noqa: PLC0415 - start-up time: torch.distributed only under a launcher

    request = hashing.digest("request", {"config": normalise(doc)})  # what each rank was asked to run
    shared: list[Any] = [None]
    if state.is_main_process:
        try:
            plan = prepare(doc, source_of=source_of, base_dir=base_dir, read_source=source_reader(base_dir))
            check_output_root(plan.config, source_of)
            if plan.config.dry_run:
                print_plan(plan, out)
                shared = [{"dry_run": plan.total}]
            else:
                check_models_available(plan)
                run = create_run(plan, overrides, state.num_processes, trusted)
                shared = [{"run": str(run.path), "request": request}]
        except DiffsweepError as error:
            shared = [{"error": str(error).splitlines()[0], "code": error.exit_code}]
            dist.broadcast_object_list(shared, src=0)
            raise
    dist.broadcast_object_list(shared, src=0)
    message = shared[0]
    if "error" in message:
        raise RankZeroFailed(message["error"], message["code"])
    if "dry_run" in message:
        return RunResult(None, "dry_run", {"planned": message["dry_run"]})
    if message["request"] != request:
        raise WorkerRefused(f"rank {state.process_index} was started with another config than rank 0; every "
                            f"process of a launch must get the same overrides")
    run = RunFolder(Path(message["run"]))
    device = state.device if doc.get("device", "auto") in ("auto", "cuda") else None
    trust = bool(trusted)  # every rank was started with the same command line, so with the same trust
    worker = work_on_shard(run.path, state.process_index, rank=state.process_index, device=device, cache=cache,
                           trust=trust)
    finalize(run, trust=trust)
    if not state.is_main_process:
        # the launcher stops every process when one exits non-zero: the run's outcome is rank 0's to tell
        return RunResult(None, worker.status, {}, code=EXIT_OK)
    info = wait_for_run(run)
    out.write(f"{run.path}\n")
    return RunResult(run.path, info.status, info.counts.model_dump(), code=exit_code(info))


class RankZeroFailed(DiffsweepError):
    """Rank 0 could not start the run: every other rank stops with its message and exit code."""

    def __init__(self, message: str, code: int):
        super().__init__(f"rank 0 could not start the run: {message}")
        self.exit_code = code


# --- job arrays (submitit) and resuming ------------------------------------------------------------


def submit_run(plan: Plan, *, overrides: list[str], out: TextIO, trusted: Sequence[str] = ()) -> RunResult:
    """Allocate the run folder, then submit one array task per shard; prints the folder and job id."""
    from diffsweep.run.submit import check_backend_available  # noqa: PLC0415 - submitit loads only for job arrays

    settings = plan.config.distribute
    check_backend_available(settings)
    run = create_run(plan, overrides, settings.tasks, trusted)
    info = _submit_and_maybe_wait(run, settings, list(range(settings.tasks)), trust=bool(trusted))
    out.write(f"{run.path}\n")
    return RunResult(run.path, info.status, info.counts.model_dump(), code=exit_code(info) if settings.wait else 0)


def _submit_and_maybe_wait(run: RunFolder, settings: DistributeSettings, shards: list[int],
                           kind: str = "run", trust: bool = False) -> RunInfo:
    from diffsweep.run.submit import submit_shards  # noqa: PLC0415 - submitit loads only for job arrays

    try:
        jobs = submit_shards(run, settings, shards, run_shard_task, kind, trust)
    except Exception as error:
        close_unfinished(run, say=False)
        raise DiffsweepError(f"could not submit the {settings.backend} job array: {error}; the run folder "
                             f"{run.path} holds its plan: `diffsweep-runs resume {run.path}` submits it again "
                             f"(`--here` runs it in this process)") from error
    log.info("submitted %s job array %s: %d task(s) for shard(s) %s", settings.backend, jobs.job_id,
             len(shards), _ranges(shards))
    info = run.read_info()
    if not settings.wait:
        log.info("follow it with: diffsweep-runs show %s", run.path)
        return info
    jobs.wait()
    info = finalize(run, trust=trust) or close_unfinished(run)
    counts = info.counts
    log.info("job array %s ended; the run is %s: %d done, %d failed of %d", jobs.job_id, info.status, counts.done,
             counts.failed, counts.planned)
    return info


def _unfinished(run: RunFolder, layout: ShardLayout) -> list[int]:
    return [k for k in range(layout.count) if not ((w := run.read_worker(k)) and w.finished_ok)]


def _latest_workers(run: RunFolder, layout: ShardLayout) -> list[Worker]:
    return [w for k in range(layout.count) if (w := run.read_worker(k)) is not None]


def _closed_workers(run: RunFolder, layout: ShardLayout) -> list[Worker]:
    """The latest worker of each shard, a worker that died recorded as interrupted with the items it committed
    counted from its shard's manifest (its last heartbeat may have come before some of them)."""
    workers = _latest_workers(run, layout)
    for worker in workers:
        if worker.finished is None:
            if worker.manifest_offset is not None:
                worker.counts.generated, worker.counts.failed = run.committed_since(
                    run.shard_manifest(worker.shard), worker.manifest_offset)
            worker.status, worker.finished = "interrupted", now()
            run.write_worker(worker)
    return workers


def close_unfinished(run: RunFolder, say: bool = True) -> RunInfo:
    """Every task has ended but some shard did not finish (its task failed or was refused): record the run as
    failed with the items made so far; `diffsweep-runs resume` runs those shards again."""
    layout = _layout(run)
    with run.locked(wait=True):
        info = run.read_info()
        if info.status != "running":
            return info
        unfinished = _unfinished(run, layout)
        counted = [r for r in run.items().values() if not r.ok or run.is_intact(r)]
        info.counts = Counts.of(info.counts.planned, counted)
        info.merge_workers(_latest_workers(run, layout))
        if info.stages:
            count_stages(info.stages, info, counted)
        info.status = info.attempts[-1].status = "failed"
        info.finished = info.attempts[-1].finished = now()
        run.write_info(info)
    if say:
        log.error("shard(s) %s did not finish (their task logs: %s); %d done of %d; finish with: diffsweep-runs "
                  "resume %s", _ranges(unfinished), run.path / SHARDS / "submitit", info.counts.done,
                  info.counts.planned, run.path)
    return info


def resume_distributed(run: RunFolder, *, here: bool = False, cache: PipelineCache | None = None,
                       out: TextIO = sys.stdout, trust: bool = False) -> RunResult:
    """Finish a distributed run: only its unfinished shards run again, resubmitted as a job array when the run was
    submitted as one (unless `here`), else one after another in this process."""
    layout = _layout(run)
    with run.locked():
        for shard in range(layout.count):
            if run.shard_lock(shard).is_held():
                raise RunLockedError(f"shard {shard} of {run.path} is still being written by a live worker "
                                     f"(pid {(run.shard_dir(shard) / '.lock').read_text().strip()}); "
                                     f"resume once it has finished or stopped")
        doc, trusted = trusted_config(run, trust)
        plan = _plan(run, doc)
        info = read_info_or_rebuild(run, plan)
        check_worker_may_join(run, info)
        check_sources_unchanged(plan, info, run.config_source)
        removed = run.clean_temps()  # no worker is live: temporary files are leftovers
        if removed:
            log.info("removed %d temporary file(s) left by an interrupted writer", removed)
        unfinished = _unfinished(run, layout)
        if info.status == "running" and info.attempts:  # the last attempt's workers died: close its record
            info.merge_workers(_closed_workers(run, layout))
            info.attempts[-1].status, info.attempts[-1].finished = "interrupted", now()
        info.attempts.append(new_attempt("resume", trusted))
        info.status, info.finished = "running", None
        run.write_info(info)
    log.info("resuming %s: shard(s) %s of %d unfinished", run.path, _ranges(unfinished) or "none", layout.count)
    settings = validated(doc, run.config_source).distribute
    if unfinished and settings.backend != "none" and not here:
        info = _submit_and_maybe_wait(run, settings, unfinished, "resume", trust=trust)
        out.write(f"{run.path}\n")
        return RunResult(run.path, info.status, info.counts.model_dump(),
                         code=exit_code(info) if settings.wait else 0)
    for shard in unfinished:
        work_on_shard(run.path, shard, kind="resume", cache=cache, trust=trust)
    info = finalize(run, trust=trust) or wait_for_run(run)
    out.write(f"{run.path}\n")
    return RunResult(run.path, info.status, info.counts.model_dump(), code=exit_code(info))


def _ranges(numbers: list[int]) -> str:
    """0-3,7 for [0, 1, 2, 3, 7]: the form Slurm array indices take."""
    parts = []
    for _, group in itertools.groupby(enumerate(numbers), key=lambda pair: pair[1] - pair[0]):
        values = [n for _, n in group]
        parts.append(str(values[0]) if len(values) == 1 else f"{values[0]}-{values[-1]}")
    return ",".join(parts)
