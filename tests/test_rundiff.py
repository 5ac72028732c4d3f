"""`diffsweep-runs diff` on real runs: identical reruns, changed parameters, items in one run only,
batch-size changes, a changed output, and score deltas."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import compose_config, read_manifest, run_cli
from diffsweep.metrics import ScoreSettings
from diffsweep.reports import scoring
from diffsweep.reports.diff import diff_runs, print_diff
from diffsweep.run.local import run_sweep
from diffsweep.store.folder import SCORES

BASE = ["sweep.params.num_inference_steps=2", "sweep.grid.prompt=[a fox,a lighthouse]", "sweep.grid.seed=[1,2]"]


def _run(root: Path, *extra: str) -> Path:
    result = run_sweep(compose_config([*BASE, *extra], root), out=io.StringIO())
    assert result.status == "complete"
    return result.run_dir


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("diff") / "runs"
    return {"a": _run(root, "sweep.batch_size=4"), "rerun": _run(root, "sweep.batch_size=4"),
            "batch1": _run(root, "sweep.batch_size=1"),
            "guidance": _run(root, "sweep.batch_size=4", "sweep.params.guidance_scale=3.0"),
            "more": _run(root, "sweep.batch_size=4", "sweep.grid.seed=[1,2,3]")}


def _text(a: Path, b: Path) -> str:
    out = io.StringIO()
    print_diff(diff_runs(a, b), out)
    return out.getvalue()


def test_an_identical_rerun_does_not_differ(runs: dict[str, Path]) -> None:
    diff = diff_runs(runs["a"], runs["rerun"])
    assert not diff.items_differ and not diff.builders and not diff.only_a and not diff.only_b
    assert [c.verdict for c in diff.items] == ["identical"] * 4
    assert diff.config == []
    assert _text(runs["a"], runs["rerun"]).endswith("no item differs\n")


def test_a_guidance_change_is_reported_with_the_items_it_replaced(runs: dict[str, Path]) -> None:
    diff = diff_runs(runs["a"], runs["guidance"])
    assert diff.items_differ and diff.items == []
    assert [(c.key, c.b) for c in diff.config] == [("sweep.params.guidance_scale", 3.0)]
    assert len(diff.only_a) == len(diff.only_b) == 4  # guidance is part of every item id
    text = _text(runs["a"], runs["guidance"])
    assert "sweep.params.guidance_scale: null → 3.0" in text and "only in B #0" in text
    assert text.endswith("runs differ\n")


def test_items_in_one_run_only_are_listed(runs: dict[str, Path]) -> None:
    diff = diff_runs(runs["a"], runs["more"])
    assert diff.items_differ and [c.verdict for c in diff.items] == ["identical"] * 4
    assert [r.seed for r in diff.only_b] == [3, 3] and diff.only_a == []
    assert [(c.key, c.a, c.b) for c in diff.config] == [("sweep.grid.seed", [1, 2], [1, 2, 3])]


def test_a_batch_size_change_is_equal_up_to_rounding(runs: dict[str, Path]) -> None:
    diff = diff_runs(runs["a"], runs["batch1"])
    assert [(c.key, c.a, c.b) for c in diff.config] == [("sweep.batch_size", 4, 1)]
    assert len(diff.items) == 4 and {c.verdict for c in diff.items} <= {"identical", "equivalent"}
    assert all(c.mean_abs_diff < 0.01 for c in diff.items)
    assert not diff.items_differ


def test_a_changed_output_is_different_with_its_mean_pixel_difference(runs: dict[str, Path],
                                                                       tmp_path: Path) -> None:
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(runs["rerun"], copy)
    record = read_manifest(copy)[1]
    path = copy / record["outputs"][0]
    with Image.open(path) as image:
        pixels = np.asarray(image.convert("RGB")).astype(np.int16)
    changed = pixels.copy()
    changed[:8] = 255 - changed[:8]  # invert the top 8 rows
    Image.fromarray(changed.astype(np.uint8)).save(path)
    expected = float(np.abs(changed - pixels).mean())
    result = run_cli(["diff", str(runs["a"]), str(copy)], tmp_path, module="diffsweep.cli.runs")
    assert result.returncode == 1, result.stderr
    assert f"different  #1 {record['item_id'][:12]}  mean |A−B| {expected:.4f} levels" in result.stdout
    assert "items in both: 4 (3 identical, 0 equal up to batch rounding, 1 different)" in result.stdout
    again = run_cli(["diff", str(runs["a"]), str(runs["rerun"])], tmp_path, module="diffsweep.cli.runs")
    assert again.returncode == 0, again.stderr


def test_score_deltas_per_axis_value_when_both_runs_are_scored(runs: dict[str, Path]) -> None:
    for key in ("a", "more"):
        scoring.score_run(runs[key], ScoreSettings(metrics=("colourfulness",)), "cpu")
    diff = diff_runs(runs["a"], runs["more"])
    values = {x["item_id"]: x["value"] for run in ("a", "more") for x in map(json.loads, (
        runs[run] / SCORES).read_text().splitlines())}
    fox_b = [values[r["item_id"]] for r in read_manifest(runs["more"]) if r["params"]["prompt"] == "a fox"]
    fox_a = [values[r["item_id"]] for r in read_manifest(runs["a"]) if r["params"]["prompt"] == "a fox"]
    delta = next(d for d in diff.scores if (d.axis, d.value) == ("prompt", "a fox"))
    assert delta.mean_a == pytest.approx(np.mean(fox_a)) and delta.delta == pytest.approx(np.mean(fox_b) - np.mean(fox_a))
    assert "colourfulness  prompt=a fox" in _text(runs["a"], runs["more"])


def test_a_builder_change_is_reported_by_identity_field(runs: dict[str, Path], tmp_path: Path) -> None:
    other = _run(tmp_path / "runs", "sweep.batch_size=4", "builder.scheduler={name:EulerDiscreteScheduler}")
    diff = diff_runs(runs["a"], other)
    fields = {c.key.split(": ", 1)[1]: (c.a, c.b) for c in diff.builders}
    assert fields["scheduler.name"] == ("<absent>", "EulerDiscreteScheduler")
    assert all(key.startswith("scheduler") for key in fields)  # model, dtype, ... unchanged
    assert diff.items_differ and len(diff.only_b) == 4  # the builder hash is part of every item id
    assert "scheduler.name: <absent> → EulerDiscreteScheduler" in _text(runs["a"], other)


def test_items_that_differ_only_by_builder_are_listed_with_it(runs: dict[str, Path], tmp_path: Path) -> None:
    other = _run(tmp_path / "runs", "sweep.batch_size=4", "builder.scheduler={name:EulerDiscreteScheduler}")
    listed = [line for line in _text(runs["a"], other).splitlines() if line.startswith("  only in ")]
    assert len(listed) == 8
    assert all('builder="model\'s scheduler"  prompt=' in line for line in listed if line.startswith("  only in A"))
    assert all('builder="EulerDiscrete"  prompt=' in line for line in listed if line.startswith("  only in B"))
    # one builder in both runs: nothing to tell apart, so no builder in the listing
    assert "builder=" not in _text(runs["a"], runs["more"])
