"""The run viewer in a real browser: Debian's Chromium driven by Playwright, on real runs of images, video and
audio, a run with failed items, one with items not made yet, and a synthetic 10,000-item run.

Every test fails on any console error or uncaught page error (a broken media path is a console error too).
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import shlex
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from PIL import Image

from conftest import compose_config, read_manifest, read_run_json, run_json
from diffsweep.reports.build import write_viewer
from diffsweep.run.local import run_sweep

INSTALL = ("install one with `apt-get install -y chromium fonts-dejavu-core fonts-noto-core fonts-noto-cjk "
           "fonts-noto-color-emoji` (Debian/Ubuntu; CI's .ci/run does) and Playwright with `pip install -e '.[test]'`, "
           "or point DIFFSWEEP_CHROMIUM at a Chromium binary")
SMALL = ["sweep.params.num_inference_steps=1", "sweep.grid.prompt=[a red fox]"]
IMAGES = ["sweep.params.height=32", "sweep.params.width=32", "sweep.grid.prompt=[a red fox,a blue bird]",
          "sweep.grid.seed=[1,2]", "+sweep.grid.guidance_scale=[1.0,5.0]", "+sweep.grid.num_inference_steps=[1,2]"]
BOGUS_SCHEDULER = "{name: DDIMScheduler, config: {timestep_spacing: bogus}}"  # diffusers rejects it when called


def chromium() -> str | None:
    explicit = os.environ.get("DIFFSWEEP_CHROMIUM")
    if explicit:
        return explicit
    return next(filter(None, map(shutil.which, ("chromium", "chromium-browser", "google-chrome"))), None)


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.skip(f"Playwright is not installed: {INSTALL}")
    path = chromium()
    if path is None:
        pytest.skip(f"no Chromium found for the viewer's browser tests: {INSTALL}")
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=path)
        yield launched
        launched.close()


@pytest.fixture
def page(browser: Any) -> Iterator[Any]:
    """A fresh page; after the test, no console error and no uncaught error may have happened on it."""
    context = browser.new_context(viewport={"width": 1280, "height": 800})
    opened = context.new_page()
    problems: list[str] = []
    opened.on("console", lambda message: problems.append(f"console {message.type}: {message.text} "
                                                         f"{message.location}") if message.type == "error" else None)
    opened.on("pageerror", lambda error: problems.append(f"page error: {error}"))
    yield opened
    context.close()
    assert problems == []


def sweep(root: Path, *overrides: str) -> Path:
    result = run_sweep(compose_config(list(overrides), root), out=io.StringIO())
    assert result.run_dir is not None
    return result.run_dir


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("viewer-browser") / "runs"


@pytest.fixture(scope="module")
def image_run(root: Path) -> Path:
    """16 images over four varying axes: prompt x seed x guidance_scale x num_inference_steps."""
    return sweep(root, *IMAGES, "sweep.name=images")


def open_viewer(page: Any, run_dir: Path, fragment: str = "") -> None:
    page.goto((run_dir / "index.html").as_uri() + fragment)
    page.wait_for_selector("#grid .cell")


def cell_ids(page: Any) -> list[str]:
    return page.eval_on_selector_all("[data-item-id]", "cells => cells.map(c => c.dataset.itemId)")


def attribute_values(page: Any, attribute: str) -> list[str]:
    return page.eval_on_selector_all(f"[{attribute}]", f"els => els.map(e => e.getAttribute('{attribute}'))")


def ids_where(run_dir: Path, **params: Any) -> set[str]:
    return {r["item_id"] for r in read_manifest(run_dir) if all(r["params"][k] == v for k, v in params.items())}


def box(page: Any, selector: str) -> dict[str, float]:
    found = page.locator(selector).bounding_box()
    assert found is not None, selector
    return found


# --- images: axes, pins, toggles, swap, the URL --------------------------------------------------------------------


def test_the_first_view_is_what_the_contact_sheet_shows(image_run: Path, page: Any) -> None:
    from diffsweep.reports.sheets import write_sheets

    choice = write_sheets(image_run).choice  # steps across, guidance down, seed as sub-grids, a sheet per prompt
    assert (choice.x.name, choice.y.name, choice.z.name, [a.name for a in choice.rest]) == (
        "num_inference_steps", "guidance_scale", "seed", ["prompt"])
    open_viewer(page, image_run)
    assert [page.input_value(f"select[name={key}]") for key in ("x", "y", "x2", "y2")] == [
        "seed", "guidance_scale", "num_inference_steps", ""]
    assert page.eval_on_selector_all("select[data-axis]", "s => s.map(e => [e.dataset.axis, e.value])") == [
        ["prompt", "0"]]
    assert set(cell_ids(page)) == ids_where(image_run, prompt="a red fox")  # 8 of 16, as on contact_sheet.png


def test_axes_pins_toggles_swap_and_the_url(image_run: Path, page: Any) -> None:
    open_viewer(page, image_run, "#x=seed&y=prompt")
    assert [page.input_value(f"select[name={key}]") for key in ("x", "y", "x2", "y2")] == ["seed", "prompt", "", ""]
    pins = page.eval_on_selector_all("select[data-axis]", "s => s.map(e => [e.dataset.axis, e.value])")
    assert pins == [["guidance_scale", "0"], ["num_inference_steps", "0"]]  # pinned at their first value
    assert set(cell_ids(page)) == ids_where(image_run, guidance_scale=1.0, num_inference_steps=1)

    # four axes at once: seed / guidance across, prompt / steps down
    page.select_option("select[name=x2]", "guidance_scale")
    page.select_option("select[name=y2]", "num_inference_steps")
    assert page.locator("select[data-axis]").count() == 0
    assert sorted(cell_ids(page)) == sorted(r["item_id"] for r in read_manifest(image_run))
    assert attribute_values(page, "data-col-label") == ["1", "2", "1.0", "5.0", "1.0", "5.0"]
    assert attribute_values(page, "data-row-label") == ["a red fox", "1", "a red fox", "2", "a blue bird", "1",
                                                        "a blue bird", "2"]
    (last,) = ids_where(image_run, prompt="a blue bird", seed=2, guidance_scale=5.0, num_inference_steps=2)
    cell = box(page, f'[data-item-id="{last}"]')
    column = page.locator("[data-col-label]").last.evaluate("l => l.closest('.collabel').getBoundingClientRect().x")
    row = page.locator("[data-row-label]").last.evaluate("l => l.closest('.rowlabel').getBoundingClientRect().y")
    assert (round(cell["x"]), round(cell["y"])) == (round(column), round(row))  # under its labels

    # pin a value of an axis taken off the grid
    page.select_option("select[name=x2]", "")
    page.select_option('select[data-axis="guidance_scale"]', "1")
    assert set(cell_ids(page)) == ids_where(image_run, guidance_scale=5.0)

    # hide a value, then swap X and Y
    page.click("#toggles summary")
    page.uncheck('input[data-show-axis="seed"][value="0"]')
    assert set(cell_ids(page)) == ids_where(image_run, guidance_scale=5.0, seed=2)
    page.click("#swap")
    assert [page.input_value(f"select[name={key}]") for key in ("x", "y", "x2", "y2")] == \
        ["prompt", "seed", "num_inference_steps", ""]
    assert attribute_values(page, "data-row-label") == ["2"]  # seed 1 stays hidden

    # the thumbnail size follows its control
    page.fill("input[name=size]", "96")
    page.dispatch_event("input[name=size]", "input")
    assert round(box(page, "[data-item-id] >> nth=0")["width"]) == 96

    # the view is in the URL: a reload, and the link opened afresh, show the same
    url, shown = page.url, sorted(cell_ids(page))
    assert "x=prompt" in url and "pin.guidance_scale=5.0" in url and "hide.seed=0" in url
    page.reload()
    page.wait_for_selector("#grid .cell")
    assert sorted(cell_ids(page)) == shown and page.input_value("select[name=x2]") == "num_inference_steps"
    page.goto("about:blank")
    page.goto(url)
    page.wait_for_selector("#grid .cell")
    assert sorted(cell_ids(page)) == shown and page.input_value('select[data-axis="guidance_scale"]') == "1"


def test_a_pin_in_the_url_is_a_value(image_run: Path, page: Any) -> None:
    """`pin.guidance_scale=5` pins 5.0 (the second value), as a reader of the link expects; so does 5.0."""
    for written in ("5", "5.0"):
        open_viewer(page, image_run, f"#x=seed&y=prompt&pin.guidance_scale={written}&pin.num_inference_steps=2")
        assert page.input_value('select[data-axis="guidance_scale"]') == "1"
        assert page.input_value('select[data-axis="num_inference_steps"]') == "1"
        assert set(cell_ids(page)) == ids_where(image_run, guidance_scale=5.0, num_inference_steps=2)
        page.goto("about:blank")

def test_a_cell_opens_the_full_item_and_a_command_that_remakes_exactly_it(image_run: Path, page: Any) -> None:
    open_viewer(page, image_run)
    item_id = cell_ids(page)[1]
    record = next(r for r in read_manifest(image_run) if r["item_id"] == item_id)
    sidecar = json.loads((image_run / record["outputs"][0]).with_suffix(".json").read_text())
    page.click(f'[data-item-id="{item_id}"]')

    image = page.locator("#detail img")
    natural, shown = image.evaluate("i => i.complete && [i.naturalWidth, i.width]")
    assert natural == 32 and shown >= box(page, f'.cell[data-item-id="{item_id}"]')["width"]  # never below its cell
    table = page.inner_text("#detail-record")
    builder = read_run_json(image_run)["builders"][0]
    for text in (item_id, record["params"]["prompt"], f"seed\t{record['seed']}", builder["hash"][:12],
                 sidecar["scheduler"], "tiny:sd", f"guidance_scale\t{record['params']['guidance_scale']}"):
        assert text in table
    command = page.inner_text("#detail-command")
    assert command == f"diffsweep-runs rerun {image_run} --item {item_id}"
    page.click("#copy")
    page.wait_for_function("document.querySelector('#copied').textContent !== ''")
    assert f"item={item_id}" in page.url

    page.reload()  # the open item is part of the view
    page.wait_for_selector("#detail:not([hidden])")
    assert page.get_attribute("#detail", "data-item-id") == item_id

    argv = shlex.split(command)
    assert argv[0] == "diffsweep-runs"
    done = subprocess.run([sys.executable, "-m", "diffsweep.cli.runs", *argv[1:]], capture_output=True, text=True,
                          timeout=600, env=os.environ)
    assert done.returncode == 0, done.stderr
    again = Path(done.stdout.strip().splitlines()[-1])
    (remade,) = read_manifest(again)
    assert remade["item_id"] == item_id
    assert (again / remade["outputs"][0]).read_bytes() == (image_run / record["outputs"][0]).read_bytes()


def test_scores_show_per_item_and_colour_the_grid(image_run: Path, page: Any, tmp_path: Path) -> None:
    run_dir = tmp_path / "scored" / "v0001"
    shutil.copytree(image_run, run_dir)
    records = sorted(read_manifest(run_dir), key=lambda r: r["index"])
    lines = [{"item_id": r["item_id"], "metric": "sharpness", "value": float(r["index"]), "model": None,
              "revision": None, "time": "t", "skipped": None} for r in records]
    (run_dir / "scores.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines))
    write_viewer(run_dir)

    open_viewer(page, run_dir, "#x=seed&y=prompt&x2=guidance_scale&y2=num_inference_steps")
    assert page.locator(".cell .tint").count() == 0
    page.select_option("select[name=heatmap]", "sharpness")
    assert page.locator(".cell .tint").count() == len(records)
    assert page.inner_text("#heatmap-legend") == "0.000 → 15.00"
    colours = {r["index"]: page.locator(f'[data-item-id="{r["item_id"]}"] .tint').evaluate(
        "t => getComputedStyle(t).backgroundColor") for r in records}
    assert colours[0] != colours[len(records) - 1]  # lowest and highest differ
    last = records[-1]
    assert page.inner_text(f'[data-item-id="{last["item_id"]}"] .score') == "15.00"
    page.click(f'[data-item-id="{last["item_id"]}"]')
    assert "score sharpness\t15" in page.inner_text("#detail-record")
    assert "heatmap=sharpness" in page.url


def test_large_scores_read_in_whole_digits(tmp_path: Path, page: Any) -> None:
    run_dir = synthetic_run(tmp_path / "sharp" / "v0001", {"prompt": ["a fox"], "seed": [1, 2]}, "product",
                            [{"prompt": "a fox", "seed": s} for s in (1, 2)])
    lines = [{"item_id": hashlib.sha256(str(i).encode()).hexdigest(), "metric": "sharpness", "value": value,
              "model": None, "revision": None, "time": "t", "skipped": None} for i, value in ((0, 5722.4), (1, 12345.6))]
    (run_dir / "scores.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines))
    write_viewer(run_dir)
    open_viewer(page, run_dir, "#heatmap=sharpness")
    assert page.locator(".cell .score").all_inner_texts() == ["5722", "12346"]  # not 1.235e+4
    assert page.inner_text("#heatmap-legend") == "5722 → 12346"


# --- video and audio ---------------------------------------------------------------------------------------------


def test_video_items_play(root: Path, page: Any) -> None:
    run_dir = sweep(root, "provider=tiny_wan", *SMALL, "sweep.grid.seed=[1,2]", "sweep.name=video")
    open_viewer(page, run_dir)
    assert page.locator("[data-item-id] video").count() == 2
    page.locator("[data-item-id]").first.click()
    page.wait_for_function("document.querySelector('#detail video').currentTime > 0", timeout=10000)
    assert page.evaluate("document.querySelector('#detail video').videoWidth") == 32


def test_audio_items_have_a_player(root: Path, page: Any) -> None:
    run_dir = sweep(root, "provider=tiny_audioldm", *SMALL, "sweep.grid.seed=[1,2]", "sweep.name=audio")
    open_viewer(page, run_dir)
    assert page.locator(".cell.audio[data-item-id]").count() == 2
    page.locator("[data-item-id]").first.click()
    page.wait_for_function("document.querySelector('#detail audio').readyState >= 1", timeout=10000)
    assert page.evaluate("document.querySelector('#detail audio').duration") == pytest.approx(0.1, abs=0.02)


def test_audio_cells_draw_their_waveform(root: Path, page: Any) -> None:
    run_dir = sweep(root, "provider=tiny_audioldm", *SMALL, "sweep.grid.seed=[1,2]", "sweep.name=waves")
    open_viewer(page, run_dir)
    heights = page.eval_on_selector_all(".cell.audio[data-item-id] svg.wave polygon",
                                        "ps => ps.map(p => p.getBBox().height)")
    assert len(heights) == 2 and all(height > 0.2 for height in heights)  # an envelope, not a flat line (of 2)
    assert box(page, ".cell.audio svg.wave >> nth=0")["width"] == pytest.approx(box(page, ".cell.audio >> nth=0")["width"], abs=2)


def test_video_with_sound_plays_with_its_sound(root: Path, page: Any) -> None:
    run_dir = sweep(root, "provider=tiny_ltx2", *SMALL, "sweep.grid.seed=[1]", "sweep.name=sound")
    open_viewer(page, run_dir)
    assert page.locator(".cell.sound[data-item-id] video").count() == 1  # marked ♪, previewed muted
    page.locator("[data-item-id]").first.click()
    page.evaluate("document.querySelector('#detail video').play()")
    page.wait_for_function("document.querySelector('#detail video').currentTime > 0", timeout=10000)
    assert page.evaluate("document.querySelector('#detail video').muted") is False
    page.wait_for_function("document.querySelector('#detail video').webkitAudioDecodedByteCount > 0", timeout=10000)


# --- failed items, items not made yet --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def failing_run(root: Path) -> Path:
    """seed x builder.scheduler; the items of the scheduler diffusers rejects fail for real."""
    return sweep(root, *SMALL, "sweep.params.height=32", "sweep.params.width=32", "sweep.grid.seed=[1,2]",
                 f"+sweep.grid.builder.scheduler=[null,{BOGUS_SCHEDULER}]", "sweep.name=failing")


def test_failed_items_are_marked_cells_with_their_error(failing_run: Path, page: Any) -> None:
    failed = {r["item_id"] for r in read_manifest(failing_run) if r["status"] == "failed"}
    assert len(failed) == 2
    open_viewer(page, failing_run)
    assert page.input_value("select[name=x]") == "builder.scheduler"
    # the value shown, as the README says, not its JSON
    assert attribute_values(page, "data-col-label") == ["model's scheduler", "DDIM timestep_spacing=bogus"]
    assert page.locator("[data-col-label]").evaluate_all("ls => ls.map(l => l.textContent)") == [
        "model's scheduler", "DDIM timestep_spacing=bogus"]
    assert set(page.eval_on_selector_all(".cell.failed", "c => c.map(e => e.dataset.itemId)")) == failed
    assert page.locator(".cell.failed").first.inner_text() == "failed"
    page.click(".cell.failed")
    table = page.inner_text("#detail-record")
    assert "bogus is not supported" in table and '"timestep_spacing": "bogus"' in table


def test_builder_headers_never_break_inside_a_word(failing_run: Path, page: Any) -> None:
    open_viewer(page, failing_run, "#x=builder.scheduler&y=seed&size=48")  # the smallest cells
    labels = page.locator("[data-col-label]")
    lines = labels.evaluate_all("ls => ls.map(l => [...l.querySelectorAll('.line')].map(line => "
                                "[line.textContent, line.getClientRects().length]))")
    assert [[text for text, _ in label] for label in lines] == [["model's", "scheduler"],
                                                                ["DDIM", "timestep_spacing=bogus"]]
    assert all(boxes == 1 for label in lines for _, boxes in label)  # each line one line box: no word wrapped
    overflowing = page.eval_on_selector_all(".collabel .line", "ls => ls.filter(l => l.scrollWidth > l.clientWidth)"
                                                                ".map(l => getComputedStyle(l).textOverflow)")
    assert overflowing and set(overflowing) == {"ellipsis"}  # too long for 48 px: cut short, marked, still whole


def test_labels_keep_the_words_that_tell_similar_prompts_apart(tmp_path: Path, page: Any) -> None:
    """Three prompts that share a long start and end, beside a fourth that shares nothing with them."""
    prompts = [f"a highly detailed photograph of a {animal} in fresh snow at first light, award winning"
               for animal in ("red fox", "grey wolf", "arctic hare")] + ["studio portrait of an old fisherman"]
    run_dir = synthetic_run(tmp_path / "animals" / "v0001", {"prompt": prompts, "seed": [1, 2]}, "product",
                            [{"prompt": p, "seed": s} for p in prompts for s in (1, 2)])
    for size in (96, 160):
        open_viewer(page, run_dir, f"#x=prompt&y=seed&size={size}")
        shown = page.locator("[data-col-label]").evaluate_all("ls => ls.map(l => l.textContent)")
        assert attribute_values(page, "data-col-label") == prompts
        assert len(set(shown)) == 4, shown
        for animal, text in zip(("red fox", "grey wolf", "arctic hare"), shown, strict=False):
            assert animal in text, (size, text)
        page.goto("about:blank")


def test_items_not_made_yet_are_marked_cells(failing_run: Path, page: Any, tmp_path: Path) -> None:
    from diffsweep.cli.runs import build_parser

    records = read_manifest(failing_run)
    args = build_parser().parse_args(["rerun", str(failing_run), "--index", "0"])  # one item of four
    assert args.func(args) == 0
    partial = failing_run.parent / "v0002"
    open_viewer(page, partial)
    missing = page.eval_on_selector_all(".cell.missing", "c => c.map(e => e.dataset.itemId)")
    assert sorted(missing) == sorted(r["item_id"] for r in records if r["index"] != 0)
    assert page.locator(".cell.ok[data-item-id] img").count() == 1
    assert page.inner_text("#summary").startswith("status: complete · 1 done · 0 failed · 3 not made · 4 planned "
                                                  "(1 selected)")  # what the cells show
    assert set(page.locator(".cell.missing .mark").all_inner_texts()) == {"not made"}
    page.click(".cell.missing")
    assert page.inner_text("#detail-title").endswith("not made")
    assert "--item " in page.inner_text("#detail-command")


# --- synthetic run folders: a zip sweep, 10,000 items --------------------------------------------------------------


def synthetic_run(run_dir: Path, grid: dict[str, Any], mode: str, points: list[dict[str, Any]]) -> Path:
    """A run folder as a run writes it, without running: config, manifest, run.json and one small PNG that every
    ok item shows; an item whose point has `fail` failed."""
    (run_dir / "items").mkdir(parents=True)
    Image.new("RGB", (16, 16), (40, 120, 200)).save(run_dir / "items" / "one.png")
    (run_dir / "config.yaml").write_text(yaml.safe_dump({"sweep": {"name": run_dir.parent.name, "mode": mode,
                                                                   "grid": grid}}))
    lines = []
    for index, point in enumerate(points):
        params = {k: v for k, v in point.items() if k != "fail"}
        ok = not point.get("fail")
        lines.append(json.dumps({
            "index": index, "item_id": hashlib.sha256(str(index).encode()).hexdigest(), "builder_hash": "b" * 64,
            "status": "ok" if ok else "failed", "params": params, "seed": params["seed"],
            "outputs": ["items/one.png"] if ok else [], "seconds": 0.01,
            **({} if ok else {"error": "RuntimeError: synthetic"})}))
    (run_dir / "manifest.jsonl").write_text("\n".join(lines) + "\n")
    failed = sum(1 for point in points if point.get("fail"))
    counts = {"planned": len(points), "done": len(points) - failed, "failed": failed, "skipped": 0}
    (run_dir / "run.json").write_text(json.dumps(run_json("failed" if failed else "complete", counts,
                                                          [{"hash": "b" * 64, "label": "synthetic"}])))
    write_viewer(run_dir)
    return run_dir


def test_a_zip_sweep_shows_each_point_once(tmp_path: Path, page: Any) -> None:
    grid = {"prompt": ["a fox", "a bowl of ramen", "an astronaut"], "seed": [7, 42, 7]}  # zip may repeat a value
    run_dir = synthetic_run(tmp_path / "pairs" / "v0001", grid, "zip",
                            [{"prompt": p, "seed": s} for p, s in zip(grid["prompt"], grid["seed"], strict=True)])
    open_viewer(page, run_dir)
    assert page.input_value("select[name=y]") == "prompt" and page.input_value("select[name=x]") == ""
    assert page.locator("select[data-axis]").count() == 0  # nothing to pin: each point is one item
    assert cell_ids(page) == [hashlib.sha256(str(i).encode()).hexdigest() for i in range(3)]
    page.select_option("select[name=x]", "seed")
    assert page.locator("[data-item-id]").count() == 3 and page.locator(".cell.none").count() == 6


@pytest.fixture(scope="module")
def big_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """100 long prompts x 100 seeds, every 97th item failed."""
    prompts = [f"a long prompt, the same in every value up to its very end, where it says which: number {i}"
               for i in range(100)]
    points = [{"prompt": prompts[i // 100], "seed": i % 100, "fail": i % 97 == 5} for i in range(10_000)]
    grid = {"prompt": prompts, "seed": {"start": 0, "stop": 100}}
    return synthetic_run(tmp_path_factory.mktemp("big") / "big" / "v0001", grid, "product", points)


def test_ten_thousand_items_render_only_what_is_visible(big_run: Path, page: Any) -> None:
    started = time.monotonic()
    open_viewer(page, big_run)
    assert time.monotonic() - started < 15  # generous: it takes well under a second on a laptop
    assert page.input_value("select[name=x]") == "seed" and page.input_value("select[name=y]") == "prompt"
    assert page.locator(".cell").count() < 400  # of 10,000
    first, last = (hashlib.sha256(str(i).encode()).hexdigest() for i in (0, 9999))
    assert page.locator(f'[data-item-id="{first}"]').count() == 1

    page.eval_on_selector("#scroller", "s => { s.scrollTop = s.scrollHeight; s.scrollLeft = s.scrollWidth; }")
    page.wait_for_selector(f'[data-item-id="{last}"]', state="visible", timeout=5000)
    assert page.locator(f'[data-item-id="{first}"]').count() == 0 and page.locator(".cell").count() < 400
    labels = page.locator("[data-col-label]")
    assert labels.last.get_attribute("data-col-label") == "99"
    # the labels stay in view: the header at the top, the row labels at the left, however far it scrolled
    scroller = box(page, "#scroller")
    assert abs(labels.last.bounding_box()["y"] - scroller["y"]) < 40
    last_row = page.locator("[data-row-label]").last
    assert last_row.get_attribute("data-row-label").endswith("number 99") and last_row.bounding_box()["x"] < 20

    page.fill("input[name=size]", "48")  # the smallest cells: still a bounded number in the DOM
    page.dispatch_event("input[name=size]", "input")
    assert page.locator(".cell").count() < 1200
    started = time.monotonic()
    page.click("#swap")
    page.wait_for_function("document.querySelector('select[name=x]').value === 'prompt'")
    assert time.monotonic() - started < 5
    # 48 px columns hold 4 lines of 5 characters (a longer word has a line of its own): long prompts are shortened
    # after what they share, never to it. The header is redrawn on the next frame: wait for the prompts' labels.
    page.wait_for_selector('[data-col-label][data-axis-name="prompt"]')
    labels = page.locator("[data-col-label]")  # read in one go: a scroll's frame may redraw the header between two
    shown = labels.evaluate_all(
        "ls => ls.map(l => [l.dataset.colLabel, [...l.querySelectorAll('.line')].map(line => line.textContent)])")
    assert len(shown) >= 5
    for value, lines in shown:
        assert 1 < len(lines) <= 4 and lines[0].startswith("…") and lines[-1] == value.rsplit(" ", 1)[1], (lines, value)
        assert all(len(line) <= 5 or " " not in line for line in lines), lines
    page.eval_on_selector("#scroller", "s => { s.scrollTop = 0; s.scrollLeft = 0; }")
    page.click(f'[data-item-id="{hashlib.sha256(b"5").hexdigest()}"]')
    assert "RuntimeError: synthetic" in page.inner_text("#detail-record")


# --- a chain of stages: `stage` is an axis, the item panel shows the lineage ------------------------------------------


def test_a_chain_shows_its_stages_and_each_item_its_lineage(root: Path, page: Any) -> None:
    run_dir = sweep(root, "+experiment=tiny_hires_fix", "sweep.grid.seed=[0,1]", "stages.chain.upscale.grid.upscale=[2.0]")
    records = {r["item_id"]: r for r in read_manifest(run_dir)}
    open_viewer(page, run_dir)
    assert page.input_value("select[name=y]") == "stage" and page.input_value("select[name=x]") == "seed"
    assert page.input_value("select[name=x2]") == "strength"
    # every item is in the first view: a first-stage item beside its children, whatever strength is pinned
    assert set(cell_ids(page)) == set(records)
    assert page.eval_on_selector_all("[data-row-label]", "els => els.map(e => e.textContent)") == ["base", "upscale"]

    child = next(r for r in records.values() if r["stage"] == "upscale" and r["seed"] == 1)
    parent = records[child["parent"]]
    page.click(f'[data-item-id="{child["item_id"]}"]')
    page.wait_for_selector("#detail-lineage:not([hidden]) figure")
    assert page.eval_on_selector_all("#detail-lineage figure", "fs => fs.map(f => f.dataset.itemId)") == [
        parent["item_id"]]
    assert page.inner_text("#detail-lineage figcaption").startswith(f"base #{parent['index']}")
    table = page.inner_text("#detail-record")
    assert "stage\tupscale" in table and f"parent\t{parent['item_id']}" in table
    page.click("#detail-lineage figure")  # the parent opens in its turn; it has no lineage of its own
    page.wait_for_function(f"document.querySelector('#detail').dataset.itemId === '{parent['item_id']}'")
    assert page.is_hidden("#detail-lineage")
