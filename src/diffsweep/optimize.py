"""Speed and memory options (conf/optimization/) applied to a loaded pipeline, each one recorded.

One preset serves every model and device, so an option that does not fit this pipeline or device is
recorded as skipped with the reason instead of failing the run. Every option goes through diffusers'
own API, in an order that keeps them compatible: weight rewrites (fused QKV, channels_last, layerwise
casting) before placement, offload hooks instead of `.to(device)`, the attention backend, compile last.
"""

from __future__ import annotations

import functools
import re
import shutil
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf

from diffsweep import devices
from diffsweep.devices import pipeline_nbytes
from diffsweep.paths import conf_dir

LOSSY_KEYS = ("layerwise_casting", "vae_tiling")
"""Settings that change pixels, so they must join the builder identity; the rest stay out of it."""

FULL_HEADROOM = 1.2
"""Free memory needed per byte of resident weights: activations grow with the model (attention maps, CFG doubling
the batch), about 1.04-1.8x the bf16 weights in published Flux measurements at batch 1 to 16."""
FIXED_HEADROOM_BYTES = 2 * 2**30
"""Fixed room on top: a 1024² VAE decode (~1.5 GiB in half precision), the CUDA context and allocator slack."""
LARGEST_SHARE = 0.8
"""Share of a pipeline's bytes in its largest component when the caller cannot say (SD1.5 UNet ~80%, Flux and SDXL
denoisers ~70-75%): model offload keeps only that component on the accelerator."""

_DENOISER = re.compile(r"(^|_)(unet|transformer|prior|decoder)(_\d+)?$")
_AUTOENCODER_NAMES = frozenset({"vae", "vqvae", "vqgan", "movq"})
_PORTABLE_BACKENDS = frozenset({"native", "_native_math", "_native_flash", "flex"})
"""Attention backends that run through torch's own kernels on any device; the others need CUDA (or NPU/XLA)."""


@dataclass(frozen=True)
class Applied:
    """One line of run.json's optimization record."""

    option: str
    value: Any
    status: str  # "applied" | "skipped"
    detail: str = ""


class _Skip(Exception):
    """An option does not apply to one component; the message is the reason recorded."""


def place_and_optimize(pipe: Any, settings: Mapping[str, Any], device: torch.device) -> list[Applied]:
    """Apply the requested options and put the pipeline on `device` (or install offload hooks instead).

    Only requested options are recorded. Nothing here raises for an unsupported option: it is recorded as skipped
    with the reason, and the pipeline still ends up on `device`.
    """
    records: list[Applied] = []
    if settings.get("auto"):
        free = devices.free_memory_bytes(device)
        total = pipeline_nbytes(pipe)
        choice = choose_auto(total, free, max((_nbytes(m) for m in _modules(pipe).values()), default=0))
        seen = f"{_size(free)} free" if free is not None else f"free memory unknown on {device.type}"
        records.append(Applied("auto", choice, "applied", f"pipeline {_size(total)}, {seen}"))
        # Tiling changes pixels above the VAE's tile size, and identity is fixed before memory
        # is measured: the automatic choice may only pick lossless options.
        settings = {**auto_settings(choice), "vae_tiling": False, "oom_fallback": settings.get("oom_fallback", True)}

    denoisers = {n: m for n, m in _modules(pipe).items() if _DENOISER.search(n)}
    autoencoders = {n: m for n, m in _modules(pipe).items()
                    if n in _AUTOENCODER_NAMES or _is_autoencoder(m)}

    if settings.get("fuse_qkv"):
        records.append(_each("fuse_qkv", True, denoisers | autoencoders, _fuse_qkv))
    if settings.get("channels_last"):
        records.append(_each("channels_last", True, denoisers | autoencoders, _channels_last))
    if settings.get("layerwise_casting"):
        storage = settings["layerwise_casting"]
        records.append(_each("layerwise_casting", storage, denoisers,
                             functools.partial(_layerwise_casting, storage=getattr(torch, storage))))
    if settings.get("vae_slicing"):
        records.append(_each("vae_slicing", True, autoencoders, functools.partial(_vae_mode, mode="slicing")))
    if settings.get("vae_tiling"):
        records.append(_each("vae_tiling", True, autoencoders, functools.partial(_vae_mode, mode="tiling")))

    offload = settings.get("offload") or "none"
    record = _place(pipe, offload, device)
    if record is not None:
        records.append(record)

    backend = settings.get("attention_backend")
    if backend:
        records.append(_attention_backend(backend, denoisers, device))
    compile_how = settings.get("compile") or "none"
    if compile_how != "none":
        records.append(_compile(compile_how, settings.get("compile_mode"), denoisers, device))
    return records


def choose_auto(pipeline_bytes: int, free_bytes: int | None, largest_bytes: int | None = None) -> str:
    """'none' | 'low_vram' | 'lowest_vram' from free accelerator memory against the pipeline's size.

    `none` when the whole pipeline fits with headroom (FULL_HEADROOM × weights + FIXED_HEADROOM_BYTES), `low_vram`
    (model offload) when its largest component does, else `lowest_vram`. Unknown free memory (CPU, MPS) → `none`:
    there is no separate memory to offload from.
    """
    if free_bytes is None:
        return "none"
    if free_bytes >= pipeline_bytes * FULL_HEADROOM + FIXED_HEADROOM_BYTES:
        return "none"
    largest = largest_bytes if largest_bytes is not None else pipeline_bytes * LARGEST_SHARE
    if free_bytes >= largest * FULL_HEADROOM + FIXED_HEADROOM_BYTES:
        return "low_vram"
    return "lowest_vram"


def auto_settings(name: str) -> dict[str, Any]:
    """The settings of preset `name` as conf/optimization/<name>.yaml defines them, its defaults merged under it."""
    group = conf_dir() / "optimization"
    path = group / f"{name}.yaml"
    if not path.is_file():
        presets = ", ".join(sorted(p.stem for p in group.glob("*.yaml")))
        raise ValueError(f"no optimization preset {name!r}; presets: {presets}")
    node = OmegaConf.load(path)
    assert isinstance(node, DictConfig)
    defaults = list(node.pop("defaults", []))
    if "_self_" not in defaults:  # Hydra's rule for group configs: the file overrides what it lists
        defaults.append("_self_")
    parts = [node if entry == "_self_" else OmegaConf.create(auto_settings(entry)) for entry in defaults]
    merged = OmegaConf.to_container(OmegaConf.merge(*parts), resolve=True)
    assert isinstance(merged, dict)
    return {str(key): value for key, value in merged.items()}


def is_oom(error: BaseException) -> bool:
    """Whether a failed call ran out of memory (so a smaller batch or offload may succeed).

    CUDA raises torch.OutOfMemoryError; MPS and CUDA library failures raise RuntimeErrors saying "out of memory";
    the CPU allocator says "can't allocate memory".
    """
    if isinstance(error, torch.OutOfMemoryError):
        return True
    message = str(error)
    return isinstance(error, RuntimeError) and ("out of memory" in message or "can't allocate memory" in message)


# ----- component discovery -------------------------------------------------------------------------------------------
def _modules(pipe: Any) -> dict[str, torch.nn.Module]:
    return {n: m for n, m in getattr(pipe, "components", {}).items() if isinstance(m, torch.nn.Module)}


def _is_autoencoder(model: torch.nn.Module) -> bool:
    from diffusers.models.autoencoders.vae import AutoencoderMixin  # noqa: PLC0415 - start-up time: torch and diffusers load only with a pipeline

    return isinstance(model, AutoencoderMixin)


def _nbytes(module: torch.nn.Module) -> int:
    return sum(t.numel() * t.element_size() for t in [*module.parameters(), *module.buffers()])


def _size(nbytes: int) -> str:
    return f"{nbytes / 2**30:.2f} GiB" if nbytes >= 2**30 else f"{nbytes / 2**20:.1f} MiB"


def _each(option: str, value: Any, models: Mapping[str, torch.nn.Module],
          apply: Callable[[torch.nn.Module], str]) -> Applied:
    """Apply to each component; applied if any took it, the others' reasons kept in the detail."""
    if not models:
        return Applied(option, value, "skipped", "pipeline has no component this applies to")
    done, refused = [], []
    for name, model in models.items():
        try:
            done.append(f"{name}: {apply(model)}")
        except Exception as error:  # noqa: BLE001 - diffusers' refusal is the recorded reason, never a failed run
            reason = str(error) if isinstance(error, _Skip) else f"{type(error).__name__}: {error}"
            refused.append(f"{name}: {reason}")
    return Applied(option, value, "applied" if done else "skipped", "; ".join(done + refused))


# ----- weight rewrites (before placement) ---------------------------------------------------------------------------
def _fuse_qkv(model: Any) -> str:
    """One matmul for Q, K and V; PEFT-wrapped projections would lose their LoRA in the fused copy."""
    if not hasattr(model, "fuse_qkv_projections"):
        raise _Skip(f"{type(model).__name__} has no fuse_qkv_projections")
    if _has_lora(model):
        raise _Skip("LoRA adapters are loaded; fused projections would bypass them")
    model.fuse_qkv_projections()
    fused = sum(1 for m in model.modules() if getattr(m, "fused_projections", False))
    if not fused:
        raise _Skip("no attention layer supports fusion")
    return f"{fused} attention layers fused"


def _has_lora(model: torch.nn.Module) -> bool:
    from peft.tuners.tuners_utils import BaseTunerLayer  # noqa: PLC0415 - start-up time: torch and diffusers load only with a pipeline

    return any(isinstance(m, BaseTunerLayer) for m in model.modules())


def _channels_last(model: torch.nn.Module) -> str:
    convs = sum(1 for m in model.modules() if isinstance(m, torch.nn.Conv2d))
    if not convs:
        raise _Skip("no 2-D convolutions")
    model.to(memory_format=torch.channels_last)  # type: ignore[call-overload]  # torch's stubs omit it
    return f"{convs} conv2d layers"


def _layerwise_casting(model: Any, storage: torch.dtype) -> str:
    """Store weights in fp8 and upcast each layer as it runs; norms and embeddings stay in the compute dtype."""
    if not hasattr(model, "enable_layerwise_casting"):
        raise _Skip(f"{type(model).__name__} has no enable_layerwise_casting")
    if getattr(model, "hf_quantizer", None) is not None:
        raise _Skip("already quantized")
    compute = next(model.parameters()).dtype
    before = _nbytes(model)
    model.enable_layerwise_casting(storage_dtype=storage, compute_dtype=compute)
    return (f"{str(storage).removeprefix('torch.')} storage, {str(compute).removeprefix('torch.')} compute, "
            f"{_size(before)} → {_size(_nbytes(model))}")


def _vae_mode(model: torch.nn.Module, mode: str) -> str:
    """VAE slicing (one image at a time) or tiling (overlapping tiles), where the model implements it."""
    enable = getattr(model, f"enable_{mode}", None)
    if enable is None:
        raise _Skip(f"{type(model).__name__} has no {mode}")
    try:
        enable()
    except NotImplementedError:
        raise _Skip(f"{type(model).__name__} has no {mode}") from None
    return "enabled"


# ----- placement ----------------------------------------------------------------------------------------------------
def _place(pipe: Any, offload: str, device: torch.device) -> Applied | None:
    """Offload hooks replace `.to(device)`; without an accelerator there is nowhere to offload from."""
    if offload == "none":
        pipe.to(device)
        return None
    if device.type == "cpu":
        pipe.to(device)
        return Applied("offload", offload, "skipped", "no accelerator: on cpu the weights already live in host memory")
    try:
        if offload == "model":
            pipe.enable_model_cpu_offload(device=device)
            detail = f"components move to {device} only while they run"
        elif offload == "sequential":
            pipe.enable_sequential_cpu_offload(device=device)
            detail = f"submodules stream to {device} one at a time"
        else:
            stream = device.type == "cuda"
            pipe.enable_group_offload(onload_device=device, offload_device=torch.device("cpu"),
                                      offload_type="block_level", num_blocks_per_group=1, use_stream=stream)
            detail = "block level, 1 block per group" + (", prefetched on a CUDA stream" if stream else "")
    except Exception as error:  # noqa: BLE001 - fall back to plain placement, recorded
        pipe.to(device)
        return Applied("offload", offload, "skipped", f"{type(error).__name__}: {error}; pipeline moved to {device}")
    return Applied("offload", offload, "applied", detail)


# ----- after placement ----------------------------------------------------------------------------------------------
def _attention_backend(backend: str, denoisers: Mapping[str, torch.nn.Module], device: torch.device) -> Applied:
    from diffusers.models.attention_dispatch import AttentionBackendName  # noqa: PLC0415 - start-up time: torch and diffusers load only with a pipeline

    valid = sorted(b.value for b in AttentionBackendName)
    if backend not in valid:
        return Applied("attention_backend", backend, "skipped", f"unknown backend; valid: {', '.join(valid)}")
    if device.type != "cuda" and backend not in _PORTABLE_BACKENDS:
        return Applied("attention_backend", backend, "skipped",
                       f"needs CUDA; on {device.type} use one of {', '.join(sorted(_PORTABLE_BACKENDS))}")

    def apply(model: Any) -> str:
        # set_attention_backend also sets a process-wide default, so call it only where it takes effect
        processors = getattr(model, "attn_processors", {})
        dispatching = sum(1 for p in processors.values() if hasattr(p, "_attention_backend"))
        if not dispatching:
            raise _Skip(f"{type(model).__name__}'s attention calls SDPA directly, not diffusers' backend dispatch")
        model.set_attention_backend(backend)
        return f"{dispatching} attention layers"

    return _each("attention_backend", backend, denoisers, apply)


def _compile(how: str, mode: str | None, denoisers: Mapping[str, torch.nn.Module], device: torch.device) -> Applied:
    """torch.compile in place (the pipeline keeps its module objects); the cost is paid on the first call."""
    if device.type == "cpu" and not any(shutil.which(cxx) for cxx in ("c++", "g++", "clang++")):
        return Applied("compile", how, "skipped", "torch.compile on cpu needs a C++ compiler")
    options: dict[str, Any] = {"mode": mode} if mode else {}
    suffix = f", mode {mode}" if mode else ""

    def apply(model: Any) -> str:
        blocks = tuple(getattr(model, "_repeated_blocks", ()) or ())
        regional = how == "regional" or (how == "auto" and not _is_unet(model))
        if regional and blocks:
            count = sum(1 for m in model.modules() if type(m).__name__ in blocks)
            model.compile_repeated_blocks(fullgraph=True, **options)
            return f"{count} repeated blocks compiled ({', '.join(blocks)}){suffix}"
        # fullgraph=False: a graph break in an arbitrary model costs speed, not the run
        model.compile(**options)
        if how == "auto" and _is_unet(model):
            note = "whole module compiled (a UNet spends most time in convolutions outside its repeated blocks)"
        elif regional:
            note = "no repeated blocks declared, whole module compiled"
        else:
            note = "whole module compiled"
        return note + suffix

    return _each("compile", how, denoisers, apply)


def _is_unet(model: torch.nn.Module) -> bool:
    # Measured on an SD1.5-size UNet (H200, fp16, batch 16): compiling only its transformer blocks
    # gave 1.01x eager, compiling the whole module 1.34x. DiTs are nearly all repeated blocks.
    return "UNet" in type(model).__name__
