"""Labelled sheets of real runs (tiny image, video and audio pipelines): layout, labels, cap, files, fonts."""

from __future__ import annotations

import io
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw, ImageFont

from conftest import compose_config, run_cli
from diffsweep.reports import fonts
from diffsweep.reports.sheets import (
    FAILED,
    MISSING,
    SHEET,
    SHEETS_DIR,
    WAVE,
    Written,
    video_strip,
    write_sheets,
)
from diffsweep.run.local import run_sweep

CJK = "夕暮れの崖の上の灯台"
PROMPTS = f"sweep.grid.prompt=['a lighthouse on a cliff at dusk, oil painting','{CJK}']"
IMAGE_RUN = [PROMPTS, "sweep.grid.seed=[0,1]", "+sweep.grid.guidance_scale=[1.0,7.5]",
             "sweep.params.num_inference_steps=1"]


def _run(overrides: list[str], root: Path) -> Path:
    result = run_sweep(compose_config(overrides, root), out=io.StringIO())
    assert result.status == "complete"
    return result.run_dir


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("sheets") / "runs"
    return {"image": _run(IMAGE_RUN, root),
            "video": _run(["provider=tiny_wan", "sweep.grid.seed=[0,1]", "sweep.grid.prompt=[a fox]",
                           "sweep.params.num_inference_steps=1"], root),
            "audio": _run(["provider=tiny_audioldm", "sweep.grid.seed=[0,1]", "sweep.grid.prompt=[rain]",
                           "sweep.params.num_inference_steps=1"], root)}


def _copy(run_dir: Path, tmp_path: Path) -> Path:
    target = tmp_path / run_dir.parent.name / run_dir.name
    shutil.copytree(run_dir, target)
    return target


def _manifest(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "manifest.jsonl").read_text().splitlines()]


def _sheet(path: Path) -> np.ndarray:
    with Image.open(path) as image:
        return np.asarray(image.convert("RGB"))


def _has_ink(pixels: np.ndarray, box: tuple[int, int, int, int]) -> bool:
    """Dark text pixels inside a label box (the sheet is white around labels)."""
    x, y, w, h = box
    return bool((pixels[y:y + h, x:x + w].min(axis=2) < 128).any())


def _crop(pixels: np.ndarray, box: tuple[int, int, int, int]) -> np.ndarray:
    x, y, w, h = box
    return pixels[y:y + h, x:x + w]


def _centre_paste(item: Image.Image, box: tuple[int, int, int, int]) -> tuple[int, int]:
    x, y, w, h = box
    return x + (w - item.width) // 2, y + (h - item.height) // 2


def _check_labels(written: Written, pixels: np.ndarray, sheet: int = 0) -> None:
    drawn = written.drawn[sheet]
    layout = drawn.layout
    assert pixels.shape[:2] == (layout.height, layout.width)
    for box, lines in layout.col_labels + layout.row_labels + layout.x_titles + layout.y_titles + layout.z_titles:
        assert lines and all(line for line in lines), lines  # never cut to nothing
        assert _has_ink(pixels, box), (box, lines)
    assert layout.legend and _has_ink(pixels, layout.legend)


def test_default_sheet_of_an_image_run(runs: dict[str, Path]) -> None:
    run_dir = runs["image"]
    # made at the end of the run: the last axis across, the one before down, the one before as Z
    assert (run_dir / SHEET).is_file() and not (run_dir / SHEETS_DIR).exists()
    written = write_sheets(run_dir)
    choice = written.choice
    assert (choice.x.name, choice.y.name, choice.z.name, choice.rest) == ("guidance_scale", "seed", "prompt", [])
    pixels = _sheet(run_dir / SHEET)
    _check_labels(written, pixels)
    layout, page = written.drawn[0].layout, written.pages[0]
    assert [lines for _, lines in layout.col_labels] == [["1.0"], ["7.5"]] * 2
    assert [lines for _, lines in layout.row_labels] == [["0"], ["1"]] * 2
    assert [" ".join(lines) for _, lines in layout.z_titles] == [
        "prompt: a lighthouse on a cliff at dusk, oil painting", f"prompt: {CJK}"]
    assert "num_inference_steps=1" in " ".join(layout.legend_lines)
    assert "builder=tiny:sd" in " ".join(layout.legend_lines)
    records = {r["index"]: r for r in _manifest(run_dir)}
    for key, box in layout.cells.items():  # each cell holds its own item, pasted at full size
        record = records[page.cells[key]]
        assert record["params"]["prompt"].startswith(("a lighthouse", CJK)[key[0]])
        assert record["params"]["seed"] == [0, 1][key[1]]
        assert record["params"]["guidance_scale"] == [1.0, 7.5][key[2]]
        with Image.open(run_dir / record["outputs"][0]) as image:
            item = np.asarray(image.convert("RGB"))
        x, y = _centre_paste(Image.fromarray(item), box)
        assert np.array_equal(pixels[y:y + item.shape[0], x:x + item.shape[1]], item)


def test_one_sheet_per_value_of_the_remaining_axes(runs: dict[str, Path], tmp_path: Path) -> None:
    run_dir = _copy(runs["image"], tmp_path)
    written = write_sheets(run_dir, x="guidance_scale", y="seed")
    names = sorted(p.name for p in (run_dir / SHEETS_DIR).iterdir())
    assert names == ["001_prompt=a_lighthouse_on_a_cliff_at_dusk_oil_pain.png", f"002_prompt={CJK}.png"]
    assert written.paths == [run_dir / SHEET, *(run_dir / SHEETS_DIR / name for name in names)]
    assert (run_dir / SHEET).read_bytes() == (run_dir / SHEETS_DIR / names[0]).read_bytes()
    for number, (name, drawn) in enumerate(zip(names, written.drawn, strict=True)):
        _check_labels(written, _sheet(run_dir / SHEETS_DIR / name), number)
        assert not drawn.layout.z_titles
    titles = [" ".join(d.layout.title_lines) for d in written.drawn]
    assert titles[0].endswith("sheet 1 of 2: prompt = a lighthouse on a cliff at dusk, oil painting")
    assert titles[1].endswith(f"sheet 2 of 2: prompt = {CJK}")


def test_z_axis_sets_titled_sub_grids_side_by_side(runs: dict[str, Path], tmp_path: Path) -> None:
    run_dir = _copy(runs["image"], tmp_path)
    assert len(write_sheets(run_dir, x="guidance_scale", y="seed").paths) == 3
    written = write_sheets(run_dir, x="seed", y="prompt", z="guidance_scale")
    assert len(written.pages) == 1 and written.paths == [run_dir / SHEET]
    assert not list((run_dir / SHEETS_DIR).glob("*.png"))  # one sheet: the earlier per-prompt ones are gone
    layout = written.drawn[0].layout
    pixels = _sheet(run_dir / SHEET)
    _check_labels(written, pixels)
    assert [lines for _, lines in layout.z_titles] == [["guidance_scale: 1.0"], ["guidance_scale: 7.5"]]
    left, right = (box for box, _ in layout.z_titles)
    assert left[0] + left[2] < right[0] and left[1] == right[1]
    assert all(layout.cells[(0, r, c)][0] < right[0] <= layout.cells[(1, r, c)][0] for r in range(2) for c in range(2))
    # the long prompt wraps on several lines beside its row, the CJK one is whole
    row_lines = [lines for _, lines in layout.row_labels]
    assert " ".join(row_lines[0]) == "a lighthouse on a cliff at dusk, oil painting" and len(row_lines[0]) > 1
    assert row_lines[1] == [CJK] * 1 and len(row_lines) == 4  # 2 prompts x 2 sub-grids


def test_the_pixel_cap_shrinks_cells_and_says_why(runs: dict[str, Path], tmp_path: Path) -> None:
    run_dir = _copy(runs["image"], tmp_path)
    full = write_sheets(run_dir, x="seed", y="guidance_scale", z="prompt")
    area = full.drawn[0].layout.width * full.drawn[0].layout.height
    capped = write_sheets(run_dir, x="seed", y="guidance_scale", z="prompt", max_pixels=area * 3 // 4)
    layout = capped.drawn[0].layout
    assert layout.cell[0] < full.drawn[0].layout.cell[0]
    assert layout.width * layout.height <= area * 3 // 4
    assert "over the cap" in capped.drawn[0].note and "--max-pixels" in capped.drawn[0].note
    pixels = _sheet(run_dir / SHEET)
    assert pixels.shape[0] * pixels.shape[1] <= area * 3 // 4
    _check_labels(capped, pixels)
    assert (np.abs(_crop(pixels, layout.note).astype(int) - FAILED).sum(axis=2) < 60).any()  # the note, in red
    tiny = write_sheets(run_dir, x="seed", y="guidance_scale", z="prompt", max_pixels=40_000)
    assert "The whole sheet is scaled down" in tiny.drawn[0].note
    assert _sheet(run_dir / SHEET).size // 3 <= 40_000


def test_failed_and_missing_items_are_marked(runs: dict[str, Path], tmp_path: Path) -> None:
    run_dir = _copy(runs["image"], tmp_path)
    lines = _manifest(run_dir)
    failed, missing = lines[0], lines[1]
    failed.update(status="failed", outputs=[], error="RuntimeError: broke")
    (run_dir / "manifest.jsonl").write_text("".join(json.dumps(r) + "\n" for r in lines if r is not missing))
    written = write_sheets(run_dir)
    page, layout = written.pages[0], written.drawn[0].layout
    pixels = _sheet(run_dir / SHEET)
    where = {index: key for key, index in page.cells.items()}
    for record, fill in ((failed, FAILED), (missing, MISSING)):
        x, y, w, h = layout.cells[where[record["index"]]]
        assert tuple(pixels[y + 2, x + 2]) == fill
        assert _has_ink(pixels, (x, y, w, h)) or fill == FAILED  # the word on the mark


def test_video_cells_are_strips_of_frames(runs: dict[str, Path]) -> None:
    run_dir = runs["video"]
    written = write_sheets(run_dir)
    assert written.choice.x.name == "seed" and written.choice.y is None
    layout, page = written.drawn[0].layout, written.pages[0]
    pixels = _sheet(run_dir / SHEET)
    _check_labels(written, pixels)
    records = {r["index"]: r for r in _manifest(run_dir)}
    for key, box in layout.cells.items():
        strip = video_strip(run_dir / records[page.cells[key]]["outputs"][0])
        assert strip.size == (4 * 32 + 3 * 2, 32)  # 4 of the 5 frames, 32 px, 2 px apart
        assert layout.cell[0] == strip.width
        x, y = _centre_paste(strip, box)
        assert np.array_equal(pixels[y:y + strip.height, x:x + strip.width], np.asarray(strip))


def test_audio_cells_are_waveforms(runs: dict[str, Path]) -> None:
    run_dir = runs["audio"]
    written = write_sheets(run_dir)
    layout = written.drawn[0].layout
    pixels = _sheet(run_dir / SHEET)
    _check_labels(written, pixels)
    assert layout.cell == (256, 128)
    for box in layout.cells.values():
        assert (_crop(pixels, box) == WAVE).all(axis=2).sum() > 100


def test_sheet_command_draws_the_axes_asked_for_and_refuses_unknown_ones(runs: dict[str, Path],
                                                                         tmp_path: Path) -> None:
    run_dir = _copy(runs["image"], tmp_path)
    before = (run_dir / SHEET).read_bytes()
    bad = run_cli(["sheet", str(run_dir), "--x", "seed", "--z", "steps"], cwd=tmp_path, module="diffsweep.cli.runs")
    assert bad.returncode == 2
    assert "--z: 'steps' is not a varying axis of this run; varying axes: prompt, seed, guidance_scale" in bad.stderr
    assert (run_dir / SHEET).read_bytes() == before
    good = run_cli(["sheet", str(run_dir), "--x", "prompt", "--y", "guidance_scale", "--max-pixels", "2000000"],
                   cwd=tmp_path, module="diffsweep.cli.runs")
    assert good.returncode == 0, good.stderr
    printed = good.stdout.splitlines()
    assert printed == [str(run_dir / SHEET), str(run_dir / SHEETS_DIR / "001_seed=0.png"),
                       str(run_dir / SHEETS_DIR / "002_seed=1.png")]
    assert "x=prompt, y=guidance_scale, one sheet per seed: 2 sheet(s)" in good.stderr
    assert sorted(p.name for p in (run_dir / SHEETS_DIR).iterdir()) == ["001_seed=0.png", "002_seed=1.png"]


def test_cjk_prompts_render_as_glyphs_not_boxes() -> None:
    face = fonts.Typeface(16)
    chosen = face.face_for("灯")
    if chosen is face.primary:
        pytest.skip("no installed font has CJK glyphs: apt-get install fonts-noto-cjk (CI installs it)")
    assert chosen.path is not None and "CJK" in chosen.path.name and chosen.covers("灯")
    assert face.face_for("я") is face.primary  # DejaVu has Cyrillic

    def drawn(text: str, font: ImageFont.FreeTypeFont) -> np.ndarray:
        image = Image.new("L", (64, 32), 0)
        ImageDraw.Draw(image).text((2, 2), text, fill=255, font=font)
        return np.asarray(image)

    tofu = drawn("灯", face.primary.font)  # DejaVu has no 灯: it draws its .notdef box
    assert np.array_equal(tofu, drawn("\ue000", face.primary.font))  # the same box as any missing glyph
    image = Image.new("RGB", (64, 32), (0, 0, 0))
    face.draw(image, (2, 2), "灯", (255, 255, 255))
    rendered = np.asarray(image.convert("L"))
    assert rendered.any() and not np.array_equal(rendered > 128, tofu > 128)


def test_without_a_usable_config_items_go_in_grid_index_order(runs: dict[str, Path], tmp_path: Path) -> None:
    run_dir = _copy(runs["image"], tmp_path)
    (run_dir / "config.yaml").write_text("sweep: [unclosed", encoding="utf-8")
    written = write_sheets(run_dir)
    layout, page = written.drawn[0].layout, written.pages[0]
    assert [lines for _, lines in layout.row_labels] == [["#0"], ["#3"], ["#6"]]
    assert [lines for _, lines in layout.col_labels] == [["+0"], ["+1"], ["+2"]]
    assert page.cells == {(0, r, c): r * 3 + c for r in range(3) for c in range(3) if r * 3 + c < 8}
    x, y, _, _ = layout.cells[(0, 2, 2)]  # no ninth item: marked, not a hole
    assert tuple(_sheet(run_dir / SHEET)[y + 2, x + 2]) == MISSING


def test_zipped_axes_are_one_axis_of_points(runs: dict[str, Path], tmp_path: Path) -> None:
    run_dir = _copy(runs["image"], tmp_path)
    grid = {"prompt": [f"p{i}" for i in range(8)], "seed": list(range(8))}
    (run_dir / "config.yaml").write_text(json.dumps({"sweep": {"mode": "zip", "grid": grid}}), encoding="utf-8")
    written = write_sheets(run_dir)
    assert written.choice.x.name == "prompt,seed" and written.choice.y is None
    labels = [" ".join(lines) for _, lines in written.drawn[0].layout.col_labels]
    assert labels == [f"prompt=p{i} · seed={i}" for i in range(8)]
    assert written.pages[0].cells == {(0, 0, i): i for i in range(8)}
