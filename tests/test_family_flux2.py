"""Flux.2 [klein] on its tiny stand-in: text-to-image with unpacked previews, a reference image, LoRA, its rules."""

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
    return run_ok(["provider=tiny_flux2_klein", "sweep.params.height=48", "previews.every=1"],
                  tmp_path_factory.mktemp("flux2_text"))


def test_text_to_image_and_previews_of_unpacked_latents(text_run: tuple[Path, list[dict[str, Any]]]) -> None:
    run_dir, (record,) = text_run
    assert check_item(run_dir, record).pixels.shape == (48, 32, 3)
    previews = previews_of(run_dir, record)
    assert [p.name for p in previews] == ["step_0001.png", "step_0002.png"]
    from PIL import Image

    with Image.open(previews[0]) as preview:  # 48x32 latents (VAE factor 1), enlarged 2x: the image's aspect
        assert preview.size == (64, 96)


def test_reference_image_conditions_the_output(text_run: tuple[Path, list[dict[str, Any]]], tmp_path: Path) -> None:
    base_dir, (base,) = text_run
    image = picture(tmp_path / "ref.png", (96, 64), (30, 160, 220))
    run_dir, (record,) = run_ok(["provider=tiny_flux2_klein", "sweep.params.height=48",
                                 f"+sweep.params.image='{image}'"], tmp_path / "runs")
    assert record["params"]["image"] == image
    with_reference = check_item(run_dir, record).pixels
    assert with_reference.shape == (48, 32, 3)  # the output keeps height x width, whatever the reference's size
    assert not np.array_equal(with_reference, check_item(base_dir, base).pixels)


def test_several_reference_images_are_loaded_recorded_and_hashed_in_order(tmp_path: Path) -> None:
    """A list of input images (as Qwen-Image-Edit-Plus takes) runs, is recorded as absolute paths in order, and the
    item id follows each file's content and the order: a reordered list or an edited second file make new items."""
    import json
    import shutil

    first = picture(tmp_path / "first.png", (96, 64), (30, 160, 220))
    second = picture(tmp_path / "second.png", (64, 64), (220, 60, 20))
    pair = f"+sweep.grid.image=[['{first}','{second}'],['{second}','{first}'],['{first}']]"
    run_dir, records = run_ok(["provider=tiny_flux2_klein", "sweep.params.height=48", pair], tmp_path / "runs")
    images = [r["params"]["image"] for r in records]
    assert images == [[first, second], [second, first], [first]]
    pixels = [check_item(run_dir, r).pixels for r in records]
    assert not np.array_equal(pixels[0], pixels[1])  # the order of references is the order they condition in
    assert not np.array_equal(pixels[0], pixels[2])  # the second reference takes part
    sidecar = json.loads((run_dir / records[0]["outputs"][0]).with_suffix(".json").read_text(encoding="utf-8"))
    assert sidecar["params"]["image"] == [first, second]

    # moved files keep the ids; an edited second file gives new ones
    moved = tmp_path / "moved"
    moved.mkdir()
    copies = [shutil.copy(first, moved / "a.png"), shutil.copy(second, moved / "b.png")]
    again_dir, again = run_ok(["provider=tiny_flux2_klein", "sweep.params.height=48",
                               f"+sweep.params.image=['{copies[0]}','{copies[1]}']"], tmp_path / "again")
    assert again[0]["item_id"] == records[0]["item_id"]
    picture(moved / "b.png", (64, 64), (20, 200, 20))
    edited_dir, edited = run_ok(["provider=tiny_flux2_klein", "sweep.params.height=48",
                                 f"+sweep.params.image=['{copies[0]}','{copies[1]}']"], tmp_path / "edited")
    assert edited[0]["item_id"] != records[0]["item_id"]


def test_lora_scale_zero_is_the_base_model(text_run: tuple[Path, list[dict[str, Any]]], tmp_path: Path) -> None:
    base_dir, (base,) = text_run
    lora = make_lora("Flux2KleinPipeline", "flux2_klein", tmp_path / "lora",
                     ["to_q", "to_k", "to_v", "to_out.0", "to_qkv_mlp_proj", "ff.linear_in", "ff.linear_out"])
    # the tiny DiT's output barely moves the tiny VAE's pixels: a large scale makes the adapter visible
    run_dir, records = run_ok(["provider=tiny_flux2_klein", "sweep.params.height=48", lora,
                               "+sweep.grid.lora.style=[0.0,10.0]"], tmp_path / "runs", PipelineCache())
    by_scale = {r["params"]["lora.style"]: check_item(run_dir, r).pixels for r in records}
    assert_batch_equivalent(by_scale[0.0], check_item(base_dir, base).pixels)
    assert np.abs(by_scale[10.0].astype(int) - by_scale[0.0].astype(int)).max() > 8


@pytest.mark.parametrize(("overrides", "message"), [
    (["sweep.params.width=40"], "sweep.params.width: width 40 must be a multiple of 16 for flux2; nearest: 32 or 48"),
    (["+sweep.params.max_sequence_length=600"], "max_sequence_length 600 exceeds 512"),
    (["+sweep.params.negative_prompt=blurry"], "sweep.params.negative_prompt: not a parameter of Flux2KleinPipeline"),
    (["+sweep.params.image={small}"], "reference image {small} is 48x96; Flux2KleinPipeline needs at least 64 px"),
    (["+sweep.params.image=[{ok},{small}]"],
     "sweep.params.image[1]: reference image {small} is 48x96; Flux2KleinPipeline needs at least 64 px"),
    (["+sweep.params.image=[{ok},{missing}]"], "sweep.params.image[1]: input file {missing} does not exist"),
])
def test_rules_at_plan_time(overrides: list[str], message: str, tmp_path: Path) -> None:
    small = picture(tmp_path / "small.png", (48, 96), (10, 10, 10))
    ok = picture(tmp_path / "ok.png", (64, 64), (10, 10, 10))
    missing = tmp_path / "missing.png"
    overrides = [o.format(small=f"'{small}'", ok=f"'{ok}'", missing=f"'{missing}'") for o in overrides]
    with pytest.raises(ConfigError) as caught:
        prepare(compose_config(["provider=tiny_flux2_klein", "sweep.grid.prompt=[a fox]", *overrides],
                               tmp_path / "runs"))
    assert message.format(small=small, ok=ok, missing=missing) in str(caught.value)
    assert caught.value.exit_code == EXIT_CONFIG
    assert not (tmp_path / "runs").exists()
