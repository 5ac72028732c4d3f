"""Previews in a run: files under each item's folder every N steps, and no effect on the outputs."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from PIL import Image

from conftest import compose_config, read_manifest
from diffsweep.run.local import run_sweep

ARGS = ["sweep.params.num_inference_steps=4", "sweep.grid.seed=[0,1]", "sweep.grid.prompt=[a fox]"]


def _pixels(run_dir: Path) -> dict[str, np.ndarray]:
    return {r["item_id"]: np.asarray(Image.open(run_dir / r["outputs"][0])) for r in read_manifest(run_dir)}


def test_previews_every_two_steps_are_written_and_change_nothing(tmp_path: Path) -> None:
    plain = run_sweep(compose_config(ARGS, tmp_path / "plain"), out=io.StringIO()).run_dir
    assert not list(plain.glob("items/*.previews"))  # off by default: no callback, no files

    shown = run_sweep(compose_config([*ARGS, "previews.every=2"], tmp_path / "shown"), out=io.StringIO()).run_dir
    for record in read_manifest(shown):
        folder = shown / (record["outputs"][0].removesuffix(".png") + ".previews")
        assert sorted(p.name for p in folder.iterdir()) == ["step_0002.png", "step_0004.png"]
        with Image.open(folder / "step_0004.png") as preview:
            assert preview.size == (64, 64)  # 32x32 latents, enlarged to the minimum preview size
    assert "preview at step 2" in (shown / "run.log").read_text()
    plain_pixels, shown_pixels = _pixels(plain), _pixels(shown)
    assert plain_pixels.keys() == shown_pixels.keys()
    assert all(np.array_equal(plain_pixels[k], shown_pixels[k]) for k in plain_pixels)
