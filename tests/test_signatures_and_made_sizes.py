"""Signatures are the truth: every declared parameter is one the pipeline's `__call__` takes, one it does not is
refused, and where an input image decides the output's size the records state the size that was made."""

from __future__ import annotations

import inspect
import io
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from conftest import compose_config, read_manifest
from diffsweep import providers
from diffsweep.errors import ConfigError
from diffsweep.providers.base import OUTPUT_PARAMS
from diffsweep.run.local import run_sweep

SPECS = [(provider, spec) for provider in providers.registry().values() for spec in provider.declared_specs()]


@pytest.mark.parametrize(("provider", "spec"), SPECS, ids=[f"{p.name}-{s.name}" for p, s in SPECS])
def test_every_declared_parameter_is_in_the_pipeline_signature(provider: Any, spec: Any) -> None:
    """As diffusers' own pipeline tests check call signatures: a parameter swallowed by `**kwargs` is not taken."""
    signature = inspect.signature(spec.load_class().__call__).parameters
    named = {name for name, p in signature.items() if p.kind is not inspect.Parameter.VAR_KEYWORD}
    passed = {spec.call_names.get(name, name) for name in spec.params - set(OUTPUT_PARAMS)}  # as the call names them
    assert passed <= named, sorted(passed - named)
    assert {spec.call_names.get(name, name) for name in spec.defaults.keys() - set(OUTPUT_PARAMS)} <= named
    assert spec.multiplier is None or spec.multiplier in named
    assert spec.max_sequence_length is None or "max_sequence_length" in named


INPUT_W, INPUT_H = 128, 96  # an input that is neither square nor any preset's size


@pytest.fixture(scope="module")
def inputs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    folder = tmp_path_factory.mktemp("inputs")
    picture = np.zeros((INPUT_H, INPUT_W, 3), np.uint8)
    picture[:, : INPUT_W // 2] = (200, 60, 30)
    mask = np.zeros((INPUT_H, INPUT_W), np.uint8)
    mask[INPUT_H // 4:, :] = 255
    Image.fromarray(picture).save(folder / "in.png")
    Image.fromarray(mask).save(folder / "mask.png")
    return {"image": str(folder / "in.png"), "mask": str(folder / "mask.png")}


def _one_item(overrides: list[str], tmp_path: Path) -> tuple[dict[str, Any], Path]:
    result = run_sweep(compose_config([*overrides, "sweep.params.num_inference_steps=2", "sweep.grid.seed=[0]",
                                       "sweep.grid.prompt=[a fox]"], tmp_path / "runs"), out=io.StringIO())
    (record,) = read_manifest(result.run_dir)
    assert record["status"] == "ok", record
    return record, result.run_dir


def _assert_records_state_the_file(record: dict[str, Any], run_dir: Path) -> tuple[int, int]:
    """Manifest, sidecar, PNG chunk and A1111 text all give the file's own size, and no height/width the call
    did not take; returns (width, height) of the file."""
    output = run_dir / record["outputs"][0]
    with Image.open(output) as image:
        size = image.size
        chunk, a1111 = json.loads(image.text["diffsweep"]), image.text["parameters"]
    sidecar = json.loads(output.with_suffix(".json").read_text())
    made = {"width": size[0], "height": size[1]}
    assert record["made"] == sidecar["made"] == chunk["made"] == made
    assert f"Size: {size[0]}x{size[1]}" in a1111
    for params in (record["params"], sidecar["params"], chunk["params"]):
        for key in ("width", "height"):
            assert params.get(key, made[key]) == made[key], (key, params)
    return size


# (preset, pipeline, extra overrides, expected (width, height)): every family with input-image pipelines tiny can run.
# Pipelines without height/width make the input's size; those with them make what was asked, and say so.
CASES = [
    ("tiny_sd", "StableDiffusionImg2ImgPipeline", ["~generation.height", "~generation.width"], (INPUT_W, INPUT_H)),
    ("tiny_sd", "StableDiffusionInpaintPipeline", ["generation.height=96", "generation.width=128", "+mask"],
     (INPUT_W, INPUT_H)),
    ("tiny_sd", "StableDiffusionInpaintPipeline", ["+mask"], (64, 64)),
    ("tiny_sdxl", "StableDiffusionXLImg2ImgPipeline", ["~generation.height", "~generation.width"], (INPUT_W, INPUT_H)),
    ("tiny_sdxl", "StableDiffusionXLInpaintPipeline", ["generation.height=96", "generation.width=128", "+mask"],
     (INPUT_W, INPUT_H)),
    ("tiny_flux", "FluxImg2ImgPipeline", ["generation.height=96", "generation.width=128"], (INPUT_W, INPUT_H)),
    ("tiny_qwen_image", "QwenImageImg2ImgPipeline", ["generation.height=96", "generation.width=128"],
     (INPUT_W, INPUT_H)),
    ("tiny_amused", "AmusedImg2ImgPipeline", ["~generation.height", "~generation.width"], (INPUT_W, INPUT_H)),
    ("tiny_amused", "AmusedInpaintPipeline", ["~generation.height", "~generation.width", "+mask"],
     (INPUT_W, INPUT_H)),
]


@pytest.mark.parametrize(("preset", "pipeline", "extra", "expected"), CASES,
                         ids=[f"{c[1]}-{c[3][0]}x{c[3][1]}" for c in CASES])
def test_input_image_pipelines_record_the_size_they_made(preset: str, pipeline: str, extra: list[str],
                                                         expected: tuple[int, int], inputs: dict[str, str],
                                                         tmp_path: Path) -> None:
    overrides = [f"provider={preset}", f"builder.pipeline={pipeline}", f"+sweep.params.image='{inputs['image']}'",
                 "+sweep.params.strength=0.75"]  # at least one of the 2 steps runs (0.3 x 2 would be none)
    overrides += [f"+sweep.params.mask_image='{inputs['mask']}'" if o == "+mask" else o for o in extra]
    record, run_dir = _one_item(overrides, tmp_path)
    assert _assert_records_state_the_file(record, run_dir) == expected


@pytest.mark.parametrize("pipeline", ["StableDiffusionImg2ImgPipeline", "StableDiffusionXLImg2ImgPipeline"])
def test_a_size_the_pipeline_would_ignore_is_refused(pipeline: str, inputs: dict[str, str], tmp_path: Path) -> None:
    preset = "tiny_sdxl" if "XL" in pipeline else "tiny_sd"
    with pytest.raises(ConfigError) as refused:
        run_sweep(compose_config([f"provider={preset}", f"builder.pipeline={pipeline}",
                                  f"+sweep.params.image='{inputs['image']}'", "sweep.grid.prompt=[a fox]",
                                  "~generation.height", "+sweep.params.width=64"], tmp_path / "runs"),
                  out=io.StringIO())
    assert (f"sweep.params.width: not a parameter of {pipeline}: its output has the input image's size"
            in str(refused.value))
    assert "height" not in str(refused.value)
    assert not (tmp_path / "runs").exists()


def test_a_presets_size_is_not_applied_to_a_pipeline_sized_by_its_input(inputs: dict[str, str], tmp_path: Path,
                                                                         caplog: pytest.LogCaptureFixture) -> None:
    """tiny_sd's 64x64 is a text-to-image default: under an img2img pipeline it is left out and said so, not
    refused as if the user had set it (in conf/sweep/default.yaml, where it is null)."""
    with caplog.at_level("INFO", logger="diffsweep"):
        record, run_dir = _one_item(["builder.pipeline=StableDiffusionImg2ImgPipeline",
                                     f"+sweep.params.image='{inputs['image']}'", "+sweep.params.strength=0.75"],
                                    tmp_path)
    assert _assert_records_state_the_file(record, run_dir) == (INPUT_W, INPUT_H)
    assert "height" not in record["params"] and "width" not in record["params"]
    note = "height=64, width=64 (the preset's defaults) not applied: StableDiffusionImg2ImgPipeline makes the input " \
           "image's size"
    assert note in caplog.text
    # and in the record: run.json's notes and the run's own log
    assert json.loads((run_dir / "run.json").read_text())["notes"] == [note]
    assert note in (run_dir / "run.log").read_text()


@pytest.mark.parametrize("set_in", ["command line", "sweep file"])
def test_a_size_the_user_set_for_such_a_pipeline_is_refused_where_it_was_set(inputs: dict[str, str], tmp_path: Path,
                                                                             set_in: str) -> None:
    from conftest import run_cli

    args = ["builder.pipeline=StableDiffusionImg2ImgPipeline", f"+sweep.params.image='{inputs['image']}'"]
    if set_in == "sweep file":
        (tmp_path / "mine" / "sweep").mkdir(parents=True)
        sweep_file = tmp_path / "mine" / "sweep" / "sized.yaml"
        sweep_file.write_text("name: sized\ngrid: {prompt: [a fox]}\nparams: {height: 128}\n")
        args = ["--config-dir", str(tmp_path / "mine"), "sweep=sized", *args]
        where = str(sweep_file)
    else:
        args.append("sweep.params.height=128")
        where = "command-line override 'sweep.params.height=128'"
    result = run_cli([*args, "dry_run=true"], cwd=tmp_path)
    assert result.returncode == 2, result.stderr
    assert (f"sweep.params.height: not a parameter of StableDiffusionImg2ImgPipeline: its output has the input "
            f"image's size; leave height out  (in {where})") in result.stderr
    assert "sweep.params.width" not in result.stderr and "generation.width" not in result.stderr
