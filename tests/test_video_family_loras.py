"""LoRA on the video families whose providers declare it: a random adapter saved in diffusers' format loads through
the real `load_lora_weights`, scale 0 gives the base model's video and a large scale visibly changes it."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from diffsweep.execution.cache import PipelineCache
from family_checks import check_item, make_lora, run_ok

ATTENTION = ["to_q", "to_k", "to_v", "to_out.0"]


@pytest.mark.parametrize(("preset", "pipeline", "factory"), [
    ("tiny_wan22_ti2v", "WanPipeline", "wan22_ti2v"),
    ("tiny_cogvideox", "CogVideoXPipeline", "cogvideox"),
    ("tiny_ltx", "LTXPipeline", "ltx"),
    ("tiny_ltx2", "LTX2Pipeline", "ltx2"),
    ("tiny_hunyuan_video", "HunyuanVideoPipeline", "hunyuan_video"),
])
def test_lora_scale_zero_is_the_base_model_and_a_large_scale_shows(preset: str, pipeline: str, factory: str,
                                                                   tmp_path: Path) -> None:
    cache = PipelineCache()
    base_dir, (base,) = run_ok([f"provider={preset}"], tmp_path / "base", cache)
    lora = make_lora(pipeline, factory, tmp_path / "lora", ATTENTION)
    run_dir, records = run_ok([f"provider={preset}", lora, "+sweep.grid.lora.style=[0.0,10.0]"], tmp_path / "runs",
                              cache)
    by_scale = {r["params"]["lora.style"]: check_item(run_dir, r).pixels.astype(int) for r in records}
    base_video = check_item(base_dir, base).pixels.astype(int)
    # H.264 may move a value on a rounding edge by a level or two, over a block: compare means, not every pixel
    assert np.abs(by_scale[0.0] - base_video).mean() < 0.5
    assert np.abs(by_scale[10.0] - by_scale[0.0]).mean() > 2
