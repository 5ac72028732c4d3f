"""Chains of stages: a later stage takes each item of an earlier one (its image, or its latents) through the real
load and call path, and its outputs equal a hand-written diffusers chain with the same seeds."""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import compose_config, read_manifest, read_run_json, run_cli
from diffsweep.errors import EXIT_CONFIG, ConfigError
from diffsweep.execution.cache import PipelineCache
from diffsweep.planning.prepare import prepare, print_plan
from diffsweep.planning.stages import StagedPlan
from diffsweep.providers import get
from diffsweep.run.local import resume_run, run_sweep
from diffsweep.run.sources import source_reader
from diffsweep.run.verify import verify_run

PROMPT = "a lion on a rock at night"
IMG2IMG = ["+stages.chain.img2img.source=base", "+stages.chain.img2img.builder.pipeline=StableDiffusionImg2ImgPipeline",
           "+stages.chain.img2img.params.num_inference_steps=4"]


def _run(overrides: list[str], root: Path) -> tuple[Path, list[dict[str, Any]]]:
    # a cache of its own: each run loads what it uses (the process cache may hold another test's pipelines)
    result = run_sweep(compose_config(overrides, root), out=io.StringIO(), cache=PipelineCache())
    assert result.status == "complete", result
    assert result.run_dir is not None
    return result.run_dir, sorted(read_manifest(result.run_dir), key=lambda r: r["index"])


def _pixels(path: Path) -> np.ndarray:
    with Image.open(path) as image:
        return np.asarray(image.convert("RGB"))


def _tiny(name: str) -> str:
    return str(get("stable_diffusion").locate({"model": f"tiny:{name}"}))


def test_sdxl_base_to_refiner_through_latents_equals_the_diffusers_recipe(tmp_path: Path) -> None:
    from diffusers import StableDiffusionXLImg2ImgPipeline, StableDiffusionXLPipeline

    run_dir, records = _run(["+experiment=tiny_sdxl_refiner", f"sweep.grid.prompt=[{PROMPT}]", "sweep.grid.seed=[3]",
                             "sweep.grid.denoising_end=[0.75]"], tmp_path / "runs")
    base, refined = records
    assert (base["stage"], refined["stage"], refined["parent"]) == ("base", "refine", base["item_id"])
    assert "parent" not in base and base["params"]["output_type"] == "latent"
    assert refined["params"]["denoising_start"] == 0.75 and refined["params"]["image"] == base["outputs"][1]
    # the latents are kept, undecoded, beside a preview a person can look at
    assert [Path(p).suffix for p in base["outputs"]] == [".png", ".safetensors"]

    folder = _tiny("sdxl")
    base_pipe = StableDiffusionXLPipeline.from_pretrained(folder)
    refiner = StableDiffusionXLImg2ImgPipeline.from_pretrained(folder)
    for pipe in (base_pipe, refiner):
        pipe.set_progress_bar_config(disable=True)
    common = {"prompt": PROMPT, "num_inference_steps": 4, "guidance_scale": 5.0}
    latents = base_pipe(**common, height=64, width=64, denoising_end=0.75, output_type="latent",
                        generator=torch.Generator("cpu").manual_seed(3)).images
    from safetensors.torch import load_file

    assert torch.equal(load_file(str(run_dir / base["outputs"][1]))["latents"], latents[0])
    image = refiner(**common, image=latents, denoising_start=0.75, generator=torch.Generator("cpu").manual_seed(3)).images[0]
    assert np.array_equal(_pixels(run_dir / refined["outputs"][0]), np.asarray(image))

    found = verify_run(run_dir)  # the chain regenerated from its records: the latents, then the refined image
    assert found.passed and found.verdicts["identical"] == 2

    info = read_run_json(run_dir)
    assert [(s["name"], s["loads"], s["counts"]["done"]) for s in info["stages"]] == [("base", 1, 1), ("refine", 1, 1)]
    assert info["stages"][1]["take"] == "latents" and info["stages"][0]["output"] == "latents"
    assert info["stage_order"]["order"] in ("breadth", "depth")


def test_text_to_image_then_img2img_equals_its_hand_written_twin(tmp_path: Path) -> None:
    from diffusers import StableDiffusionImg2ImgPipeline, StableDiffusionPipeline

    run_dir, records = _run([f"sweep.grid.prompt=[{PROMPT}]", "sweep.grid.seed=[5]",
                             "sweep.params.num_inference_steps=2", *IMG2IMG,
                             "+stages.chain.img2img.grid.strength=[0.5,0.75]"], tmp_path / "runs")
    first, *children = records
    assert [c["params"]["strength"] for c in children] == [0.5, 0.75]
    assert {c["parent"] for c in children} == {first["item_id"]} and {c["seed"] for c in children} == {5}

    folder = _tiny("sd")
    text = StableDiffusionPipeline.from_pretrained(folder, safety_checker=None, requires_safety_checker=False)
    again = StableDiffusionImg2ImgPipeline.from_pretrained(folder, safety_checker=None, requires_safety_checker=False)
    for pipe in (text, again):
        pipe.set_progress_bar_config(disable=True)
    still = text(PROMPT, height=64, width=64, num_inference_steps=2, guidance_scale=7.5,
                 generator=torch.Generator("cpu").manual_seed(5)).images[0]
    assert np.array_equal(_pixels(run_dir / first["outputs"][0]), np.asarray(still))
    for child in children:
        made = again(PROMPT, image=still, strength=child["params"]["strength"], num_inference_steps=4, guidance_scale=7.5,
                     generator=torch.Generator("cpu").manual_seed(5)).images[0]
        assert np.array_equal(_pixels(run_dir / child["outputs"][0]), np.asarray(made))


def test_the_tiny_edit_chain_equals_a_hand_written_kontext_edit_of_each_picture(tmp_path: Path) -> None:
    from diffusers import FluxKontextPipeline, FluxPipeline

    run_dir, records = _run(["+experiment=tiny_edit_chain", "sweep.grid.seed=[4]"], tmp_path / "runs")
    first, *edits = records
    assert [(r["stage"], r["parent"], r["seed"]) for r in edits] == [("edit", first["item_id"], 4)] * 2
    assert [r["params"]["prompt"] for r in edits] == ["make the door yellow", "turn it into a pencil sketch"]

    folder = str(get("flux").locate({"model": "tiny:flux"}))
    common = {"height": 32, "width": 32, "num_inference_steps": 2, "guidance_scale": 3.5, "max_sequence_length": 32}
    text = FluxPipeline.from_pretrained(folder)
    editor = FluxKontextPipeline.from_pretrained(folder)
    for pipe in (text, editor):
        pipe.set_progress_bar_config(disable=True)
    still = text(first["params"]["prompt"], **common, generator=torch.Generator("cpu").manual_seed(4)).images[0]
    assert np.array_equal(_pixels(run_dir / first["outputs"][0]), np.asarray(still))
    for edit in edits:  # the input kept at its own 32x32 (auto_resize: false), the output exactly height x width
        made = editor(prompt=edit["params"]["prompt"], image=still, **common, max_area=32 * 32, _auto_resize=False,
                      generator=torch.Generator("cpu").manual_seed(4)).images[0]
        assert np.array_equal(_pixels(run_dir / edit["outputs"][0]), np.asarray(made))


def test_a_child_id_follows_its_parent_its_builder_and_its_own_params(tmp_path: Path) -> None:
    def ids(*extra: str) -> dict[str, list[str]]:
        plan = prepare(compose_config(["sweep.grid.seed=[0,1]", *IMG2IMG, *extra], tmp_path / "runs"))
        assert isinstance(plan, StagedPlan)
        found: dict[str, list[str]] = {}
        for item in plan.items():
            found.setdefault(item.stage or "", []).append(item.item_id)
        return found

    plain = ids("+stages.chain.img2img.params.strength=0.5")
    later = ids("+stages.chain.img2img.params.strength=0.6")  # a later stage's params: only that stage changes
    assert later["base"] == plain["base"] and not set(later["img2img"]) & set(plain["img2img"])
    earlier = ids("+stages.chain.img2img.params.strength=0.5", "sweep.params.guidance_scale=6.0")  # upstream
    assert not set(earlier["base"]) & set(plain["base"]) and not set(earlier["img2img"]) & set(plain["img2img"])
    # a sweep without stages plans as it always did: its ids are a chain's first stage's
    no_stages = prepare(compose_config(["sweep.grid.seed=[0,1]"], tmp_path / "runs"))
    assert [item.item_id for item in no_stages.items()] == plain["base"]


@pytest.mark.parametrize(("overrides", "message"), [
    (["+stages.chain.b.source=nowhere"], "stages.chain.b.source: no stage named 'nowhere'; the stages are base, b"),
    (["+stages.chain.b.source=c", "+stages.chain.c.source=b"],
     "stages.chain.b.source: a cycle: b -> c -> b; a stage takes items of an earlier stage only"),
    (["+stages.chain.b.source=c", "+stages.chain.c.source=base"],
     "stages.chain.b.source: stage 'c' comes after 'b'; a stage takes items of an earlier stage only"),
    (["provider=tiny_audioldm", "+stages.chain.b.source=base", "+stages.chain.b.builder.provider=stable_diffusion",
      "+stages.chain.b.builder.pipeline=StableDiffusionImg2ImgPipeline", "+stages.chain.b.builder.model=tiny:sd"],
     "stages.chain.b.take: stage 'b' takes image from 'base', whose items (AudioLDMPipeline) make audio"),
    (["provider=tiny_sd", "+stages.chain.b.source=base", "+stages.chain.b.take=latents",
      "+stages.chain.b.builder.pipeline=StableDiffusionXLImg2ImgPipeline", "+stages.chain.b.builder.model=tiny:sdxl"],
     "stages.chain.b.take: stage 'b' cannot take latents from 'base': StableDiffusionPipeline makes 'sd' latents and "
     "StableDiffusionXLImg2ImgPipeline takes 'sdxl' latents"),
    (["+stages.chain.b.source=base", "+stages.chain.b.take=latents"],
     "stages.chain.b.take: StableDiffusionPipeline cannot take latents; take: image gives it the decoded image"),
    (["+stages.chain.b.source={run: /nowhere/v0001}", "+stages.chain.b.builder.pipeline=StableDiffusionImg2ImgPipeline"],
     "stages.chain.b.source.run: /nowhere/v0001 is not a run folder diffsweep can read"),
    (["+stages.chain.b.source=base"], "stages.chain.b.into: StableDiffusionPipeline takes no 'image'"),
    ([*IMG2IMG, "+stages.chain.img2img.grid.strenght=[0.5]"],
     "stages.chain.img2img.grid.strenght: unknown generation parameter (did you mean 'strength'?)"),
    ([*IMG2IMG, "+stages.chain.img2img.params.strength=0.1"], "stages.chain.img2img.params.strength: strength 0.1 x "
                                                              "num_inference_steps 4 leaves no denoising step"),
    (["+stages.make=[refine]"], "stages.make[0]: no stage named 'refine'; the stages are base"),  # no later stage
    ([*IMG2IMG, "+stages.make=[base,img2imgg]"], "stages.make[1]: no stage named 'img2imgg' (did you mean 'img2img'?); "
                                                "the stages are base, img2img"),
    ([*IMG2IMG, "+stages.chain.again.source=base",  # the same parent, builder and params as img2img
      "+stages.chain.again.builder.pipeline=StableDiffusionImg2ImgPipeline", "+stages.chain.again.params.num_inference_steps=4"],
     "stages.chain.again: item "),
])
def test_a_bad_chain_is_refused_before_anything_is_written(overrides: list[str], message: str, tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        prepare(compose_config(overrides, tmp_path / "runs"), read_source=source_reader())
    assert message in str(caught.value)
    assert caught.value.exit_code == EXIT_CONFIG
    assert not (tmp_path / "runs").exists()


def test_the_command_line_refuses_a_bad_chain_with_exit_2_and_writes_nothing(tmp_path: Path) -> None:
    result = run_cli(["+stages.chain.b.source=later", "output.root=runs"], tmp_path)
    assert result.returncode == EXIT_CONFIG
    assert "stages.chain.b.source: no stage named 'later'" in result.stderr
    assert not (tmp_path / "runs").exists()


def test_dry_run_and_describe_say_what_each_stage_takes_and_gives(tmp_path: Path) -> None:
    dry = run_cli(["+experiment=tiny_hires_fix", "dry_run=true", "output.root=runs"], tmp_path)
    assert dry.returncode == 0, dry.stderr
    assert "stage base: the sweep; 1 items, 1 load(s)" in dry.stdout
    assert "stage upscale: takes image of 'base' into image; 4 items, 1 load(s)" in dry.stdout
    assert "stage upscale <- " in dry.stdout and not (tmp_path / "runs").exists()
    described = run_cli(["+experiment=tiny_sdxl_refiner", "describe=true"], tmp_path)
    assert described.returncode == 0, described.stderr
    assert ("  base: stable_diffusion/StableDiffusionXLPipeline (tiny:sdxl); takes the sweep (builder + sweep.grid); "
            "gives latents (safetensors + preview)") in described.stdout
    assert ("  refine: stable_diffusion/StableDiffusionXLImg2ImgPipeline (tiny:sdxl); takes latents of base into image; "
            "gives image") in described.stdout


def test_the_tiny_twins_run_offline_and_record_their_stages(tmp_path: Path) -> None:
    for experiment, later, kind in (("tiny_hires_fix", "upscale", ".png"), ("tiny_image_to_video", "animate", ".mp4"),
                                    ("tiny_edit_chain", "edit", ".png")):
        result = run_cli([f"+experiment={experiment}", "output.root=runs"], tmp_path)
        assert result.returncode == 0, result.stderr
        run_dir = Path(result.stdout.strip().splitlines()[-1])
        records = read_manifest(run_dir)
        children = [r for r in records if r["stage"] == later]
        assert children and all(Path(r["outputs"][0]).suffix == kind for r in children)
        info = read_run_json(run_dir)
        assert all(stage["loads"] == 1 for stage in info["stages"])  # each stage's builder loaded once
        if experiment == "tiny_hires_fix":  # the upscale factor is the made size
            assert sorted({(r["params"]["upscale"], r["made"]["width"]) for r in children}) == [(1.5, 96), (2.0, 128)]
            verified = run_cli(["verify", str(run_dir)], tmp_path, module="diffsweep.cli.runs")
            assert verified.returncode == 0 and "verified 5 item(s): 5 identical" in verified.stdout, verified
        elif experiment == "tiny_image_to_video":  # LTX-2 animates the still with sound
            assert children[0]["made"]["sample_rate"] > 0
        else:  # Kontext makes one edit per edit prompt of each picture
            assert len(children) == 2 and len({r["params"]["prompt"] for r in children}) == 2


def _wait_for(predicate: Any, process: subprocess.Popen[str], timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert process.poll() is None, process.communicate()
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


def test_kill_9_during_a_later_stage_then_resume_makes_only_the_missing_children(tmp_path: Path) -> None:
    overrides = ["sweep.grid.seed=[0]", "sweep.params.num_inference_steps=2", *IMG2IMG, "+stages.order=breadth",
                 "+stages.chain.img2img.grid.strength=[0.3,0.4,0.5,0.6,0.7,0.8,0.9,1.0]",
                 "stages.chain.img2img.params.num_inference_steps=20", "sweep.batch_size=1",
                 "+stages.chain.img2img.batch_size=1", "output.root=runs"]
    process = subprocess.Popen([sys.executable, "-m", "diffsweep", *overrides], cwd=tmp_path, text=True,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=os.environ.copy())
    manifest = tmp_path / "runs" / "default" / "v0001" / "manifest.jsonl"

    def children_made() -> int:
        lines = manifest.read_text().splitlines() if manifest.is_file() else []
        return sum(json.loads(line).get("stage") == "img2img" for line in lines if line.endswith("}"))

    try:
        _wait_for(lambda: children_made() >= 2, process)
        process.send_signal(signal.SIGKILL)
    finally:
        process.wait()
    run_dir = manifest.parent
    before = {r["item_id"]: r for r in read_manifest(run_dir) if r["status"] == "ok"}
    parents = {path: (path.read_bytes(), path.stat().st_mtime_ns) for path in (run_dir / "items").glob("000[01]-*")}
    assert 2 <= sum(r["stage"] == "img2img" for r in before.values()) < 16

    result = resume_run(run_dir, out=io.StringIO())
    assert result.status == "complete"
    after = read_manifest(run_dir)
    planned = read_run_json(run_dir)["counts"]["planned"]
    assert len(after) == planned == 2 + 2 * 8 and {r["item_id"] for r in after} >= set(before)
    assert {path: (path.read_bytes(), path.stat().st_mtime_ns) for path in parents} == parents  # parents untouched
    resumed = read_run_json(run_dir)["attempts"][-1]
    assert resumed["counts"]["generated"] == planned - len(before)
    assert resumed["stages"]["base"]["loads"] == 0 and resumed["stages"]["base"]["generated"] == 0
    assert resumed["stages"]["img2img"]["generated"] == planned - len(before)


def test_a_stage_fed_from_the_top_k_of_another_run_by_score_records_its_source(tmp_path: Path) -> None:
    source_dir, _ = _run(["sweep.grid.prompt=[a boat]", "sweep.grid.seed=[0,1,2]", "sweep.params.num_inference_steps=2"],
                         tmp_path / "runs")
    scored = run_cli(["score", str(source_dir), "--metric", "sharpness"], tmp_path, module="diffsweep.cli.runs")
    assert scored.returncode == 0, scored.stderr
    scores = {json.loads(line)["item_id"]: json.loads(line)["value"]
              for line in (source_dir / "scores.jsonl").read_text().splitlines()}
    best = sorted(scores, key=lambda item_id: -scores[item_id])[:2]
    source = f"{{run: {source_dir}, top: {{metric: sharpness, k: 2}}}}"
    run_dir, records = _run(["sweep.name=fed", "sweep.grid.prompt=[a boat]", "sweep.grid.seed=[9]",
                             "sweep.params.num_inference_steps=2", f"+stages.chain.again.source={source}",
                             "+stages.chain.again.builder.pipeline=StableDiffusionImg2ImgPipeline",
                             "+stages.chain.again.params.num_inference_steps=4", "+stages.chain.again.params.strength=0.5"],
                            tmp_path / "runs")
    children = [r for r in records if r["stage"] == "again"]
    assert sorted(r["parent"] for r in children) == sorted(best)
    assert all(r["params"]["image"].startswith(str(source_dir / "items")) for r in children)
    recorded = read_run_json(run_dir)["stages"][1]["source_run"]
    assert recorded["run_id"] == "default/v0001" and sorted(recorded["items"]) == sorted(best)
    assert recorded["chosen_by"] == "done items, top 2 by sharpness"
    assert resume_run(run_dir, out=io.StringIO()).status == "complete"  # the source as it was: resumable

    manifest = source_dir / "manifest.jsonl"  # the source changes: a run fed from it is refused, naming it
    manifest.write_text(manifest.read_text() + manifest.read_text().splitlines()[0] + "\n")
    with pytest.raises(ConfigError) as caught:
        resume_run(run_dir, out=io.StringIO())
    assert "stages.chain.again.source: the source run default/v0001" in str(caught.value)
    assert "changed since this run read it (its manifest)" in str(caught.value)
    with pytest.raises(ConfigError, match="has no clip_score scores"):
        prepare(compose_config([f"+stages.chain.b.source={{run: {source_dir}, top: {{metric: clip_score, k: 1}}}}",
                                "+stages.chain.b.builder.pipeline=StableDiffusionImg2ImgPipeline"], tmp_path / "x"),
                read_source=source_reader())


def test_make_runs_only_the_stages_asked_for_and_what_they_need(tmp_path: Path) -> None:
    """`stages.make: [again]` with `again` fed from another run makes only its items: this run's first stage, whose
    grid here equals the source run's (so its item ids are the source's), is neither made nor loaded."""
    grid = ["sweep.grid.prompt=[a boat]", "sweep.grid.seed=[0,1,2]", "sweep.params.num_inference_steps=2"]
    source_dir, source_records = _run(grid, tmp_path / "runs")
    fed = [*grid, "sweep.name=fed", f"+stages.chain.again.source={{run: {source_dir}, where: {{seed: [0, 2]}}}}",
           "+stages.chain.again.builder.pipeline=StableDiffusionImg2ImgPipeline",
           "+stages.chain.again.params.num_inference_steps=4", "+stages.chain.again.params.strength=0.5"]
    run_dir, records = _run([*fed, "+stages.make=[again]"], tmp_path / "runs")
    assert [r["stage"] for r in records] == ["again", "again"]
    assert sorted(r["parent"] for r in records) == sorted(r["item_id"] for r in source_records if r["seed"] != 1)
    assert {p.name for p in (run_dir / "items").iterdir() if p.suffix == ".png"} == {
        Path(r["outputs"][0]).name for r in records}
    info = read_run_json(run_dir)
    assert info["status"] == "complete" and info["counts"]["planned"] == 2 and "selected_items" not in info
    assert info["plan_size"] == 5  # the whole chain's: the children's indices are 3 and 4
    attempt = info["attempts"][-1]
    assert attempt["stages"]["base"]["loads"] == 0 and attempt["stages"]["again"]["generated"] == 2
    assert (run_dir / "index.html").is_file() and (run_dir / "contact_sheet.png").is_file()
    assert resume_run(run_dir, out=io.StringIO()).status == "complete"
    assert read_run_json(run_dir)["attempts"][-1]["counts"]["generated"] == 0

    # the same run without `make` makes the first stage too, and the same children, byte for byte
    whole_dir, whole = _run(fed, tmp_path / "runs")
    assert sorted(r["stage"] for r in whole) == ["again", "again", "base", "base", "base"]
    made = {r["item_id"]: (run_dir / r["outputs"][0]).read_bytes() for r in records}
    assert made == {r["item_id"]: (whole_dir / r["outputs"][0]).read_bytes() for r in whole if r["stage"] == "again"}

    # as a job array, each task makes its share of the children and nothing of the first stage
    with open(tmp_path / "out", "w") as out, open(tmp_path / "err", "w") as err:  # tasks would hold pipes open
        code = subprocess.run([sys.executable, "-m", "diffsweep", *fed, "+stages.make=[again]", "sweep.batch_size=1",
                               f"output.root={tmp_path / 'runs'}", "distribute=local", "distribute.tasks=2"],
                              cwd=tmp_path, stdout=out, stderr=err, timeout=300).returncode
    assert code == 0, (tmp_path / "err").read_text()
    array_dir = Path((tmp_path / "out").read_text().strip().splitlines()[-1])
    arrayed = read_manifest(array_dir)
    assert {r["item_id"]: (array_dir / r["outputs"][0]).read_bytes() for r in arrayed} == made
    info = read_run_json(array_dir)
    assert info["status"] == "complete" and [w["counts"]["generated"] for w in info["workers"]] == [1, 1]
    assert info["attempts"][-1]["stages"]["base"]["loads"] == 0

    # a stage fed from this run needs its parents: `make: [img2img]` plans the whole chain, `make: [base]` its base
    chain = ["sweep.grid.prompt=[a boat]", "sweep.grid.seed=[0,1]", *IMG2IMG]
    for make, stages in (("[img2img]", {"base": 2, "img2img": 2}), ("[base]", {"base": 2, "img2img": 0})):
        plan = prepare(compose_config([*chain, f"+stages.make={make}"], tmp_path / "plan"), read_source=source_reader())
        assert isinstance(plan, StagedPlan)
        assert {name: plan.stage_planned(name) for name in plan.stage_names()} == stages
        assert sum(len(batch.items) for batch in plan.batches()) == sum(stages.values())
        assert sum(len(batch.items) for batch, _ in plan.families()) + sum(
            len(descendants) for _, descendants in plan.families()) == sum(stages.values())
        printed = io.StringIO()
        print_plan(plan, printed)
        assert printed.getvalue().startswith(f"dry run: {sum(stages.values())} items, 2 builder(s), "
                                             f"{1 + stages['img2img']} batches")
        assert ("stage img2img: takes image of 'base' into image; not made" in printed.getvalue()) == (make == "[base]")


def test_sheets_lay_a_chain_out_by_stage_and_a_child_reruns_with_its_parent(tmp_path: Path) -> None:
    from diffsweep.reports.sheets import run_grid, run_layout

    run_dir, records = _run(["+experiment=tiny_hires_fix", "sweep.grid.seed=[0,1]"], tmp_path / "runs")
    layout = run_layout(run_dir)
    grid = run_grid(layout.config, layout.size)
    assert [a.name for a in grid.axes] == ["stage", "seed", "upscale", "strength"]
    assert grid.axis("stage").labels == ("base", "upscale")  # type: ignore[union-attr]
    child = next(r for r in records if r["stage"] == "upscale" and r["seed"] == 1)
    # a child sits where its first-stage parent does on the parent's axes (a base seed against a child's strength)
    assert grid.coords[child["index"]]["seed"] == 1
    sheet = run_cli(["sheet", str(run_dir), "--x", "strength", "--y", "seed", "--z", "stage"], tmp_path,
                    module="diffsweep.cli.runs")
    assert sheet.returncode == 0, sheet.stderr

    again = run_cli(["rerun", str(run_dir), "--item", child["item_id"]], tmp_path, module="diffsweep.cli.runs")
    assert again.returncode == 0, again.stderr
    remade_dir = Path(again.stdout.strip().splitlines()[-1])
    remade = {r["item_id"]: r for r in read_manifest(remade_dir)}
    assert set(remade) == {child["item_id"], child["parent"]}  # the child, and the parent it is made from
    assert (remade_dir / remade[child["item_id"]]["outputs"][0]).read_bytes() == \
        (run_dir / child["outputs"][0]).read_bytes()


def test_with_reuse_a_change_to_a_later_stages_params_makes_only_that_stage(tmp_path: Path) -> None:
    chain = ["sweep.grid.seed=[0,1]", "sweep.params.num_inference_steps=2", *IMG2IMG]
    first_dir, first = _run([*chain, "+stages.chain.img2img.params.strength=0.5"], tmp_path / "runs")
    changed = [*chain, "+stages.chain.img2img.params.strength=0.7"]
    run_dir, records = _run([*changed, "reuse=true"], tmp_path / "runs")

    bases = {r["item_id"]: r for r in first if r["stage"] == "base"}
    reused = [r for r in records if r["stage"] == "base"]
    assert {r["item_id"] for r in reused} == set(bases)
    assert all(r["reused_from"] == "default/v0001" for r in reused)
    for record in reused:  # the same bytes, committed into this run with its own record
        assert (run_dir / record["outputs"][0]).read_bytes() == (first_dir / record["outputs"][0]).read_bytes()
    children = [r for r in records if r["stage"] == "img2img"]
    assert all("reused_from" not in r for r in children) and {r["parent"] for r in children} == set(bases)
    attempt = read_run_json(run_dir)["attempts"][-1]
    assert attempt["counts"]["reused"] == len(bases) == attempt["counts"]["generated"] == len(children)
    assert attempt["stages"]["base"] == {**attempt["stages"]["base"], "loads": 0, "calls": 0, "reused": len(bases)}
    assert attempt["stages"]["img2img"]["generated"] == len(children)

    # what a run without reuse makes: the same children, pixel for pixel; it reuses nothing
    fresh_dir, fresh = _run(changed, tmp_path / "runs")
    assert all("reused_from" not in r for r in fresh)
    made = {r["item_id"]: _pixels(fresh_dir / r["outputs"][0]) for r in fresh}
    assert all(np.array_equal(made[r["item_id"]], _pixels(run_dir / r["outputs"][0])) for r in records)
    assert verify_run(run_dir).passed


def test_reuse_hands_latents_on_and_takes_nothing_that_is_not_as_committed(tmp_path: Path) -> None:
    refiner = ["+experiment=tiny_sdxl_refiner", "sweep.grid.seed=[0,1]", "sweep.grid.denoising_end=[0.75]"]
    first_dir, first = _run(refiner, tmp_path / "runs")
    bases = sorted((r for r in first if r["stage"] == "base"), key=lambda r: r["index"])
    altered = first_dir / bases[0]["outputs"][1]  # latents changed on disk: that item is made again
    altered.write_bytes(altered.read_bytes()[:-1] + b" ")
    preview = first_dir / bases[1]["outputs"][0]  # a preview swapped for a link: made again too
    preview.rename(preview.with_suffix(".moved"))
    preview.symlink_to(preview.with_suffix(".moved"))

    run_dir, records = _run([*refiner, "+stages.chain.refine.params.num_inference_steps=3", "reuse=true"],
                            tmp_path / "runs")
    assert all("reused_from" not in r for r in records)
    assert read_run_json(run_dir)["attempts"][-1]["stages"]["base"]["generated"] == 2

    again_dir, again = _run([*refiner, "+stages.chain.refine.params.num_inference_steps=4", "reuse=true"],
                            tmp_path / "runs")  # the newest version that holds an item is the one it comes from
    taken = [r for r in again if r["stage"] == "base"]
    assert [r["reused_from"] for r in taken] == ["tiny_sdxl_refiner/v0002", "tiny_sdxl_refiner/v0002"]
    from safetensors.torch import load_file

    for record in taken:
        assert torch.equal(load_file(str(again_dir / record["outputs"][1]))["latents"],
                           load_file(str(run_dir / record["outputs"][1]))["latents"])
    assert verify_run(again_dir).passed


def test_reuse_in_a_job_array_takes_each_shards_items_from_the_earlier_run(tmp_path: Path) -> None:
    chain = ["sweep.grid.seed=[0,1]", "sweep.params.num_inference_steps=2", "sweep.batch_size=1", *IMG2IMG,
             "output.root=runs"]
    first_dir, first = _run([*chain[:-1], "+stages.chain.img2img.params.strength=0.5"], tmp_path / "runs")
    with open(tmp_path / "out", "w") as out, open(tmp_path / "err", "w") as err:  # tasks would hold pipes open
        code = subprocess.run([sys.executable, "-m", "diffsweep", *chain, "+stages.chain.img2img.params.strength=0.7",
                               "reuse=true", "distribute=local", "distribute.tasks=2"], cwd=tmp_path, stdout=out,
                              stderr=err, timeout=300).returncode
    assert code == 0, (tmp_path / "err").read_text()
    run_dir = Path((tmp_path / "out").read_text().strip().splitlines()[-1])
    records = read_manifest(run_dir)
    bases = {r["item_id"] for r in first if r["stage"] == "base"}
    assert {r["item_id"] for r in records if r.get("reused_from") == "default/v0001"} == bases
    assert all("reused_from" not in r for r in records if r["stage"] == "img2img")
    info = read_run_json(run_dir)
    assert info["status"] == "complete" and len(info["workers"]) == 2
    counts = info["attempts"][-1]["counts"]
    assert (counts["reused"], counts["generated"], counts["kept"]) == (len(bases), len(records) - len(bases), 0)
    assert sum(w["counts"].get("reused", 0) for w in info["workers"]) == len(bases)
    assert info["attempts"][-1]["stages"]["base"]["loads"] == 0
