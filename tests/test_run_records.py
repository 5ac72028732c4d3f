"""run.json, the manifest and run.log stay true across runs, resumes and interruptions (real subprocesses)."""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from PIL import Image

from conftest import assert_batch_equivalent, read_run_json, run_cli

ARGS = ["sweep.params.num_inference_steps=2", "sweep.grid.seed=[5,6]", "sweep.grid.prompt=[a fox]"]


def _run(tmp_path: Path, *extra: str) -> Path:
    result = run_cli([*ARGS, *extra], cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    return Path(result.stdout.strip().splitlines()[-1])


def _runs(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return run_cli(list(args), cwd=tmp_path, module="diffsweep.cli.runs")


def test_a_resume_with_nothing_to_do_adds_to_the_history_and_erases_nothing(tmp_path: Path) -> None:
    run_dir = _run(tmp_path)
    before = read_run_json(run_dir)
    items_before = {p.name: p.read_bytes() for p in (run_dir / "items").iterdir()}

    resumed = _runs(tmp_path, "resume", "default/v0001")
    assert resumed.returncode == 0, resumed.stderr
    assert resumed.stdout.strip() == str(run_dir)  # absolute, like every other command prints it

    after = read_run_json(run_dir)
    for key in ("counts", "cache", "timings", "command", "builders", "started", "status"):
        assert after[key] == before[key], key
    assert after["counts"] == {"planned": 2, "done": 2, "failed": 0, "skipped": 0}
    first, resume = after["attempts"]
    assert first == before["attempts"][0]
    assert resume["kind"] == "resume" and resume["command"] == ["python", "-m", "diffsweep.cli.runs", "resume", "default/v0001"]
    assert first["command"][:3] == ["python", "-m", "diffsweep"]
    assert resume["counts"] == {"planned": 2, "generated": 0, "failed": 0, "kept": 2}
    assert resume["cache"] == {"loads": 0, "hits": 0} and resume["finished"] >= resume["started"]
    assert {p.name: p.read_bytes() for p in (run_dir / "items").iterdir()} == items_before

    shown = _runs(tmp_path, "show", "default")
    assert shown.returncode == 0, shown.stderr
    assert "2 done, 0 failed, 0 not made, of 2 planned" in shown.stdout
    assert "None" not in shown.stdout and "attempt  2 resume" in shown.stdout
    data = json.loads((run_dir / "data.js").read_text().removeprefix("window.DIFFSWEEP_RUN = ").removesuffix(";\n"))
    assert data["counts"] == {"planned": 2, "done": 2, "failed": 0, "skipped": 0}


def test_a_regenerated_item_leaves_one_manifest_line_per_item(tmp_path: Path) -> None:
    run_dir = _run(tmp_path)
    manifest = run_dir / "manifest.jsonl"
    records = [json.loads(line) for line in manifest.read_text().splitlines()]
    lost = run_dir / records[1]["outputs"][0]
    original = lost.read_bytes()
    lost.unlink()

    resumed = _runs(tmp_path, "resume", str(run_dir))
    assert resumed.returncode == 0, resumed.stderr
    lines = [json.loads(line) for line in manifest.read_text().splitlines()]
    assert [r["item_id"] for r in lines] == [r["item_id"] for r in records]  # one line each, in grid order
    with Image.open(lost) as now, Image.open(io.BytesIO(original)) as before:
        assert_batch_equivalent(now.convert("RGB"), before.convert("RGB"))  # made alone, not in a batch of 2
    assert read_run_json(run_dir)["attempts"][1]["counts"]["generated"] == 1


def test_a_finished_run_leaves_no_lock_and_logs_its_outcome(tmp_path: Path) -> None:
    run_dir = _run(tmp_path)
    assert not (run_dir / ".lock").exists()
    log = (run_dir / "run.log").read_text()
    assert "complete: 2 done, 0 failed of 2" in log.splitlines()[-1]


def test_an_interrupted_run_says_how_to_resume_and_still_gets_its_reports(tmp_path: Path) -> None:
    args = [*ARGS[:1], "sweep.batch_size=1", "sweep.grid.seed=[0,1,2,3,4,5,6,7]"]
    process = subprocess.Popen([sys.executable, "-m", "diffsweep", *args], cwd=tmp_path, text=True,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    run_dir = tmp_path / "runs" / "default" / "v0001"
    deadline = time.time() + 120
    while time.time() < deadline and not ((run_dir / "manifest.jsonl").is_file()
                                          and (run_dir / "manifest.jsonl").read_text().count("\n") >= 2):
        time.sleep(0.05)
    os.kill(process.pid, signal.SIGTERM)
    stdout, stderr = process.communicate(timeout=120)
    assert process.returncode == 130, stderr

    assert f"resume with: diffsweep-runs resume {run_dir}" in stderr
    run = read_run_json(run_dir)
    assert run["status"] == "interrupted" and run["attempts"][0]["status"] == "interrupted"
    assert run["counts"]["done"] + run["counts"]["skipped"] == 16 and run["counts"]["skipped"] > 0
    assert (run_dir / "index.html").is_file() and (run_dir / "contact_sheet.png").is_file()
    assert "resume with: diffsweep-runs resume" in (run_dir / "run.log").read_text()
    assert not (run_dir / ".lock").exists()
