"""Optimization presets on tiny pipelines (CPU): what each option records, and that lossless ones keep the pixels."""

from __future__ import annotations

import dataclasses
import json
import math
from typing import Any

import diffusers
import jsonschema
import numpy as np
import pytest
import torch

from diffsweep.optimize import (
    FIXED_HEADROOM_BYTES,
    FULL_HEADROOM,
    LARGEST_SHARE,
    LOSSY_KEYS,
    Applied,
    auto_settings,
    choose_auto,
    is_oom,
    place_and_optimize,
)
from diffsweep.paths import conf_dir, schemas_dir
from diffsweep.providers import tiny_factories

pytestmark = pytest.mark.quick  # unit tests: part of make test-fast

CPU = torch.device("cpu")
PRESETS = sorted(p.stem for p in (conf_dir() / "optimization").glob("*.yaml"))
NONE = auto_settings("none")
OFF = {"offload": "none", "compile": "none"}  # the "off" value of the options that are not booleans


def tiny_sd() -> diffusers.StableDiffusionPipeline:
    pipe = diffusers.StableDiffusionPipeline(**tiny_factories()["sd"]())
    pipe.set_progress_bar_config(disable=True)
    return pipe


def settings(**changes: Any) -> dict[str, Any]:
    return {**NONE, **changes}


def by_option(records: list[Applied]) -> dict[str, Applied]:
    return {r.option: r for r in records}


def generate(pipe: Any, size: int = 32) -> np.ndarray:
    """Two items at 32x32: below the tiny VAE's tile size, so tiling must not change a pixel."""
    generators = [torch.Generator("cpu").manual_seed(seed) for seed in (0, 1)]
    with torch.inference_mode():
        return pipe(["a lighthouse", "a fox"], num_inference_steps=2, height=size, width=size, guidance_scale=7.5,
                    generator=generators, output_type="np").images


@pytest.fixture(scope="module")
def none_images() -> np.ndarray:
    pipe = tiny_sd()
    assert place_and_optimize(pipe, NONE, CPU) == []
    return generate(pipe)


# ----- presets ------------------------------------------------------------------------------------------------------
def test_presets_are_valid_optimization_configs() -> None:
    schema = json.loads((schemas_dir() / "config.schema.json").read_text())
    for name in PRESETS:
        jsonschema.validate(auto_settings(name), {"$ref": "#/$defs/optimization", "$defs": schema["$defs"]})
    assert set(LOSSY_KEYS) <= set(schema["$defs"]["optimization"]["properties"])


def test_auto_settings_merges_the_preset_over_its_defaults() -> None:
    fast = auto_settings("fast")
    assert fast.keys() == NONE.keys()
    assert fast | {"name": "none", "channels_last": False, "fuse_qkv": False, "compile": "none",
                   "compile_mode": None, "attention_backend": None} == NONE
    assert fast["compile"] == "auto" and fast["oom_fallback"] is True
    with pytest.raises(ValueError, match="presets: auto, fast"):
        auto_settings("turbo")


@pytest.mark.parametrize("preset", PRESETS)
def test_every_preset_records_each_requested_option_on_cpu(preset: str) -> None:
    wanted = auto_settings(preset)
    pipe = tiny_sd()
    records = by_option(place_and_optimize(pipe, wanted, CPU))
    requested = {k for k, v in wanted.items()
                 if k not in ("name", "compile_mode", "oom_fallback") and v and v != OFF.get(k)}
    assert set(records) == requested
    assert all(p.device == CPU for p in pipe.unet.parameters())
    json.dumps([dataclasses.asdict(r) for r in records.values()])  # run.json can hold them
    if "offload" in records:
        assert records["offload"].status == "skipped" and "no accelerator" in records["offload"].detail
    for option in ("vae_slicing", "vae_tiling", "channels_last", "fuse_qkv", "layerwise_casting", "compile"):
        if option in records:
            assert records[option].status == "applied", records[option]
    if "auto" in records:
        assert records["auto"].value == "none" and "unknown on cpu" in records["auto"].detail
    if "attention_backend" in records:  # the SD UNet's processors call SDPA themselves
        assert records["attention_backend"].status == "skipped"
        assert "backend dispatch" in records["attention_backend"].detail


# ----- pixels -------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("option", ["vae_slicing", "vae_tiling", "channels_last", "fuse_qkv"])
def test_lossless_options_keep_the_pixels(option: str, none_images: np.ndarray) -> None:
    pipe = tiny_sd()
    [record] = place_and_optimize(pipe, settings(**{option: True}), CPU)
    assert record.status == "applied"
    assert np.abs(generate(pipe) - none_images).max() <= 1 / 255


def test_layerwise_casting_stores_fp8_on_cpu_and_changes_pixels_slightly(none_images: np.ndarray) -> None:
    pipe = tiny_sd()
    [record] = place_and_optimize(pipe, settings(layerwise_casting="float8_e4m3fn"), CPU)
    assert record.status == "applied" and "float8_e4m3fn storage, float32 compute" in record.detail
    assert pipe.unet.down_blocks[1].attentions[0].transformer_blocks[0].attn1.to_q.weight.dtype == torch.float8_e4m3fn
    difference = np.abs(generate(pipe) - none_images).max()
    assert 0 < difference < 32 / 255


# ----- options that do not apply -----------------------------------------------------------------------------------
@pytest.mark.parametrize("offload", ["model", "sequential", "group"])
def test_offload_on_cpu_is_skipped_and_the_pipeline_still_placed(offload: str) -> None:
    pipe = tiny_sd()
    [record] = place_and_optimize(pipe, settings(offload=offload), CPU)
    assert (record.option, record.status) == ("offload", "skipped")
    assert "no accelerator" in record.detail
    assert not getattr(pipe, "_all_hooks", None) and pipe.device == CPU


def test_fuse_qkv_refuses_a_unet_carrying_lora() -> None:
    from peft import LoraConfig

    pipe = tiny_sd()
    pipe.unet.add_adapter(LoraConfig(r=2, target_modules=["to_q", "to_k", "to_v"]))
    record = by_option(place_and_optimize(pipe, settings(fuse_qkv=True), CPU))["fuse_qkv"]
    assert "unet: LoRA adapters are loaded" in record.detail
    assert not any(getattr(m, "fused_projections", False) for m in pipe.unet.modules())


def test_models_without_an_option_are_skipped_with_the_reason() -> None:
    pipe = diffusers.WuerstchenCombinedPipeline(**tiny_factories()["wuerstchen"]())
    records = by_option(place_and_optimize(pipe, settings(fuse_qkv=True, vae_slicing=True, vae_tiling=True), CPU))
    assert records["fuse_qkv"].status == "skipped"
    assert "WuerstchenDiffNeXt has no fuse_qkv_projections" in records["fuse_qkv"].detail
    assert records["vae_slicing"] == Applied("vae_slicing", True, "skipped", "vqgan: PaellaVQModel has no slicing")
    assert records["vae_tiling"] == Applied("vae_tiling", True, "skipped", "vqgan: PaellaVQModel has no tiling")


def test_channels_last_skips_video_vaes_and_models_without_convolutions() -> None:
    pipe = diffusers.WanPipeline(**tiny_factories()["wan"]())
    [record] = place_and_optimize(pipe, settings(channels_last=True), CPU)
    assert record.status == "skipped"
    assert "transformer: no 2-D convolutions" in record.detail
    assert "vae: RuntimeError: required rank 4 tensor" in record.detail


@pytest.mark.parametrize(("backend", "detail"), [
    ("flash_attention", "unknown backend; valid: _flash_3"),
    ("flash", "needs CUDA; on cpu use one of _native_flash, _native_math, flex, native"),
])
def test_attention_backend_refusals(backend: str, detail: str) -> None:
    [record] = place_and_optimize(tiny_sd(), settings(attention_backend=backend), CPU)
    assert record.status == "skipped" and record.detail.startswith(detail)


def test_attention_backend_applies_where_the_model_dispatches() -> None:
    pipe = diffusers.FluxPipeline(**tiny_factories()["flux"]())
    [record] = place_and_optimize(pipe, settings(attention_backend="native"), CPU)
    assert record == Applied("attention_backend", "native", "applied", "transformer: 2 attention layers")
    assert {p._attention_backend.value for p in pipe.transformer.attn_processors.values()} == {"native"}


# ----- compile (recorded, not run: a compiled first call takes minutes on CPU) -------------------------------------
def test_regional_compile_compiles_the_repeated_blocks_only() -> None:
    pipe = tiny_sd()
    [record] = place_and_optimize(pipe, settings(compile="regional", compile_mode="default"), CPU)
    assert record == Applied("compile", "regional", "applied",
                             "unet: 4 repeated blocks compiled (BasicTransformerBlock), mode default")
    compiled = {type(m).__name__ for m in pipe.unet.modules() if getattr(m, "_compiled_call_impl", None)}
    assert compiled == {"BasicTransformerBlock"}


def test_regional_compile_falls_back_to_the_whole_module() -> None:
    pipe = diffusers.StableDiffusion3Pipeline(**tiny_factories()["sd3"]())
    [record] = place_and_optimize(pipe, settings(compile="regional"), CPU)
    assert record.detail == "transformer: no repeated blocks declared, whole module compiled"
    assert pipe.transformer._compiled_call_impl is not None


def test_auto_compile_is_whole_module_for_unets_and_regional_for_transformers() -> None:
    unet_pipe = tiny_sd()
    [record] = place_and_optimize(unet_pipe, settings(compile="auto"), CPU)
    assert record.detail.startswith("unet: whole module compiled (a UNet spends most time in convolutions")
    assert unet_pipe.unet._compiled_call_impl is not None
    flux = diffusers.FluxPipeline(**tiny_factories()["flux"]())
    [record] = place_and_optimize(flux, settings(compile="auto"), CPU)
    assert "repeated blocks compiled" in record.detail


def test_full_compile_compiles_each_denoiser_in_place() -> None:
    pipe = diffusers.WanPipeline(**tiny_factories()["wan22"]())
    [record] = place_and_optimize(pipe, settings(compile="full"), CPU)
    assert record.detail == "transformer: whole module compiled; transformer_2: whole module compiled"
    assert pipe.transformer._compiled_call_impl is not None and pipe.transformer_2._compiled_call_impl is not None


@pytest.mark.slow
def test_regional_compile_keeps_the_pixels(none_images: np.ndarray) -> None:
    pipe = tiny_sd()
    place_and_optimize(pipe, settings(compile="regional"), CPU)
    assert np.abs(generate(pipe) - none_images).max() <= 1 / 255


# ----- auto and OOM -------------------------------------------------------------------------------------------------
def test_choose_auto_boundaries() -> None:
    gib = 2**30
    size, largest = 10 * gib, 6 * gib
    fits_all = math.ceil(size * FULL_HEADROOM + FIXED_HEADROOM_BYTES)
    fits_largest = math.ceil(largest * FULL_HEADROOM + FIXED_HEADROOM_BYTES)
    assert choose_auto(size, None) == "none"
    assert choose_auto(size, fits_all) == "none"
    assert choose_auto(size, fits_all - 1, largest) == "low_vram"
    assert choose_auto(size, fits_largest, largest) == "low_vram"
    assert choose_auto(size, fits_largest - 1, largest) == "lowest_vram"
    default_largest = math.ceil(size * LARGEST_SHARE * FULL_HEADROOM + FIXED_HEADROOM_BYTES)
    assert choose_auto(size, default_largest) == "low_vram"
    assert choose_auto(size, default_largest - 1) == "lowest_vram"
    assert choose_auto(0, FIXED_HEADROOM_BYTES - 1) == "lowest_vram"  # even a tiny model needs the fixed room


def test_is_oom_on_real_errors() -> None:
    with pytest.raises(RuntimeError) as cpu:
        torch.empty(2**50, dtype=torch.uint8)  # past any address space
    assert is_oom(cpu.value)
    assert is_oom(torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB"))
    assert is_oom(torch.cuda.OutOfMemoryError("CUDA out of memory."))
    assert is_oom(RuntimeError("MPS backend out of memory (MPS allocated: 17.00 GB, other allocations: 1.2 GB, "
                               "max allowed: 18.13 GB). Tried to allocate 256.00 MB on private pool."))
    with pytest.raises(RuntimeError) as shapes:
        torch.ones(2, 3) @ torch.ones(2, 3)
    assert not is_oom(shapes.value)
    assert not is_oom(ValueError("out of memory"))
