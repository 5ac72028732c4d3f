"""The run folder on disk: version allocation, atomic writes, the manifest, the writer lock, and the one reader
and writer of each record file (run.json, manifest lines, shard layout, worker records, scores).

Every file is written to a temporary name in its own folder, fsynced and renamed into place, so a
crash never leaves a partial file under a final name. The manifest line of an item is appended
only after all its files are in place, which makes "item done" and "line in manifest" one fact.

While a run goes, lines are appended (each worker of a distributed run to a manifest of its own
under `shards/`); `RunFolder.items()` is the one reader that sees all of them, the last line of
an item winning. When a run or resume completes, `compact_manifest` rewrites `manifest.jsonl` to
exactly one line per item, so a plain JSON-lines reader sees the truth.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import re
import socket
import stat
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, TypeVar

from diffsweep.errors import ConfigError, ConfigIssue, DiffsweepError, RunLockedError
from diffsweep.hashing import file_digest
from diffsweep.store.atomic import TEMP_SUFFIX, write_atomic, write_json
from diffsweep.store.records import (
    RUN_SCHEMA_VERSION,
    FileCheck,
    ItemRecord,
    RecordError,
    RunInfo,
    ScoreRecord,
    ShardLayout,
    Sidecar,
    Worker,
)

VERSION_RE = re.compile(r"^v(\d{4,})$")
MANIFEST = "manifest.jsonl"
RUN_JSON = "run.json"
RUN_LOG = "run.log"
CONFIG = "config.yaml"
LOCK = ".lock"
SHARDS = "shards"
LAYOUT = "layout.json"
WORKER = "worker.json"
REJECTED = "manifest.rejected.jsonl"  # lines of items a run does not plan, kept aside
SCORES = "scores.jsonl"
log = logging.getLogger("diffsweep")
STALE_SECONDS = 60.0  # a worker on another host whose heartbeat is older is taken for dead


def _json_line(value: Any, sort_keys: bool = True) -> str:
    return json.dumps(value, ensure_ascii=False, sort_keys=sort_keys, allow_nan=False) + "\n"


def versions(sweep_dir: Path) -> list[int]:
    if not sweep_dir.is_dir():
        return []
    return sorted(int(m.group(1)) for p in sweep_dir.iterdir() if (m := VERSION_RE.match(p.name)))


def allocate(root: Path, name: str) -> Path:
    """Create and return the next free `<root>/<name>/vNNNN`; `mkdir` is the atomic claim."""
    sweep_dir = root / name
    sweep_dir.mkdir(parents=True, exist_ok=True)
    number = (versions(sweep_dir) or [0])[-1] + 1
    while True:
        candidate = sweep_dir / f"v{number:04d}"
        try:
            candidate.mkdir()
            return candidate
        except FileExistsError:
            number += 1  # another process claimed it first


class WriterLock:
    """An exclusive lock on a file that names its holder (pid and host) and is removed on release.

    `flock` dies with its holder, so a lock never goes stale. The file is removed while still locked;
    a process that opened it just before then finds that the path no longer names the file it locked,
    and tries again on the new one, so two holders can never coexist."""

    def __init__(self, path: Path, what: str):
        self.path = path
        self.what = what
        self._fd: int | None = None

    def acquire(self, wait: bool = False) -> None:
        """Take the lock; if another process holds it, raise RunLockedError naming it, or with
        `wait` block until it is released."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        while True:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX if wait else fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = os.pread(fd, 300, 0).decode(errors="replace").strip() or "?"
                os.close(fd)
                raise RunLockedError(f"{self.what} is locked by pid {holder} (another diffsweep is writing it)") from None
            try:
                current = os.stat(self.path).st_ino
            except FileNotFoundError:
                current = None
            if current == os.fstat(fd).st_ino:
                break
            os.close(fd)  # the previous holder removed this file as we opened it
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()} on {socket.gethostname()}".encode(), 0)
        self._fd = fd

    def release(self) -> None:
        if self._fd is None:
            return
        self.path.unlink(missing_ok=True)
        os.close(self._fd)
        self._fd = None

    def is_held(self) -> bool:
        """Whether a live process holds the lock (a lock file alone proves nothing: its holder may be dead)."""
        try:
            fd = os.open(self.path, os.O_RDONLY)
        except FileNotFoundError:
            return False
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        finally:
            os.close(fd)
        return False

    def __enter__(self) -> WriterLock:
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


class RunFolder:
    """One run folder: its paths, records and writer lock."""

    def __init__(self, path: Path):
        self.path = Path(path).absolute()

    @property
    def manifest_path(self) -> Path:
        return self.path / MANIFEST

    @property
    def run_json_path(self) -> Path:
        return self.path / RUN_JSON

    def config_source(self, _key: str = "") -> str:
        """Where every key of a saved config comes from (a SourceOf for config errors): its config.yaml."""
        return str(self.path / CONFIG)

    def is_intact(self, record: ItemRecord) -> bool:
        """An ok item whose every output is on disk as it was committed (its size and SHA-256; for records made
        before those were kept, a regular file that is not empty)."""
        return record.ok and self.damage(record) is None

    def damage(self, record: ItemRecord) -> str | None:
        """What is wrong with an item's outputs on disk (missing, not a file, cut, altered), or None."""
        for output in record.outputs:
            check = record.files.get(output) if record.files else None
            problem = _file_problem(self.path / output, check)
            if problem:
                return f"{output} {problem}"
        return None

    @contextmanager
    def locked(self, wait: bool = False) -> Iterator[None]:
        """Exclusive writer lock on the whole folder (workers of a distributed run lock only their shard)."""
        lock = WriterLock(self.path / LOCK, f"run folder {self.path}")
        lock.acquire(wait)
        try:
            yield
        finally:
            lock.release()

    def has_live_writer(self) -> bool:
        """Whether some process holds the writer lock, or works on a shard, right now."""
        return WriterLock(self.path / LOCK, "").is_held() or any(
            self.shard_state(shard) == "running" for shard in range(self.shard_count()))

    # ----- shards of a distributed run -------------------------------------------------------
    def shard_dir(self, shard: int) -> Path:
        return self.path / SHARDS / f"shard-{shard:04d}"

    def shard_manifest(self, shard: int) -> Path:
        return self.shard_dir(shard) / MANIFEST

    def shard_lock(self, shard: int) -> WriterLock:
        return WriterLock(self.shard_dir(shard) / LOCK, f"shard {shard} of {self.path}")

    def shard_count(self) -> int:
        layout = self.read_layout()
        return layout.count if layout else 0

    def read_layout(self) -> ShardLayout | None:
        """The shard layout of a distributed run; None for a run made by one process."""
        return _read_if_there(self.path / SHARDS / LAYOUT, ShardLayout, "shard layout")

    def write_layout(self, layout: ShardLayout) -> None:
        write_json(self.path / SHARDS / LAYOUT, layout.to_json())

    def read_worker(self, shard: int) -> Worker | None:
        """The latest worker record of a shard; None before any worker started on it."""
        return _read_if_there(self.shard_dir(shard) / WORKER, Worker, "worker record")

    def write_worker(self, worker: Worker) -> None:
        write_json(self.shard_dir(worker.shard) / WORKER, worker.to_json())

    def shard_state(self, shard: int, worker: Worker | None = None) -> str:
        """pending (no worker yet), running, dead (its worker died without finishing), or how it
        finished: finished, failed (some items failed), interrupted."""
        worker = worker or self.read_worker(shard)
        if worker is None:
            return "pending"
        if worker.finished is not None:
            return "finished" if worker.status == "complete" else worker.status
        if self.shard_lock(shard).is_held():
            return "running"
        if worker.host != socket.gethostname() and _age_seconds(worker.heartbeat) < STALE_SECONDS:
            return "running"  # a lock taken on another host may not show here; its heartbeat does
        return "dead"

    # ----- run.json ------------------------------------------------------------------------
    def read_info(self) -> RunInfo:
        """run.json; DiffsweepError when it cannot be read, ConfigError when a newer diffsweep wrote it (its record
        is not this version's to rewrite)."""
        try:
            raw = json.loads(self.run_json_path.read_bytes())
        except (OSError, ValueError) as error:
            raise DiffsweepError(f"{self.run_json_path}: not a readable run.json ({error})") from error
        version = raw.get("schema_version") if isinstance(raw, dict) else None
        if isinstance(version, int) and version > RUN_SCHEMA_VERSION:
            raise ConfigError(ConfigIssue("schema_version", f"run.json of schema {version} was written by a newer "
                                                            f"diffsweep; this one reads schemas up to "
                                                            f"{RUN_SCHEMA_VERSION}", str(self.run_json_path)))
        try:
            return RunInfo.from_json(raw)
        except RecordError as error:
            raise DiffsweepError(f"{self.run_json_path}: not a readable run.json ({error})") from error

    def write_info(self, info: RunInfo) -> None:
        write_json(self.run_json_path, info.to_json())

    def keep_aside_info(self) -> Path:
        """Move an unreadable run.json out of the way, under a name that says so; returns where it went."""
        aside = self.path / f"{RUN_JSON}.unreadable-{datetime.now(timezone.utc):%Y%m%dT%H%M%S%fZ}"
        os.replace(self.run_json_path, aside)
        return aside

    def check_is_run(self) -> RunInfo:
        """The folder is a diffsweep run (a run.json of a known schema version beside a config.yaml and a manifest)
        before a command writes into it; ConfigError (exit 2, nothing written) when it is not."""
        self.check_has_run_files()
        try:
            return self.read_info()
        except ConfigError:
            raise
        except DiffsweepError as error:
            raise ConfigError(ConfigIssue("", f"{error}; diffsweep writes only into run folders it can read (a "
                                              f"resume keeps an unreadable run.json aside and rebuilds it)")) from None

    def check_has_run_files(self) -> None:
        """The files every run folder has: config.yaml, run.json and a manifest (ConfigError, exit 2, when not)."""
        missing = [name for name in (CONFIG, RUN_JSON) if not (self.path / name).is_file()]
        if not missing and not any(p.is_file() for p in self.manifest_paths()):
            missing.append(MANIFEST)
        if missing:
            raise ConfigError(ConfigIssue("", f"{self.path} is not a diffsweep run folder (no {', '.join(missing)}); "
                                              f"diffsweep writes only into run folders"))

    def committed_since(self, manifest: Path, offset: int) -> tuple[int, int]:
        """(ok, failed) lines committed to `manifest` after byte `offset`: what one attempt made, exactly, even when
        it was killed before it could record it."""
        ok = failed = 0
        try:
            size = manifest.stat().st_size
        except OSError:
            return 0, 0
        for record in read_item_lines(manifest, offset if offset <= size else size):
            ok += record.ok
            failed += not record.ok
        return ok, failed

    def manifest_size(self, manifest: Path | None = None) -> int:
        try:
            return (manifest or self.manifest_path).stat().st_size
        except OSError:
            return 0

    # ----- scores.jsonl ----------------------------------------------------------------------
    def read_scores(self) -> list[ScoreRecord]:
        """Well-formed lines of scores.jsonl (none when the run was never scored), the last of a pair winning."""
        latest: dict[tuple[str, str], ScoreRecord] = {}
        for raw in _committed_lines(self.path / SCORES):
            try:
                record = ScoreRecord.from_json_bytes(raw)
            except RecordError:
                continue
            latest[record.key] = record
        return list(latest.values())

    def write_scores(self, records: Iterable[ScoreRecord]) -> None:
        """Rewrite scores.jsonl atomically with these lines."""
        write_atomic(self.path / SCORES, "".join(_json_line(r.to_json(), sort_keys=False) for r in records))

    # ----- the manifest --------------------------------------------------------------------
    def manifest_paths(self) -> list[Path]:
        """The run's manifest, then each shard's (workers of a distributed run append to their own)."""
        shards = sorted((self.path / SHARDS).glob(f"*/{MANIFEST}")) if (self.path / SHARDS).is_dir() else []
        return [self.manifest_path, *shards]

    def append_item(self, record: ItemRecord, manifest: Path | None = None) -> None:
        """Append one complete line and make it durable before returning."""
        line = _json_line(record.to_json())
        with open(manifest or self.manifest_path, "a", encoding="utf-8") as handle:
            handle.write(line)
            handle.flush()
            os.fsync(handle.fileno())

    def records(self) -> Iterator[ItemRecord]:
        """Every committed line, the run's manifest then its shards', streamed (a later line of an
        item replaces an earlier one)."""
        for path in self.manifest_paths():
            yield from read_item_lines(path)

    def items(self) -> dict[str, ItemRecord]:
        """The latest committed record of every item, across the run's manifest and its shards'."""
        return {record.item_id: record for record in self.records()}

    def sidecars(self) -> dict[str, Sidecar]:
        """Every readable sidecar under items/, by item id (one unreadable or malformed is skipped)."""
        found: dict[str, Sidecar] = {}
        for path in sorted((self.path / "items").glob("*.json")):
            try:
                sidecar = Sidecar.from_json_bytes(path.read_bytes())
            except (OSError, ValueError, RecordError):
                continue
            found[sidecar.item_id] = sidecar
        return found

    def sidecar(self, record: ItemRecord) -> Sidecar | None:
        """The sidecar beside an item's first output; None when it is missing or unreadable."""
        if not record.outputs:
            return None
        try:
            return Sidecar.from_json_bytes((self.path / record.outputs[0]).with_suffix(".json").read_bytes())
        except (OSError, RecordError):
            return None

    def repair_manifest(self, path: Path | None = None) -> None:
        """Cut a torn last line (a crash mid-append) so later appends start on a clean line. Only the
        end of the file is read: a manifest of a million lines is not loaded to look at its last."""
        path = path or self.manifest_path
        if not path.exists():
            return
        with open(path, "r+b") as handle:
            size = end = handle.seek(0, os.SEEK_END)
            cut = 0
            while end > 0:
                start = max(0, end - 65536)
                handle.seek(start)
                newline = handle.read(end - start).rfind(b"\n")
                if newline >= 0:
                    cut = start + newline + 1
                    break
                end = start
            if cut < size:
                handle.truncate(cut)
                handle.flush()
                os.fsync(handle.fileno())

    def done_items(self) -> DoneItems:
        """One streaming pass over every manifest: the ids of items whose latest line is ok and whose
        outputs are all on disk and not empty (what a resume keeps), without keeping the records."""
        intact: set[str] = set()
        damaged: dict[str, str] = {}
        unchecked = 0
        paths = [p for p in self.manifest_paths() if p.exists()]
        in_order, previous = True, -1
        for path in paths:
            for record in read_item_lines(path):
                in_order = in_order and record.index > previous
                previous = record.index
                damaged.pop(record.item_id, None)  # a later line of an item replaces an earlier one
                problem = self.damage(record) if record.ok else "failed"
                if problem is None:
                    intact.add(record.item_id)
                    unchecked += record.files is None
                else:
                    intact.discard(record.item_id)
                    if record.ok:
                        damaged[record.item_id] = problem
        return DoneItems(intact, compact=len(paths) <= 1 and in_order, damaged=damaged, unchecked=unchecked)

    def compact_manifest(self, planned: Callable[[ItemRecord], bool] | None = None,
                         add_checks: bool = False) -> dict[str, ItemRecord]:
        """Rewrite manifest.jsonl atomically with exactly one line per item (the latest), in grid order, shards merged
        in; returns those records. Lines of items the run does not plan (`planned` says no: an index outside the
        grid, an id the plan does not give that index) are not the run's: they are kept aside, appended to
        manifest.rejected.jsonl, and named in a warning."""
        latest = self.items()
        if planned is not None:
            foreign = [r for r in latest.values() if not planned(r)]
            if foreign:
                with open(self.path / REJECTED, "a", encoding="utf-8") as handle:
                    handle.writelines(_json_line(r.to_json()) for r in foreign)
                shown = ", ".join(f"#{r.index} {r.item_id[:12]}" for r in foreign[:5])
                log.warning("%d manifest line(s) name items this run does not plan (%s%s); they are ignored and kept "
                            "in %s", len(foreign), shown, ", ..." if len(foreign) > 5 else "", self.path / REJECTED)
                latest = {item_id: r for item_id, r in latest.items() if planned(r)}
        if add_checks:  # items made before sizes and SHA-256 were recorded: recorded now, as they are on disk
            latest = {item_id: self._with_checks(r) for item_id, r in latest.items()}
        lines = (_json_line(r.to_json()) for r in sorted(latest.values(), key=lambda r: r.index))
        write_atomic(self.manifest_path, "".join(lines))
        for shard_manifest in self.manifest_paths()[1:]:  # merged: the run's manifest now holds them
            shard_manifest.unlink()
        return latest

    def _with_checks(self, record: ItemRecord) -> ItemRecord:
        if record.files is not None or not record.ok or not self.is_intact(record):
            return record
        checks = {output: FileCheck(bytes=(self.path / output).stat().st_size, sha256=file_digest(self.path / output))
                  for output in record.outputs}
        return record.model_copy(update={"files": checks})

    def clean_temps(self) -> int:
        """Remove temporary files left by an interrupted writer; returns how many."""
        removed = 0
        for folder, _, names in os.walk(self.path):  # scandir underneath: cheap on 200,000 item files
            for name in names:
                if name.endswith(TEMP_SUFFIX):
                    Path(folder, name).unlink(missing_ok=True)
                    removed += 1
        return removed


def _age_seconds(stamp: str) -> float:
    try:
        return time.time() - datetime.fromisoformat(stamp).timestamp()
    except ValueError:
        return float("inf")


@dataclass(frozen=True)
class DoneItems:
    """Items of a run that are done for good (see `RunFolder.done_items`), and whether manifest.jsonl
    already is what compaction would write: one file, one line per item, in grid order."""

    ids: set[str]
    compact: bool
    damaged: dict[str, str] = field(default_factory=dict)  # item id -> what is wrong with its committed output
    unchecked: int = 0  # done items whose record keeps no size and SHA-256 (made before they were recorded)

    def __contains__(self, item_id: object) -> bool:
        return item_id in self.ids

    def __len__(self) -> int:
        return len(self.ids)


def _file_problem(path: Path, check: FileCheck | None) -> str | None:
    """Why an output is not what its record says: missing, not a regular file, cut or altered; None when it is."""
    try:
        info = path.lstat()
    except OSError:
        return "is missing"
    if not stat.S_ISREG(info.st_mode):
        return "is not a regular file"
    if check is None:
        return None if info.st_size > 0 else "is empty"
    if info.st_size != check.bytes:
        return f"has {info.st_size} bytes where {check.bytes} were committed"
    if file_digest(path) != check.sha256:
        return "was altered since it was committed (its SHA-256 differs)"
    return None


def _committed_lines(path: Path, offset: int = 0) -> Iterator[bytes]:
    """The lines of one manifest file that were committed, read one at a time (a manifest is never
    held whole). A line without its newline was never committed: the crash came mid-append."""
    try:
        handle = open(path, "rb")  # noqa: SIM115 - closed below; a missing file is an empty manifest
    except FileNotFoundError:
        return
    with handle:
        handle.seek(offset)
        for raw in handle:
            if not raw.endswith(b"\n"):
                return
            yield raw


def read_item_lines(path: Path, offset: int = 0) -> Iterator[ItemRecord]:
    """Committed, well-formed lines of one manifest file; a line that is not an item record is not a
    finished item."""
    for raw in _committed_lines(path, offset):
        try:
            yield ItemRecord.from_json_bytes(raw)
        except RecordError:
            continue


_Read = TypeVar("_Read", ShardLayout, Worker)


def _read_if_there(path: Path, record_type: type[_Read], what: str) -> _Read | None:
    """A record file that may not exist yet (None then); one that exists but does not read is an error."""
    try:
        return record_type.from_json_bytes(path.read_bytes())
    except FileNotFoundError:
        return None
    except (OSError, ValueError, RecordError) as error:
        raise DiffsweepError(f"{path}: not a readable {what} ({error})") from error
