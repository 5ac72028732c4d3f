"""The gallery is built from fake run folders (sheets are tested in test_sheets.py)."""

from __future__ import annotations

import html
import json
import re
from pathlib import Path
from typing import Any

import yaml
from PIL import Image

from diffsweep.report import write_reports

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


def cards(run_dir: Path) -> list[int]:
    text = (run_dir / "index.html").read_text(encoding="utf-8")
    return [int(i) for i in re.findall(r'<article class="card \w+" data-index="(\d+)"', text)]


def test_index_html_lists_cards_in_order_with_escaped_text(tmp_path: Path) -> None:
    records = [record(2, "failed"), record(0, params={"prompt": HOSTILE}), record(1, suffix=".wav")]
    run = {"status": "failed", "counts": {"planned": 3, "done": 2, "failed": 1, "skipped": 0}}
    run_dir = make_run(tmp_path, records, {"prompt": ["p0", "p1", "p2"]}, run=run)
    write_reports(run_dir)

    text = (run_dir / "index.html").read_text(encoding="utf-8")
    assert cards(run_dir) == [0, 1, 2]
    assert HOSTILE not in text and html.escape(HOSTILE) in text
    assert "RuntimeError: item 2 broke" in text
    assert f'<img src="{records[1]["outputs"][0]}"' in text
    assert f'<audio controls preload="none" src="{records[2]["outputs"][0]}"' in text
    assert item_id(0)[:12] in text and item_id(0)[:13] not in text
    assert "num_inference_steps=2" in text and "2 done · 1 failed · 0 not made · 3 planned" in text
    assert '<a href="contact_sheet.png">' in text and "<h1>demo <small>v0001</small></h1>" in text


def test_torn_and_invalid_manifest_lines_are_ignored(tmp_path: Path) -> None:
    complete_but_unterminated = json.dumps(record(2))
    run_dir = make_run(tmp_path, [record(0), record(1)], tail="{not json\n" + complete_but_unterminated)
    write_reports(run_dir)

    assert cards(run_dir) == [0, 1]


def test_last_line_for_an_item_id_wins(tmp_path: Path) -> None:
    run_dir = make_run(tmp_path, [record(0, "failed"), record(1), record(0)], {"seed": [1, 2]})
    write_reports(run_dir)

    text = (run_dir / "index.html").read_text(encoding="utf-8")
    assert cards(run_dir) == [0, 1]
    assert "broke" not in text


def test_run_without_outputs_writes_index_only(tmp_path: Path) -> None:
    run_dir = make_run(tmp_path, [record(0, "failed"), record(1, "failed")], tail='{"index": 2, "ite')
    write_reports(run_dir)

    assert not (run_dir / "contact_sheet.png").exists()
    text = (run_dir / "index.html").read_text(encoding="utf-8")
    assert cards(run_dir) == [0, 1] and "contact_sheet.png" not in text
    assert "status: <b>unknown</b>" in text and list(run_dir.glob(".*.tmp")) == []


def test_empty_folder_still_gets_an_index(tmp_path: Path) -> None:
    write_reports(tmp_path)

    assert cards(tmp_path) == [] and not (tmp_path / "contact_sheet.png").exists()
