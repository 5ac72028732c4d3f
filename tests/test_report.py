"""Reports are built from fake run folders: the viewer's data here; sheets are tested in test_sheets.py."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml
from PIL import Image

from conftest import run_json
from diffsweep.reports.build import write_reports

HOSTILE = "<script>alert(1)</script>"


def colour(index: int) -> tuple[int, int, int]:
    """A distinct, non-grey colour per grid index."""
    return (20 + 37 * index % 200, 200 - 23 * index % 180, 60 + 71 * index % 190)


def item_id(index: int, salt: str = "") -> str:
    return f"{index:04d}{salt}".ljust(64, "a")


def record(index: int, status: str = "ok", suffix: str = ".png", **extra: Any) -> dict[str, Any]:
    ok = status == "ok"
    params = {"prompt": f"prompt {index}", "seed": index, "num_inference_steps": 2, **extra.pop("params", {})}
    return {"index": index, "item_id": item_id(index), "builder_hash": "b" * 64, "status": status,
            "params": params, "seed": index, "seconds": 0.1,
            "outputs": [f"items/{index:04d}-{item_id(index)[:12]}{suffix}"] if ok else [],
            **({} if ok else {"error": f"RuntimeError: item {index} broke"}), **extra}


def make_run(tmp_path: Path, records: list[dict[str, Any]], grid: dict[str, Any] | None = None,
             mode: str = "product", run: dict[str, Any] | None = None, tail: str = "") -> Path:
    """A run folder with one solid-colour PNG per ok image record; `tail` is appended raw to the manifest."""
    run_dir = tmp_path / "demo" / "v0001"
    (run_dir / "items").mkdir(parents=True)
    for rec in records:
        for output in rec["outputs"]:
            if output.endswith(".png"):
                Image.new("RGB", (32, 24), colour(rec["index"])).save(run_dir / output)
            else:
                (run_dir / output).write_bytes(b"\0")
    lines = "".join(json.dumps(rec) + "\n" for rec in records)
    (run_dir / "manifest.jsonl").write_text(lines + tail, encoding="utf-8")
    if grid is not None:
        config = {"sweep": {"name": "demo", "mode": mode, "grid": grid}}
        (run_dir / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
    if run is not None:
        (run_dir / "run.json").write_text(json.dumps(run), encoding="utf-8")
    return run_dir


def viewer_data(run_dir: Path) -> dict[str, Any]:
    text = (run_dir / "data.js").read_text(encoding="utf-8")
    return json.loads(text.removeprefix("window.DIFFSWEEP_RUN = ").removesuffix(";\n"))


def cards(run_dir: Path) -> list[int]:
    """Indices of the items the viewer shows as made (ok or failed), in its order."""
    return [item["index"] for item in viewer_data(run_dir)["items"] if item["status"] != "missing"]


def test_viewer_data_lists_items_in_order_and_keeps_markup_out(tmp_path: Path) -> None:
    records = [record(2, "failed"), record(0, params={"prompt": HOSTILE}), record(1, suffix=".wav")]
    run = run_json("failed", {"planned": 3, "done": 2, "failed": 1, "skipped": 0})
    run_dir = make_run(tmp_path, records, {"prompt": ["p0", "p1", "p2"]}, run=run)
    write_reports(run_dir)

    text = (run_dir / "data.js").read_text(encoding="utf-8")
    data = viewer_data(run_dir)
    assert cards(run_dir) == [0, 1, 2]
    assert "<" not in text and data["items"][0]["params"]["prompt"] == HOSTILE  # never closes a <script>
    assert data["items"][2]["error"] == "RuntimeError: item 2 broke"
    assert data["items"][0]["outputs"] == [{"path": records[1]["outputs"][0], "kind": "image"}]
    assert data["items"][1]["outputs"] == [{"path": records[2]["outputs"][0], "kind": "audio"}]
    assert data["counts"] == run["counts"] and data["sheet"] is True
    assert (data["title"], data["version"]) == ("demo", "v0001")
    assert "<title>demo v0001</title>" in (run_dir / "index.html").read_text(encoding="utf-8")


def test_torn_and_invalid_manifest_lines_are_ignored(tmp_path: Path) -> None:
    complete_but_unterminated = json.dumps(record(2))
    run_dir = make_run(tmp_path, [record(0), record(1)], tail="{not json\n" + complete_but_unterminated)
    write_reports(run_dir)

    assert cards(run_dir) == [0, 1]


def test_last_line_for_an_item_id_wins(tmp_path: Path) -> None:
    run_dir = make_run(tmp_path, [record(0, "failed"), record(1), record(0)], {"seed": [1, 2]})
    write_reports(run_dir)

    assert cards(run_dir) == [0, 1]
    assert "broke" not in (run_dir / "data.js").read_text(encoding="utf-8")


def test_run_without_outputs_writes_index_only(tmp_path: Path) -> None:
    run_dir = make_run(tmp_path, [record(0, "failed"), record(1, "failed")], tail='{"index": 2, "ite')
    write_reports(run_dir)

    assert not (run_dir / "contact_sheet.png").exists()
    assert cards(run_dir) == [0, 1] and viewer_data(run_dir)["sheet"] is False
    assert viewer_data(run_dir)["status"] == "unknown" and list(run_dir.glob(".*.tmp")) == []


@pytest.mark.parametrize("config", ["sweep: [unclosed", "sweep:\n  grid:\n    seed: {start: 1}\n"])
def test_unusable_config_falls_back_to_grid_index_order(tmp_path: Path, config: str) -> None:
    run_dir = make_run(tmp_path, [record(i) for i in range(3)])
    (run_dir / "config.yaml").write_text(config, encoding="utf-8")
    write_reports(run_dir)

    assert [axis["name"] for axis in viewer_data(run_dir)["axes"]] == ["index"]
    assert (run_dir / "contact_sheet.png").is_file()  # sheets fall back the same way (test_sheets.py)


def test_a_line_outside_the_planned_grid_is_left_out_and_named(tmp_path: Path,
                                                                caplog: pytest.LogCaptureFixture) -> None:
    run_dir = make_run(tmp_path, [record(i) for i in range(3)], {"seed": [1, 2]})  # the grid plans 2 items
    write_reports(run_dir)

    assert [axis["name"] for axis in viewer_data(run_dir)["axes"]] == ["seed"] and cards(run_dir) == [0, 1]
    assert "1 manifest line(s) do not fit the run's grid of 2 item(s) (#2 0002aaaaaaaa)" in caplog.text


def test_empty_folder_still_gets_an_index(tmp_path: Path) -> None:
    write_reports(tmp_path)

    assert cards(tmp_path) == [] and not (tmp_path / "contact_sheet.png").exists()
