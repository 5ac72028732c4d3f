"""Reports are built from fake run folders: cell placement is checked by sampling pixel colours."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml
from PIL import Image

from diffsweep import report
from diffsweep.report import GAP, GREY, HEADER_H, LINE_H, MIN_CELL, ROW_LABEL_W, SLATE, write_reports

PITCH = MIN_CELL + GAP  # the test images are smaller than MIN_CELL, so every cell is MIN_CELL square
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


def sheet(run_dir: Path) -> Image.Image:
    with Image.open(run_dir / "contact_sheet.png") as image:
        return image.convert("RGB")


def cell_pixel(image: Image.Image, row: int, col: int, left: int = 0, top: int = 0, captions: int = 0,
               inset: int | None = None) -> tuple[int, int, int]:
    """The pixel at a cell's centre, or `inset` px into its top-left corner (clear of placeholder text)."""
    x = left + GAP + col * PITCH
    y = top + GAP + row * (PITCH + captions * LINE_H)
    offset = MIN_CELL // 2 if inset is None else inset
    return image.getpixel((x + offset, y + offset))


def viewer_data(run_dir: Path) -> dict[str, Any]:
    text = (run_dir / "data.js").read_text(encoding="utf-8")
    return json.loads(text.removeprefix("window.DIFFSWEEP_RUN = ").removesuffix(";\n"))


def cards(run_dir: Path) -> list[int]:
    """Indices of the items the viewer shows as made (ok or failed), in its order."""
    return [item["index"] for item in viewer_data(run_dir)["items"] if item["status"] != "missing"]


def test_two_axes_place_each_item_by_its_axis_values(tmp_path: Path) -> None:
    # seed varies slowest (index = seed_pos * 3 + prompt_pos); seed has fewer values, so it runs across
    grid = {"seed": [7, 8], "prompt": ["a", "b", "c"], "num_inference_steps": [2]}
    records = [record(i, "failed" if i == 4 else "ok") for i in range(6)]
    run_dir = make_run(tmp_path, records, grid)
    write_reports(run_dir)

    image = sheet(run_dir)
    assert image.size == (ROW_LABEL_W + GAP + 2 * PITCH, HEADER_H + GAP + 3 * PITCH)
    for prompt_pos in range(3):
        for seed_pos in range(2):
            index = seed_pos * 3 + prompt_pos
            if index != 4:
                assert cell_pixel(image, prompt_pos, seed_pos, ROW_LABEL_W, HEADER_H) == colour(index)
    assert cell_pixel(image, 1, 1, ROW_LABEL_W, HEADER_H, inset=4) == GREY


def test_one_axis_is_a_single_labelled_row(tmp_path: Path) -> None:
    grid = {"guidance_scale": {"start": 1.0, "stop": 2.5, "step": 0.5}, "seed": [3]}
    run_dir = make_run(tmp_path, [record(i) for i in range(3)], grid)
    write_reports(run_dir)

    image = sheet(run_dir)
    assert image.size == (GAP + 3 * PITCH, HEADER_H + GAP + PITCH)
    assert [cell_pixel(image, 0, c, top=HEADER_H) for c in range(3)] == [colour(i) for i in range(3)]


def test_more_than_two_axes_fill_a_near_square_grid_in_index_order(tmp_path: Path) -> None:
    grid = {"cfg": {"start": 1.0, "stop": 2.0, "step": 0.5}, "seed": [1, 2], "prompt": ["x", "y"]}
    records = [record(i, suffix=".mp4" if i == 7 else ".png") for i in range(8)]
    run_dir = make_run(tmp_path, records, grid)
    write_reports(run_dir)

    image = sheet(run_dir)
    assert image.size == (GAP + 3 * PITCH, GAP + 3 * (PITCH + 3 * LINE_H))
    for index in range(7):
        assert cell_pixel(image, index // 3, index % 3, captions=3) == colour(index)
    assert cell_pixel(image, 2, 1, captions=3, inset=4) == SLATE  # the video placeholder
    assert cell_pixel(image, 2, 2, captions=3) == (255, 255, 255)  # no ninth item


def test_zip_axes_pair_up_instead_of_crossing(tmp_path: Path) -> None:
    run_dir = make_run(tmp_path, [record(i) for i in range(3)], {"prompt": ["a", "b", "c"], "seed": [1, 2, 3]}, "zip")
    write_reports(run_dir)

    image = sheet(run_dir)
    assert image.size == (GAP + 2 * PITCH, GAP + 2 * (PITCH + 2 * LINE_H))
    assert [cell_pixel(image, i // 2, i % 2, captions=2) for i in range(3)] == [colour(i) for i in range(3)]


def test_without_config_items_follow_grid_index_and_gaps_show_missing(tmp_path: Path) -> None:
    run = {"status": "interrupted", "counts": {"planned": 5, "done": 3, "failed": 0, "skipped": 0}}
    run_dir = make_run(tmp_path, [record(i) for i in (0, 1, 3)], run=run)
    write_reports(run_dir)

    image = sheet(run_dir)
    assert image.size == (GAP + 3 * PITCH, GAP + 2 * PITCH)
    assert cell_pixel(image, 1, 0) == colour(3)
    assert cell_pixel(image, 0, 2, inset=4) == cell_pixel(image, 1, 1, inset=4) == GREY


def test_sheet_is_capped_with_a_footer(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(report, "MAX_CELLS", 9)  # the real cap (400) works the same, only slower
    run_dir = make_run(tmp_path, [record(0)], run={"status": "running", "counts": {"planned": 12}})
    write_reports(run_dir)

    assert sheet(run_dir).size == (GAP + 3 * PITCH, GAP + 3 * PITCH + LINE_H + GAP)


def test_labelled_sheet_cap_drops_whole_rows(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(report, "MAX_CELLS", 10)
    run_dir = make_run(tmp_path, [record(0)], {"prompt": {"start": 0, "stop": 5}, "seed": [1, 2, 3]})
    write_reports(run_dir)

    assert sheet(run_dir).size == (ROW_LABEL_W + GAP + 3 * PITCH, HEADER_H + GAP + 3 * PITCH + LINE_H + GAP)


def test_viewer_data_lists_items_in_order_and_keeps_markup_out(tmp_path: Path) -> None:
    records = [record(2, "failed"), record(0, params={"prompt": HOSTILE}), record(1, suffix=".wav")]
    run = {"status": "failed", "counts": {"planned": 3, "done": 2, "failed": 1, "skipped": 0}}
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
    assert cell_pixel(sheet(run_dir), 0, 0, top=HEADER_H) == colour(0)


def test_run_without_outputs_writes_index_only(tmp_path: Path) -> None:
    run_dir = make_run(tmp_path, [record(0, "failed"), record(1, "failed")], tail='{"index": 2, "ite')
    write_reports(run_dir)

    assert not (run_dir / "contact_sheet.png").exists()
    assert cards(run_dir) == [0, 1] and viewer_data(run_dir)["sheet"] is False
    assert viewer_data(run_dir)["status"] == "unknown" and list(run_dir.glob(".*.tmp")) == []


@pytest.mark.parametrize("config", ["sweep: [unclosed", "sweep:\n  grid:\n    seed: {start: 1}\n",
                                    "sweep:\n  grid:\n    seed: [1, 2]\n"])  # the last one has too few points
def test_unusable_config_falls_back_to_grid_index_order(tmp_path: Path, config: str) -> None:
    run_dir = make_run(tmp_path, [record(i) for i in range(3)])
    (run_dir / "config.yaml").write_text(config, encoding="utf-8")
    write_reports(run_dir)

    image = sheet(run_dir)
    assert image.size == (GAP + 2 * PITCH, GAP + 2 * PITCH)
    assert [cell_pixel(image, i // 2, i % 2) for i in range(3)] == [colour(i) for i in range(3)]


def test_empty_folder_still_gets_an_index(tmp_path: Path) -> None:
    write_reports(tmp_path)

    assert cards(tmp_path) == [] and not (tmp_path / "contact_sheet.png").exists()
