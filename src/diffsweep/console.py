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
from typing import Any

from diffsweep.errors import (
    EXIT_CONFIG,
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_READER_GONE,
    EXIT_RUNTIME,
    ConfigError,
    DiffsweepError,
    did_you_mean,
)

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


class StdoutClosed(BaseException):
    """stdout's reader has gone, raised from a Hydra job: a BaseException, since Hydra reports an Exception
    raised in a job ("Error executing job with overrides") before passing it on."""


def report_failure(action: Callable[[], int | None]) -> int:
    """Run `action`, turning every failure into one clear line on stderr and its exit code."""
    try:
        code = _outcome(action)
    except SystemExit as leaving:  # Hydra's --help and --info end this way
        if not leaving.code and not _flushed_stdout():
            raise SystemExit(EXIT_READER_GONE) from None
        raise
    return code if _flushed_stdout() else code or EXIT_READER_GONE  # a failure already reported keeps its code


def _flushed_stdout() -> bool:
    """Flush stdout here, not at interpreter exit, where a closed pipe prints "Exception ignored"; False when its
    reader has gone."""
    try:
        sys.stdout.flush()
    except BrokenPipeError:
        _discard_stdout()
        return False
    return True


def _discard_stdout() -> None:
    """Point stdout at /dev/null, so that nothing left in its buffer fails again at exit."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)


def _outcome(action: Callable[[], int | None]) -> int:
    try:
        return action() or EXIT_OK
    except (BrokenPipeError, StdoutClosed):
        # stdout's reader has gone (`diffsweep-runs list | head -1`): stop quietly, as Unix tools do
        _discard_stdout()
        return EXIT_READER_GONE
    except ConfigError as error:
        return _say(str(error), EXIT_CONFIG)
    except KeyboardInterrupt:
        return _say("interrupted", EXIT_INTERRUPTED)
    except BaseException as error:
        if isinstance(error, _loaded(("diffsweep.cli.multirun", "InvalidJobs"))):
            return _say(str(getattr(error, "error", error)), EXIT_CONFIG)
        if isinstance(error, _loaded(("hydra.errors", "HydraException"), ("omegaconf.errors", "OmegaConfBaseException"),
                                     ("yaml", "YAMLError"))):
            return _say(f"invalid configuration: {composition_message(error)}", EXIT_CONFIG)
        if isinstance(error, DiffsweepError):
            return _say(f"error: {error}", error.exit_code)
        if not isinstance(error, Exception):
            raise
        log.debug("unexpected failure", exc_info=True)
        return _say(f"error: {type(error).__name__}: {error}", EXIT_RUNTIME)


def composition_message(error: BaseException) -> str:
    """Hydra's message with its cause, and the way out of the one override trap users meet most."""
    if isinstance(error, _loaded(("hydra.errors", "MissingConfigException"))) and getattr(error, "options", None):
        return _missing_option(error)
    text = str(error).strip()
    cause = error.__cause__
    if cause is not None and str(cause).strip() and str(cause).strip() not in text:
        text += f": {str(cause).strip().splitlines()[0]}"
    if text.startswith("Error merging override"):
        key = text.removeprefix("Error merging override ").split("=", 1)[0]
        text += (f"\n  (an override cannot turn a mapping into a list or back: to replace a range or file axis, "
                 f"delete it first: '~{key}' '+{key}=[...]')")
    return text


def _missing_option(error: Any) -> str:
    """`provider=tiny_sdx`: one line with the closest option, instead of Hydra's list of seventy, one a line."""
    group, _, name = str(error.missing_cfg_file).rpartition("/")
    searched = [line.split("path=", 1)[1] for line in str(error).splitlines() if "path=file://" in line]
    return (f"{group}={name}: no such option in {group}/{did_you_mean(name, error.options)}; options: "
            f"{', '.join(error.options)}" + (f" (searched {', '.join(searched)})" if searched else ""))


def _say(message: str, code: int) -> int:
    sys.stderr.write(message.rstrip() + "\n")
    return code
