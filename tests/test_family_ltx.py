"""LTX-Video on its tiny stand-in: text- and image-to-video MP4s read by PyAV, unpacked previews, its rules."""

from __future__ import annotations

from pathlib import Path

import pytest

from family_checks import check_item, picture, previews_of, refusal, run_ok


def test_text_to_video_with_previews(tmp_path: Path) -> None:
    run_dir, (record,) = run_ok(["provider=tiny_ltx", "sweep.params.width=64", "previews.every=2"], tmp_path)
    assert check_item(run_dir, record).pixels.shape == (9, 32, 64, 3)
    assert [p.name for p in previews_of(run_dir, record)] == ["step_0002.png"]


def test_image_to_video_batches_prompts_over_one_image(tmp_path: Path) -> None:
    image = picture(tmp_path / "first.png", (48, 40), (220, 120, 30))
    run_dir, records = run_ok(["provider=tiny_ltx", "builder.pipeline=LTXImageToVideoPipeline",
                               "sweep.grid.prompt=[a fox,a boat]", f"+sweep.params.image='{image}'"], tmp_path)
    assert len(records) == 2
    for record in records:  # two prompts in one call, one input image for each
        assert record["params"]["image"] == image
        assert check_item(run_dir, record).pixels.shape == (9, 32, 32, 3)  # resized to height x width


@pytest.mark.parametrize(("overrides", "message"), [
    (["+sweep.params.num_frames=13"], "sweep.params.num_frames: num_frames 13 must be 8k+1 for ltx; nearest: 9 or 17"),
    (["sweep.params.height=48"], "height 48 must be a multiple of 32 for ltx; nearest: 32 or 64"),
    (["+sweep.params.max_sequence_length=256"], "max_sequence_length 256 exceeds 128"),
    (["+sweep.params.decode_timestep=2"], "sweep.params.decode_timestep"),
])
def test_rules_at_plan_time(overrides: list[str], message: str, tmp_path: Path) -> None:
    assert message in refusal("tiny_ltx", overrides, tmp_path / "runs")
