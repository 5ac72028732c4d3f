"""Chroma on its tiny stand-in: real CFG, previews of packed latents, LoRA, img2img and inpaint at height x width."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from conftest import assert_batch_equivalent, compose_config
from diffsweep.errors import EXIT_CONFIG, ConfigError
from diffsweep.execution.cache import PipelineCache
from diffsweep.planning.prepare import prepare
from family_checks import check_item, make_lora, picture, previews_of, run_ok


@pytest.fixture(scope="module")
def text_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[dict[str, Any]]]:
    """The preset's CFG (guidance 3 with a negative prompt) beside guidance 1 (one pass, no negative)."""
    return run_ok(["provider=tiny_chroma", "+sweep.grid.guidance_scale=[1.0,3.0]", "previews.every=2"],
                  tmp_path_factory.mktemp("chroma_text"))


def test_cfg_changes_the_image_and_previews_unpack(text_run: tuple[Path, list[dict[str, Any]]]) -> None:
    run_dir, records = text_run
    by_guidance = {r["params"]["guidance_scale"]: check_item(run_dir, r).pixels for r in records}
    assert not np.array_equal(by_guidance[1.0], by_guidance[3.0])
    for record in records:
        assert [p.name for p in previews_of(run_dir, record)] == ["step_0002.png"]


def test_lora_scale_zero_is_the_base_model(text_run: tuple[Path, list[dict[str, Any]]], tmp_path: Path) -> None:
    base_dir, records = text_run
    base = next(r for r in records if r["params"]["guidance_scale"] == 3.0)
    lora = make_lora("ChromaPipeline", "chroma", tmp_path / "lora", ["to_q", "to_k", "to_v", "to_out.0"])
    run_dir, lora_records = run_ok(["provider=tiny_chroma", lora, "+sweep.grid.lora.style=[0.0,10.0]"],
                                   tmp_path / "runs", PipelineCache())
    by_scale = {r["params"]["lora.style"]: check_item(run_dir, r).pixels for r in lora_records}
    assert_batch_equivalent(by_scale[0.0], check_item(base_dir, base).pixels)
    assert np.abs(by_scale[10.0].astype(int) - by_scale[0.0].astype(int)).max() > 8


@pytest.mark.parametrize("pipeline", ["ChromaImg2ImgPipeline", "ChromaInpaintPipeline"])
def test_input_pipelines_make_height_x_width(pipeline: str, tmp_path: Path) -> None:
    image = picture(tmp_path / "in.png", (48, 64), (200, 60, 30))
    overrides = ["provider=tiny_chroma", f"builder.pipeline={pipeline}", f"+sweep.params.image='{image}'",
                 "+sweep.params.strength=0.5"]
    if pipeline == "ChromaInpaintPipeline":
        overrides.append(f"+sweep.params.mask_image='{picture(tmp_path / 'mask.png', (48, 64), (255, 255, 255))}'")
    run_dir, (record,) = run_ok(overrides, tmp_path / "runs")
    assert check_item(run_dir, record).pixels.shape == (32, 32, 3)  # resized to the preset's 32x32


def test_inpaint_refuses_the_true_cfg_scale_it_would_ignore(tmp_path: Path) -> None:
    image = picture(tmp_path / "in.png", (32, 32), (200, 60, 30))
    with pytest.raises(ConfigError) as caught:
        prepare(compose_config(["provider=tiny_chroma", "builder.pipeline=ChromaInpaintPipeline",
                                f"+sweep.params.image='{image}'", f"+sweep.params.mask_image='{image}'",
                                "+sweep.params.true_cfg_scale=4.0", "sweep.grid.prompt=[a fox]"], tmp_path / "runs"))
    assert "sweep.params.true_cfg_scale: not a parameter of ChromaInpaintPipeline" in str(caught.value)
    assert caught.value.exit_code == EXIT_CONFIG
    assert not (tmp_path / "runs").exists()
