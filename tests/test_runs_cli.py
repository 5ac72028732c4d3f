"""diffsweep-runs commands called in-process on real run folders."""

from __future__ import annotations

import io
from pathlib import Path

import pytest

from conftest import compose_config, read_manifest, read_run_json, run_cli
from diffsweep.cli.runs import build_parser, find_run
from diffsweep.errors import DiffsweepError
from diffsweep.run.local import run_sweep

ARGS = ["sweep.params.num_inference_steps=2", "sweep.grid.seed=[5,6]", "sweep.grid.prompt=[a fox]"]


def _cli(argv: list[str]) -> int:
    args = build_parser().parse_args(argv)
    return args.func(args)


def test_rerun_writes_the_next_version_with_the_same_items(tmp_path: Path) -> None:
    root = tmp_path / "runs"
    first = run_sweep(compose_config(ARGS, root), out=io.StringIO()).run_dir
    assert _cli(["--root", str(root), "rerun", "default"]) == 0
    second = root / "default" / "v0002"
    old = {r["item_id"]: r for r in read_manifest(first)}
    new = {r["item_id"]: r for r in read_manifest(second)}
    assert old.keys() == new.keys()
    for item_id, record in old.items():
        assert (first / record["outputs"][0]).read_bytes() == (second / new[item_id]["outputs"][0]).read_bytes()
    assert read_run_json(second)["status"] == "complete"


def test_resume_of_a_complete_run_does_no_work(tmp_path: Path) -> None:
    root = tmp_path / "runs"
    run_dir = run_sweep(compose_config(ARGS, root), out=io.StringIO()).run_dir
    before = {p: p.stat().st_mtime_ns for p in run_dir.glob("items/*")}
    assert _cli(["--root", str(root), "resume", str(run_dir)]) == 0
    run = read_run_json(run_dir)
    assert run["counts"]["skipped"] == 0 and run["attempts"][-1]["cache"] == {"loads": 0, "hits": 0}
    assert {p: p.stat().st_mtime_ns for p in run_dir.glob("items/*")} == before
    assert len(read_manifest(run_dir)) == 2


def test_find_run_accepts_paths_names_and_versions(tmp_path: Path) -> None:
    root = tmp_path / "runs"
    run_dir = run_sweep(compose_config(ARGS, root), out=io.StringIO()).run_dir
    assert find_run("default", root) == run_dir
    assert find_run("default/v0001", root) == run_dir
    assert find_run(str(run_dir), root) == run_dir
    with pytest.raises(DiffsweepError, match="no run folder found for 'nope'"):
        find_run("nope", root)


def test_rerun_of_one_item_makes_exactly_it_byte_for_byte_into_a_new_version(tmp_path: Path) -> None:
    root = tmp_path / "runs"
    first = run_sweep(compose_config([*ARGS, "sweep.grid.prompt=[a fox,a bird]"], root), out=io.StringIO()).run_dir
    records = sorted(read_manifest(first), key=lambda r: r["index"])
    wanted = records[2]
    assert _cli(["--root", str(root), "rerun", "default", "--item", wanted["item_id"][:16]]) == 0  # a unique beginning
    (made,) = read_manifest(root / "default" / "v0002")
    assert made["item_id"] == wanted["item_id"] and made["outputs"] == wanted["outputs"]
    assert (root / "default" / "v0002" / made["outputs"][0]).read_bytes() == (first / wanted["outputs"][0]).read_bytes()
    run = read_run_json(root / "default" / "v0002")
    assert run["counts"] == {"planned": 1, "done": 1, "failed": 0, "skipped": 0} and run["status"] == "complete"
    assert run["selected_items"] == [wanted["item_id"]]

    assert _cli(["--root", str(root), "rerun", str(first), "--index", "3"]) == 0
    (made,) = read_manifest(root / "default" / "v0003")
    assert made["item_id"] == records[3]["item_id"]
    assert (root / "default" / "v0003" / made["outputs"][0]).read_bytes() == (first / records[3]["outputs"][0]).read_bytes()

    # a resume of such a folder finishes that item, not the whole grid
    (root / "default" / "v0003" / made["outputs"][0]).unlink()
    assert _cli(["--root", str(root), "resume", "default/v0003"]) == 0
    assert [r["item_id"] for r in read_manifest(root / "default" / "v0003")] == [records[3]["item_id"]]
    assert read_run_json(root / "default" / "v0003")["counts"]["planned"] == 1


@pytest.mark.parametrize(("flag", "value", "message"), [("--item", "ffffffffffff", "not in this run's plan"),
                                                        ("--index", "9", "no item with index 9"),
                                                        ("--item", "", "not in this run's plan")])
def test_rerun_of_an_unknown_item_is_refused_before_anything_is_written(tmp_path: Path, flag: str, value: str,
                                                                        message: str) -> None:
    root = tmp_path / "runs"
    run_sweep(compose_config(ARGS, root), out=io.StringIO())
    with pytest.raises(DiffsweepError, match=message):
        _cli(["--root", str(root), "rerun", "default", flag, value])
    assert sorted(p.name for p in (root / "default").iterdir()) == ["v0001"]


def test_list_tells_the_versions_of_a_sweep_apart(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = tmp_path / "runs"
    for extra in (["sweep.grid.seed=[5]"], ["sweep.grid.seed=[6]", "+experiment=sd1_vs_sd2", "sweep.name=default"]):
        run_sweep(compose_config([*ARGS, *extra], root), overrides=extra, out=io.StringIO())
    (root / "default" / "v0003").mkdir()  # a folder that is not (yet) a run
    assert _cli(["--root", str(root), "list"]) == 0
    header, first, second, unreadable = capsys.readouterr().out.splitlines()
    assert header.split()[-2:] == ["model", "overrides"]
    assert first.startswith("default/v0001") and first.endswith(f"  {'tiny:sd':<20}  sweep.grid.seed=[5]")
    assert second.startswith("default/v0002") and second.endswith(
        f"  {'tiny:sd, tiny:sd_v2':<20}  sweep.grid.seed=[6] +experiment=sd1_vs_sd2 sweep.name=default")
    assert unreadable == f"{'default/v0003':<32} unreadable"


def test_show_and_list_from_a_subfolder_find_the_projects_runs(tmp_path: Path) -> None:
    run_dir = run_sweep(compose_config(ARGS, tmp_path / "project" / "runs"), out=io.StringIO()).run_dir
    deeper = tmp_path / "project" / "docs" / "notes"
    deeper.mkdir(parents=True)
    shown = run_cli(["show", "default"], cwd=deeper, module="diffsweep.cli.runs")
    assert shown.returncode == 0, shown.stderr
    assert shown.stdout.startswith(f"run      {run_dir}\n")
    assert "default/v0001" in run_cli(["list"], cwd=deeper, module="diffsweep.cli.runs").stdout
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    lost = run_cli(["show", "default"], cwd=elsewhere, module="diffsweep.cli.runs")
    assert lost.returncode != 0 and "Traceback" not in lost.stderr
    assert "give that folder with --root, or the run folder's path" in lost.stderr
    assert run_cli(["--root", str(run_dir.parent.parent), "show", "default"], cwd=elsewhere,
                   module="diffsweep.cli.runs").returncode == 0
