"""ControlNets, prepared control images and IP-Adapters on tiny offline models, through the real loading path.

Scales are generation parameters: a sweep over them loads the pipeline once, and a scale of 0 gives the base model's
pixels exactly (the tiny nets' output layers are random, not zero, so a scale above 0 shows). Nets and adapters of
another architecture, image counts that do not match the nets and Union modes a net lacks are refused before
anything is written.
"""

from __future__ import annotations

import hashlib
import io
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from conftest import compose_config, read_manifest, read_run_json, run_cli
from diffsweep import control
from diffsweep.errors import EXIT_CONFIG, ConfigError
from diffsweep.execution.cache import PipelineCache
from diffsweep.run.local import run_sweep

ONE = ["sweep.grid.prompt=[a fox]", "sweep.grid.seed=[0]"]


def _run(overrides: list[str], root: Path) -> tuple[Path, list[dict[str, Any]]]:
    # a fresh pipeline cache, so run.json's loads count this run's loads (the process cache outlives tests)
    result = run_sweep(compose_config([*ONE, *overrides], root), out=io.StringIO(), cache=PipelineCache())
    records = sorted(read_manifest(result.run_dir), key=lambda r: r["index"])
    assert result.status == "complete", records
    return result.run_dir, records


def _pixels(run_dir: Path, record: dict[str, Any]) -> np.ndarray:
    with Image.open(run_dir / record["outputs"][0]) as image:
        return np.asarray(image).astype(int)


def _refused(overrides: list[str], root: Path) -> str:
    with pytest.raises(ConfigError) as caught:
        run_sweep(compose_config([*ONE, *overrides], root), out=io.StringIO())
    assert caught.value.exit_code == EXIT_CONFIG
    assert not root.exists()  # nothing written
    return str(caught.value)


def test_a_conditioning_sweep_loads_once_and_scale_zero_is_the_base_model(tmp_path: Path) -> None:
    run_dir, records = _run(["provider=tiny_sd_controlnet", "+sweep.grid.controlnet_conditioning_scale=[0.0,1.0]",
                             "+sweep.grid.control_guidance_end=[0.5,1.0]"], tmp_path / "runs")
    assert read_run_json(run_dir)["cache"]["loads"] == 1  # 4 items, 2 axes, one pipeline
    base_dir, (base,) = _run(["provider=tiny_sd"], tmp_path / "runs")
    by_point = {(r["params"]["controlnet_conditioning_scale"], r["params"]["control_guidance_end"]): r
                for r in records}
    for end in (0.5, 1.0):  # at scale 0 the net adds nothing, whatever its window
        assert np.array_equal(_pixels(run_dir, by_point[0.0, end]), _pixels(base_dir, base))
    steered = _pixels(run_dir, by_point[1.0, 1.0])
    assert not np.array_equal(steered, _pixels(base_dir, base))
    assert not np.array_equal(steered, _pixels(run_dir, by_point[1.0, 0.5]))  # the window matters too


def test_sdxl_union_scale_zero_is_the_base_model_and_its_mode_matters(tmp_path: Path) -> None:
    run_dir, records = _run(["provider=tiny_sdxl_controlnet_union", "generation.num_inference_steps=2",
                             "+sweep.grid.controlnet_conditioning_scale=[0.0,1.0]", "+sweep.grid.control_mode=[0,3]"],
                            tmp_path / "runs")
    assert read_run_json(run_dir)["cache"]["loads"] == 1
    base_dir, (base,) = _run(["provider=tiny_sdxl", "generation.num_inference_steps=2"], tmp_path / "runs")
    by_point = {(r["params"]["controlnet_conditioning_scale"], r["params"]["control_mode"]): _pixels(run_dir, r)
                for r in records}
    assert np.array_equal(by_point[0.0, 0], _pixels(base_dir, base))
    assert not np.array_equal(by_point[1.0, 0], by_point[1.0, 3])


def test_sd3_controlnet_loads_through_the_real_path_and_scale_zero_is_the_base_model(tmp_path: Path) -> None:
    """SD3's control image goes through its VAE, not the item's generator, so at scale 0 the pipeline makes tiny_sd3's
    pixels exactly. The tiny SD3 transformer's one block is context-only, which takes no ControlNet residual, so
    steering itself is not shown offline: the real SD3 models have 24 or more blocks."""
    run_dir, records = _run(["provider=tiny_sd3_controlnet", "generation.num_inference_steps=2",
                             "+sweep.grid.controlnet_conditioning_scale=[0.0,1.0]"], tmp_path / "runs")
    run = read_run_json(run_dir)
    assert run["cache"]["loads"] == 1
    assert run["builders"][0]["full_identity"]["controlnets"] == [{"model": "tiny:sd3_controlnet"}]
    assert [r["control_prepared"][0]["preprocess"] for r in records] == ["canny", "canny"]
    base_dir, (base,) = _run(["provider=tiny_sd3", "generation.guidance_scale=5.0"], tmp_path / "runs")
    assert np.array_equal(_pixels(run_dir, records[0]), _pixels(base_dir, base))


@pytest.mark.parametrize("preset", ["tiny_flux_controlnet", "tiny_qwen_image_controlnet"])
def test_flux_and_qwen_image_controlnets_steer_with_their_scale(tmp_path: Path, preset: str) -> None:
    """diffsweep passes the control image through diffusers' Flux and Qwen-Image ControlNet pipelines, which sample
    its VAE latents from the item's generator before the noise: so unlike SD, scale 0 is not the base pipeline's
    image, only a scale-independent one, the same on every run."""
    run_dir, records = _run([f"provider={preset}", "+sweep.grid.controlnet_conditioning_scale=[0.0,1.0]"],
                            tmp_path / "runs")
    assert read_run_json(run_dir)["cache"]["loads"] == 1
    off, on = (_pixels(run_dir, r) for r in records)
    assert not np.array_equal(off, on)
    again_dir, (again,) = _run([f"provider={preset}", "+sweep.grid.controlnet_conditioning_scale=[0.0]"],
                               tmp_path / "runs")
    assert np.array_equal(_pixels(again_dir, again), off)


def test_canny_is_prepared_once_per_setting_recorded_and_part_of_the_item_id(tmp_path: Path) -> None:
    run_dir, records = _run(["provider=tiny_sd_controlnet", "sweep.grid.seed=[0,1]",
                             "+sweep.grid.control_high_threshold=[150,250]"], tmp_path / "runs")
    prepared = sorted((run_dir / "control").iterdir())
    assert len(records) == 4 and len(prepared) == 2  # one file per (input, preprocessor, settings)
    for record in records:
        (entry,) = record["control_prepared"]
        assert entry["preprocess"] == "canny" and entry["source"] == record["params"]["control_image"]
        assert entry["settings"] == {"control_low_threshold": 100,
                                     "control_high_threshold": record["params"]["control_high_threshold"]}
        assert hashlib.sha256((run_dir / entry["path"]).read_bytes()).hexdigest() == entry["sha256"]
        sidecar = json.loads((run_dir / record["outputs"][0]).with_suffix(".json").read_text())
        assert sidecar["control_prepared"] == record["control_prepared"]
        assert f'"controls":[{{"path":"{entry["path"]}"' in (run_dir / "data.js").read_text()  # the viewer shows it
    assert len({r["control_prepared"][0]["sha256"] for r in records}) == 2
    again_dir, again = _run(["provider=tiny_sd_controlnet", "sweep.grid.seed=[0,1]",
                             "+sweep.grid.control_high_threshold=[150,250]"], tmp_path / "runs")
    assert [r["item_id"] for r in again] == [r["item_id"] for r in records]  # deterministic, so ids repeat
    plain_dir, plain = _run(["provider=tiny_sd_controlnet", "generation.control_preprocess=none"], tmp_path / "runs")
    assert "control_prepared" not in plain[0] and not (plain_dir / "control").exists()
    assert plain[0]["item_id"] not in {r["item_id"] for r in records}


def test_sheets_show_the_control_image_beside_the_output(tmp_path: Path) -> None:
    from diffsweep.reports.sheets import tile
    from diffsweep.store.folder import RunFolder

    run_dir, (record,) = _run(["provider=tiny_sd_controlnet", "generation.num_inference_steps=2"], tmp_path / "runs")
    (item,) = RunFolder(run_dir).items().values()
    cell = tile(run_dir, item)
    assert isinstance(cell, Image.Image) and cell.width > cell.height  # the output, then its control image
    left = np.asarray(cell.crop((0, 0, cell.height, cell.height)).resize((64, 64))).astype(int)
    right = np.asarray(cell.crop((cell.width - cell.height, 0, cell.width, cell.height)).resize((64, 64))).astype(int)
    output = _pixels(run_dir, record)
    with Image.open(run_dir / record["control_prepared"][0]["path"]) as control:
        edges = np.asarray(control.convert("RGB")).astype(int)
    assert np.abs(left - output).mean() < np.abs(left - edges).mean()  # the output on the left ...
    assert np.abs(right - edges).mean() < np.abs(right - output).mean()  # ... and the edges on the right
    # a control image that is a link out of the folder is not drawn: the cell is the output alone
    control_file = run_dir / record["control_prepared"][0]["path"]
    control_file.unlink()
    control_file.symlink_to(tmp_path / "elsewhere.png")
    Image.new("RGB", (64, 64), (255, 0, 0)).save(tmp_path / "elsewhere.png")
    alone = tile(run_dir, item)
    assert isinstance(alone, Image.Image) and alone.size == (cell.height, cell.height)


def test_canny_finds_the_edges_of_a_square() -> None:
    image = np.zeros((32, 32), np.uint8)
    image[8:24, 8:24] = 255
    edges = control.canny(image, 100, 200) > 0
    assert edges[8:24, 7:9].any(axis=1).all() and edges[8:24, 23:25].any(axis=1).all()  # left and right sides
    assert not edges[12:20, 12:20].any() and not edges[:4].any()  # nothing inside or far outside
    assert np.array_equal(control.canny(image, 100, 200), control.canny(image.copy(), 100, 200))


@pytest.mark.parametrize(("preset", "base_model"), [("tiny_sd_ip_adapter", ["provider=tiny_sd"]),
                                                    ("tiny_flux_ip_adapter", ["provider=tiny_flux",
                                                                              "generation.num_inference_steps=4"])])
def test_ip_adapter_scale_zero_is_the_base_model(tmp_path: Path, preset: str, base_model: list[str]) -> None:
    """Flux's loader takes its image encoder as a model of its own (here the adapter's image_encoder folder, in the
    pipeline's dtype), where the UNet loaders take a folder inside the adapter's repo."""
    run_dir, records = _run([f"provider={preset}", "+sweep.grid.ip_adapter_scale=[0.0,0.5]"], tmp_path / "runs")
    assert read_run_json(run_dir)["cache"]["loads"] == 1
    base_dir, (base,) = _run(base_model, tmp_path / "runs")
    off, on = (_pixels(run_dir, r) for r in records)
    assert np.array_equal(off, _pixels(base_dir, base)) and not np.array_equal(on, off)


@pytest.fixture(scope="module")
def sd_net_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny SD 1.x ControlNet saved as a user's local folder would be (config.json + weights)."""
    from diffsweep.tiny.stable_diffusion import sd_controlnet

    folder = tmp_path_factory.mktemp("sd-controlnet")
    sd_controlnet().save_pretrained(folder)
    return folder


def test_an_sd15_controlnet_on_sdxl_is_refused_before_anything_is_written(sd_net_folder: Path,
                                                                        tmp_path: Path) -> None:
    result = run_cli(["provider=tiny_sdxl", "builder.pipeline=StableDiffusionXLControlNetPipeline",
                      f"+builder.controlnets=[{{model: '{sd_net_folder}'}}]", "+generation.control_image=inputs/example.png",
                      f"output.root={tmp_path / 'runs'}"], cwd=tmp_path)
    assert result.returncode == EXIT_CONFIG, result.stderr
    assert "builder.controlnets[0].model" in result.stderr
    assert "ControlNet for another architecture" in result.stderr and "cross_attention_dim 8" in result.stderr
    assert not (tmp_path / "runs").exists()


def test_control_and_adapter_inputs_that_do_not_fit_are_refused(sd_net_folder: Path, tmp_path: Path) -> None:
    root = tmp_path / "runs"
    two_nets = f"builder.controlnets=[{{model: tiny:sd_controlnet}}, {{model: '{sd_net_folder}'}}]"
    assert "control_image: 1 value(s) for 2 ControlNets" in _refused(["provider=tiny_sd_controlnet", two_nets], root)
    assert "control_mode: 7 is not a control mode of tiny:sdxl_controlnet_union: it has 6" in _refused(
        ["provider=tiny_sdxl_controlnet_union", "generation.control_mode=7"], root)
    assert "has no control modes (it is not a Union model" in _refused(
        ["provider=tiny_flux_controlnet", "+generation.control_mode=1"], root)
    assert "builder.controlnets: StableDiffusionPipeline takes no ControlNet" in _refused(
        ["provider=tiny_sd", "+builder.controlnets=[{model: tiny:sd_controlnet}]"], root)
    assert "builder.ip_adapter.source: tiny:sd_ip_adapter is an IP-Adapter for another architecture" in _refused(
        ["provider=tiny_sdxl", "+builder.ip_adapter={source: tiny:sd_ip_adapter}",
         "+generation.ip_adapter_image=inputs/example.png"], root)
    assert "ip_adapter_scale needs an IP-Adapter loaded" in _refused(["provider=tiny_sd",
                                                                      "+sweep.params.ip_adapter_scale=0.5"], root)
    assert "control_low_threshold 250 is above control_high_threshold 200" in _refused(
        ["provider=tiny_sd_controlnet", "+generation.control_low_threshold=250"], root)
    assert "pip install 'diffsweep[control]'" in _refused(
        ["provider=tiny_sd_controlnet", "generation.control_preprocess=openpose"], root)


REAL_PRESETS = ["sd15_controlnet_canny", "sdxl_controlnet_union", "flux_controlnet_union_pro2",
                "qwen_image_controlnet_union", "flux_dev_nf4", "flux_dev_gguf_q8", "qwen_image_nf4"]


@pytest.mark.parametrize("preset", REAL_PRESETS)
def test_real_presets_compose_validate_and_plan_offline(preset: str, tmp_path: Path) -> None:
    """Their models cannot be had here; their configs still compose, validate and make a plan (a dry run of a
    quantization this machine cannot run says so and plans it)."""
    out = io.StringIO()
    result = run_sweep(compose_config([f"provider={preset}", "dry_run=true"], tmp_path / "runs"), out=out)
    assert result.status == "dry_run" and "nothing written" in out.getvalue()
    described = io.StringIO()
    run_sweep(compose_config([f"provider={preset}", "describe=json"], tmp_path / "runs"), out=described)
    description = json.loads(described.getvalue())
    if "controlnet" in preset:
        assert description["controlnet"]["loaded"] and "control_image" in {p["name"] for p in
                                                                          description["parameters"]}
    else:
        assert description["quantization"]["current"] in ("bnb_nf4", "gguf")
    assert not (tmp_path / "runs").exists()
