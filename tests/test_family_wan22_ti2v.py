"""Wan 2.2 TI2V-5B as a layout of the Wan provider: 32-pixel sizes, text- and image-to-video from one checkpoint."""

from __future__ import annotations

from pathlib import Path

import pytest

from conftest import compose_config
from diffsweep.errors import EXIT_CONFIG, ConfigError
from diffsweep.planning.prepare import prepare
from diffsweep.providers import get
from family_checks import check_item, picture, previews_of, run_ok

PROMPT_OVERRIDE = "sweep.grid.prompt=[a fox]"


def test_text_and_image_to_video_from_one_tiny_checkpoint(tmp_path: Path) -> None:
    image = picture(tmp_path / "first.png", (48, 32), (200, 120, 40))
    t2v_dir, t2v = run_ok(["provider=tiny_wan22_ti2v", "previews.every=2"], tmp_path / "runs")
    i2v_dir, i2v = run_ok(["provider=tiny_wan22_ti2v", "builder.pipeline=WanImageToVideoPipeline",
                           f"+sweep.params.image='{image}'"], tmp_path / "runs")
    (text_item,) = t2v
    (image_item,) = i2v
    assert check_item(t2v_dir, text_item).pixels.shape == (5, 32, 32, 3)
    assert check_item(i2v_dir, image_item).pixels.shape == (5, 32, 32, 3)
    assert image_item["params"]["image"] == image
    # 48 latent channels have no published RGB factors here: the generic projection still shows the last step
    assert [p.name for p in previews_of(t2v_dir, text_item)] == ["step_0002.png"]


@pytest.mark.parametrize("model", ["tiny", "local folder"])
def test_sizes_off_the_32_grid_are_refused_at_plan_time(model: str, tmp_path: Path) -> None:
    overrides = ["provider=tiny_wan22_ti2v", "sweep.params.height=48", PROMPT_OVERRIDE]
    if model == "local folder":  # recognised by expand_timesteps in its model_index.json
        folder = get("wan").locate({"model": "tiny:wan22_ti2v"})
        overrides.append(f"builder.model='{folder}'")
    with pytest.raises(ConfigError) as caught:
        prepare(compose_config(overrides, tmp_path / "runs"))
    assert "sweep.params.height: height 48 must be a multiple of 32 for wan; nearest: 32 or 64" in str(caught.value)
    assert caught.value.exit_code == EXIT_CONFIG
    assert not (tmp_path / "runs").exists()
    # Wan 2.1 and 2.2 A14B take multiples of 16
    prepare(compose_config(["provider=tiny_wan22", "sweep.params.height=48", PROMPT_OVERRIDE], tmp_path / "runs"))

