"""`diffsweep`: the Hydra application. It only composes, resolves and dispatches to `run_sweep`."""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Callable
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.errors import HydraException
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from diffsweep.errors import (EXIT_CONFIG, EXIT_FAILED_ITEMS, EXIT_INTERRUPTED, EXIT_OK, EXIT_RUNTIME,
                              ConfigError, ConfigIssue, DiffsweepError)
from diffsweep.paths import conf_dir

log = logging.getLogger("diffsweep")
_GROUP_OF_KEY = {"builder": "provider", "generation": "provider", "sweep": "sweep", "optimization": "optimization"}
_exit_codes: list[int] = []


def source_finder(hydra_cfg: DictConfig) -> Callable[[str], str | None]:
    """Map a key path to where its value most likely came from: an override or a config file."""
    overrides = list(hydra_cfg.overrides.task)
    choices = hydra_cfg.runtime.choices
    primary = next((Path(s.path) for s in hydra_cfg.runtime.config_sources
                    if s.provider == "main" and s.schema == "file"), conf_dir())
    config_name = hydra_cfg.job.config_name

    def source_of(path: str) -> str | None:
        for override in overrides:
            key = override.split("=", 1)[0].lstrip("+~")
            if path == key or path.startswith((key + ".", key + "[")):
                return f"command-line override '{override}'"
        group = _GROUP_OF_KEY.get(path.split(".", 1)[0].split("[", 1)[0])
        if group and choices.get(group):
            return str(primary / group / f"{choices[group]}.yaml")
        return str(primary / f"{config_name}.yaml")

    return source_of


def resolve(cfg: DictConfig) -> dict:
    """The composed config as plain, fully resolved data (interpolation errors are config errors)."""
    try:
        doc = OmegaConf.to_container(cfg, resolve=True, throw_on_missing=True, enum_to_str=True)
    except OmegaConfBaseException as error:
        raise ConfigError(ConfigIssue(str(getattr(error, "full_key", "") or ""), str(error).splitlines()[0]))
    assert isinstance(doc, dict)
    return doc


@hydra.main(config_path=str(conf_dir()), config_name="config", version_base="1.3")
def _app(cfg: DictConfig) -> None:
    from diffsweep.runner import run_sweep  # torch and diffusers load only once a config composed

    hydra_cfg = HydraConfig.get()
    result = run_sweep(resolve(cfg), overrides=list(hydra_cfg.overrides.task), source_of=source_finder(hydra_cfg))
    _exit_codes.append(result.exit_code)


def configure_logging() -> None:
    """Short progress lines on stderr; stdout carries only results (run folders, plans)."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("[diffsweep] %(message)s"))
    for name in ("diffsweep", "hydra"):
        logger = logging.getLogger(name)
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)
        logger.propagate = name == "diffsweep"  # run.log handlers sit on the root logger
    for noisy, level in (("DIFFUSERS_VERBOSITY", "error"), ("TRANSFORMERS_VERBOSITY", "error")):
        os.environ.setdefault(noisy, level)


def main() -> None:
    """Console entry point: run the app and turn every failure into one clear line and an exit code."""
    os.environ["HYDRA_FULL_ERROR"] = "1"  # let errors reach us instead of Hydra's exit(1)
    configure_logging()
    try:
        _app()
    except ConfigError as error:
        _die(str(error), EXIT_CONFIG)
    except (HydraException, OmegaConfBaseException) as error:
        _die(f"invalid configuration: {error}".rstrip(), EXIT_CONFIG)
    except DiffsweepError as error:
        _die(f"error: {error}", error.exit_code)
    except KeyboardInterrupt:
        _die("interrupted", EXIT_INTERRUPTED)
    except Exception as error:  # noqa: BLE001 - the contract is one clear line, not a traceback
        log.debug("unexpected failure", exc_info=True)
        _die(f"error: {type(error).__name__}: {error}", EXIT_RUNTIME)
    sys.exit(EXIT_FAILED_ITEMS if any(code == EXIT_FAILED_ITEMS for code in _exit_codes) else EXIT_OK)


def _die(message: str, code: int) -> None:
    sys.stderr.write(message.rstrip() + "\n")
    sys.exit(code)
