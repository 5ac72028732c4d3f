"""A sweep in this process, the whole job as plain functions: `run_sweep` (compose's output in, a run folder out) and
`resume_run` (a run folder finished in place).

A run started by torchrun or `accelerate launch`, or submitted as a job array, goes to `diffsweep.run.distributed`;
everything else runs here as one attempt of the execution core, then its records, then its reports.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, TextIO

from diffsweep.errors import ConfigError, ConfigIssue, SourceOf, no_source
from diffsweep.execution.cache import PipelineCache, process_cache
from diffsweep.execution.core import Execution, execute, run_log
from diffsweep.planning.plan import Plan
from diffsweep.planning.prepare import check_models_available, check_output_root, prepare, print_plan, validated
from diffsweep.planning.stages import StagedPlan
from diffsweep.reports import build as reports
from diffsweep.run import distributed
from diffsweep.run.attempts import (
    RunResult,
    check_config_unchanged,
    new_attempt,
    new_run_info,
    read_info_or_rebuild,
    stage_records,
    trusted_config,
)
from diffsweep.run.reuse import find_reusable
from diffsweep.run.sources import check_sources_unchanged, source_reader
from diffsweep.store.folder import RUN_LOG, DoneItems, RunFolder, allocate, read_item_lines
from diffsweep.store.records import Attempt, AttemptCounts, Counts, RunInfo, Status, now
from diffsweep.store.runconfig import write_overrides, write_run_config

log = logging.getLogger("diffsweep")


def run_sweep(doc: Mapping[str, Any], *, overrides: list[str] | None = None, source_of: SourceOf = no_source,
              base_dir: Path | None = None, out: TextIO = sys.stdout, cache: PipelineCache | None = None,
              only: Sequence[str | int] | None = None, preset: str | None = None,
              trusted: Sequence[str] = ()) -> RunResult:
    """Run a composed config into a new versioned run folder (or print the plan on dry_run, or what the builder
    takes on describe; `preset` names the provider preset for that); `only` narrows it to some items, by item id
    or grid index (see Plan.select); `trusted` names the code a run folder's config asked for that the user trusted
    (recorded with the attempt).

    Started as one of several processes by torchrun or `accelerate launch`, this process runs its shard of the
    sweep; with `distribute=local|slurm` the shards are submitted as a job array."""
    if doc.get("describe"):
        from diffsweep.planning.describe import describe, print_description  # noqa: PLC0415 - start-up time

        config = validated(doc, source_of)
        print_description(describe(config, preset), out, as_json=config.describe == "json")
        return RunResult(None, "describe")
    if only and distributed.started_as_one_of_many():
        raise ConfigError(ConfigIssue("--item/--index", "a rerun of single items runs in one process; start it "
                                                        "without torchrun or accelerate launch"))
    state = distributed.launched_state(str(doc.get("device", "auto")))
    if state is not None:
        return distributed.run_launched(doc, state, overrides=overrides or [], source_of=source_of,
                                        base_dir=base_dir, out=out, cache=cache, trusted=trusted)
    plan = prepare(doc, source_of=source_of, base_dir=base_dir, read_source=source_reader(base_dir))
    if only:
        plan.select(only)
    config = plan.config
    check_output_root(config, source_of)
    if config.dry_run:
        print_plan(plan, out)
        return RunResult(None, "dry_run", {"planned": plan.total})
    check_models_available(plan)
    if only and config.distribute.backend != "none":
        # a few items are not worth a job array: they are made here, and config.yaml says so
        log.info("a rerun of single items runs here, in one process, not as a %s job array", config.distribute.backend)
        plan.config = config = config.replace(distribute=config.distribute.model_copy(update={"backend": "none"}))
    if config.distribute.backend != "none":
        return distributed.submit_run(plan, overrides=overrides or [], out=out, trusted=trusted)
    run = RunFolder(allocate(Path(config.output.root), config.sweep.name))
    with run.locked():
        config_hash, config_keys = write_run_config(run.path, config.to_doc())
        write_overrides(run.path, overrides or [])
        run.manifest_path.touch()  # a run folder has a manifest from the start, empty until an item commits
        info = new_run_info(run, plan)
        info.config_hash, info.config_keys = config_hash, config_keys
        if plan.rerun_of_items and plan.selected is not None:  # a resume makes these items, not the whole grid
            info.selected_items = sorted(plan.selected)
        attempt = new_attempt("run", trusted)
        return _attempt(run, plan, info, attempt, DoneItems(set(), compact=True), cache or process_cache(), out)


def resume_run(run_dir: Path, *, out: TextIO = sys.stdout, cache: PipelineCache | None = None,
               here: bool = False, trust: bool = False) -> RunResult:
    """Finish a run in place: items with a committed manifest line and outputs as committed are kept, the rest
    (failed, missing, cut or altered) made again; the attempt is added to the run's history in run.json. A
    distributed run runs only its unfinished shards again (resubmitted when it was submitted, unless `here`).

    The folder is read as data: config.yaml naming code is refused unless `trust`, and a config.yaml edited since
    the run started is refused, naming what changed."""
    run = RunFolder(run_dir)
    if run.read_layout() is not None:
        return distributed.resume_distributed(run, here=here, cache=cache, out=out, trust=trust)
    with run.locked():
        doc, trusted = trusted_config(run, trust)
        plan = prepare(doc, source_of=run.config_source, base_dir=run.path, read_source=source_reader(run.path))
        info = read_info_or_rebuild(run, plan)
        check_config_unchanged(run, info)
        check_sources_unchanged(plan, info, run.config_source)
        removed = run.clean_temps()
        if removed:
            log.info("removed %d temporary file(s) left by an interrupted writer", removed)
        run.repair_manifest()
        _close_dead_attempt(run, info)
        done = run.done_items()  # one streaming pass: ids, not records
        for item_id, problem in sorted(done.damaged.items()):
            log.warning("item %s: %s; it is made again", item_id[:12], problem)
        if info.selected_items is not None:
            plan.select(info.selected_items)
        return _attempt(run, plan, info, new_attempt("resume", trusted), done, cache or process_cache(), out,
                        settled=info.status == "complete" and done.compact and not done.unchecked
                        and len(done) == plan.total)  # no line beside the plan's


def _close_dead_attempt(run: RunFolder, info: RunInfo) -> None:
    """An attempt still `running` in run.json was killed before it could record its end: it is recorded as
    interrupted, with the items it committed counted from its manifest lines."""
    last = info.attempts[-1] if info.attempts else None
    if last is None or last.status != "running":
        return
    if last.manifest_offset is not None:
        last.counts.generated, last.counts.failed = run.committed_since(run.manifest_path, last.manifest_offset)
    last.status, last.finished = "interrupted", now()
    log.info("the last attempt (pid %d on %s) ended without recording it: %d item(s) generated, %d failed",
             last.pid, last.host or "?", last.counts.generated, last.counts.failed)


def _attempt(run: RunFolder, plan: Plan, info: RunInfo, attempt: Attempt, done: DoneItems, cache: PipelineCache,
             out: TextIO, settled: bool = False) -> RunResult:
    """One attempt of the execution core over every item not `done`, then run.json and the reports. `settled`: the
    run was complete with a compact, checked manifest before this attempt, so an attempt with nothing to do leaves
    the manifest and reports as they are."""
    with run_log(run.path / RUN_LOG):
        kept = plan.count_in(done)
        attempt.counts = AttemptCounts(planned=plan.total, kept=kept)
        attempt.manifest_offset = run.manifest_size()
        info.attempts.append(attempt)
        info.status, info.finished = "running", None
        run.write_info(info)
        log.info("run folder %s: %d planned, %d already done", run.path, plan.total, kept)
        for note in plan.notes:  # said on the console when the plan was made
            log.info("%s", note, extra={"console": False})
        nothing_to_do = kept == plan.total
        if nothing_to_do:
            log.info("nothing to do: all %d planned item(s) are done", plan.total)
        job = Execution(run, plan, attempt, {b.hash: b for b in info.builders}, cache)
        skip: set[str] = done.ids
        if plan.config.reuse and not nothing_to_do:
            job.reused = find_reusable(plan, run, done.ids)
            skip = done.ids | {pending.item.item_id for pending in job.reused}
            log.info("reuse: %d item(s) made by other versions of %s are committed from there", len(job.reused),
                     plan.config.sweep.name)
        outcome = execute(job, [] if nothing_to_do else plan.batches(skip=skip), todo=plan.total - kept,
                          label=plan.config.sweep.name)
        unchanged = settled and nothing_to_do and not outcome.interrupted

        def planned(record: Any) -> bool:
            return plan.is_planned(record.index, record.item_id)

        if unchanged:  # every planned item done and intact, the manifest already compact
            info.counts = Counts(planned=plan.total, done=plan.total)
            counted = list(run.items().values()) if isinstance(plan, StagedPlan) else []
        else:
            # outputs found intact when the attempt began, or hashed by the writer as this attempt committed them,
            # are not read again; only the rest (left damaged or missing) are checked
            checked = done.ids | {r.item_id for r in read_item_lines(run.manifest_path, attempt.manifest_offset)}
            records = ({k: r for k, r in run.items().items() if planned(r)} if outcome.interrupted
                       else run.compact_manifest(planned, add_checks=True))
            counted = [r for r in records.values() if not r.ok or r.item_id in checked or run.is_intact(r)]
            info.counts = Counts.of(plan.total, counted)
        if isinstance(plan, StagedPlan):
            info.stages = stage_records(plan, info, counted)
        counts = info.counts
        status: Status = ("interrupted" if outcome.interrupted
                          else "failed" if counts.failed or counts.skipped or job.load_failures else "complete")
        attempt.status, attempt.finished = status, now()
        info.status, info.finished = status, attempt.finished
        run.write_info(info)
        reports.after_attempt(run, plan.config, info, score=not outcome.interrupted, redraw=not unchanged,
                              device=plan.device, plan=plan)
        made = (f" ({attempt.counts.generated} generated, {attempt.counts.kept} kept from earlier attempts)"
                if attempt.kind == "resume" else "")
        if attempt.counts.reused:
            made += f" ({attempt.counts.reused} reused from other versions)"
        log.info("%s: %d done, %d failed of %d%s", status, counts.done, counts.failed, counts.planned, made)
        if outcome.interrupted:
            log.info("resume with: diffsweep-runs resume %s", run.path)
    outcome.reraise()
    out.write(f"{run.path}\n")
    return RunResult(run.path, status, info.counts.model_dump(), load_failures=dict(job.load_failures))
