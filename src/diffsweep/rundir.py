"""The run folder on disk: version allocation, atomic writes, the manifest, the writer lock.

Every file is written to a temporary name in its own folder, fsynced and renamed into place, so a
crash never leaves a partial file under a final name. The manifest line of an item is appended
only after all its files are in place, which makes "item done" and "line in manifest" one fact.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from filelock import FileLock, Timeout

from diffsweep.errors import DiffsweepError, RunLockedError

VERSION_RE = re.compile(r"^v(\d{4,})$")
TEMP_SUFFIX = ".tmp"
MANIFEST = "manifest.jsonl"
RUN_JSON = "run.json"
LOCK = ".lock"


def _current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


_UMASK = _current_umask()


def write_atomic(path: Path, data: bytes | str) -> None:
    """Write `data` to `path` via temp file + fsync + rename in the same folder."""
    path.parent.mkdir(parents=True, exist_ok=True)
    raw = data.encode("utf-8") if isinstance(data, str) else data
    fd, temp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=TEMP_SUFFIX, dir=path.parent)
    try:
        os.fchmod(fd, 0o666 & ~_UMASK)  # mkstemp makes 0600; finished files get the usual mode
        with os.fdopen(fd, "wb") as handle:
            handle.write(raw)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temp, path)
    except BaseException:
        Path(temp).unlink(missing_ok=True)
        raise


def write_json(path: Path, value: Any) -> None:
    write_atomic(path, json.dumps(value, indent=2, ensure_ascii=False, sort_keys=False) + "\n")


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


class RunFolder:
    """One run folder: its paths, manifest and lock."""

    def __init__(self, path: Path):
        self.path = Path(path)

    @property
    def manifest_path(self) -> Path:
        return self.path / MANIFEST

    @property
    def run_json_path(self) -> Path:
        return self.path / RUN_JSON

    @contextmanager
    def locked(self) -> Iterator[None]:
        """Exclusive writer lock; the OS releases it when the holder dies, so it never goes stale."""
        lock = FileLock(str(self.path / LOCK), timeout=0)
        try:
            lock.acquire()
        except Timeout:
            pid_file = self.path / (LOCK + ".pid")
            holder = pid_file.read_text().strip() if pid_file.exists() else "?"
            raise RunLockedError(f"run folder {self.path} is locked by pid {holder} (another diffsweep is writing it)") from None
        pid_file = self.path / (LOCK + ".pid")
        try:
            pid_file.write_text(str(os.getpid()))
            yield
        finally:
            pid_file.unlink(missing_ok=True)
            lock.release()

    def has_live_writer(self) -> bool:
        """Whether some process holds the writer lock right now."""
        lock = FileLock(str(self.path / LOCK), timeout=0)
        try:
            lock.acquire()
        except Timeout:
            return True
        lock.release()
        return False

    def read_run_json(self) -> dict[str, Any]:
        try:
            return json.loads(self.run_json_path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as error:
            raise DiffsweepError(f"{self.run_json_path}: not a readable run.json ({error})") from error

    def write_run_json(self, value: dict[str, Any]) -> None:
        write_json(self.run_json_path, value)

    def append_manifest(self, record: dict[str, Any]) -> None:
        """Append one complete line and make it durable before returning."""
        line = json.dumps(record, ensure_ascii=False, sort_keys=True, allow_nan=False) + "\n"
        with open(self.manifest_path, "a", encoding="utf-8") as handle:
            handle.write(line)
            handle.flush()
            os.fsync(handle.fileno())

    def read_manifest(self, repair: bool = False) -> list[dict[str, Any]]:
        """All complete manifest lines. A torn last line (crash mid-append) is ignored, and cut
        off when `repair` is set so later appends start on a clean line."""
        if not self.manifest_path.exists():
            return []
        data = self.manifest_path.read_bytes()
        records, offset, good_end = [], 0, 0
        lines = data.splitlines(keepends=True)
        for number, raw in enumerate(lines):
            offset += len(raw)
            try:
                records.append(json.loads(raw))
            except (json.JSONDecodeError, UnicodeDecodeError):
                continue  # an unreadable line is not a finished item
            if raw.endswith(b"\n") or number < len(lines) - 1:
                good_end = offset
            else:
                records.pop()  # parsed, but the newline that commits it never reached the disk
        if repair and good_end < len(data):
            with open(self.manifest_path, "r+b") as handle:
                handle.truncate(good_end)
                handle.flush()
                os.fsync(handle.fileno())
        return records

    def clean_temps(self) -> int:
        """Remove temporary files left by an interrupted writer; returns how many."""
        removed = 0
        for temp in self.path.rglob(f"*{TEMP_SUFFIX}"):
            temp.unlink(missing_ok=True)
            removed += 1
        return removed
