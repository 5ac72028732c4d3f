"""Run folders written by an earlier release still read, view, verify and resume (tests/data/earlier_release)."""

from __future__ import annotations

import shutil
from pathlib import Path

from conftest import read_manifest, read_run_json, run_cli

EARLIER = Path(__file__).parent / "data" / "earlier_release"


def _copy(name: str, tmp_path: Path) -> Path:
    target = tmp_path / "runs" / name / "v0001"
    shutil.copytree(EARLIER / name / "v0001", target)
    return target


def _runs(tmp_path: Path, *args: str) -> object:
    return run_cli(list(args), cwd=tmp_path, module="diffsweep.cli.runs")


def test_an_earlier_one_process_run_reads_views_verifies_and_remakes_a_lost_output(tmp_path: Path) -> None:
    run_dir = _copy("old_single", tmp_path)
    shown = _runs(tmp_path, "show", str(run_dir))
    assert shown.returncode == 0 and "complete  (4 done, 0 failed, 0 not made, of 4 planned)" in shown.stdout
    viewer = _runs(tmp_path, "viewer", str(run_dir))
    assert viewer.returncode == 0, viewer.stderr
    assert all(r["outputs"][0] in (run_dir / "data.js").read_text() for r in read_manifest(run_dir))
    verified = _runs(tmp_path, "verify", str(run_dir))
    assert verified.returncode == 0 and "verified 4 item(s): 4 identical" in verified.stdout, verified.stderr

    lost = read_manifest(run_dir)[2]["outputs"][0]
    original = (run_dir / lost).read_bytes()
    (run_dir / lost).unlink()
    resumed = _runs(tmp_path, "resume", str(run_dir))
    assert resumed.returncode == 0, resumed.stderr
    info = read_run_json(run_dir)
    assert info["status"] == "complete" and info["counts"]["done"] == 4
    assert [(a["kind"], a["counts"]["generated"], a["counts"]["kept"]) for a in info["attempts"]] == [
        ("run", 4, 0), ("resume", 1, 3)]
    assert (run_dir / lost).read_bytes() == original  # the same item, made again, byte for byte


def test_an_earlier_distributed_run_resumes_its_unfinished_shard(tmp_path: Path) -> None:
    run_dir = _copy("old_distributed", tmp_path)
    shown = _runs(tmp_path, "show", str(run_dir))
    assert shown.returncode == 0, shown.stderr
    assert "shard    1   pending" in shown.stdout
    resumed = _runs(tmp_path, "resume", "--here", str(run_dir))
    assert resumed.returncode == 0, resumed.stderr
    info = read_run_json(run_dir)
    assert info["status"] == "complete" and info["counts"] == {"planned": 4, "done": 4, "failed": 0, "skipped": 0}
    assert {w["shard"]: w["kind"] for w in info["workers"]} == {0: "run", 1: "resume"}
    assert len(read_manifest(run_dir)) == 4
