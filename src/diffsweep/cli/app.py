"""`diffsweep`: the Hydra application. It only composes, resolves and dispatches to `run_sweep`."""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Callable
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import InterpolationResolutionError, OmegaConfBaseException

from diffsweep.config.schema import normalise, validate_config
from diffsweep.console import StdoutClosed, configure_logging, report_failure
from diffsweep.errors import EXIT_OK, ConfigError, ConfigIssue, DiffsweepError, FailedItemsError, RunUnfinishedError
from diffsweep.paths import conf_dir

log = logging.getLogger("diffsweep")
_GROUP_OF_KEY = {"builder": "provider", "generation": "provider", "sweep": "sweep", "optimization": "optimization",
                 "tracking": "tracking"}


def source_finder(hydra_cfg: DictConfig) -> Callable[[str], str | None]:
    """Map a key path to where its value most likely came from: an override or a config file."""
    choices = hydra_cfg.runtime.choices
    # `sweep=user` picks a file; only value overrides (`sweep.params.x=1`) set keys themselves
    overrides = [o for o in hydra_cfg.overrides.task if o.split("=", 1)[0].lstrip("+~") not in choices]
    folders = [Path(s.path) for s in hydra_cfg.runtime.config_sources if s.schema == "file"] or [conf_dir()]
    config_name = hydra_cfg.job.config_name

    def config_file(relative: str) -> str:
        return str(next((f / relative for f in folders if (f / relative).is_file()), folders[0] / relative))

    def source_of(path: str) -> str | None:
        parts = []  # overrides that set a part of this key (`sweep.grid.seed.stop=...` for `sweep.grid.seed`)
        for override in overrides:
            key = override.split("=", 1)[0].lstrip("+~")
            if path == key or path.startswith((key + ".", key + "[")):
                return f"command-line override '{override}'"
            if key.startswith(path + "."):
                parts.append(override)
        if len(parts) == 1:  # with several, the file they change is the one place to name
            return f"command-line override '{parts[0]}'"
        group = _GROUP_OF_KEY.get(path.split(".", 1)[0].split("[", 1)[0])
        if group and choices.get(group):
            return config_file(f"{group}/{choices[group]}.yaml")
        return config_file(f"{config_name}.yaml")

    return source_of


def resolve(cfg: DictConfig) -> dict:
    """The composed config as plain, fully resolved data (interpolation errors are config errors)."""
    try:
        doc = OmegaConf.to_container(cfg, resolve=True, throw_on_missing=True, enum_to_str=True)
    except OmegaConfBaseException as error:
        message = str(error).splitlines()[0]
        if isinstance(error, InterpolationResolutionError):
            message += (r"; a literal '${...}' in a value (a prompt, say) is written '\${...}', and on the "
                        r"command line quoted: 'sweep.grid.prompt=[a \${word}]'")
        raise ConfigError(ConfigIssue(str(getattr(error, "full_key", "") or ""), message)) from error
    assert isinstance(doc, dict)
    return doc


# A single run's failure, carried past Hydra (which prints "Error executing job with overrides" before
# re-raising) to report_failure. Multirun jobs raise instead: the sweeper must stop, and process-per-job
# launchers only see exceptions.
_single_run_failure: list[BaseException] = []


@hydra.main(config_path=str(conf_dir()), config_name="config", version_base="1.3")
def _app(cfg: DictConfig) -> None:
    try:
        _run(cfg)
    except BrokenPipeError as error:  # stdout's reader has gone (`| head`): report_failure ends quietly
        raise StdoutClosed from error
    except DiffsweepError as error:
        if HydraConfig.get().mode != RunMode.RUN:
            raise
        _single_run_failure.append(error)


def _run_app() -> None:
    _app()
    if _single_run_failure:
        raise _single_run_failure.pop()


def _run(cfg: DictConfig) -> None:
    hydra_cfg = HydraConfig.get()
    doc, source_of = normalise(resolve(cfg)), source_finder(hydra_cfg)
    validate_config(doc, source_of)  # before torch is imported: bad configs fail in about a second

    from diffsweep.metrics import ScoreSettings, check_scoring_models  # noqa: PLC0415 - start-up time
    from diffsweep.run.local import run_sweep  # noqa: PLC0415 - start-up time: torch loads after validation

    if not doc.get("describe"):  # before a run folder is made, and in a dry run: a scoring model it cannot have
        check_scoring_models(ScoreSettings.from_config(doc))
    result = run_sweep(doc, overrides=list(hydra_cfg.overrides.task), source_of=source_of,
                       preset=hydra_cfg.runtime.choices.get("provider"))
    if result.counts.get("failed"):
        # an exception, not a flag: it also reaches the parent from process-per-job launchers
        raise FailedItemsError(f"{result.counts['failed']} of {result.counts['planned']} item(s) failed; "
                               f"see {result.run_dir / 'manifest.jsonl'}, then `diffsweep-runs resume {result.run_dir}`")
    if result.exit_code != EXIT_OK:  # a distributed run with a shard that did not finish
        raise RunUnfinishedError(f"the run is {result.status}: some shard did not finish; see `diffsweep-runs show "
                                 f"{result.run_dir}`, then `diffsweep-runs resume {result.run_dir}`", result.exit_code)


CONFIG_PATH_FLAGS = ("--config-path", "-cp")


def absolute_config_path(argv: list[str], cwd: Path) -> list[str]:
    """Hydra takes a relative --config-path relative to the application's module; a user typing
    `--config-path runs/default/v0001` means the working directory, so make it absolute."""
    result = list(argv)
    for position, arg in enumerate(result):
        flag, equals, value = arg.partition("=")
        if flag not in CONFIG_PATH_FLAGS:
            continue
        if not equals:
            if position + 1 >= len(result):
                break
            position, value = position + 1, result[position + 1]
        if "://" in value or Path(value).expanduser().is_absolute():
            continue
        absolute = str((cwd / value).absolute())
        result[position] = f"{flag}={absolute}" if equals else absolute
    return result


def main() -> None:
    """Console entry point for `diffsweep`."""
    os.environ["HYDRA_FULL_ERROR"] = "1"  # let errors reach report_failure instead of Hydra's exit(1)
    sys.argv = [sys.argv[0], *absolute_config_path(sys.argv[1:], Path.cwd())]
    configure_logging(hydra_logs=not any(arg.split("=", 1)[0] == "--info" for arg in sys.argv[1:]))
    sys.exit(report_failure(_run_app))
