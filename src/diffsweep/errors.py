"""Error types and the exit codes they map to: 0 ok, 1 failed items, 2 bad config."""

from __future__ import annotations

import difflib
import signal
from collections.abc import Callable, Iterable
from dataclasses import dataclass

EXIT_OK = 0
EXIT_FAILED_ITEMS = 1
EXIT_CONFIG = 2
EXIT_RUNTIME = 3
EXIT_INTERRUPTED = 130
EXIT_READER_GONE = 128 + signal.SIGPIPE  # stdout's reader went away (`| head`): what a shell says of a Unix tool


class DiffsweepError(Exception):
    """A failure that is reported as one clear line, without a traceback."""

    exit_code = EXIT_RUNTIME


@dataclass(frozen=True)
class ConfigIssue:
    """One problem in the configuration: where (file and key path) and what was expected."""

    path: str
    message: str
    source: str | None = None

    def __str__(self) -> str:
        text = f"{self.path}: {self.message}" if self.path else self.message
        return f"{text}  (in {self.source})" if self.source else text


# Where a config key's value came from ("command-line override 'x=1'", a config file), for error messages.
SourceOf = Callable[[str], "str | None"]


def no_source(_: str) -> str | None:
    """A SourceOf for configs that come from no file (built in code or by tests)."""
    return None


def did_you_mean(word: str, choices: Iterable[str]) -> str:
    """` (did you mean 'x'?)` when a choice is close to `word`, else an empty string."""
    close = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    return f" (did you mean '{close[0]}'?)" if close else ""


SHOWN_ISSUES = 20  # issues listed in a ConfigError's message; all of them stay in `issues`


class ConfigError(DiffsweepError):
    """The configuration is invalid; nothing has been written."""

    exit_code = EXIT_CONFIG

    def __init__(self, issues: list[ConfigIssue] | ConfigIssue | str):
        if isinstance(issues, str):
            issues = [ConfigIssue("", issues)]
        elif isinstance(issues, ConfigIssue):
            issues = [issues]
        self.issues = list(issues)
        count = len(self.issues)
        head = "invalid configuration" + (f" ({count} errors)" if count > 1 else "")
        shown = [f"  - {issue}" for issue in self.issues[:SHOWN_ISSUES]]
        if count > SHOWN_ISSUES:  # a grid of thousands of bad values must not bury the message
            shown.append(f"  ... and {count - SHOWN_ISSUES} more")
        super().__init__(head + ":\n" + "\n".join(shown))


class ModelUnavailableError(DiffsweepError):
    """A model (or one of its components) cannot be loaded: offline, gated, missing or wrong id."""


class FailedItemsError(DiffsweepError):
    """The run finished, but some items failed (their errors are in the manifest)."""

    exit_code = EXIT_FAILED_ITEMS


class RunLockedError(DiffsweepError):
    """Another live diffsweep process is writing the same run folder."""


class RunUnfinishedError(DiffsweepError):
    """A distributed run ended with shards not finished (a worker died or its task failed)."""

    def __init__(self, message: str, exit_code: int):
        super().__init__(message)
        self.exit_code = exit_code
