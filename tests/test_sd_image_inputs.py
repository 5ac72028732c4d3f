"""SD image-to-image and inpainting driven from input files in a grid, on the tiny SD weights.

The tiny UNet has 4 input channels, so StableDiffusionInpaintPipeline runs in diffusers' legacy mode: it blends the
noised input latents back outside the mask at every step instead of feeding the mask to a 9-channel UNet.
"""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from conftest import compose_config, read_manifest
from diffsweep.errors import EXIT_CONFIG, ConfigError
from diffsweep.providers import get
from diffsweep.run.local import run_sweep

BASE = ["sweep.params.num_inference_steps=2", "sweep.grid.seed=[0]", "sweep.grid.prompt=[a fox]"]
IMG2IMG = "builder.pipeline=StableDiffusionImg2ImgPipeline"
NO_SIZE = ["~generation.height", "~generation.width"]  # img2img makes the input's size
INPAINT = "builder.pipeline=StableDiffusionInpaintPipeline"


def _picture(path: Path, colour: tuple[int, int, int]) -> str:
    """A 64x64 input with a diagonal edge, so inputs differ in content, not only in colour."""
    array = np.zeros((64, 64, 3), np.uint8)
    array[...] = colour
    array[np.triu_indices(64, 1)] = 255 - np.array(colour, np.uint8)
    Image.fromarray(array).save(path)
    return str(path)


def _mask(path: Path, size: int, rows: slice) -> str:
    """White (repaint) over `rows`, black elsewhere."""
    array = np.zeros((size, size), np.uint8)
    array[rows] = 255
    Image.fromarray(array).save(path)
    return str(path)


def _quote(paths: list[str]) -> str:
    return "[" + ",".join(f"'{p}'" for p in paths) + "]"


def _ok_run(overrides: list[str], tmp_path: Path) -> tuple[Path, list[dict[str, Any]]]:
    result = run_sweep(compose_config([*BASE, *overrides], tmp_path / "runs"), out=io.StringIO())
    records = sorted(read_manifest(result.run_dir), key=lambda r: r["index"])
    assert result.status == "complete", records
    return result.run_dir, records


def _pixels(run_dir: Path, record: dict[str, Any]) -> np.ndarray:
    with Image.open(run_dir / record["outputs"][0]) as image:
        return np.asarray(image)


def _sidecar(run_dir: Path, record: dict[str, Any]) -> dict[str, Any]:
    return json.loads((run_dir / record["outputs"][0]).with_suffix(".json").read_text())


def test_img2img_grid_over_input_files(tmp_path: Path) -> None:
    inputs = [_picture(tmp_path / "a.png", (220, 30, 30)), _picture(tmp_path / "b.png", (30, 30, 220))]
    run_dir, records = _ok_run([IMG2IMG, *NO_SIZE, f"+sweep.grid.image={_quote(inputs)}", "+sweep.params.strength=0.75"],
                               tmp_path)
    assert [r["params"]["image"] for r in records] == inputs
    for record, source in zip(records, inputs, strict=True):
        params = _sidecar(run_dir, record)["params"]
        assert params["image"] == source and params["strength"] == 0.75
    first, second = (_pixels(run_dir, r) for r in records)
    assert first.shape == second.shape == (64, 64, 3)
    assert not np.array_equal(first, second)  # strength 0.75 of 2 steps starts from the half-noised input


def test_inpaint_runs_in_legacy_mode_and_the_mask_matters(tmp_path: Path) -> None:
    image = _picture(tmp_path / "a.png", (220, 30, 30))
    masks = [_mask(tmp_path / "top.png", 64, slice(0, 32)), _mask(tmp_path / "all.png", 64, slice(None))]
    run_dir, records = _ok_run([INPAINT, f"+sweep.params.image='{image}'", f"+sweep.grid.mask_image={_quote(masks)}"],
                               tmp_path)
    for record, mask in zip(records, masks, strict=True):
        params = _sidecar(run_dir, record)["params"]
        assert params["image"] == image and params["mask_image"] == mask
    first, second = (_pixels(run_dir, r) for r in records)
    assert first.shape == (64, 64, 3) and not np.array_equal(first, second)


def test_mask_of_another_size_fails_validation_and_writes_nothing(tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    image = _picture(tmp_path / "a.png", (220, 30, 30))
    mask = _mask(tmp_path / "small.png", 32, slice(0, 16))
    monkeypatch.setattr(get("stable_diffusion"), "load", lambda *_: pytest.fail("a model was loaded"))
    with pytest.raises(ConfigError) as caught:
        run_sweep(compose_config([*BASE, INPAINT, f"+sweep.params.image='{image}'",
                                  f"+sweep.params.mask_image='{mask}'"], tmp_path / "runs"), out=io.StringIO())
    assert "mask_image: mask size 32x32 does not match image size 64x64" in str(caught.value)
    assert caught.value.exit_code == EXIT_CONFIG
    assert not (tmp_path / "runs").exists()
