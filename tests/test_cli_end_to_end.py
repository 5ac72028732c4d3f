"""The command line contract, exercised in real subprocesses on the embedded tiny models."""

from __future__ import annotations

import io
import json
import re
from pathlib import Path

import numpy as np
import yaml
from jsonschema import Draft202012Validator
from PIL import Image

from conftest import assert_batch_equivalent, read_manifest, read_run_json, run_cli
from diffsweep.config.schema import load_schema


def pixels(path: Path) -> np.ndarray:
    with Image.open(path) as image:
        return np.asarray(image.convert("RGB"))


def test_default_run_writes_the_run_folder_contract(tmp_path: Path) -> None:
    work = tmp_path / "elsewhere"
    work.mkdir()
    result = run_cli([], cwd=work)
    assert result.returncode == 0, result.stderr
    run_dir = Path(result.stdout.strip().splitlines()[-1])
    assert run_dir == work / "runs" / "default" / "v0001"  # ./runs of the working directory

    for name in ("config.yaml", "overrides.yaml", "run.json", "manifest.jsonl", "run.log", "items"):
        assert (run_dir / name).exists(), name
    run = read_run_json(run_dir)
    Draft202012Validator(load_schema("run")).validate(run)
    assert run["status"] == "complete"
    assert run["counts"] == {"planned": 4, "done": 4, "failed": 0, "skipped": 0}
    assert run["cache"] == {"loads": 1, "hits": 0}
    assert run["builders"][0]["model"] == "tiny:sd"
    assert Path(run["builders"][0]["model_path"], "model_index.json").is_file()
    assert run["timings"]["first_call_seconds"] > 0

    item_schema = Draft202012Validator(load_schema("item"))
    records = read_manifest(run_dir)
    assert sorted(r["index"] for r in records) == [0, 1, 2, 3]
    prompts = {r["params"]["prompt"] for r in records}
    assert prompts == {"a lighthouse on a cliff at dusk, oil painting", "a red fox in fresh snow, golden hour photograph"}
    for record in records:
        item_schema.validate(record)
        (output,) = record["outputs"]
        assert re.fullmatch(rf"items/{record['index']:04d}-{record['item_id'][:12]}\.png", output)
        sidecar = json.loads((run_dir / output).with_suffix(".json").read_text())
        item_schema.validate(sidecar)
        assert sidecar["builder"]["identity"]["model"] == "tiny:sd"
        assert sidecar["generator"] == {"device": "cpu", "seed": record["seed"]}
        with Image.open(run_dir / output) as image:
            assert image.size == (64, 64)
            text = dict(image.text)
        lines = text["parameters"].splitlines()
        assert lines[0] == record["params"]["prompt"]
        assert f"Seed: {record['seed']}" in lines[-1] and "Steps: 4" in lines[-1] and "Size: 64x64" in lines[-1]
        assert "Sampler: DDIMScheduler" in lines[-1] and sidecar["scheduler"] == "DDIMScheduler"
        embedded = json.loads(text["diffsweep"])
        assert embedded["item_id"] == record["item_id"] and embedded["params"] == record["params"]
    assert "loaded stable_diffusion/StableDiffusionPipeline" in (run_dir / "run.log").read_text()


def test_overrides_dry_run_and_prompt_list(tmp_path: Path) -> None:
    args = ["provider=tiny_sdxl", "sweep.params.num_inference_steps=3", 'sweep.grid.prompt=["a lighthouse, at dusk","a fox"]']
    dry = run_cli([*args, "dry_run=true"], cwd=tmp_path)
    assert dry.returncode == 0, dry.stderr
    assert "dry run: 4 items, 1 builder(s)" in dry.stdout and "StableDiffusionXLPipeline" in dry.stdout
    assert not (tmp_path / "runs").exists()

    result = run_cli(args, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    run_dir = Path(result.stdout.strip().splitlines()[-1])
    records = read_manifest(run_dir)
    assert {r["params"]["prompt"] for r in records} == {"a lighthouse, at dusk", "a fox"}
    assert {r["params"]["num_inference_steps"] for r in records} == {3}
    assert (run_dir / "overrides.yaml").read_text().count("- ") == 3


def test_multirun_shares_loaded_pipelines_between_jobs(tmp_path: Path) -> None:
    result = run_cli(["-m", "provider=tiny_sd,tiny_sd_v2", "sweep.params.guidance_scale=1.5,7.5"], cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    run_dirs = sorted((tmp_path / "runs" / "default").iterdir())
    assert [d.name for d in run_dirs] == ["v0001", "v0002", "v0003", "v0004"]
    runs = [read_run_json(d) for d in run_dirs]
    assert sum(r["cache"]["loads"] for r in runs) == 2  # two builders, four jobs
    assert sum(r["cache"]["hits"] for r in runs) == 2
    guidance = {read_manifest(d)[0]["params"]["guidance_scale"] for d in run_dirs}
    assert guidance == {1.5, 7.5}


def test_rerun_from_run_folder_reproduces_the_bytes(tmp_path: Path) -> None:
    first = run_cli(["sweep.params.num_inference_steps=2", "sweep.grid.seed=[random]"], cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    run_dir = Path(first.stdout.strip().splitlines()[-1])
    saved_seed = read_manifest(run_dir)[0]["seed"]
    saved = yaml.safe_load((run_dir / "config.yaml").read_text())
    assert saved["sweep"]["grid"]["seed"] == [saved_seed]  # drawn once, recorded for reruns

    again = run_cli(["--config-path", str(run_dir), "--config-name", "config"], cwd=tmp_path / "..")
    assert again.returncode == 0, again.stderr
    rerun_dir = Path(again.stdout.strip().splitlines()[-1])
    assert rerun_dir == run_dir.parent / "v0002"
    old = {r["item_id"]: r for r in read_manifest(run_dir)}
    new = {r["item_id"]: r for r in read_manifest(rerun_dir)}
    assert old.keys() == new.keys() and {r["seed"] for r in new.values()} == {saved_seed}
    for item_id, record in old.items():
        assert (run_dir / record["outputs"][0]).read_bytes() == (rerun_dir / new[item_id]["outputs"][0]).read_bytes()


def test_runs_cli_list_show_resume_and_verify(tmp_path: Path) -> None:
    first = run_cli(["sweep.params.num_inference_steps=2"], cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    run_dir = Path(first.stdout.strip().splitlines()[-1])
    records = sorted(read_manifest(run_dir), key=lambda r: r["index"])
    original = {r["index"]: (run_dir / r["outputs"][0]).read_bytes() for r in records}
    untouched = run_dir / records[0]["outputs"][0]
    untouched_mtime = untouched.stat().st_mtime_ns

    # lose one image and tear the last manifest line, as a crash would
    (run_dir / records[2]["outputs"][0]).unlink()
    manifest = run_dir / "manifest.jsonl"
    lines = manifest.read_text().splitlines(keepends=True)
    torn_id = json.loads(lines[-1])["item_id"]
    manifest.write_text("".join(lines[:-1]) + lines[-1][: len(lines[-1]) // 2])

    listed = run_cli(["list"], cwd=tmp_path, module="diffsweep.cli.runs")
    assert listed.returncode == 0 and "default/v0001" in listed.stdout

    resumed = run_cli(["resume", "default"], cwd=tmp_path, module="diffsweep.cli.runs")
    assert resumed.returncode == 0, resumed.stderr
    run = read_run_json(run_dir)
    regenerated = {records[2]["item_id"], torn_id}
    assert run["counts"] == {"planned": 4, "done": 4, "failed": 0, "skipped": 0} and run["status"] == "complete"
    first_attempt, resume = run["attempts"]
    assert (first_attempt["kind"], resume["kind"]) == ("run", "resume")
    assert resume["counts"] == {"planned": 4, "generated": len(regenerated), "failed": 0, "kept": 4 - len(regenerated)}
    assert run["cache"]["loads"] == 2  # one load per attempt, each its own process
    lines = manifest.read_text().splitlines()
    latest = {json.loads(line)["item_id"]: json.loads(line) for line in lines}
    assert len(lines) == len(latest) == 4 and all(r["status"] == "ok" for r in latest.values())
    for record in latest.values():
        if record["item_id"] not in regenerated:
            assert (run_dir / record["outputs"][0]).read_bytes() == original[record["index"]]
        else:  # regenerated in a smaller batch: the same image up to float rounding
            assert_batch_equivalent(pixels(run_dir / record["outputs"][0]),
                                    np.asarray(Image.open(io.BytesIO(original[record["index"]])).convert("RGB")))
    if records[0]["item_id"] not in regenerated:
        assert untouched.stat().st_mtime_ns == untouched_mtime  # finished items are not rewritten

    shown = run_cli(["show", str(run_dir)], cwd=tmp_path, module="diffsweep.cli.runs")
    assert shown.returncode == 0 and "complete" in shown.stdout and "tiny:sd" in shown.stdout

    verified = run_cli(["verify", str(run_dir)], cwd=tmp_path, module="diffsweep.cli.runs")
    assert verified.returncode == 0, verified.stderr
    assert "verified 4 item(s)" in verified.stdout and "0 different" in verified.stdout


def test_resume_after_sigkill_mid_run_matches_a_clean_run(tmp_path: Path) -> None:
    import os
    import signal
    import subprocess
    import sys
    import time

    args = ["sweep.batch_size=1", "sweep.params.num_inference_steps=2", "sweep.grid.seed=[0,1,2,3,4,5]",
            "sweep.grid.prompt=[a fox]"]
    crashed = subprocess.Popen([sys.executable, "-m", "diffsweep", *args, "output.root=crashed"], cwd=tmp_path,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    manifest = tmp_path / "crashed" / "default" / "v0001" / "manifest.jsonl"
    deadline = time.time() + 120
    while time.time() < deadline and (not manifest.exists() or manifest.read_text().count("\n") < 2):
        time.sleep(0.05)
    os.kill(crashed.pid, signal.SIGKILL)
    crashed.wait()
    run_dir = manifest.parent
    before = manifest.read_text().count("\n")
    assert 2 <= before < 6, "the kill must land mid-run"
    assert read_run_json(run_dir)["status"] == "running"
    listed = run_cli(["--root", "crashed", "list"], cwd=tmp_path, module="diffsweep.cli.runs")
    assert "interrupted" in listed.stdout  # no live writer holds the lock

    resumed = run_cli(["--root", "crashed", "resume", "default/v0001"], cwd=tmp_path, module="diffsweep.cli.runs")
    assert resumed.returncode == 0, resumed.stderr
    clean = run_cli([*args, "output.root=clean"], cwd=tmp_path)
    assert clean.returncode == 0, clean.stderr
    clean_dir = Path(clean.stdout.strip().splitlines()[-1])

    resumed_records = {r["item_id"]: r for r in read_manifest(run_dir)}
    clean_records = {r["item_id"]: r for r in read_manifest(clean_dir)}
    assert resumed_records.keys() == clean_records.keys()
    run = read_run_json(run_dir)
    assert run["counts"]["done"] == 6 and run["attempts"][-1]["counts"]["kept"] >= before
    assert manifest.read_text().count("\n") == 6  # one line per item once the resume completed
    assert not list(run_dir.rglob("*.tmp"))
    for item_id, record in clean_records.items():
        assert np.array_equal(pixels(clean_dir / record["outputs"][0]),
                              pixels(run_dir / resumed_records[item_id]["outputs"][0]))
