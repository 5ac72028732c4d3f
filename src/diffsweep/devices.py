"""Device choice, default dtypes and memory readings (the only place that asks torch about hardware)."""

from __future__ import annotations

from typing import Any

import torch

from diffsweep.errors import DiffsweepError

_DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


def resolve_device(name: str) -> torch.device:
    """`auto` picks CUDA, then MPS, then CPU; an explicit accelerator must exist."""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    device = torch.device(name)
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise DiffsweepError(f"device={name}: CUDA is not available on this machine (use device=auto or cpu)")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise DiffsweepError(f"device={name}: only {torch.cuda.device_count()} CUDA device(s) present")
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise DiffsweepError(f"device={name}: MPS is not available on this machine (use device=auto or cpu)")
    return device


def resolve_dtype(name: str, device: torch.device) -> str:
    """`auto` is float32 on CPU, bfloat16 on CUDA cards that support it (else float16), float16 on MPS."""
    if name != "auto":
        return name
    if device.type == "cuda":
        return "bfloat16" if torch.cuda.is_bf16_supported() else "float16"
    if device.type == "mps":
        return "float16"
    return "float32"


def torch_dtype(name: str) -> torch.dtype:
    return _DTYPES[name]


def free_memory_bytes(device: torch.device) -> int | None:
    """Free memory on the device, or None where torch cannot tell (CPU, MPS)."""
    if device.type == "cuda":
        free, _total = torch.cuda.mem_get_info(device)
        return int(free)
    return None


def reset_peak_memory(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def peak_memory_bytes(device: torch.device) -> int | None:
    """Peak allocated accelerator memory since the last reset; CPU: the process's peak RSS."""
    if device.type == "cuda":
        return int(torch.cuda.max_memory_allocated(device))
    try:
        import resource  # noqa: PLC0415 - Unix only

        return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * 1024
    except (ImportError, OSError):
        return None


def can_offload(device: torch.device) -> bool:
    """Model CPU offload needs an accelerator to move models to and from."""
    return device.type != "cpu"


def empty_cache(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.empty_cache()
    elif device.type == "mps":
        torch.mps.empty_cache()


def pipeline_nbytes(pipeline: Any) -> int:
    """Bytes held by the parameters and buffers of a pipeline's torch modules."""
    total = 0
    for component in getattr(pipeline, "components", {}).values():
        if isinstance(component, torch.nn.Module):
            total += sum(t.numel() * t.element_size() for t in component.parameters())
            total += sum(t.numel() * t.element_size() for t in component.buffers())
    return total
