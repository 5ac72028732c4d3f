"""Plans at scale: a plan streams (counts from axis lengths, items by index arithmetic, nothing holds the
item list), each call shape is checked once, grids over max_items are refused, and a resume reads its
manifest once."""

from __future__ import annotations

import io
import json
import logging
import subprocess
import sys
import tracemalloc
from pathlib import Path

import pytest

from conftest import compose_config, read_run_json, run_cli
from diffsweep import hashing
from diffsweep.errors import ConfigError
from diffsweep.paths import conf_dir
from diffsweep.planning.plan import Plan, identity_params
from diffsweep.planning.prepare import prepare
from diffsweep.run.local import resume_run, run_sweep
from diffsweep.store import folder as rundir


def _prompts(path: Path, count: int) -> Path:
    path.write_text("".join(f"prompt {n}, a lighthouse\n" for n in range(count)), encoding="utf-8")
    return path


def _seeds(stop: int) -> list[str]:
    """Overrides that make the default sweep's seed list a range (Hydra replaces a list by a mapping only so)."""
    return ["~sweep.grid.seed", f"+sweep.grid.seed={{start: 0, stop: {stop}}}"]


def _plan(tmp_path: Path, *overrides: str) -> Plan:
    return prepare(compose_config(list(overrides), tmp_path / "runs"), base_dir=tmp_path)


def test_streamed_ids_and_random_access_agree_with_the_canonical_item_hash(tmp_path: Path) -> None:
    plan = _plan(tmp_path, "sweep.grid.seed=[3,1]", "+sweep.grid.guidance_scale=[1,7.5]", "sweep.batch_size=3",
                 "+sweep.grid.negative_prompt=[ugly,blurry]", "sweep.grid.prompt=[a fox,a ramen bowl]",
                 "+sweep.grid.width=[32,64]")
    items = list(plan.items())
    assert sorted(item.index for item in items) == list(range(plan.total)) and plan.total == 32
    assert list(plan.item_ids()) == [item.item_id for item in items]
    for item in items:
        assert item.item_id == hashing.item_id(item.builder_hash, identity_params(item.params))
        again = plan.item(item.index)
        assert (again.item_id, list(again.params.items())) == (item.item_id, list(item.params.items()))
    summary = plan.summary()
    batches = list(plan.batches())
    assert summary["batches"] == len(batches) == 4 * 3  # 4 call shapes (guidance x width) of 8 items: 3 + 3 + 2
    assert [item.item_id for batch in batches for item in batch.items] == [item.item_id for item in items]
    skipped = {items[0].item_id, items[5].item_id}
    assert [i.item_id for b in plan.batches(skip=skipped) for i in b.items] == [
        item.item_id for item in items if item.item_id not in skipped]
    assert plan.count_in(skipped | {"not an item of this plan"}) == 2


def test_ten_million_items_are_counted_and_first_batched_without_making_them(tmp_path: Path) -> None:
    prompts = _prompts(tmp_path / "prompts.txt", 1000)
    tracemalloc.start()
    try:
        plan = _plan(tmp_path, "sweep=prompts_file", f"sweep.grid.prompt.file={prompts}", "sweep.grid.seed.stop=100",
                     "+sweep.grid.guidance_scale={start: 1, stop: 101}")
        summary = plan.summary()
        first = next(plan.batches())
        last = plan.item(plan.total - 1)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert plan.total == summary["items"] == 10_000_000
    assert summary["batches"] == 100 * 100_000 // 8 and summary["builders"][0]["items"] == 10_000_000
    # guidance (a call-shape axis) is outermost: the first batch is guidance 1, prompt 0, seeds 0..7
    assert [item.index for item in first.items] == [seed * 100 for seed in range(8)]
    assert {item.params["guidance_scale"] for item in first.items} == {1.0}
    assert (last.params["prompt"], last.seed, last.params["guidance_scale"]) == ("prompt 999, a lighthouse", 99, 100.0)
    assert peak < 64 * 2**20, f"planning held {peak / 2**20:.0f} MiB"  # the items alone would take gigabytes


def test_each_call_shape_is_checked_once_not_once_per_item(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from diffsweep.providers.base import Provider

    checked: list[float] = []
    original = Provider.check_params

    def counting(self: Provider, spec: object, params: dict, *rest: object) -> list:
        checked.append(params["guidance_scale"])
        return original(self, spec, params, *rest)

    monkeypatch.setattr(Provider, "check_params", counting)
    plan = _plan(tmp_path, *_seeds(5000), "+sweep.grid.guidance_scale=[1,2,3]",
                 "sweep.grid.prompt=[a,b,c,d]")
    assert plan.total == 60_000
    assert sorted(checked) == [1.0, 2.0, 3.0]


def test_a_bad_call_shape_deep_in_a_large_grid_is_refused_before_anything_is_written(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"sweep.grid.height: height 70 must be a multiple of 8"):
        _plan(tmp_path, *_seeds(100000), "+sweep.grid.height=[64,70]")
    assert not (tmp_path / "runs").exists()


def test_a_range_beyond_max_items_is_refused_before_its_values_are_made(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"sweep.grid.seed: range of 1,000,000,000,000 values is more than "
                                          r"max_items = 1,000,000,000 items"):
        _plan(tmp_path, *_seeds(1000000000000))


def test_dry_run_of_a_billion_item_grid_prints_its_size_and_a_bigger_one_is_refused(tmp_path: Path) -> None:
    prompts = _prompts(tmp_path / "prompts.txt", 1000)
    grid = ["sweep=prompts_file", f"sweep.grid.prompt.file={prompts}", "sweep.grid.seed.stop=1000",
            "+sweep.grid.num_inference_steps={start: 1, stop: 1001}", "dry_run=true"]
    result = run_cli(grid, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == ("dry run: 1000000000 items, 1 builder(s), 125000000 batches (125000000 pipeline calls); "
                        "nothing written")
    assert "items (first 10 of 1000000000), by grid index:" in result.stdout
    assert [line.split()[0] for line in lines if line.startswith("    #")] == [f"#{n}" for n in range(10)]

    refused = run_cli([*grid, "max_items=999999999"], cwd=tmp_path)
    assert refused.returncode == 2
    assert ("sweep.grid: 1,000,000,000 items (prompt 1,000 × seed 1,000 × num_inference_steps 1,000) is more than "
            "max_items = 999,999,999") in refused.stderr
    assert "MemoryError" not in refused.stderr and not (tmp_path / "runs").exists()
    # the grid comes from the sweep file and the command line, the limit from the command line: both said
    assert "raise max_items (set in command-line override 'max_items=999999999') to plan it" in refused.stderr


def test_max_items_errors_name_where_the_limit_and_the_range_were_set(tmp_path: Path) -> None:
    refused = run_cli(["sweep=prompts_file", "sweep.grid.seed.stop=2000000000", "dry_run=true"], cwd=tmp_path)
    assert refused.returncode == 2
    assert ("raise max_items (set in " + str(conf_dir() / "config.yaml") + ")  (in command-line override "
            "'sweep.grid.seed.stop=2000000000')") in refused.stderr


def test_a_resume_with_nothing_to_do_reads_the_manifest_once_and_rewrites_nothing(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    run_dir = run_sweep(compose_config(["sweep.params.num_inference_steps=1", *_seeds(3),
                                        "sweep.params.height=32", "sweep.params.width=32"], tmp_path / "runs"),
                        out=io.StringIO()).run_dir
    manifest = run_dir / "manifest.jsonl"
    before = {path: path.stat().st_mtime_ns for path in (manifest, run_dir / "index.html", run_dir / "contact_sheet.png")}
    reads: list[Path] = []
    real = rundir._committed_lines  # what every manifest reader reads lines through
    monkeypatch.setattr(rundir, "_committed_lines", lambda path, offset=0: reads.append(path) or real(path, offset))

    with caplog.at_level(logging.INFO, logger="diffsweep"):
        result = resume_run(run_dir, out=io.StringIO())
    assert result.status == "complete"
    assert reads == [manifest]
    assert "nothing to do: all 6 planned item(s) are done" in caplog.text
    assert {path: path.stat().st_mtime_ns for path in before} == before
    record = read_run_json(run_dir)
    assert record["counts"] == {"planned": 6, "done": 6, "failed": 0, "skipped": 0}
    assert record["attempts"][-1]["counts"] == {"planned": 6, "generated": 0, "failed": 0, "kept": 6}

    # a lost output is not done: it is made again, and the manifest compacted to one line per item
    lines = [json.loads(line) for line in manifest.read_text().splitlines()]
    (run_dir / lines[4]["outputs"][0]).unlink()
    assert resume_run(run_dir, out=io.StringIO()).counts["done"] == 6
    assert read_run_json(run_dir)["attempts"][-1]["counts"]["generated"] == 1
    assert [json.loads(line)["index"] for line in manifest.read_text().splitlines()] == list(range(6))


def test_show_starts_without_torch_diffusers_or_hydra(tmp_path: Path) -> None:
    run_dir = tmp_path / "runs" / "default" / "v0001"
    run_dir.mkdir(parents=True)
    (run_dir / "run.json").write_text(json.dumps({
        "schema_version": 2, "status": "failed", "name": "default", "version": "v0001", "started": "t",
        "finished": "t", "device": "cpu", "counts": {"planned": 2, "done": 1, "failed": 1, "skipped": 0},
        "builders": [], "command": ["diffsweep"], "versions": {
            "python": "3.11", "torch": "2", "diffusers": "0.42", "transformers": "5", "diffsweep": "0.1.0",
            "cuda": None, "gpu": None}}))
    line = {"builder_hash": "b" * 64, "params": {}, "seed": 0, "seconds": 0.1, "outputs": []}
    (run_dir / "manifest.jsonl").write_text(
        json.dumps({**line, "index": 0, "item_id": "a" * 64, "status": "failed", "error": "boom"}) + "\n"
        + json.dumps({**line, "index": 1, "item_id": "c" * 64, "status": "failed", "error": "bang"}) + "\n"
        + json.dumps({**line, "index": 0, "item_id": "a" * 64, "status": "ok", "outputs": ["items/x.png"]}) + "\n")
    shown = subprocess.run([sys.executable, "-X", "importtime", "-m", "diffsweep.cli.runs", "show", str(run_dir)],
                           cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert shown.returncode == 0, shown.stderr
    assert "failed   #1  bang" in shown.stdout and "boom" not in shown.stdout  # the latest line of an item wins
    imported = {line.rsplit("|", 1)[-1].strip() for line in shown.stderr.splitlines() if line.startswith("import time")}
    assert imported and not imported & {"torch", "diffusers", "transformers", "hydra", "jsonschema"}


def test_a_range_is_checked_at_its_ends_which_still_catch_a_value_out_of_bounds(tmp_path: Path) -> None:
    assert _plan(tmp_path, *_seeds(1000000)).total == 2_000_000  # two prompts
    with pytest.raises(ConfigError, match=r"sweep.grid.guidance_scale\[99\]: 149 is greater than the maximum of 100"):
        _plan(tmp_path, "+sweep.grid.guidance_scale={start: 50, stop: 150}")
