"""Z-Image on its tiny stand-in: text-to-image with previews and LoRA, img2img and inpaint at the input's size."""

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

NO_SIZE = ["~generation.height", "~generation.width"]  # img2img and inpaint take the input's size


@pytest.fixture(scope="module")
def text_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[dict[str, Any]]]:
    return run_ok(["provider=tiny_z_image", "sweep.grid.seed=[0,1]", "previews.every=1"],
                  tmp_path_factory.mktemp("z_text"))


def test_text_to_image_items_and_previews(text_run: tuple[Path, list[dict[str, Any]]]) -> None:
    run_dir, records = text_run
    images = [check_item(run_dir, record).pixels for record in records]
    assert all(image.shape == (32, 32, 3) for image in images)
    assert not np.array_equal(images[0], images[1])
    for record in records:  # 16-channel latents through the Flux factors, enlarged to 64 px
        assert [p.name for p in previews_of(run_dir, record)] == ["step_0001.png", "step_0002.png"]


def test_lora_scale_zero_is_the_base_model(text_run: tuple[Path, list[dict[str, Any]]], tmp_path: Path) -> None:
    base_dir, base = text_run
    lora = make_lora("ZImagePipeline", "z_image", tmp_path / "lora", ["to_q", "to_k", "to_v", "to_out.0"])
    run_dir, records = run_ok(["provider=tiny_z_image", lora, "+sweep.grid.lora.style=[0.0,1.0]"], tmp_path,
                              PipelineCache())
    by_scale = {r["params"]["lora.style"]: check_item(run_dir, r).pixels for r in records}
    assert_batch_equivalent(by_scale[0.0], check_item(base_dir, base[0]).pixels)  # the base ran two per call
    assert np.abs(by_scale[1.0].astype(int) - by_scale[0.0].astype(int)).max() > 8


@pytest.mark.parametrize("pipeline", ["ZImageImg2ImgPipeline", "ZImageInpaintPipeline"])
def test_input_pipelines_make_the_input_size_and_record_no_other(pipeline: str, tmp_path: Path) -> None:
    image = picture(tmp_path / "in.png", (48, 32), (200, 60, 30))
    overrides = ["provider=tiny_z_image", f"builder.pipeline={pipeline}", *NO_SIZE, f"+sweep.params.image='{image}'"]
    if pipeline == "ZImageInpaintPipeline":
        overrides.append(f"+sweep.params.mask_image='{picture(tmp_path / 'mask.png', (48, 32), (0, 0, 0))}'")
    run_dir, (record,) = run_ok(overrides, tmp_path / "runs")
    assert record["params"]["image"] == image
    check_item(run_dir, record, size=(48, 32))


@pytest.mark.parametrize(("extra", "message"), [
    ([], "input image {image} is 40x40; ZImageImg2ImgPipeline makes an image of the input's size, whose sides must "
         "be multiples of 16 (diffusers would shrink it to 32x32)"),
    (["+sweep.params.height=32"], "sweep.params.height: not a parameter of ZImageImg2ImgPipeline"),
])
def test_img2img_size_rules_at_plan_time(extra: list[str], message: str, tmp_path: Path) -> None:
    image = picture(tmp_path / "odd.png", (40, 40), (10, 200, 10))
    overrides = ["provider=tiny_z_image", "builder.pipeline=ZImageImg2ImgPipeline", *NO_SIZE,
                 f"+sweep.params.image='{image}'", "sweep.grid.prompt=[a fox]", *extra]
    with pytest.raises(ConfigError) as caught:
        prepare(compose_config(overrides, tmp_path / "runs"))
    assert message.format(image=image) in str(caught.value)
    assert caught.value.exit_code == EXIT_CONFIG
    assert not (tmp_path / "runs").exists()
