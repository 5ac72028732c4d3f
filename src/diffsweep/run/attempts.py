"""What every caller of the execution core starts a run with, and ends with: run.json's first record, an attempt's
record, and the outcome a command turns into its exit code."""

from __future__ import annotations

import os
import socket
import sys
from dataclasses import dataclass, field
from pathlib import Path

from diffsweep.errors import EXIT_FAILED_ITEMS, EXIT_OK
from diffsweep.planning.plan import Plan
from diffsweep.store.folder import RunFolder
from diffsweep.store.records import Attempt, BuilderRecord, Counts, RunInfo, Versions, now
from diffsweep.store.writer import software_versions


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


def new_run_info(run: RunFolder, plan: Plan) -> RunInfo:
    return RunInfo(status="running", name=plan.config.sweep.name, version=run.path.name, started=now(), finished=None,
                   device=str(plan.device), counts=Counts(planned=plan.total, skipped=plan.total), attempts=[],
                   builders=builder_records(plan), versions=Versions.model_validate(software_versions()),
                   command=invocation(), optimization=dict(plan.config.optimization))


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


def new_attempt(kind: str) -> Attempt:
    return Attempt.started_now(kind, invocation(), socket.gethostname(), os.getpid())
