"""HunyuanVideo on its tiny stand-in: embedded guidance plus true CFG, MP4s read by PyAV, previews, its rules."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from family_checks import check_item, previews_of, refusal, run_ok


def test_true_cfg_with_a_negative_prompt_changes_the_video(tmp_path: Path) -> None:
    run_dir, records = run_ok(["provider=tiny_hunyuan_video", "+sweep.params.negative_prompt=static",
                               "+sweep.grid.true_cfg_scale=[1.0,4.0]", "previews.every=2"], tmp_path)
    videos = {r["params"]["true_cfg_scale"]: check_item(run_dir, r).pixels for r in records}
    assert videos[1.0].shape == (5, 32, 32, 3)
    assert np.abs(videos[1.0].astype(int) - videos[4.0].astype(int)).mean() > 0.5
    assert all([p.name for p in previews_of(run_dir, r)] == ["step_0002.png"] for r in records)


@pytest.mark.parametrize(("overrides", "message"), [
    (["+sweep.params.num_frames=8"], "num_frames 8 must be 4k+1 for hunyuan_video; nearest: 5 or 9"),
    (["sweep.params.width=40"], "width 40 must be a multiple of 16 for hunyuan_video; nearest: 32 or 48"),
])
def test_rules_at_plan_time(overrides: list[str], message: str, tmp_path: Path) -> None:
    assert message in refusal("tiny_hunyuan_video", overrides, tmp_path / "runs")
