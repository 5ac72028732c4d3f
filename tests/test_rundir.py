"""Run-folder mechanics: unique versions under contention, atomic files, manifest commits, the lock."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from diffsweep.errors import RunLockedError
from diffsweep.rundir import RunFolder, allocate, write_atomic


def test_sixteen_processes_allocating_at_once_get_sixteen_folders(tmp_path: Path) -> None:
    code = textwrap.dedent(f"""
        import sys, time
        from pathlib import Path
        from diffsweep.rundir import allocate
        while time.time() < float(sys.argv[1]):
            pass
        print(allocate(Path({str(tmp_path)!r}), "race"))
    """)
    import time

    start = str(time.time() + 1.5)
    procs = [subprocess.Popen([sys.executable, "-c", code, start], stdout=subprocess.PIPE, text=True)
             for _ in range(16)]
    folders = [p.communicate(timeout=60)[0].strip() for p in procs]
    assert len(set(folders)) == 16
    assert sorted(Path(f).name for f in folders) == [f"v{n:04d}" for n in range(1, 17)]


def test_allocation_skips_taken_numbers(tmp_path: Path) -> None:
    (tmp_path / "s" / "v0007").mkdir(parents=True)
    assert allocate(tmp_path, "s").name == "v0008"


def test_atomic_write_leaves_old_content_when_interrupted(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    target = tmp_path / "a.json"
    write_atomic(target, "old")

    def crash(*_: object) -> None:
        raise OSError("disk gone")

    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(OSError):
        write_atomic(target, "new")
    assert target.read_text() == "old"
    assert list(tmp_path.iterdir()) == [target]  # the temporary file was removed


def test_torn_last_manifest_line_is_ignored_and_repaired(tmp_path: Path) -> None:
    run = RunFolder(tmp_path)
    run.append_manifest({"item_id": "a", "status": "ok"})
    run.append_manifest({"item_id": "b", "status": "ok"})
    with open(run.manifest_path, "a") as handle:
        handle.write('{"item_id": "c", "sta')
    assert [r["item_id"] for r in run.read_manifest()] == ["a", "b"]
    run.read_manifest(repair=True)
    run.append_manifest({"item_id": "c", "status": "ok"})
    lines = run.manifest_path.read_text().splitlines()
    assert [json.loads(line)["item_id"] for line in lines] == ["a", "b", "c"]


def test_complete_json_without_newline_is_not_committed(tmp_path: Path) -> None:
    run = RunFolder(tmp_path)
    run.manifest_path.write_text('{"item_id": "a"}\n{"item_id": "b"}')
    assert [r["item_id"] for r in run.read_manifest()] == ["a"]


def test_second_writer_is_refused_with_the_holder_pid(tmp_path: Path) -> None:
    code = textwrap.dedent(f"""
        import sys, time
        from pathlib import Path
        from diffsweep.rundir import RunFolder
        with RunFolder(Path({str(tmp_path)!r})).locked():
            print("locked", flush=True)
            time.sleep(30)
    """)
    holder = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "locked"
        with pytest.raises(RunLockedError, match=f"locked by pid {holder.pid}"):
            with RunFolder(tmp_path).locked():
                pass
    finally:
        holder.kill()
        holder.wait()
    with RunFolder(tmp_path).locked():  # the OS released the dead holder's lock: never stale
        pass
