"""The viewer's data (data.js) against the run's own records, and its rebuild command (no browser here)."""

from __future__ import annotations

import hashlib
import io
import json
import re
import shutil
from pathlib import Path
from typing import Any

import pytest
import yaml

from conftest import compose_config, read_manifest, read_run_json, run_cli
from diffsweep.run.local import run_sweep

BOGUS_SCHEDULER = "{name: DDIMScheduler, config: {timestep_spacing: bogus}}"  # diffusers rejects it when called
ARGS = ["sweep.params.num_inference_steps=1", "sweep.params.height=32", "sweep.params.width=32",
        "sweep.grid.prompt=[a fox,a bird]", "sweep.grid.seed=[3,4]",
        f"+sweep.grid.builder.scheduler=[null,{BOGUS_SCHEDULER}]"]


def read_data_js(run_dir: Path) -> dict[str, Any]:
    text = (run_dir / "data.js").read_text(encoding="utf-8")
    prefix = "window.DIFFSWEEP_RUN = "
    assert text.startswith(prefix) and text.endswith(";\n")
    return json.loads(text[len(prefix):-2])


def digests(run_dir: Path) -> dict[str, str]:
    """Every file but the viewer's own, by content."""
    return {str(p.relative_to(run_dir)): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(run_dir.rglob("*"))
            if p.is_file() and p.name not in ("index.html", "data.js")}


@pytest.fixture(scope="module")
def failing_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """8 items over prompt x seed x builder.scheduler; the 4 with the bogus scheduler fail for real."""
    root = tmp_path_factory.mktemp("viewer") / "runs"
    result = run_sweep(compose_config(ARGS, root), out=io.StringIO())
    assert result.counts == {"planned": 8, "done": 4, "failed": 4, "skipped": 0}
    return result.run_dir


def test_data_js_holds_every_item_of_the_manifest_with_its_grid_position(failing_run: Path) -> None:
    data = read_data_js(failing_run)
    config = yaml.safe_load((failing_run / "config.yaml").read_text())
    grid = config["sweep"]["grid"]
    assert [axis["name"] for axis in data["axes"]] == list(grid)
    assert data["axes"][0]["values"] == ["a fox", "a bird"] and data["axes"][1]["values"] == ["3", "4"]
    assert data["axes"][2]["values"] == ["model's scheduler", "DDIM timestep_spacing=bogus"]  # never a shared prefix

    builders = {b["hash"]: b for b in read_run_json(failing_run)["builders"]}
    assert {b["hash"] for b in data["builders"]} == set(builders)
    assert len({b["label"] for b in data["builders"]}) == 2  # no `label` in run.json: the hash prefixes
    records = sorted(read_manifest(failing_run), key=lambda r: r["index"])
    assert [item["index"] for item in data["items"]] == [r["index"] for r in records] == list(range(8))
    for record, item in zip(records, data["items"], strict=True):
        assert item["item_id"] == record["item_id"] and item["status"] == record["status"]
        assert item["params"] == record["params"] and item["seed"] == record["seed"]
        assert [o["path"] for o in item["outputs"]] == record["outputs"] and item["builder"] == record["builder_hash"]
        assert item["error"] == record.get("error") and item["seconds"] == record["seconds"]
        prompt, seed, scheduler = (grid[name][position] for name, position in zip(grid, item["coords"], strict=True))
        assert (prompt, seed) == (record["params"]["prompt"], record["seed"])
        assert (record["status"] == "failed") == (scheduler is not None)
        if record["status"] == "ok":
            assert item["scheduler"] == "DDIMScheduler"  # from the sidecar: the class that sampled it
        else:
            assert item["identity"]["scheduler"]["name"] == "DDIMScheduler" and "bogus is not supported" in item["error"]
    assert data["fixed"] == {"height": "32", "width": "32", "num_inference_steps": "1", "guidance_scale": "7.5"}


def test_the_page_is_static_and_names_its_data(failing_run: Path) -> None:
    page = (failing_run / "index.html").read_text(encoding="utf-8")
    assert '<script src="data.js"></script>' in page
    assert not re.search(r"(src|href)=\"(https?:)?//", page) and "@import" not in page  # nothing from a network
    for hook in ('select name="x"', 'select name="y"', 'select name="x2"', 'select name="y2"', 'select name="heatmap"'):
        assert hook in page


def test_viewer_command_rebuilds_from_the_folder_with_scores_and_labels_and_touches_no_record(
        failing_run: Path, tmp_path: Path) -> None:
    run_dir = tmp_path / "copy" / "v0001"
    shutil.copytree(failing_run, run_dir)
    (run_dir / "index.html").unlink()
    (run_dir / "data.js").unlink()
    info = read_run_json(run_dir)
    info["builders"][0]["label"] = "model's own scheduler"
    (run_dir / "run.json").write_text(json.dumps(info))
    ok = [r for r in read_manifest(run_dir) if r["status"] == "ok"]
    lines = [{"item_id": ok[0]["item_id"], "metric": "sharpness", "value": 1.0, "model": None, "revision": None,
              "time": "t0", "skipped": None},
             {"item_id": ok[0]["item_id"], "metric": "sharpness", "value": 2.5, "model": None, "revision": None,
              "time": "t1", "skipped": None},  # the later line wins
             {"item_id": ok[1]["item_id"], "metric": "clip_score", "value": None, "model": "tiny-clip",
              "revision": "r1", "time": "t1", "skipped": "no text"}]
    (run_dir / "scores.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines) + "{torn")
    before = digests(run_dir)

    result = run_cli(["viewer", str(run_dir)], cwd=tmp_path, module="diffsweep.cli.runs")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == str(run_dir / "index.html")
    assert digests(run_dir) == before
    data = read_data_js(run_dir)
    assert data["metrics"] == ["clip_score", "sharpness"]
    by_id = {item["item_id"]: item for item in data["items"]}
    assert by_id[ok[0]["item_id"]]["scores"] == {"sharpness": {"value": 2.5, "model": None, "revision": None,
                                                               "skipped": None}}
    assert by_id[ok[1]["item_id"]]["scores"]["clip_score"] == {"value": None, "model": "tiny-clip", "revision": "r1",
                                                              "skipped": "no text"}
    labels = {b["hash"]: b["label"] for b in data["builders"]}
    assert labels[info["builders"][0]["hash"]] == "model's own scheduler"


def test_items_not_made_yet_are_listed_with_their_planned_ids(failing_run: Path, tmp_path: Path) -> None:
    """A rerun of one item is a run folder where the rest of the grid is not made: the viewer still has a
    cell (and the item id, from the saved plan) for each."""
    from diffsweep.cli.runs import build_parser

    records = sorted(read_manifest(failing_run), key=lambda r: r["index"])
    root = tmp_path / "runs"
    shutil.copytree(failing_run, root / "default" / "v0001")
    args = build_parser().parse_args(["--root", str(root), "rerun", "default", "--index", "0"])
    assert args.func(args) == 0
    data = read_data_js(root / "default" / "v0002")
    assert [item["status"] for item in data["items"]] == ["ok"] + ["missing"] * 7
    assert [item["item_id"] for item in data["items"]] == [r["item_id"] for r in records]
    assert data["items"][5]["params"] == records[5]["params"]
