"""Builders are named by what differs between them: in run.json, `diffsweep-runs show` and the dry run."""

from __future__ import annotations

import io
import json
from pathlib import Path

import jsonschema
import pytest

from conftest import compose_config, read_run_json, run_cli
from diffsweep.labels import axis_title, axis_value_labels, builder_labels, differing_spans, fit_all, shorten_all
from diffsweep.paths import schemas_dir
from diffsweep.run.local import run_sweep

SCHEDULERS = ("+sweep.grid.builder.scheduler=[null,{name:EulerDiscreteScheduler},"
              "{name:DPMSolverMultistepScheduler,config:{use_karras_sigmas:true}}]")
SCHEDULER_LABELS = ["model's scheduler", "EulerDiscrete", "DPMSolverMultistep karras"]
CHEAP = ["sweep.params.num_inference_steps=1", "sweep.grid.seed=[0]", "sweep.grid.prompt=[a fox]"]


def test_labels_name_only_the_fields_that_differ() -> None:
    karras = {"name": "DPMSolverMultistepScheduler", "config": {"use_karras_sigmas": True}}
    base = {"provider": "stable_diffusion", "model": "tiny:sd", "dtype": "float32"}
    made = builder_labels([{**base, "scheduler": karras}, base, {**base, "dtype": "bfloat16"}])
    assert [b.label for b in made] == ["DPMSolverMultistep karras · fp32", "model's scheduler · fp32",
                                       "model's scheduler · bf16"]
    assert made[0].identity == {"scheduler": karras, "dtype": "float32"}
    models = builder_labels([{"model": "stabilityai/stable-diffusion-2-1"}, {"model": "org/stable-diffusion-v1-5"}])
    assert [b.label for b in models] == ["sd-2-1", "sd-v1-5"]
    lone = builder_labels([{"model": "stabilityai/stable-diffusion-2-1", "dtype": "float16"}])
    assert lone[0].label == "sd-2-1" and lone[0].identity == {}


def test_labels_stay_distinct_when_short_forms_collide() -> None:
    same_name = builder_labels([{"model": "a/sd"}, {"model": "b/sd"}])
    assert [b.label for b in same_name] == ["a/sd", "b/sd"]
    loras = builder_labels([{"loras": [{"name": "style", "fuse": True, "scale": 0.5}]}, {}])
    assert [b.label for b in loras] == ["style fused@0.5", "no LoRA"]
    revisions = builder_labels([{"model": "m", "revision": "abc"}, {"model": "m", "revision": "def"}])
    assert [b.label for b in revisions] == ["revision=abc", "revision=def"]


def test_axis_labels_read_like_builder_labels() -> None:
    assert axis_title("builder.scheduler") == "scheduler" and axis_title("lora.style") == "LoRA style"
    assert axis_value_labels("builder.scheduler", [None, {"name": "EulerDiscreteScheduler"}]) == [
        "model's scheduler", "EulerDiscrete"]
    assert axis_value_labels("guidance_scale", [1, 1.0]) == ["1", "1.0"]


def test_shortening_keeps_what_differs_never_a_shared_prefix() -> None:
    texts = ["guidance_scale=1.0", "guidance_scale=10.0", "guidance_scale=7.5"]
    short = fit_all(texts, lambda text: len(text) <= 9)
    assert len(set(short)) == 3 and all(len(s) <= 9 for s in short)
    assert [s.endswith(v) for s, v in zip(short, ("1.0", "10.0", "7.5"), strict=True)] == [True] * 3
    prompts = ["a cat, oil painting, highly detailed", "a dog, oil painting, highly detailed"]
    assert differing_spans(prompts) == [(0, 5), (0, 5)]  # "a " is not worth an ellipsis
    assert [s[:5] for s in fit_all(prompts, lambda text: len(text) <= 12)] == ["a cat", "a dog"]


ANIMALS = ("red fox", "grey wolf", "arctic hare")
# three prompts that share a long start and end, beside a fourth that shares nothing with them
SIMILAR = [f"a highly detailed photograph of a {animal} in fresh snow at first light, award winning" for animal in ANIMALS]
PROMPTS = [*SIMILAR, "studio portrait of an old fisherman"]


def test_shortening_keeps_what_differs_from_the_most_similar_texts() -> None:
    for limit in (20, 30, 40):
        short = shorten_all(PROMPTS, limit)
        assert len(set(short)) == 4 and all(len(text) <= limit for text in short), short
        assert all(animal in text for animal, text in zip(ANIMALS, short, strict=False)), short
    assert differing_spans(["number 1", "number 10", "number 2"]) == [(7, 8), (7, 9), (7, 8)]  # whole numbers


@pytest.fixture(scope="module")
def animals(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The four prompts x two seeds, scored by a stand-in metric whose values pass 10,000."""
    root = tmp_path_factory.mktemp("animals") / "runs"
    prompts = ",".join(f"'{p}'" for p in PROMPTS)
    run_dir = run_sweep(compose_config(["sweep.params.num_inference_steps=1", "sweep.params.height=32",
                                        "sweep.params.width=32", f"sweep.grid.prompt=[{prompts}]",
                                        "sweep.grid.seed=[1,2]"], root), out=io.StringIO()).run_dir
    records = [json.loads(line) for line in (run_dir / "manifest.jsonl").read_text().splitlines()]
    (run_dir / "scores.jsonl").write_text("".join(json.dumps(
        {"item_id": r["item_id"], "metric": "sharpness", "value": 12345.6 + r["index"], "model": None,
         "revision": None, "time": "t", "skipped": None}) + "\n" for r in records))
    return run_dir


def test_sheet_titles_keep_the_axis_name_and_what_differs(animals: Path) -> None:
    from diffsweep.reports.sheets import write_sheets

    layout = write_sheets(animals, x="seed", z="prompt").drawn[0].layout
    titles = [" ".join(lines) for _, lines in layout.z_titles]
    assert len(set(titles)) == 4 and all(title.startswith("prompt: ") for title in titles), titles
    assert all(animal in title for animal, title in zip(ANIMALS, titles, strict=False)), titles


def test_score_tables_and_plots_keep_what_differs(animals: Path) -> None:
    from diffsweep.reports import score_stats

    table = score_stats.summary_table(score_stats.summarise(animals))
    rows = [line for line in table[1:] if line.split()[1] == "prompt"]
    assert len(rows) == 4 and all(animal in row for animal, row in zip(ANIMALS, rows, strict=False)), rows
    assert "e+" not in "\n".join(table) and "12346" in table[1]  # whole digits past 10,000, not 1.235e+04
    figure = score_stats.figures(animals)["sharpness_by_prompt.png"]
    ticks = [label.get_text() for label in figure.axes[0].get_xticklabels()]
    assert len(set(ticks)) == 4 and all(animal in tick for animal, tick in zip(ANIMALS, ticks, strict=False)), ticks


def test_dry_run_names_each_scheduler() -> None:
    out = io.StringIO()
    run_sweep(compose_config([SCHEDULERS, *CHEAP, "dry_run=true"]), out=out)
    lines = out.getvalue().splitlines()
    builders = [line for line in lines if line.startswith("  builder ")]
    for builder, label in zip(builders, SCHEDULER_LABELS, strict=True):
        assert f"  {label}  (stable_diffusion/StableDiffusionPipeline  tiny:sd" in builder
    items = [line for line in lines if line.startswith("    #")]
    assert [line.split("[")[1].split("]")[0] for line in items] == SCHEDULER_LABELS


@pytest.fixture(scope="module")
def compared(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Two real runs: three schedulers on one model, and the sd1_vs_sd2 experiment."""
    root = tmp_path_factory.mktemp("labels") / "runs"
    return {name: run_sweep(compose_config([*overrides, *CHEAP], root), out=io.StringIO()).run_dir
            for name, overrides in (("schedulers", [SCHEDULERS]), ("models", ["+experiment=sd1_vs_sd2"]))}


def test_run_json_names_builders_and_keeps_their_identity(compared: dict[str, Path]) -> None:
    schema = json.loads((schemas_dir() / "run.schema.json").read_text())
    schedulers = read_run_json(compared["schedulers"])
    jsonschema.validate(schedulers, schema)
    assert [b["label"] for b in schedulers["builders"]] == SCHEDULER_LABELS
    assert [b["identity"] for b in schedulers["builders"]] == [
        {"scheduler": None}, {"scheduler": {"name": "EulerDiscreteScheduler"}},
        {"scheduler": {"name": "DPMSolverMultistepScheduler", "config": {"use_karras_sigmas": True}}}]
    assert all(b["full_identity"]["model"] == "tiny:sd" for b in schedulers["builders"])
    models = read_run_json(compared["models"])
    jsonschema.validate(models, schema)
    assert [(b["label"], b["identity"]) for b in models["builders"]] == [
        ("tiny:sd", {"model": "tiny:sd"}), ("tiny:sd_v2", {"model": "tiny:sd_v2"})]


def test_show_prints_labels_and_the_full_identity_on_request(compared: dict[str, Path], tmp_path: Path) -> None:
    shown = run_cli(["show", str(compared["models"])], cwd=tmp_path, module="diffsweep.cli.runs")
    assert shown.returncode == 0, shown.stderr
    builders = [line for line in shown.stdout.splitlines() if line.startswith("builder ")]
    assert [line.split("  ")[2] for line in builders] == ["tiny:sd", "tiny:sd_v2"]
    assert "identity" not in shown.stdout
    full = run_cli(["show", "--full", str(compared["schedulers"])], cwd=tmp_path, module="diffsweep.cli.runs")
    assert full.returncode == 0, full.stderr
    lines = full.stdout.splitlines()
    builders = [line for line in lines if line.startswith("builder ")]
    assert [line.split("  ")[2] for line in builders] == SCHEDULER_LABELS
    identities = [json.loads(line.split("identity ", 1)[1]) for line in lines if line.strip().startswith("identity ")]
    assert [i.get("scheduler") for i in identities] == [
        None, {"name": "EulerDiscreteScheduler"},
        {"name": "DPMSolverMultistepScheduler", "config": {"use_karras_sigmas": True}}]
    assert all(i["dtype"] == "float32" and i["provider"] == "stable_diffusion" for i in identities)


def test_sheets_name_builder_axes_as_builders_are_named(compared: dict[str, Path]) -> None:
    from diffsweep.reports.sheets import write_sheets

    schedulers = write_sheets(compared["schedulers"], x="builder.scheduler").drawn[0].layout
    assert [lines for _, lines in schedulers.x_titles] == [["scheduler"]]
    assert [" ".join(lines) for _, lines in schedulers.col_labels] == SCHEDULER_LABELS
    models = write_sheets(compared["models"], y="builder.model").drawn[0].layout
    assert [lines for _, lines in models.y_titles] == [["model"]]
    assert [" ".join(lines) for _, lines in models.row_labels] == ["tiny:sd", "tiny:sd_v2"]
