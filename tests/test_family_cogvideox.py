"""CogVideoX on its tiny stand-in: text- and image-to-video MP4s read by PyAV, frames-first previews, its rules."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from family_checks import check_item, picture, previews_of, refusal, run_ok


def test_text_to_video_with_previews(tmp_path: Path) -> None:
    run_dir, (record,) = run_ok(["provider=tiny_cogvideox", "+sweep.params.num_frames=17", "previews.every=2"],
                                tmp_path)
    assert check_item(run_dir, record).pixels.shape == (17, 32, 32, 3)
    assert [p.name for p in previews_of(run_dir, record)] == ["step_0002.png"]


@pytest.fixture(scope="module")
def i2v_folder(tmp_path_factory: pytest.TempPathFactory) -> str:
    """The tiny parts with an image-to-video transformer (8 input channels, rotary and learned positions)."""
    from diffusers import CogVideoXImageToVideoPipeline

    from diffsweep.providers import tiny_factories
    from diffsweep.tiny.cogvideox import transformer

    components: dict[str, Any] = {**tiny_factories()["cogvideox"](), "transformer": transformer(
        8, use_rotary_positional_embeddings=True, use_learned_positional_embeddings=True)}
    folder = tmp_path_factory.mktemp("cogvideox_i2v")
    CogVideoXImageToVideoPipeline(**components).save_pretrained(folder)
    return str(folder)


def test_image_to_video_from_a_local_folder(i2v_folder: str, tmp_path: Path) -> None:
    image = picture(tmp_path / "first.png", (48, 40), (220, 120, 30))
    run_dir, (record,) = run_ok(["provider=tiny_cogvideox", "builder.pipeline=CogVideoXImageToVideoPipeline",
                                 f"builder.model='{i2v_folder}'", f"+sweep.params.image='{image}'"], tmp_path)
    assert record["params"]["image"] == image
    assert check_item(run_dir, record).pixels.shape == (9, 32, 32, 3)  # resized to height x width


@pytest.mark.parametrize(("overrides", "message"), [
    (["+sweep.params.num_frames=13"], "sweep.params.num_frames: num_frames 13 must be 8k+1 for cogvideox; nearest: 9 or 17"),
    (["+sweep.params.max_sequence_length=300"], "max_sequence_length 300 exceeds 226"),
    (["sweep.params.height=40"], "height 40 must be a multiple of 16 for cogvideox; nearest: 32 or 48"),
    (["builder.pipeline=CogVideoXImageToVideoPipeline"], "CogVideoXImageToVideoPipeline needs an input image"),
])
def test_rules_at_plan_time(overrides: list[str], message: str, tmp_path: Path) -> None:
    assert message in refusal("tiny_cogvideox", overrides, tmp_path / "runs")
