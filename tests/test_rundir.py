"""Run-folder mechanics: unique versions under contention, atomic files, manifest commits, the lock."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from diffsweep.errors import RunLockedError
from diffsweep.store.atomic import write_atomic
from diffsweep.store.folder import RunFolder, allocate
from diffsweep.store.records import ItemRecord

pytestmark = pytest.mark.quick  # unit tests: part of make test-fast


def test_sixteen_processes_allocating_at_once_get_sixteen_folders(tmp_path: Path) -> None:
    code = textwrap.dedent(f"""
        import sys, time
        from pathlib import Path
        from diffsweep.store.folder import allocate
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


def item_id(name: str) -> str:
    """A full item id (64 hex digits, as records hold) that a test names by a letter."""
    return hashlib.sha256(name.encode()).hexdigest()


def item(name: str, index: int = 0, status: str = "ok") -> ItemRecord:
    return ItemRecord(index=index, item_id=item_id(name), builder_hash="b" * 64, status=status, params={"steps": 1},
                      seed=index, outputs=[f"items/{name}.png"] if status == "ok" else [], seconds=0.5,
                      error=None if status == "ok" else "boom")


def test_torn_last_manifest_line_is_ignored_and_repaired(tmp_path: Path) -> None:
    run = RunFolder(tmp_path)
    run.append_item(item("a", 0))
    run.append_item(item("b", 1))
    with open(run.manifest_path, "a") as handle:
        handle.write('{"item_id": "c", "sta')
    assert list(run.items()) == [item_id("a"), item_id("b")]
    run.repair_manifest()
    run.append_item(item("c", 2))
    lines = run.manifest_path.read_text().splitlines()
    assert [json.loads(line)["item_id"] for line in lines] == [item_id("a"), item_id("b"), item_id("c")]


def test_complete_json_without_newline_is_not_committed(tmp_path: Path) -> None:
    run = RunFolder(tmp_path)
    first = json.dumps(item("a").to_json())
    run.manifest_path.write_text(first + "\n" + json.dumps(item("b", 1).to_json()))
    assert list(run.items()) == [item_id("a")]


def test_compaction_keeps_the_latest_line_of_each_item_and_merges_shards(tmp_path: Path) -> None:
    run = RunFolder(tmp_path)
    run.append_item(item("b", 1, status="failed"))
    run.append_item(item("a", 0))
    run.append_item(item("b", 1))  # a resume regenerated it
    shard = tmp_path / "shards" / "0001" / "manifest.jsonl"
    shard.parent.mkdir(parents=True)
    run.append_item(item("c", 2), manifest=shard)
    assert {k: r.status for k, r in run.items().items()} == {item_id("a"): "ok", item_id("b"): "ok", item_id("c"): "ok"}
    run.compact_manifest()
    lines = [json.loads(line) for line in run.manifest_path.read_text().splitlines()]
    assert [(r["item_id"], r["status"]) for r in lines] == [(item_id(n), "ok") for n in "abc"]
    assert not shard.exists()
    assert ItemRecord.from_json(lines[0]) == item("a", 0)  # a record reads back as it was written


def test_a_record_keeps_keys_it_does_not_know(tmp_path: Path) -> None:
    raw = {**item("a").to_json(), "added_by_a_newer_version": {"x": 1}}
    assert ItemRecord.from_json(raw).to_json() == raw


def test_second_writer_is_refused_with_the_holder_pid(tmp_path: Path) -> None:
    code = textwrap.dedent(f"""
        import sys, time
        from pathlib import Path
        from diffsweep.store.folder import RunFolder
        with RunFolder(Path({str(tmp_path)!r})).locked():
            print("locked", flush=True)
            time.sleep(30)
    """)
    holder = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "locked"
        with pytest.raises(RunLockedError, match=f"locked by pid {holder.pid}"), RunFolder(tmp_path).locked():
            pass
    finally:
        holder.kill()
        holder.wait()
    with RunFolder(tmp_path).locked():  # the OS released the dead holder's lock: never stale
        pass
    assert not (tmp_path / ".lock").exists()  # a released lock leaves no file behind
    assert not RunFolder(tmp_path).has_live_writer()


def test_overrides_are_yaml_written_and_read_back_exactly(tmp_path: Path) -> None:
    from diffsweep.store.runconfig import read_overrides, write_overrides

    overrides = ['sweep.grid.prompt=["a \\"quoted\\" fox","snow: cold"]', "sweep.name=ünïcode", "- not a flag",
                 "~sweep.params.height", "+x='single'"]
    write_overrides(tmp_path, overrides)
    assert read_overrides(tmp_path) == overrides
    (tmp_path / "overrides.yaml").write_text('- "sweep.name=written by an earlier version"\n')
    assert read_overrides(tmp_path) == ["sweep.name=written by an earlier version"]
