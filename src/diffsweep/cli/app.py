"""`diffsweep`: the Hydra application. It only composes, resolves and dispatches to `run_sweep`."""

from __future__ import annotations

import logging
import os
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import InterpolationResolutionError, OmegaConfBaseException

from diffsweep.config.model import RunConfig
from diffsweep.config.schema import normalise, validate_config
from diffsweep.console import StdoutClosed, configure_logging, report_failure
from diffsweep.errors import (
    EXIT_OK,
    ConfigError,
    ConfigIssue,
    DiffsweepError,
    FailedItemsError,
    ModelUnavailableError,
    RunUnfinishedError,
    SourceOf,
)
from diffsweep.paths import conf_dir
from diffsweep.store.folder import CONFIG, RUN_JSON
from diffsweep.store.runconfig import dump_run_config, read_raw_run_config, read_run_config, refuse_code

log = logging.getLogger("diffsweep")
# the first prefix a key path has names its group (builder.quantization comes from quantization/, the rest of
# builder from provider/)
_GROUP_OF_KEY = {"builder.quantization": "quantization", "builder": "provider", "generation": "provider",
                 "sweep": "sweep", "optimization": "optimization", "tracking": "tracking"}


def source_finder(hydra_cfg: Any) -> SourceOf:
    """Map a key path to where its value most likely came from: an override or a config file."""
    choices = hydra_cfg.runtime.choices
    # `sweep=user` picks a file; only value overrides (`sweep.params.x=1`) set keys themselves
    overrides = [o for o in hydra_cfg.overrides.task if o.split("=", 1)[0].lstrip("+~") not in choices]
    copies = {rerun.copy: rerun.folder for rerun in _folder_rerun}  # name the run folder, not its data copy
    folders = [copies.get(Path(s.path), Path(s.path)) for s in hydra_cfg.runtime.config_sources
               if s.schema == "file"] or [conf_dir()]
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
        key = path.split("[", 1)[0]
        group = next((g for prefix, g in _GROUP_OF_KEY.items() if key == prefix or key.startswith(prefix + ".")), None)
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
    with _single_composition(sys.argv[1:]):
        _app()
    if _single_run_failure:
        raise _single_run_failure.pop()


_HYDRA_KEYS = ("hydra.", "hydra/")  # overrides of Hydra's own keys and groups


def mode_is_run(argv: list[str]) -> bool:
    """Whether the command is a single run on diffsweep's own config tree (where no file sets `hydra.mode`) by its
    arguments alone: no flag at all (`-m`, `--config-dir`, and argparse takes `--multi` for `--multirun`), and no
    override of Hydra's keys (`hydra.mode=MULTIRUN`, `hydra.searchpath=...`, `hydra/sweeper=...`)."""
    return not any(arg.startswith("-") or arg.lstrip("+~").startswith(_HYDRA_KEYS) for arg in argv)


@contextmanager
def _single_composition(argv: list[str]) -> Iterator[None]:
    """Hydra composes the whole config once only to read `hydra.mode` (`Hydra.get_mode`), then again to run. When
    the arguments alone say the command is a single run, the mode is unset in every config it can compose, so that
    first composition would find None: say so without it (about 0.15 s of every run)."""
    if not mode_is_run(argv):
        yield
        return
    from hydra._internal.hydra import Hydra  # noqa: PLC0415 - Hydra's own class, patched only for this call

    composing = Hydra.get_mode
    setattr(Hydra, "get_mode", lambda self, config_name, overrides: None)  # noqa: B010 - a method, patched back below
    try:
        yield
    finally:
        setattr(Hydra, "get_mode", composing)  # noqa: B010 - restored


def _run(cfg: DictConfig) -> None:
    hydra_cfg = HydraConfig.get()
    doc, source_of = normalise(resolve(cfg)), source_finder(hydra_cfg)
    validate_config(doc, source_of)  # before torch is imported: bad configs fail in about a second

    from diffsweep.metrics import check_scoring_models  # noqa: PLC0415 - start-up time: torch loads after validation
    from diffsweep.run.local import run_sweep  # noqa: PLC0415 - start-up time: torch loads after validation

    if not doc.get("describe"):  # before a run folder is made, and in a dry run: a scoring model it cannot have
        check_scoring_models(RunConfig.from_doc(doc).score_settings())
    result = run_sweep(doc, overrides=list(hydra_cfg.overrides.task), source_of=source_of,
                       preset=hydra_cfg.runtime.choices.get("provider"),
                       trusted=[key for rerun in _folder_rerun for key in rerun.trusted])
    if result.load_failures:  # the model could not be had: one line with the reason, the cause is in run.log
        reasons = "; ".join(dict.fromkeys(result.load_failures.values()))
        raise ModelUnavailableError(f"{reasons}. The run is recorded as failed at load in {result.run_dir} (run.log "
                                    f"has the full cause); once the model can be had: diffsweep-runs resume "
                                    f"{result.run_dir}")
    if result.counts.get("failed"):
        # an exception, not a flag: it also reaches the parent from process-per-job launchers
        raise FailedItemsError(f"{result.counts['failed']} of {result.counts['planned']} item(s) failed; "
                               f"see {result.run_dir}/manifest.jsonl, then `diffsweep-runs resume {result.run_dir}`")
    if result.exit_code != EXIT_OK:  # a distributed run with a shard that did not finish
        raise RunUnfinishedError(f"the run is {result.status}: some shard did not finish; see `diffsweep-runs show "
                                 f"{result.run_dir}`, then `diffsweep-runs resume {result.run_dir}`", result.exit_code)


CONFIG_PATH_FLAGS = ("--config-path", "-cp")
TRUST_FLAG = "--trust"  # run code a run folder's config names (given to a `--config-path RUN` rerun)


def _config_path_at(argv: list[str]) -> tuple[int, str] | None:
    """Where the --config-path value is in argv, and the value."""
    for position, arg in enumerate(argv):
        flag, equals, value = arg.partition("=")
        if flag in CONFIG_PATH_FLAGS:
            if equals:
                return position, value
            return (position + 1, argv[position + 1]) if position + 1 < len(argv) else None
    return None


def _with_config_path(argv: list[str], position: int, value: str) -> list[str]:
    result = list(argv)
    flag, equals, _ = result[position].partition("=")
    result[position] = f"{flag}={value}" if equals and flag in CONFIG_PATH_FLAGS else value
    return result


def absolute_config_path(argv: list[str], cwd: Path) -> list[str]:
    """Hydra takes a relative --config-path relative to the application's module; a user typing
    `--config-path runs/default/v0001` means the working directory, so make it absolute."""
    found = _config_path_at(argv)
    if found is None or "://" in found[1] or Path(found[1]).expanduser().is_absolute():
        return list(argv)
    return _with_config_path(argv, found[0], str((cwd / found[1]).absolute()))


@dataclass
class _FolderRerun:
    """A `--config-path` that is a run folder: composed from a copy that holds its config as data, never the
    folder's own Hydra settings (its callbacks and launchers are code) unless the user trusts it."""

    folder: Path
    copy: Path
    trusted: list[str]


_folder_rerun: list[_FolderRerun] = []


@contextmanager
def run_folder_as_data(argv: list[str], trust: bool) -> Iterator[list[str]]:
    found = _config_path_at(argv)
    folder = Path(found[1]) if found else None
    if found is None or folder is None or not (folder / RUN_JSON).is_file():
        yield argv
        return
    raw = read_raw_run_config(folder)
    trusted = refuse_code(folder, raw, trust)  # ConfigError (exit 2) names the code when it is not trusted
    if trusted:  # the user trusts what the folder says: Hydra composes it as it is, callbacks included
        _folder_rerun.append(_FolderRerun(folder, folder, trusted))
        yield argv
        return
    with tempfile.TemporaryDirectory(prefix="diffsweep-rerun-") as copy:
        # the folder's values under the Hydra settings this diffsweep ships
        (Path(copy) / CONFIG).write_text(dump_run_config(read_run_config(folder), folder), encoding="utf-8")
        _folder_rerun.append(_FolderRerun(folder, Path(copy), []))
        try:
            yield _with_config_path(argv, found[0], copy)
        finally:
            _folder_rerun.clear()


def main() -> None:
    """Console entry point for `diffsweep`."""
    os.environ["HYDRA_FULL_ERROR"] = "1"  # let errors reach report_failure instead of Hydra's exit(1)
    argv = absolute_config_path(sys.argv[1:], Path.cwd())
    trust = TRUST_FLAG in argv
    argv = [arg for arg in argv if arg != TRUST_FLAG]
    configure_logging(hydra_logs=not any(arg.split("=", 1)[0] == "--info" for arg in argv))

    def run() -> None:
        with run_folder_as_data(argv, trust) as composed:
            sys.argv = [sys.argv[0], *composed]
            _run_app()

    sys.exit(report_failure(run))
