"""`describe=true|json` on every shipped provider preset: what it prints comes from the provider and the preset."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import pytest

from conftest import compose_config, run_cli
from diffsweep import providers
from diffsweep.errors import ConfigError
from diffsweep.paths import conf_dir
from diffsweep.run.local import run_sweep

pytestmark = pytest.mark.quick  # unit tests: part of make test-fast

PRESETS = sorted(path.stem for path in (conf_dir() / "provider").glob("*.yaml"))


def _describe(preset: str, root: Path, mode: str = "json", *extra: str) -> str:
    out = io.StringIO()
    result = run_sweep(compose_config([f"provider={preset}", f"describe={mode}", *extra], root), out=out,
                       preset=preset)
    assert result.run_dir is None and result.status == "describe"
    return out.getvalue()


def _files(folder: Path) -> set[Path]:
    return set(folder.rglob("*")) if folder.exists() else set()


def _expected_value(name: str, generation: dict[str, Any], defaults: Any, builder: dict[str, Any]) -> Any:
    if name == "seed":
        return 0
    if name == "ip_adapter_scale" and builder.get("ip_adapter"):
        return 1.0  # every item has the loaded adapter's scale
    return generation.get(name) if generation.get(name) is not None else defaults.get(name)


@pytest.mark.parametrize("preset", PRESETS)
def test_describe_states_the_provider_spec_and_the_preset(preset: str, tmp_path: Path, tiny_cache: Path) -> None:
    composed = compose_config([f"provider={preset}"])  # a preset may build on another (defaults)
    builder, generation = composed["builder"], composed.get("generation") or {}
    provider = providers.get(builder["provider"])
    spec = provider.spec(builder["pipeline"])
    cache_before = _files(tiny_cache)

    described = json.loads(_describe(preset, tmp_path / "runs"))

    assert not (tmp_path / "runs").exists() and _files(tiny_cache) == cache_before  # wrote nothing, built nothing
    assert (described["provider"], described["pipeline"], described["model"], described["preset"]) == (
        builder["provider"], builder["pipeline"], builder["model"], preset)
    assert (described["output"], described["lora"], described["batchable"], described["multiplier"]) == (
        spec.output, spec.lora, spec.batchable, spec.multiplier)
    assert described["auto_batch_size"] == provider.batch_limit(spec)
    assert described["file_extension"] == {"image": ".png", "video": ".mp4", "audio": ".wav",
                                              "video_audio": ".mp4"}[spec.output]
    if described["pipelines"]:
        assert described["pipelines"] == list(provider.pipelines) and spec.name in described["pipelines"]
    params: dict[str, dict[str, Any]] = {p["name"]: p for p in described["parameters"]}
    assert set(params) == {"prompt", "seed"} | set(spec.params)
    for name, param in params.items():
        assert param["provider_default"] == spec.defaults.get(name), name
        assert param["preset"] == generation.get(name), name
        assert param["value"] == _expected_value(name, generation, spec.defaults, builder), name
        assert param["grid_axis"] is True and param["per_item"] == (name in ("prompt", "negative_prompt", "seed",
                                                                              "prompt_2", "negative_prompt_2"))
    for side in ("height", "width"):
        if side in params:
            assert f"multiple of {spec.size_multiple}" in params[side]["rules"]
            assert params[side]["range"] == {"minimum": 8, "maximum": 16384}
    if builder["provider"] in ("wan", "hunyuan_video"):
        assert "4k+1 (e.g. 5, 17, 81)" in params["num_frames"]["rules"]
    if builder["provider"] in ("cogvideox", "ltx"):
        assert "8k+1 (e.g. 9, 33, 161)" in params["num_frames"]["rules"]
    if builder["provider"] == "allegro":
        assert "at most 24 (one VAE tile) or 24 + 16k (whole tiles)" in params["num_frames"]["rules"]
    assert "builder.scheduler" in described["builder_axes"] and "builder.model" in described["builder_axes"]
    assert (described["controlnet"] is not None) == (spec.controlnet is not None)
    if builder.get("controlnets"):
        assert described["controlnet"]["loaded"] == [net["model"] for net in builder["controlnets"]]
    chosen = builder.get("quantization") or {}
    assert described["quantization"]["current"] == chosen.get("name", "none")  # a preset may quantize (nf4, gguf)
    assert "none" in described["quantization"]["options"]


def test_the_table_shows_each_parameter_and_where_its_value_comes_from(tmp_path: Path) -> None:
    text = _describe("tiny_sd", tmp_path / "runs", "true", "sweep.params.guidance_scale=3.0")
    lines = text.splitlines()
    assert lines[0] == "builder    stable_diffusion/StableDiffusionPipeline  (model tiny:sd, preset tiny_sd)"
    assert lines[2] == "output     image (.png)"
    rows = {line.split()[0]: line.split() for line in lines if line.startswith("  ") and not line.startswith("  name")}
    assert rows["num_inference_steps"][:6] == ["num_inference_steps", "integer", "30", "4", "4", "preset"]
    assert rows["guidance_scale"][:6] == ["guidance_scale", "number", "7.5", "7.5", "3.0", "sweep.params"]
    assert rows["width"][-4:] == ["16384;", "multiple", "of", "8"] and rows["prompt"][-3:] == ["required", "yes", "yes"]
    assert "LoRA       yes" in text and not (tmp_path / "runs").exists()


def test_lora_scales_are_listed_with_their_adapters(tmp_path: Path) -> None:
    lora_file = tmp_path / "style.safetensors"
    lora_file.write_bytes(b"\0")  # never read: describe loads nothing
    adapters = f"+builder.loras=[{{name: style, source: '{lora_file}'}},{{name: detail, source: '{lora_file}'}}]"
    described = json.loads(_describe("tiny_sd", tmp_path / "runs", "json", adapters, "+sweep.params.lora.detail=0.25"))
    scales = {p["name"]: p for p in described["parameters"] if p["name"].startswith("lora.")}
    assert [(p["value"], p["set_by"], p["grid_axis"]) for p in scales.values()] == [
        (1.0, "builder.loras", True), (0.25, "sweep.params", True)]
    assert list(scales) == ["lora.style", "lora.detail"]


def test_a_bad_describe_value_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="describe: expected false, true or json"):
        run_sweep(compose_config(["describe=maybe"], tmp_path / "runs"), out=io.StringIO())


def test_describe_on_the_command_line(tmp_path: Path) -> None:
    result = run_cli(["provider=tiny_wan", "describe=json"], cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    described = json.loads(result.stdout)
    assert (described["provider"], described["preset"], described["output"]) == ("wan", "tiny_wan", "video")
    frames = next(p for p in described["parameters"] if p["name"] == "num_frames")
    assert (frames["provider_default"], frames["preset"], frames["value"]) == (81, 5, 5)
    assert list(tmp_path.iterdir()) == []
