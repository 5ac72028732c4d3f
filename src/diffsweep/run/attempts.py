"""What every caller of the execution core starts from and ends with: the run folder's config read as data (code in it
refused unless trusted, a config edited since the run started refused), run.json (kept aside and rebuilt when it
is unreadable), an attempt's record, and the outcome a command turns into its exit code."""

from __future__ import annotations

import logging
import os
import socket
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from diffsweep.errors import EXIT_FAILED_ITEMS, EXIT_OK, EXIT_RUNTIME, ConfigError, DiffsweepError
from diffsweep.hashing import file_digest
from diffsweep.planning.plan import Plan
from diffsweep.planning.stages import StagedPlan
from diffsweep.store.folder import CONFIG, RunFolder
from diffsweep.store.records import (
    Attempt,
    BuilderRecord,
    Counts,
    ItemRecord,
    RunInfo,
    SourceRunRecord,
    StageOrder,
    StageRecord,
    StageTimes,
    Versions,
    now,
)
from diffsweep.store.runconfig import check_unchanged, config_keys, read_raw_run_config, read_run_config, refuse_code
from diffsweep.store.writer import software_versions

log = logging.getLogger("diffsweep")


@dataclass
class RunResult:
    run_dir: Path | None
    status: str
    counts: dict[str, int] = field(default_factory=dict)
    code: int | None = None  # set where the outcome is not just "some items failed" (a distributed run)
    load_failures: dict[str, str] = field(default_factory=dict)  # builder hash -> why it could not be loaded

    @property
    def exit_code(self) -> int:
        if self.code is not None:
            return self.code
        if self.load_failures:
            return EXIT_RUNTIME
        return EXIT_FAILED_ITEMS if self.counts.get("failed") else EXIT_OK


def new_run_info(run: RunFolder, plan: Plan) -> RunInfo:
    info = RunInfo(status="running", name=plan.config.sweep.name, version=run.path.name, started=now(), finished=None,
                   device=str(plan.device), counts=Counts(planned=plan.total, skipped=plan.total), attempts=[],
                   builders=builder_records(plan), versions=Versions.model_validate(software_versions()),
                   command=invocation(), optimization=dict(plan.config.optimization), notes=list(plan.notes))
    if plan.selected is not None:
        info.plan_size = plan.size
    if isinstance(plan, StagedPlan):
        info.stage_order = StageOrder(order=plan.order, why=plan.order_reason)  # type: ignore[arg-type]
        info.stages = stage_records(plan, info, [])
    return info


def stage_records(plan: StagedPlan, info: RunInfo, latest: Iterable[ItemRecord]) -> list[StageRecord]:
    """run.json's stages: what each takes and gives, with its counts and times (see count_stages)."""
    found = []
    for name in plan.stage_names():
        stage = plan.stage_of(name)
        source_run = None
        if stage is not None and stage.source_run is not None:
            chosen = stage.source_run
            source_run = SourceRunRecord(run=chosen.run, run_id=chosen.run_id, config_hash=chosen.config_hash,
                                         manifest_sha256=chosen.manifest_sha256, chosen_by=chosen.chosen_by,
                                         items=[item.item_id for item in chosen.items])
        found.append(StageRecord(
            name=name, source=stage.source if stage else None, take=stage.settings.take if stage else None,
            into=stage.settings.into if stage else None,
            output=stage.output if stage else plan.summary_output(), builders=[b.hash for b in plan.stage_builders(name)],
            counts=Counts(planned=plan.stage_planned(name)), loads=0, source_run=source_run))
    count_stages(found, info, latest)
    return found


def count_stages(stages: list[StageRecord], info: RunInfo, latest: Iterable[ItemRecord]) -> None:
    """Each stage's counts from the latest record of each of its items (those that count: failed, or ok with intact
    files), its loads and timings over every attempt (of a distributed run: over its workers too)."""
    by_stage: dict[str, list[ItemRecord]] = {}
    for record in latest:
        by_stage.setdefault(record.stage or stages[0].name, []).append(record)
    for stage in stages:
        times = StageTimes.total(a.stages[stage.name] for a in info.attempts if a.stages and stage.name in a.stages)
        stage.counts = Counts.of(stage.counts.planned, by_stage.get(stage.name, []))
        stage.loads, stage.load_seconds, stage.call_seconds = times.loads, times.load_seconds, times.call_seconds


def builder_records(plan: Plan) -> list[BuilderRecord]:
    """run.json's builders, each named by what differs from the others (`label`, `identity`)."""
    labels = plan.builder_labels()
    return [BuilderRecord(hash=b.hash, provider=b.provider.name, pipeline=b.spec.name, model=b.config["model"],
                          revision=b.identity.get("revision"), dtype=b.identity["dtype"], label=labels[b.hash].label,
                          identity=labels[b.hash].identity, full_identity=b.identity, model_path=None,
                          load_seconds=None)
            for b in plan.builders.values()]


def invocation() -> list[str]:
    """The command as the user typed it: `diffsweep ...`, or `python -m diffsweep ...` (not a venv path)."""
    spec = getattr(sys.modules.get("__main__"), "__spec__", None)
    if spec is not None and spec.name:  # started with -m
        return ["python", "-m", spec.name.removesuffix(".__main__"), *sys.argv[1:]]
    return [Path(sys.argv[0]).name, *sys.argv[1:]]


def new_attempt(kind: str, trusted: Sequence[str] = ()) -> Attempt:
    return Attempt.started_now(kind, invocation(), socket.gethostname(), os.getpid(), trusted=list(trusted))


def trusted_config(run: RunFolder, trust: bool) -> tuple[dict[str, Any], list[str]]:
    """A run folder's config as data, and the key paths of code it names that the user trusted (`trust`); without
    trust, such a config is refused (ConfigError, exit 2, nothing written)."""
    trusted = refuse_code(run.path, read_raw_run_config(run.path), trust)
    if trusted:
        log.warning("running code that %s names, as you trust it: %s", run.path / CONFIG, ", ".join(trusted))
    return read_run_config(run.path, trust=True), trusted


def check_config_unchanged(run: RunFolder, info: RunInfo) -> None:
    """Refuse (exit 2) a folder whose config.yaml is not the one its run started with, naming what changed. A run
    made before run.json kept the config's hash cannot be checked: say so once, and keep its hash from now on."""
    if check_unchanged(run.path, info.config_hash, info.config_keys):
        return
    log.warning("%s was made before diffsweep recorded the hashes of configs and outputs, so its integrity cannot "
                "be checked; this attempt records them", run.path)
    info.config_hash = file_digest(run.path / CONFIG)
    info.config_keys = config_keys(read_run_config(run.path, trust=True))


def read_info_or_rebuild(run: RunFolder, plan: Plan) -> RunInfo:
    """run.json, or when it cannot be read (torn, edited, of another shape) a new record rebuilt from the plan and
    the manifest, the unreadable file kept aside under a name the warning gives."""
    try:
        return run.read_info()
    except ConfigError:
        raise  # a newer diffsweep's record: not this version's to rewrite
    except DiffsweepError as error:
        if not run.run_json_path.exists():  # killed before its first run.json
            log.warning("%s has no run.json; starting a new run record", run.path)
        else:
            aside = run.keep_aside_info()
            log.warning("%s; it is kept as %s and run.json is rebuilt from the manifest (its attempt history is in "
                        "that copy)", error, aside)
        info = new_run_info(run, plan)
        info.counts = Counts.of(plan.total, (r for r in run.items().values()
                                             if plan.is_planned(r.index, r.item_id) and (not r.ok or run.is_intact(r))))
        return info
