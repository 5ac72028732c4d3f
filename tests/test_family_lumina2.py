"""Lumina 2 on its tiny stand-in: the asked size (the VAE factor is hard-coded), CFG truncation, LoRA, rules."""

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
    return run_ok(["provider=tiny_lumina2", "sweep.params.width=64", "+sweep.grid.cfg_trunc_ratio=[0.5,1.0]",
                   "previews.every=1"], tmp_path_factory.mktemp("lumina2_text"))


def test_cfg_truncation_axis_and_previews(text_run: tuple[Path, list[dict[str, Any]]]) -> None:
    run_dir, records = text_run
    by_ratio = {r["params"]["cfg_trunc_ratio"]: check_item(run_dir, r).pixels for r in records}
    assert by_ratio[1.0].shape == (32, 64, 3)
    assert not np.array_equal(by_ratio[0.5], by_ratio[1.0])  # the second step ran without CFG
    assert all(len(previews_of(run_dir, r)) == 2 for r in records)


def test_lora_scale_zero_is_the_base_model(text_run: tuple[Path, list[dict[str, Any]]], tmp_path: Path) -> None:
    base_dir, records = text_run
    base = next(r for r in records if r["params"]["cfg_trunc_ratio"] == 1.0)
    lora = make_lora("Lumina2Pipeline", "lumina2", tmp_path / "lora", ["to_q", "to_k", "to_v", "to_out.0"])
    run_dir, lora_records = run_ok(["provider=tiny_lumina2", "sweep.params.width=64", lora,
                                    "+sweep.grid.lora.style=[0.0,10.0]"], tmp_path / "runs", PipelineCache())
    by_scale = {r["params"]["lora.style"]: check_item(run_dir, r).pixels for r in lora_records}
    assert_batch_equivalent(by_scale[0.0], check_item(base_dir, base).pixels)
    assert np.abs(by_scale[10.0].astype(int) - by_scale[0.0].astype(int)).max() > 8


@pytest.mark.parametrize(("overrides", "message"), [
    (["sweep.params.width=40"], "width 40 must be a multiple of 16 for lumina2; nearest: 32 or 48"),
    (["+sweep.params.max_sequence_length=300"], "max_sequence_length 300 exceeds 256"),
    (["+sweep.params.cfg_trunc_ratio=1.5"], "sweep.params.cfg_trunc_ratio"),
])
def test_rules_at_plan_time(overrides: list[str], message: str, tmp_path: Path) -> None:
    assert message in refusal("tiny_lumina2", overrides, tmp_path / "runs")
