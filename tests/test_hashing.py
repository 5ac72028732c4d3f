"""Builder hashes and item ids: pinned golden values, stable under spelling, sensitive to identity."""

from __future__ import annotations

import hashlib
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from conftest import compose_config
from diffsweep import hashing
from diffsweep.planning.grid import Grid
from diffsweep.planning.plan import builder_identity
from diffsweep.planning.prepare import prepare

pytestmark = pytest.mark.quick  # unit tests: part of make test-fast

IDENTITY = {"provider": "stable_diffusion", "pipeline": "StableDiffusionPipeline", "model": "tiny:sd",
            "revision": "factory-v1", "dtype": "float32"}
PARAMS = {"prompt": "a fox", "seed": 0, "num_inference_steps": 4, "guidance_scale": 7.5, "height": 64, "width": 64}


def test_golden_values_are_pinned() -> None:
    # Changing these means every saved run's ids change: bump hashing.HASH_SCHEMA instead.
    assert hashing.canonical_json({"b": 1.0, "a": [1, "é"], "c": 1e-07}) == '{"a":[1,"é"],"b":1.0,"c":1e-07}'
    document = ('{"builder":{"dtype":"float32","model":"tiny:sd","pipeline":"StableDiffusionPipeline",'
                '"provider":"stable_diffusion","revision":"factory-v1"},"hash_schema":1,"kind":"builder"}')
    builder = hashing.builder_hash(IDENTITY)
    assert builder == hashlib.sha256(document.encode()).hexdigest()
    assert builder == "0f8ff30e5a97c1fe885dbaf9aa21d9ebbdca7e66e68e3292227338a2b6ef8532"
    assert hashing.item_id(builder, PARAMS) == "3dce9474b946d8af65cecd61c7d88443e0f299609da5e860f0cd0880502c3065"


def test_nan_is_refused() -> None:
    with pytest.raises(ValueError):
        hashing.canonical_json({"x": float("nan")})


@given(st.permutations(list(PARAMS)))
def test_key_order_does_not_change_item_id(order: list[str]) -> None:
    shuffled = {k: PARAMS[k] for k in order}
    assert hashing.item_id("b" * 64, shuffled) == hashing.item_id("b" * 64, PARAMS)


@given(key=st.sampled_from(sorted(PARAMS)), value=st.one_of(st.integers(1, 99), st.text(min_size=1, max_size=5)))
def test_every_param_is_identity(key: str, value: object) -> None:
    changed = {**PARAMS, key: value}
    if changed != PARAMS:
        assert hashing.item_id("b" * 64, changed) != hashing.item_id("b" * 64, PARAMS)


@pytest.mark.parametrize("key", ["provider", "pipeline", "model", "revision", "dtype"])
def test_every_builder_identity_key_changes_the_hash(key: str) -> None:
    assert hashing.builder_hash({**IDENTITY, key: IDENTITY[key] + "x"}) != hashing.builder_hash(IDENTITY)


def test_lossless_builder_settings_stay_out_of_identity() -> None:
    config = {**IDENTITY, "dtype": "auto", "trust_remote_code": True, "revision": None}
    assert builder_identity(config, "float32") == builder_identity({**config, "trust_remote_code": False}, "float32")
    assert builder_identity(config, "float32") != builder_identity(config, "bfloat16")  # dtype is lossy


def _item_ids(overrides: list[str], tmp_path: Path) -> list[str]:
    plan = prepare(compose_config(overrides, tmp_path / "runs"), base_dir=tmp_path)
    return sorted(item.item_id for item in plan.items())


def test_number_spelling_interpolation_and_output_settings_do_not_change_ids(tmp_path: Path) -> None:
    base = _item_ids(["sweep.params.guidance_scale=7", "sweep.params.num_inference_steps=3"], tmp_path)
    assert _item_ids(["sweep.params.guidance_scale=7.0", "sweep.params.num_inference_steps=3.0"], tmp_path) == base
    assert _item_ids(["sweep.params.guidance_scale=7", "generation.num_inference_steps=3",
                      "sweep.params.num_inference_steps=${generation.num_inference_steps}"], tmp_path) == base
    assert _item_ids(["sweep.params.guidance_scale=7", "sweep.params.num_inference_steps=3", "device=cpu",
                      "output.root=/elsewhere", "sweep.name=other", "sweep.batch_size=1"], tmp_path) == base
    assert _item_ids(["sweep.params.guidance_scale=7.5", "sweep.params.num_inference_steps=3"], tmp_path) != base
    assert _item_ids(["sweep.params.guidance_scale=7", "sweep.params.num_inference_steps=4"], tmp_path) != base
    assert _item_ids(["sweep.params.guidance_scale=7", "sweep.params.num_inference_steps=3",
                      "builder.dtype=bfloat16"], tmp_path) != base


def test_hash_is_the_same_in_another_process_with_another_hash_seed() -> None:
    code = textwrap.dedent(f"""
        from diffsweep import hashing
        print(hashing.item_id(hashing.builder_hash({IDENTITY!r}), {PARAMS!r}))
    """)
    outputs = {subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                              env={"PYTHONHASHSEED": seed, "PATH": ""}).stdout.strip() for seed in ("0", "123")}
    assert outputs == {hashing.item_id(hashing.builder_hash(IDENTITY), PARAMS)}


@settings(max_examples=25, deadline=None)
@given(st.lists(st.integers(0, 5), min_size=1, max_size=4), st.lists(st.text(max_size=3), min_size=1, max_size=3))
def test_grid_index_is_stable_under_reordered_iteration(seeds: list[int], prompts: list[str]) -> None:
    from diffsweep.planning.grid import Axis

    grid = Grid([Axis("prompt", tuple(prompts)), Axis("seed", tuple(seeds))], "product")
    natural = dict(grid.iter_points())
    reordered = dict(grid.iter_points(["seed"]))
    assert natural == reordered and sorted(natural) == list(range(len(grid)))
    assert all(grid.point(i) == p for i, p in natural.items())
