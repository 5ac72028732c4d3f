"""Sana and Sana Sprint on their tiny stand-ins: sizes in 32s, CFG with a negative prompt, LoRA, previews, rules."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from conftest import assert_batch_equivalent
from diffsweep.execution.cache import PipelineCache
from family_checks import check_item, make_lora, previews_of, refusal, run_ok


@pytest.fixture(scope="module")
def text_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[dict[str, Any]]]:
    return run_ok(["provider=tiny_sana", "sweep.params.width=64", "+sweep.grid.negative_prompt=['','blurry']",
                   "previews.every=2"], tmp_path_factory.mktemp("sana_text"))


def test_text_to_image_with_a_negative_prompt_axis(text_run: tuple[Path, list[dict[str, Any]]]) -> None:
    run_dir, records = text_run
    by_negative = {r["params"]["negative_prompt"]: check_item(run_dir, r).pixels for r in records}
    assert by_negative[""].shape == (32, 64, 3)
    assert not np.array_equal(by_negative[""], by_negative["blurry"])  # CFG 4.5 uses the negative prompt
    assert all([p.name for p in previews_of(run_dir, r)] == ["step_0002.png"] for r in records)


def test_lora_scale_zero_is_the_base_model(text_run: tuple[Path, list[dict[str, Any]]], tmp_path: Path) -> None:
    base_dir, records = text_run
    base = next(r for r in records if r["params"]["negative_prompt"] == "")
    lora = make_lora("SanaPipeline", "sana", tmp_path / "lora", ["to_q", "to_k", "to_v", "to_out.0"])
    run_dir, lora_records = run_ok(["provider=tiny_sana", "sweep.params.width=64", "+sweep.params.negative_prompt=''",
                                    lora, "+sweep.grid.lora.style=[0.0,10.0]"], tmp_path / "runs", PipelineCache())
    by_scale = {r["params"]["lora.style"]: check_item(run_dir, r).pixels for r in lora_records}
    assert_batch_equivalent(by_scale[0.0], check_item(base_dir, base).pixels)
    assert np.abs(by_scale[10.0].astype(int) - by_scale[0.0].astype(int)).max() > 8


@pytest.mark.parametrize(("overrides", "message"), [
    (["sweep.params.height=48"], "sweep.params.height: height 48 must be a multiple of 32 for sana; nearest: 32 or 64"),
    (["provider=tiny_sana_sprint", "sweep.params.negative_prompt=blurry"],
     "sweep.params.negative_prompt: not a parameter of SanaSprintPipeline"),
    (["+sweep.params.max_sequence_length=400"], "max_sequence_length 400 exceeds 300"),
    (["+sweep.params.use_resolution_binning=maybe"], "sweep.params.use_resolution_binning"),
])
def test_rules_at_plan_time(overrides: list[str], message: str, tmp_path: Path) -> None:
    assert message in refusal("tiny_sana", overrides, tmp_path / "runs")
