"""Allegro, aMUSEd, AudioLDM(2), Wuerstchen and custom providers: their rules, batching and loading paths.

The shared contract (tests/test_providers_contract.py) runs each tiny preset end to end; these tests cover what is
particular to these families: rules refused before anything loads, one item per call where the pipeline cannot
batch, Allegro's per-size VAE tiles, the Wuerstchen reload fix, deprecated classes going missing, and the custom
provider's three ways of naming a pipeline.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from conftest import compose_config, read_manifest, read_run_json, run_cli
from diffsweep import media, providers
from diffsweep.errors import ConfigError, ModelUnavailableError
from diffsweep.execution.cache import PipelineCache
from diffsweep.providers.allegro import tiling
from diffsweep.providers.base import PipelineClassError, ensure_tiny
from diffsweep.providers.wuerstchen import decoder_latent
from diffsweep.run.attempts import RunResult
from diffsweep.run.local import run_sweep

EXAMPLE_CLASS = "diffsweep.examples.custom_pipeline.TinyCustomPipeline"


def run(overrides: list[str], tmp_path: Path, cache: PipelineCache | None = None) -> RunResult:
    return run_sweep(compose_config(overrides, tmp_path / "runs"), out=io.StringIO(), cache=cache)


def refused(overrides: list[str], tmp_path: Path) -> str:
    """The config error of a sweep that must fail before anything is written."""
    with pytest.raises(ConfigError) as error:
        run(overrides, tmp_path)
    assert not (tmp_path / "runs").exists(), "a refused config must not create a run folder"
    return str(error.value)


def spy_calls(monkeypatch: pytest.MonkeyPatch, pipeline_class: type) -> list[dict[str, Any]]:
    """Record the keyword arguments of every call of a pipeline class."""
    calls: list[dict[str, Any]] = []
    original: Callable[..., Any] = pipeline_class.__call__

    def spy(self: Any, *args: Any, **kwargs: Any) -> Any:
        calls.append(kwargs)
        return original(self, *args, **kwargs)

    monkeypatch.setattr(pipeline_class, "__call__", spy)
    return calls


# ----- rules, refused before anything loads -----------------------------------------------------------------------
@pytest.mark.parametrize(("overrides", "expected"), [
    (["provider=tiny_wuerstchen", "sweep.params.height=64"],
     "sweep.params.height: height 64 gives an odd decoder latent (21)"),
    (["provider=tiny_audioldm", "+sweep.params.num_frames=8"],
     "sweep.params.num_frames: not a parameter of AudioLDMPipeline"),
], ids=["wuerstchen-64px", "audio-num-frames"])
def test_cli_refuses_with_exit_2_and_writes_nothing(overrides: list[str], expected: str, tmp_path: Path) -> None:
    result = run_cli(overrides, cwd=tmp_path)
    assert result.returncode == 2, (result.stdout, result.stderr)
    assert expected in result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "runs").exists()


def test_rules_of_each_family(tmp_path: Path) -> None:
    text = refused(["provider=tiny_allegro", "+sweep.params.lora.style=0.5", "sweep.params.height=400",
                    "+sweep.params.num_frames=30"], tmp_path)
    assert "AllegroPipeline has no LoRA support" in text
    assert "height 400 is not covered by Allegro's VAE tiles (320 + 200k)" in text and "nearest: 320 or 520" in text
    assert "num_frames 30 is not covered by Allegro's VAE tiles (24 + 16k)" in text
    assert "height: not a parameter of AudioLDM2Pipeline" in refused(
        ["provider=tiny_audioldm2", "sweep.params.height=64"], tmp_path)
    assert "width 48 must be a multiple of 32" in refused(["provider=tiny_amused", "sweep.params.width=48"], tmp_path)
    assert "sweep.params.height: not a parameter of AmusedImg2ImgPipeline" in refused(  # a size the user set
        ["provider=tiny_amused", "builder.pipeline=AmusedImg2ImgPipeline", "+sweep.params.image=inputs/example.png",
         "sweep.params.height=256"], tmp_path)
    assert "fps applies to video output" in refused(["provider=tiny_wuerstchen", "+sweep.params.fps=8"], tmp_path)
    assert "builder.pipeline: module 'userpipes' is not in allowed_modules (diffusers, diffsweep)" in refused(
        ["provider=tiny_custom", "builder.pipeline=userpipes.MyPipe"], tmp_path)


def test_allegro_tiles_cover_the_video_or_shrink_to_it() -> None:
    assert tiling({"num_frames": 88, "height": 720, "width": 1280}) == ((24, 320, 320), (16, 200, 240))
    assert tiling({"num_frames": 24, "height": 32, "width": 48}) == ((24, 32, 48), (16, 32, 48))
    assert tiling({"num_frames": 6, "height": 32, "width": 32})[0] == (8, 32, 32)  # whole latent frames
    assert tiling({"num_frames": 5, "height": 32, "width": 32})[0] == (8, 32, 32)


def test_wuerstchen_size_rule_follows_the_decoder_latent() -> None:
    assert [decoder_latent(side) for side in (64, 128, 256, 1024)] == [21, 32, 64, 256]
    provider = providers.get("wuerstchen")
    spec = provider.spec("WuerstchenCombinedPipeline")
    assert provider.check_params(spec, {"prompt": "x", "height": 128, "width": 1024}) == []
    ((key, message),) = provider.check_params(spec, {"prompt": "x", "height": 100, "width": 256})
    assert key == "height" and "a decoder latent of 32, decoded to 128 px instead" in message


# ----- batching ---------------------------------------------------------------------------------------------------
def test_non_batchable_pipelines_run_one_item_per_call(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    import torch
    from diffusers import AllegroPipeline, AmusedPipeline, AudioLDMPipeline

    amused = spy_calls(monkeypatch, AmusedPipeline)
    assert run(["provider=tiny_amused", "sweep.grid.prompt=[a fox]", "sweep.grid.seed=[0,1,2]"],
               tmp_path).status == "complete"
    assert len(amused) == 3
    assert all(len(c["prompt"]) == 1 and isinstance(c["generator"], torch.Generator) for c in amused)

    allegro = spy_calls(monkeypatch, AllegroPipeline)
    result = run(["provider=tiny_allegro", "sweep.grid.prompt=[a fox]", "+sweep.grid.num_frames=[8,40]"], tmp_path)
    assert result.status == "complete" and len(allegro) == 4
    for record in read_manifest(result.run_dir):  # every frame decoded, none left flat gray by the tiles
        frames = media.decode_mp4((result.run_dir / record["outputs"][0]).read_bytes())
        assert frames.shape[:3] == (record["params"]["num_frames"], 32, 32)
        assert (frames.reshape(len(frames), -1).std(axis=1) > 2).all(), record["params"]

    audioldm = spy_calls(monkeypatch, AudioLDMPipeline)  # batchable, for contrast: one call, a generator per item
    assert run(["provider=tiny_audioldm", "sweep.grid.prompt=[a fox]"], tmp_path).status == "complete"
    assert len(audioldm) == 1
    assert len(audioldm[0]["prompt"]) == 2 and len(audioldm[0]["generator"]) == 2


def test_amused_image_to_image_and_inpainting_take_the_input_size(tmp_path: Path) -> None:
    base = ["provider=tiny_amused", "sweep.grid.prompt=[a fox]", "sweep.grid.seed=[0]", "~generation.height",
            "~generation.width", "+sweep.params.image=inputs/example.png"]
    for extra in (["builder.pipeline=AmusedImg2ImgPipeline"],
                  ["builder.pipeline=AmusedInpaintPipeline", "+sweep.params.mask_image=inputs/example_mask.png"]):
        result = run([*base, *extra], tmp_path)
        assert result.status == "complete", extra
        (record,) = read_manifest(result.run_dir)
        with Image.open(result.run_dir / record["outputs"][0]) as image:
            assert image.size == (64, 64)


# ----- loading ----------------------------------------------------------------------------------------------------
def test_wuerstchen_loads_folders_naming_either_library(tmp_path: Path) -> None:
    """diffusers 0.42.1 saves the model classes under "diffusers"; older checkpoints name "wuerstchen"."""
    import diffusers
    import torch
    from diffusers.pipelines.deprecated import wuerstchen

    provider = providers.get("wuerstchen")
    for _ in range(2):  # idempotent
        provider.before_load(provider.spec("WuerstchenCombinedPipeline"))
    for name in ("PaellaVQModel", "WuerstchenDiffNeXt", "WuerstchenPrior"):
        assert getattr(diffusers, name) is getattr(wuerstchen, name)
    assert diffusers.pipelines.wuerstchen is wuerstchen

    folder = tmp_path / "old-layout"
    shutil.copytree(ensure_tiny(provider, "wuerstchen"), folder)
    index = json.loads((folder / "model_index.json").read_text())
    for slot in ("prior_prior", "decoder", "vqgan"):
        index[slot][0] = "wuerstchen"
    (folder / "model_index.json").write_text(json.dumps(index))
    pipe = provider.load({"provider": "wuerstchen", "pipeline": "WuerstchenCombinedPipeline", "model": str(folder)},
                         torch.float32)
    assert isinstance(pipe.decoder, wuerstchen.WuerstchenDiffNeXt)


def test_a_removed_deprecated_pipeline_makes_its_provider_unavailable(monkeypatch: pytest.MonkeyPatch,
                                                                       tmp_path: Path) -> None:
    ensure_tiny(providers.get("amused"), "amused")
    monkeypatch.setitem(sys.modules, "diffusers.pipelines.deprecated.amused", None)  # as if diffusers dropped it
    with pytest.raises(ModelUnavailableError, match="AmusedPipeline is unavailable"):
        providers.get("amused").spec("AmusedPipeline").load_class()
    result = run(["provider=tiny_amused", "sweep.grid.seed=[0]"], tmp_path, cache=PipelineCache())
    assert result.status == "failed"
    assert all("AmusedPipeline is unavailable" in r["error"] for r in read_manifest(result.run_dir))


# ----- custom -----------------------------------------------------------------------------------------------------
def test_custom_spec_comes_from_the_call_signature(tmp_path: Path) -> None:
    custom = providers.get("custom")
    sd = custom.spec("StableDiffusionPipeline")
    assert (sd.output, sd.multiplier, sd.batchable, sd.lora) == ("image", "num_images_per_prompt", True, True)
    assert {"negative_prompt", "height", "width", "guidance_scale"} <= sd.params and "prompt" not in sd.params
    assert sd.defaults == {"num_inference_steps": 50, "guidance_scale": 7.5}
    assert (custom.spec("WanPipeline").output, custom.spec("AudioLDM2Pipeline").output) == ("video", "audio")
    example = custom.spec(EXAMPLE_CLASS)
    assert (example.name, example.lora, example.batchable) == (EXAMPLE_CLASS, False, True)
    for unknown in ("NoSuchPipeline", "AutoencoderKL"):
        with pytest.raises(KeyError):
            custom.spec(unknown)
    with pytest.raises(PipelineClassError, match="has no 'Missing'; its pipeline classes: TinyCustomPipeline"):
        custom.spec("diffsweep.examples.custom_pipeline.Missing")
    assert "did you mean 'StableDiffusionPipeline'" in refused(
        ["provider=tiny_custom", "builder.pipeline=StableDifusionPipeline"], tmp_path)


def test_custom_runs_a_diffusers_class_by_name_and_a_user_class_by_path(monkeypatch: pytest.MonkeyPatch,
                                                                        tmp_path: Path) -> None:
    package = tmp_path / "src"
    package.mkdir()
    (package / "userpipes.py").write_text(
        f"from {EXAMPLE_CLASS.rsplit('.', 1)[0]} import TinyCustomPipeline\n\n\n"
        "class MyPipe(TinyCustomPipeline):\n    \"\"\"A user's pipeline: here, the example unchanged.\"\"\"\n")
    monkeypatch.syspath_prepend(str(package))
    result = run(["provider=tiny_custom", "sweep.grid.prompt=[a fox]", "sweep.grid.seed=[0]",
                  "allowed_modules=[diffusers,diffsweep,userpipes]",
                  "+sweep.grid.builder.pipeline=[StableDiffusionPipeline,userpipes.MyPipe]"], tmp_path)
    assert result.status == "complete"
    run_json = read_run_json(result.run_dir)
    assert sorted(b["pipeline"] for b in run_json["builders"]) == ["StableDiffusionPipeline", "userpipes.MyPipe"]
    assert run_json["cache"]["loads"] + run_json["cache"]["hits"] == 2


def test_a_pipeline_module_in_the_working_directory_is_said_to_be_unimportable_and_how(tmp_path: Path) -> None:
    """The `diffsweep` command does not put the working directory on Python's path (`python -m` does): the cause
    is the import, not an unknown class name among diffusers' hundreds."""
    from diffsweep.examples import custom_pipeline

    shutil.copy(custom_pipeline.__file__, tmp_path / "mypipes.py")
    command = [str(Path(sys.executable).parent / "diffsweep"), "provider=tiny_custom", "dry_run=true",
               "allowed_modules=[diffusers,diffsweep,mypipes]"]
    environment = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}

    def dry_run(pipeline: str, **extra: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([*command, f"builder.pipeline={pipeline}"], cwd=tmp_path, capture_output=True,
                              text=True, timeout=300, env={**environment, **extra})

    refused = dry_run("mypipes.TinyCustomPipeline")
    assert refused.returncode == 2, refused.stderr
    assert "module 'mypipes' cannot be imported: no 'mypipes' on Python's path" in refused.stderr
    assert "PYTHONPATH=. diffsweep" in refused.stderr and "choose one of" not in refused.stderr
    assert dry_run("mypipes.TinyCustomPipeline", PYTHONPATH=".").returncode == 0  # as the message says
    misnamed = dry_run("mypipes.TinyCustomPipelin", PYTHONPATH=".")
    assert misnamed.returncode == 2
    assert "has no 'TinyCustomPipelin' (did you mean 'TinyCustomPipeline'?)" in misnamed.stderr


def test_custom_folder_with_pipeline_code_needs_trust(tmp_path: Path) -> None:
    from diffsweep.examples import custom_pipeline

    folder = tmp_path / "my-pipeline"  # a saved pipeline with the code of its class beside model_index.json
    shutil.copytree(ensure_tiny(providers.get("custom"), "custom"), folder)
    shutil.copy(custom_pipeline.__file__, folder / "pipeline.py")
    overrides = ["provider=tiny_custom", f"builder.model={folder}", "sweep.grid.prompt=[a fox]",
                 "sweep.grid.seed=[0]"]
    text = refused(overrides, tmp_path)
    assert "builder.trust_remote_code" in text and "pipeline.py" in text
    result = run([*overrides, "builder.trust_remote_code=true"], tmp_path)
    assert result.status == "complete"
    assert read_run_json(result.run_dir)["builders"][0]["model_path"] == str(folder.resolve())
    (record,) = read_manifest(result.run_dir)
    with Image.open(result.run_dir / record["outputs"][0]) as image:
        assert image.size == (64, 64)
