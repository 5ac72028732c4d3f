"""LoRA scales as generation parameters, fused adapters, and scheduler axes without reloads."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import compose_config, read_manifest, read_run_json
from diffsweep.errors import ConfigError
from diffsweep.execution.cache import PipelineCache
from diffsweep.run.local import run_sweep

BASE = ["sweep.params.num_inference_steps=2", "sweep.grid.prompt=[a fox]", "sweep.grid.seed=[3]"]


@pytest.fixture(scope="module")
def lora_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two random LoRAs for the tiny SD UNet, made offline with peft (non-zero B so they show)."""
    import diffusers
    from peft import LoraConfig
    from peft.utils import get_peft_model_state_dict

    from diffsweep.providers import tiny_factories

    folder = tmp_path_factory.mktemp("loras")
    for name, seed in (("style", 1), ("detail", 2)):
        pipe = diffusers.StableDiffusionPipeline(**tiny_factories()["sd"]())
        torch.manual_seed(seed)
        pipe.unet.add_adapter(LoraConfig(r=4, lora_alpha=4, init_lora_weights=False,
                                         target_modules=["to_q", "to_k", "to_v", "to_out.0"]))
        diffusers.StableDiffusionPipeline.save_lora_weights(
            folder / name, unet_lora_layers=get_peft_model_state_dict(pipe.unet), safe_serialization=True)
    return folder


def _run(overrides: list[str], tmp_path: Path, cache: PipelineCache | None = None) -> Path:
    result = run_sweep(compose_config([*BASE, *overrides], tmp_path / "runs"), out=io.StringIO(), cache=cache)
    assert result.status == "complete", read_manifest(result.run_dir)
    return result.run_dir


def _images(run_dir: Path, key: str | None = None) -> dict[Any, np.ndarray]:
    images = {}
    for record in read_manifest(run_dir):
        with Image.open(run_dir / record["outputs"][0]) as image:
            images[record["params"].get(key) if key else record["index"]] = np.asarray(image)
    return images


def _loras(lora_dir: Path, *names: str, fuse: bool = False) -> str:
    entries = ",".join(f"{{name: {n}, source: '{lora_dir / n}'" + (", fuse: true, scale: 1.0}" if fuse else "}")
                       for n in names)
    return f"+builder.loras=[{entries}]"


def test_scale_sweep_loads_once_and_scale_zero_is_the_base_model(lora_dir: Path, tmp_path: Path) -> None:
    base = _images(_run([], tmp_path))[0]
    run_dir = _run([_loras(lora_dir, "style"), "+sweep.grid.lora.style=[0.0,0.25,0.5,0.75,1.0]"], tmp_path,
                   PipelineCache())
    assert read_run_json(run_dir)["cache"]["loads"] == 1
    by_scale = _images(run_dir, "lora.style")
    assert np.array_equal(by_scale[0.0], base)
    assert not np.array_equal(by_scale[1.0], base)
    assert len({arr.tobytes() for arr in by_scale.values()}) == 5


def test_two_adapters_combine(lora_dir: Path, tmp_path: Path) -> None:
    run_dir = _run([_loras(lora_dir, "style", "detail"), "+sweep.grid.lora.style=[0.0,1.0]",
                    "+sweep.grid.lora.detail=[0.0,1.0]"], tmp_path, PipelineCache())
    images = {}
    for record in read_manifest(run_dir):
        with Image.open(run_dir / record["outputs"][0]) as image:
            images[(record["params"]["lora.style"], record["params"]["lora.detail"])] = np.asarray(image)
    assert len({arr.tobytes() for arr in images.values()}) == 4  # each combination is distinct
    assert read_run_json(run_dir)["cache"]["loads"] == 1


def test_fused_adapter_matches_its_scale_and_never_leaks(lora_dir: Path, tmp_path: Path) -> None:
    cache = PipelineCache()
    base = _images(_run([], tmp_path, cache))[0]
    unfused = _images(_run([_loras(lora_dir, "style")], tmp_path, cache))[0]
    fused = _images(_run([_loras(lora_dir, "style", fuse=True)], tmp_path, cache))[0]
    assert np.abs(fused.astype(int) - unfused.astype(int)).max() <= 2  # same model, fused arithmetic
    assert not np.array_equal(fused, base)
    after = _images(_run([], tmp_path, cache))[0]
    assert np.array_equal(after, base)  # the base builder's pipeline never saw the fused weights


def test_scale_for_unknown_or_fused_adapter_is_a_config_error(lora_dir: Path, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"lora.styel: no adapter named 'styel' in builder.loras \(loaded: style\)"):
        run_sweep(compose_config([*BASE, _loras(lora_dir, "style"), "+sweep.params.lora.styel=0.5"], tmp_path / "r"))
    with pytest.raises(ConfigError, match="adapter 'style' is fused at build time"):
        run_sweep(compose_config([*BASE, _loras(lora_dir, "style", fuse=True), "+sweep.params.lora.style=0.5"],
                                 tmp_path / "r"))
    assert not (tmp_path / "r").exists()


def test_scheduler_axis_swaps_without_reloading(tmp_path: Path) -> None:
    cache = PipelineCache()
    run_dir = _run(["+sweep.grid.builder.scheduler=[null,{name: EulerDiscreteScheduler},"
                    "{name: DPMSolverMultistepScheduler, config: {use_karras_sigmas: true}}]"], tmp_path, cache)
    run = read_run_json(run_dir)
    assert len(run["builders"]) == 3 and run["cache"]["loads"] == 1
    images = _images(run_dir)
    assert len({images[i].tobytes() for i in range(3)}) == 3  # each scheduler samples differently
    # The cached pipeline last ran with DPM; the model's own scheduler comes back exactly, still without a load.
    again = _run(["+sweep.grid.builder.scheduler=[null]"], tmp_path, cache)
    assert read_run_json(again)["cache"]["loads"] == 0
    assert np.array_equal(_images(again)[0], images[0])
    assert read_manifest(again)[0]["item_id"] == sorted(read_manifest(run_dir), key=lambda r: r["index"])[0]["item_id"]


@pytest.mark.parametrize(("scheduler", "message"), [
    ("{name: EulerDiscreteSchedular}", "diffusers has no scheduler 'EulerDiscreteSchedular' (did you mean "
                                       "'EulerDiscreteScheduler'?)"),
    ("{name: FlowMatchEulerDiscreteScheduler}", "StableDiffusionPipeline cannot use FlowMatchEulerDiscreteScheduler"),
    ("{name: EulerDiscreteScheduler, config: {use_karas_sigmas: true}}",
     "builder.scheduler.config.use_karas_sigmas: not an option of EulerDiscreteScheduler (did you mean "
     "'use_karras_sigmas'?)"),
])
def test_bad_scheduler_is_a_config_error(scheduler: str, message: str, tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as error:
        run_sweep(compose_config([*BASE, f"builder.scheduler={scheduler}"], tmp_path / "r"))
    assert message in str(error.value)


def test_a_later_stage_sweeps_its_own_lora_scales_and_schedulers_on_one_load(lora_dir: Path, tmp_path: Path) -> None:
    img2img = ["+stages.chain.img2img.source=base", "+stages.chain.img2img.builder.pipeline=StableDiffusionImg2ImgPipeline",
               "+stages.chain.img2img.params.num_inference_steps=4"]
    lora = f"+stages.chain.img2img.builder.loras=[{{name: style, source: '{lora_dir / 'style'}'}}]"
    run_dir = _run([*img2img, lora, "+stages.chain.img2img.grid.lora.style=[0.0,1.0]",
                    "+stages.chain.img2img.grid.builder.scheduler=[null,{name: EulerDiscreteScheduler}]"],
                   tmp_path, PipelineCache())
    records = read_manifest(run_dir)
    children = {(r["params"]["lora.style"], r["builder_hash"]): r for r in records if r["stage"] == "img2img"}
    assert len(children) == 4 and all("loras" not in r["params"] for r in records if r["stage"] == "base")
    stage = next(s for s in read_run_json(run_dir)["stages"] if s["name"] == "img2img")
    assert stage["loads"] == 1 and len(stage["builders"]) == 2  # two schedulers, one pipeline, both scales
    images = _images(run_dir)
    made = {key: images[r["index"]] for key, r in children.items()}
    assert len({image.tobytes() for image in made.values()}) == 4  # each scale and scheduler shows

    # scale 0 is the stage without its LoRA, under either scheduler (both runs order the schedulers alike)
    plain = _run([*img2img, "+stages.chain.img2img.grid.builder.scheduler=[null,{name: EulerDiscreteScheduler}]"],
                 tmp_path, PipelineCache())
    plain_images = _images(plain)
    plain_children = sorted((r for r in read_manifest(plain) if r["stage"] == "img2img"), key=lambda r: r["index"])
    zero = sorted((r for r in children.values() if r["params"]["lora.style"] == 0.0), key=lambda r: r["index"])
    assert len(zero) == len(plain_children) == 2 and [plain_images[r["index"]].tobytes() for r in plain_children] == [
        images[r["index"]].tobytes() for r in zero]
