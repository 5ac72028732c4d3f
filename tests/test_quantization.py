"""Quantized builders on tiny offline models on CPU: quanto and torchao through PipelineQuantizationConfig, a tiny
GGUF transformer written with the gguf package, and the refusals made before anything is written."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from conftest import compose_config, read_manifest, read_run_json, run_cli
from diffsweep.errors import EXIT_CONFIG, ConfigError
from diffsweep.execution.cache import PipelineCache
from diffsweep.planning.prepare import prepare
from diffsweep.run.local import run_sweep

ONE = ["sweep.grid.prompt=[a fox]", "sweep.grid.seed=[0]", "sweep.params.num_inference_steps=2"]


def _run(overrides: list[str], root: Path) -> tuple[Path, dict[str, Any], list[dict[str, Any]]]:
    # a fresh pipeline cache, so run.json's loads count this run's loads (the process cache outlives tests)
    result = run_sweep(compose_config([*ONE, *overrides], root), out=io.StringIO(), cache=PipelineCache())
    records = sorted(read_manifest(result.run_dir), key=lambda r: r["index"])
    assert result.status == "complete", records
    return result.run_dir, read_run_json(result.run_dir), records


def _pixels(run_dir: Path, record: dict[str, Any]) -> np.ndarray:
    with Image.open(run_dir / record["outputs"][0]) as image:
        return np.asarray(image).astype(float)


def _psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a - b) ** 2))
    return float("inf") if mse == 0 else 10 * np.log10(255**2 / mse)


def test_a_quantization_axis_compares_builders_each_recorded_with_its_weight_bytes(tmp_path: Path) -> None:
    run_dir, run, records = _run(["+sweep.grid.builder.quantization=[none,quanto_int8,quanto_fp8]"], tmp_path / "runs")
    builders = {b["hash"]: b for b in run["builders"]}
    assert len(builders) == 3 and run["cache"]["loads"] == 3
    labels = sorted(b["label"] for b in builders.values())
    assert labels == ["quantization=none", "quantization=quanto float8", "quantization=quanto int8"]
    plain = next(b for b in builders.values() if b["label"] == "quantization=none")
    assert plain["quantization"] is None and "quantization" not in plain["full_identity"]
    for builder in builders.values():
        if builder is plain:
            continue
        recorded = builder["quantization"]
        assert recorded["backend"] == "quanto" and recorded["components"] == ["unet"]
        assert recorded["dtype"] == "float32" and 0 < recorded["bytes_after"] < recorded["bytes_before"]
        assert builder["full_identity"]["quantization"]["weights"] == recorded["weights"]
    pixels = {builders[r["builder_hash"]]["label"]: _pixels(run_dir, r) for r in records}
    assert _psnr(pixels["quantization=quanto int8"], pixels["quantization=none"]) > 20


def test_quantization_none_keeps_the_builder_hash_of_an_unquantized_config(tmp_path: Path) -> None:
    doc = compose_config(ONE, tmp_path / "runs")
    without = {**doc, "builder": {k: v for k, v in doc["builder"].items() if k != "quantization"}}
    assert list(prepare(doc).builders) == list(prepare(without).builders)


def test_torchao_int8_runs_on_cpu_in_bfloat16_and_text_encoders_can_be_named(tmp_path: Path) -> None:
    _, run, _ = _run(["quantization=torchao_int8", "builder.dtype=bfloat16",
                      "builder.quantization.components=[unet,text_encoder]"], tmp_path / "runs")
    (builder,) = run["builders"]
    recorded = builder["quantization"]
    assert recorded["backend"] == "torchao" and recorded["components"] == ["unet", "text_encoder"]
    assert recorded["dtype"] == "bfloat16" and recorded["bytes_after"] < recorded["bytes_before"]


@pytest.fixture(scope="module")
def gguf_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Tiny Flux and SD3 transformers written as Q8_0 GGUF files."""
    from diffsweep.tiny.flux import flux
    from diffsweep.tiny.gguf import write_transformer_gguf
    from diffsweep.tiny.stable_diffusion import sd3

    folder = tmp_path_factory.mktemp("gguf")
    return {"flux": write_transformer_gguf(flux()["transformer"], folder / "tiny-flux-Q8_0.gguf"),
            "sd3": write_transformer_gguf(sd3()["transformer"], folder / "tiny-sd3-Q8_0.gguf", architecture="sd3")}


def test_a_gguf_transformer_loads_in_place_of_the_base_models(gguf_files: dict[str, Path], tmp_path: Path) -> None:
    run_dir, run, (record,) = _run(["provider=tiny_flux", "quantization=gguf",
                                    f"builder.quantization.file={gguf_files['flux']}"], tmp_path / "runs")
    (builder,) = run["builders"]
    assert builder["label"] == "tiny:flux"
    recorded = builder["quantization"]
    assert recorded["backend"] == "gguf" and recorded["file"] == str(gguf_files["flux"])
    assert recorded["bytes_after"] < recorded["bytes_before"] / 2  # Q8_0: a byte and a bit per weight, not 4
    assert builder["full_identity"]["quantization"]["file"]["name"] == "tiny-flux-Q8_0.gguf"
    base_dir, _, (base,) = _run(["provider=tiny_flux"], tmp_path / "runs")
    assert _psnr(_pixels(run_dir, record), _pixels(base_dir, base)) > 30


def _refused(overrides: list[str], root: Path) -> str:
    with pytest.raises(ConfigError) as caught:
        run_sweep(compose_config([*ONE, *overrides], root), out=io.StringIO())
    assert not root.exists()
    return str(caught.value)


def test_what_cannot_run_here_is_refused_before_anything_is_written(gguf_files: dict[str, Path],
                                                                    tmp_path: Path) -> None:
    root = tmp_path / "runs"
    assert "builder.quantization.file: quantization=gguf: " in _refused(
        ["provider=tiny_flux", "quantization=gguf", f"builder.quantization.file={gguf_files['sd3']}"], root)
    assert "is not a FluxTransformer2DModel checkpoint: 3 of its" in _refused(
        ["provider=tiny_flux", "quantization=gguf", f"builder.quantization.file={gguf_files['sd3']}"], root)
    assert "gguf replaces a transformer, and the base model has none" in _refused(
        ["quantization=gguf", f"builder.quantization.file={gguf_files['flux']}"], root)
    assert "builder.quantization.components[0]: quantization=quanto_int8: quanto quantizes the weights" in _refused(
        ["quantization=quanto_int8", "builder.quantization.components=[tokenizer]"], root)
    assert "the base model has no component 'transformer'" in _refused(
        ["quantization=quanto_int8", "builder.quantization.components=[transformer]"], root)
    assert "set builder.dtype=bfloat16" in _refused(["quantization=torchao_int8"], root)
    assert "float8_dynamic multiplies in float8, which needs a CUDA GPU of compute capability 8.9" in _refused(
        ["quantization=torchao_fp8", "builder.dtype=bfloat16", "builder.quantization.weights=float8_dynamic"], root)
    assert "sweep.grid.builder.quantization: no quantization preset 'nf5'" in _refused(
        ["+sweep.grid.builder.quantization=[none,nf5]"], root)


def test_bitsandbytes_on_a_cpu_machine_fails_with_exit_2_naming_what_it_needs(tmp_path: Path) -> None:
    result = run_cli(["quantization=bnb_nf4", f"output.root={tmp_path / 'runs'}"], cwd=tmp_path)
    assert result.returncode == EXIT_CONFIG, result.stderr
    assert "builder.quantization.backend: quantization=bnb_nf4:" in result.stderr
    assert "bitsandbytes nf4 needs a CUDA GPU" in result.stderr and "this run's device is cpu" in result.stderr
    assert "pip install 'diffsweep[bnb]'" in result.stderr  # bitsandbytes is no test dependency: a GPU's extra
    assert "quantization/bnb_nf4.yaml" in result.stderr  # the file the setting came from
    assert not (tmp_path / "runs").exists()
