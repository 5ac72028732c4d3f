"""What every diffsweep command does on the console: its logging setup and its one-line failures.

Kept apart from the Hydra application so that `diffsweep-runs list` and `show` start without Hydra,
jsonschema or torch: the failure types of those libraries are looked up only when they are loaded
(an error cannot come from a module that was never imported).
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Callable

from diffsweep.errors import EXIT_CONFIG, EXIT_INTERRUPTED, EXIT_OK, EXIT_RUNTIME, ConfigError, DiffsweepError

log = logging.getLogger("diffsweep")


def configure_logging(hydra_logs: bool = True) -> None:
    """Short progress lines on stderr; stdout carries only results (run folders, plans).

    With `hydra_logs=False` Hydra's loggers are left as Hydra sets them up: `--info` prints its
    sections through them, on stdout, as in any Hydra application."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("[diffsweep] %(message)s"))
    handler.addFilter(lambda record: getattr(record, "console", True))  # details meant for run.log alone
    for name in ("diffsweep", "hydra") if hydra_logs else ("diffsweep",):
        logger = logging.getLogger(name)
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)
        logger.propagate = name == "diffsweep"  # run.log handlers sit on the root logger
    # Hydra logs "Error executing job ..." before re-raising; report_failure says it better.
    logging.getLogger("hydra.core.utils").setLevel(logging.CRITICAL)
    # transformers imports torchao (the quantization extra) whenever it is installed; torchao then warns about its
    # optional CUDA kernels and torch about an enum torchao registers: noise on every command, with or without it
    logging.getLogger("torchao").setLevel(logging.ERROR)
    logging.getLogger("torch.utils._pytree").setLevel(logging.ERROR)
    for noisy, level in (("DIFFUSERS_VERBOSITY", "error"), ("TRANSFORMERS_VERBOSITY", "error")):
        os.environ.setdefault(noisy, level)


def _loaded(*names: tuple[str, str]) -> tuple[type, ...]:
    """The classes `module.attribute` of the modules that are imported already."""
    return tuple(getattr(sys.modules[module], attribute) for module, attribute in names if module in sys.modules)


def report_failure(action: Callable[[], int | None]) -> int:
    """Run `action`, turning every failure into one clear line on stderr and its exit code."""
    try:
        return action() or EXIT_OK
    except ConfigError as error:
        return _say(str(error), EXIT_CONFIG)
    except KeyboardInterrupt:
        return _say("interrupted", EXIT_INTERRUPTED)
    except BaseException as error:
        if isinstance(error, _loaded(("diffsweep.cli.multirun", "InvalidJobs"))):
            return _say(str(getattr(error, "error", error)), EXIT_CONFIG)
        if isinstance(error, _loaded(("hydra.errors", "HydraException"), ("omegaconf.errors", "OmegaConfBaseException"),
                                     ("yaml", "YAMLError"))):
            return _say(f"invalid configuration: {_composition_message(error)}", EXIT_CONFIG)
        if isinstance(error, DiffsweepError):
            return _say(f"error: {error}", error.exit_code)
        if not isinstance(error, Exception):
            raise
        log.debug("unexpected failure", exc_info=True)
        return _say(f"error: {type(error).__name__}: {error}", EXIT_RUNTIME)


def _composition_message(error: BaseException) -> str:
    """Hydra's message with its cause, and the way out of the one override trap users meet most."""
    text = str(error).strip()
    cause = error.__cause__
    if cause is not None and str(cause).strip() and str(cause).strip() not in text:
        text += f": {str(cause).strip().splitlines()[0]}"
    if text.startswith("Error merging override"):
        key = text.removeprefix("Error merging override ").split("=", 1)[0]
        text += (f"\n  (an override cannot turn a mapping into a list or back: to replace a range or file axis, "
                 f"delete it first: '~{key}' '+{key}=[...]')")
    return text


def _say(message: str, code: int) -> int:
    sys.stderr.write(message.rstrip() + "\n")
    return code
