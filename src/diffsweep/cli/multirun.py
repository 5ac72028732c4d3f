"""Validating every job of a Hydra multirun before the first one runs.

Hydra composes and runs multirun jobs one after another, so a bad value in job 5 used to surface
only after jobs 0-4 had run. `ValidateJobs`, registered in conf/config.yaml's `hydra.callbacks`,
expands the sweep exactly as Hydra's basic sweeper does (config-file `hydra.sweeper.params` first,
then the command line), composes each job and puts it through the checks of a real run (schema,
plan, provider rules, inputs, output root), so a sweep of sweeps fails fast or not at all.
"""

from __future__ import annotations

import logging
from typing import Any

from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.errors import HydraException
from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf, open_dict
from omegaconf.errors import OmegaConfBaseException

from diffsweep.cli.app import resolve, source_finder
from diffsweep.config.model import TrackingSettings
from diffsweep.config.schema import normalise
from diffsweep.console import composition_message
from diffsweep.errors import ConfigError, ConfigIssue
from diffsweep.reports.tracking import ParentRun, end_parent, start_parent

log = logging.getLogger("diffsweep")

BASIC_SWEEPER = f"{BasicSweeper.__module__}.{BasicSweeper.__name__}"


class InvalidJobs(BaseException):
    """Some multirun jobs are invalid. A BaseException because Hydra turns an Exception raised in a
    callback into a warning and carries on; `diffsweep.console.report_failure` reports it (exit 2)."""

    def __init__(self, error: ConfigError):
        super().__init__(str(error))
        self.error = error


def sweep_jobs(config: DictConfig) -> list[list[str]]:
    """The overrides of every job, in launch order, as Hydra's basic sweeper will expand them."""
    params = config.hydra.sweeper.get("params")
    from_file = OmegaConf.to_container(params, resolve=False) if params else {}
    assert isinstance(from_file, dict)
    arguments = [f"{key!s}={value}" for key, value in from_file.items()] + list(config.hydra.overrides.task)
    parser = OverridesParser.create(config_loader=GlobalHydra.instance().config_loader())
    batches = BasicSweeper.split_arguments(parser.parse_overrides(arguments), None)
    return [list(job) for batch in batches for job in batch]


def check_job(job: DictConfig) -> None:
    """Everything `diffsweep` checks before it writes anything, for one composed job."""
    # the callback is made for every command; planning (and torch) load only for a multirun
    from diffsweep.planning.prepare import check_output_root, prepare  # noqa: PLC0415 - start-up time

    HydraConfig.instance().set_config(job)  # as Hydra does for a job: ${hydra:...} resolves against it
    source_of = source_finder(job.hydra)
    task = job.copy()
    with open_dict(task):
        del task["hydra"]
    plan = prepare(resolve(task), source_of=source_of)
    check_output_root(plan.config, source_of)


class ValidateJobs(Callback):
    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        if config.hydra.sweeper.get("_target_") != BASIC_SWEEPER:
            return  # other sweepers (Optuna, Ax, ...) choose their jobs as they go
        loader = GlobalHydra.instance().config_loader()
        issues: list[ConfigIssue] = []
        for number, overrides in enumerate(sweep_jobs(config)):
            job = f"multirun job {number} ({' '.join(overrides)})"
            try:
                check_job(loader.load_sweep_config(config, overrides))
            except ConfigError as error:
                issues += [ConfigIssue(i.path, f"{i.message} [{job}]", i.source) for i in error.issues]
            except (HydraException, OmegaConfBaseException) as error:
                issues.append(ConfigIssue("", f"{job}: {composition_message(error).splitlines()[0]}"))
        if issues:
            raise InvalidJobs(ConfigError(issues))


class TrackJobs(Callback):
    """With tracking=mlflow, a parent MLflow run that the jobs' runs are grouped under. Failing to open
    it costs only the grouping: the jobs still run and track on their own."""

    def __init__(self) -> None:
        self.parent: ParentRun | None = None

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        if "tracking" not in config or config.tracking.get("backend") != "mlflow":
            return
        try:
            doc = normalise({key: resolve(config[key]) for key in ("tracking", "output", "sweep")})
            self.parent = start_parent(TrackingSettings.model_validate(doc["tracking"]), doc["output"]["root"],
                                       doc["sweep"]["name"], list(config.hydra.overrides.task))
        except Exception as error:  # noqa: BLE001 - tracking never stops a sweep
            log.warning("could not open an MLflow parent run for this multirun: %s: %s", type(error).__name__, error)

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        if self.parent is None:
            return
        try:
            end_parent(self.parent)
        except Exception as error:  # noqa: BLE001
            log.warning("could not close the MLflow parent run %s: %s", self.parent.run_id, error)
