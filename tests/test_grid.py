"""Grid expansion: product and zip, ranges, prompt files, builder axes, plan order and batching."""

from __future__ import annotations

from pathlib import Path

import pytest

from conftest import compose_config
from diffsweep.errors import ConfigError
from diffsweep.planning.grid import Axis, Grid, expand_axis, expand_range
from diffsweep.planning.plan import Plan
from diffsweep.planning.prepare import prepare

pytestmark = pytest.mark.quick  # unit tests: part of make test-fast


def plan_for(overrides: list[str], tmp_path: Path) -> Plan:
    return prepare(compose_config(overrides, tmp_path / "runs"), base_dir=tmp_path)


def test_product_index_follows_itertools_product_order() -> None:
    grid = Grid([Axis("prompt", ("a", "b")), Axis("seed", (1, 2, 3))], "product")
    assert len(grid) == 6
    assert [grid.point(i) for i in range(6)] == [{"prompt": p, "seed": s} for p in "ab" for s in (1, 2, 3)]


def test_zip_pairs_axes() -> None:
    grid = Grid([Axis("prompt", ("a", "b")), Axis("seed", (1, 2))], "zip")
    assert [p for _, p in grid.iter_points()] == [{"prompt": "a", "seed": 1}, {"prompt": "b", "seed": 2}]


@pytest.mark.parametrize(("spec", "values"), [
    ({"start": 0, "stop": 4}, [0, 1, 2, 3]),
    ({"start": 10, "stop": 0, "step": -5}, [10, 5]),
    ({"start": 1.0, "stop": 2.0, "step": 0.25}, [1.0, 1.25, 1.5, 1.75]),
    ({"start": 0.1, "stop": 0.4, "step": 0.1}, [0.1, 0.2, 0.3]),
])
def test_ranges(spec: dict, values: list) -> None:
    assert expand_range(spec) == values


def test_prompt_file_lines_skip_blanks_and_comments(tmp_path: Path) -> None:
    (tmp_path / "p.txt").write_text("# heading\nfirst prompt\n\n  second, with comma  \n", encoding="utf-8")
    assert expand_axis("prompt", {"file": "p.txt"}, [tmp_path]).values == ("first prompt", "second, with comma")


def test_prompt_file_is_inlined_into_the_saved_config(tmp_path: Path) -> None:
    (tmp_path / "p.txt").write_text("one\ntwo\nthree\n")
    plan = prepare(compose_config(["sweep=prompts_file", "sweep.grid.prompt.file=p.txt"], tmp_path / "runs"),
                        base_dir=tmp_path)
    assert plan.config.sweep.grid["prompt"] == ["one", "two", "three"]
    assert plan.total == 9  # 3 prompts x range(0, 3) seeds


def test_plan_puts_costly_axes_outermost_and_batches_by_call_shape(tmp_path: Path) -> None:
    plan = plan_for(["sweep.grid.seed=[0,1,2]", "+sweep.grid.num_inference_steps=[2,3]", "sweep.batch_size=4"],
                    tmp_path)
    assert plan.total == 12
    batches = list(plan.batches())
    # two call shapes (steps 2 and 3), six items each, cut at batch_size 4: 4+2 per shape
    assert [len(b.items) for b in batches] == [4, 2, 4, 2]
    for batch in batches:
        assert len({item.params["num_inference_steps"] for item in batch.items}) == 1
    indices = sorted(i.index for b in batches for i in b.items)
    assert indices == list(range(12))


def test_builder_axis_splits_the_sweep_and_each_builder_appears_once(tmp_path: Path) -> None:
    plan = plan_for(["+experiment=sd1_vs_sd2"], tmp_path)
    assert len(plan.builders) == 2
    seen = [b.builder.hash for b in plan.batches()]
    assert seen == sorted(set(seen), key=seen.index)  # each builder's batches are contiguous
    assert {b.config["model"] for b in plan.builders.values()} == {"tiny:sd", "tiny:sd_v2"}


def test_generation_only_keys_never_change_the_builder_hash(tmp_path: Path) -> None:
    one = plan_for(["sweep.params.guidance_scale=2"], tmp_path)
    two = plan_for(["sweep.params.guidance_scale=9", "sweep.params.num_inference_steps=7"], tmp_path)
    assert one.builders.keys() == two.builders.keys()


def test_unknown_builder_axis_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"sweep.grid.builder.modle: unknown builder key \(did you mean 'model'\?\)"):
        plan_for(["+sweep.grid.builder.modle=[tiny:sd]"], tmp_path)


def test_random_seed_is_drawn_once_per_value(tmp_path: Path) -> None:
    from diffsweep.planning.prepare import draw_random_seeds

    doc = draw_random_seeds(compose_config(["sweep.grid.seed=[random,random,5]"]))
    first, second, fixed = doc["sweep"]["grid"]["seed"]
    assert isinstance(first, int) and isinstance(second, int) and fixed == 5
