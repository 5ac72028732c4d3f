"""Intermediate previews during denoising from a cheap latent-to-RGB projection, never a VAE decode.

A VAE decode of a large model costs about as much as a denoising step; a (channels x 3) matrix product plus a bias
costs nothing, which is what ComfyUI's "latent2rgb" and A1111's "Approx cheap" previews show while sampling. The
factors apply to latents as a diffusers pipeline holds them while denoising (already scaled, shifted or normalised
for the denoiser): the space ComfyUI fits them in (`process_in`), and they map into [-1, 1] RGB, which
`latents_to_rgb` maps to [0, 255] the way ComfyUI does.

Previews are the latent resolution (no upscaling: that is what keeps them cheap), except that tiny latents are
enlarged by an integer nearest-neighbour factor so that the long side is at least `MIN_PREVIEW_SIDE` pixels.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from diffsweep.providers.base import RGBFactors

log = logging.getLogger(__name__)

MIN_PREVIEW_SIDE = 64
"""Previews smaller than this on their long side are enlarged (nearest neighbour) to be worth looking at."""


# Tables: comfyanonymous/ComfyUI, comfy/latent_formats.py (commit 040a3243468ecefd1f2802592d90458f1ce4d65f).

# ComfyUI class SD15; its comfy/supported_models.py gives SD 2.x (class SD20) the same latent format.
_SD15 = RGBFactors(
    weights=(
        (0.3512, 0.2297, 0.3227),
        (0.3250, 0.4974, 0.2350),
        (-0.2829, 0.1762, 0.2721),
        (-0.2120, -0.2616, -0.7177),
    ),
)

# ComfyUI class SDXL.
_SDXL = RGBFactors(
    weights=(
        (0.3651, 0.4232, 0.4341),
        (-0.2533, -0.0042, 0.1068),
        (0.1076, 0.1111, -0.0362),
        (-0.3165, -0.2492, -0.2188),
    ),
    bias=(0.1084, -0.0175, -0.0011),
)

# ComfyUI class SD3.
_SD3 = RGBFactors(
    weights=(
        (-0.0922, -0.0175, 0.0749),
        (0.0311, 0.0633, 0.0954),
        (0.1994, 0.0927, 0.0458),
        (0.0856, 0.0339, 0.0902),
        (0.0587, 0.0272, -0.0496),
        (-0.0006, 0.1104, 0.0309),
        (0.0978, 0.0306, 0.0427),
        (-0.0042, 0.1038, 0.1358),
        (-0.0194, 0.0020, 0.0669),
        (-0.0488, 0.0130, -0.0268),
        (0.0922, 0.0988, 0.0951),
        (-0.0278, 0.0524, -0.0542),
        (0.0332, 0.0456, 0.0895),
        (-0.0069, -0.0030, -0.0810),
        (-0.0596, -0.0465, -0.0293),
        (-0.1448, -0.1463, -0.1189),
    ),
    bias=(0.2394, 0.2135, 0.1925),
)

# ComfyUI class Flux.
_FLUX = RGBFactors(
    weights=(
        (-0.0346, 0.0244, 0.0681),
        (0.0034, 0.0210, 0.0687),
        (0.0275, -0.0668, -0.0433),
        (-0.0174, 0.0160, 0.0617),
        (0.0859, 0.0721, 0.0329),
        (0.0004, 0.0383, 0.0115),
        (0.0405, 0.0861, 0.0915),
        (-0.0236, -0.0185, -0.0259),
        (-0.0245, 0.0250, 0.1180),
        (0.1008, 0.0755, -0.0421),
        (-0.0515, 0.0201, 0.0011),
        (0.0428, -0.0012, -0.0036),
        (0.0817, 0.0765, 0.0749),
        (-0.1264, -0.0522, -0.1103),
        (-0.0280, -0.0881, -0.0499),
        (-0.1262, -0.0982, -0.0778),
    ),
    bias=(-0.0329, -0.0718, -0.0851),
)

# ComfyUI class Wan21. Qwen-Image's VAE shares this latent space: ComfyUI's comfy/supported_models.py declares
# `class QwenImage` with `latent_format = latent_formats.Wan21`.
_WAN21 = RGBFactors(
    weights=(
        (-0.1299, -0.1692, 0.2932),
        (0.0671, 0.0406, 0.0442),
        (0.3568, 0.2548, 0.1747),
        (0.0372, 0.2344, 0.1420),
        (0.0313, 0.0189, -0.0328),
        (0.0296, -0.0956, -0.0665),
        (-0.3477, -0.4059, -0.2925),
        (0.0166, 0.1902, 0.1975),
        (-0.0412, 0.0267, -0.1364),
        (-0.1293, 0.0740, 0.1636),
        (0.0680, 0.3019, 0.1128),
        (0.0032, 0.0581, 0.0639),
        (-0.1251, 0.0927, 0.1699),
        (0.0060, -0.0633, 0.0005),
        (0.3477, 0.2275, 0.2950),
        (0.1984, 0.0913, 0.1861),
    ),
    bias=(-0.1835, -0.0868, -0.3360),
)

FACTORS: dict[str, RGBFactors] = {
    "sd": _SD15,
    "sdxl": _SDXL,
    "sd3": _SD3,
    "flux": _FLUX,
    "wan": _WAN21,
    "qwen_image": _WAN21,
}
"""Latent space -> its published RGB factors. Any other space, or a channel-count mismatch, uses the fallback."""

LATENT_SPACES: frozenset[str] = frozenset(FACTORS)

def _project(latents: torch.Tensor, factors: RGBFactors) -> torch.Tensor:
    """(B, C, H, W) -> (B, 3, H, W) in [0, 1]: the linear map gives [-1, 1] RGB, mapped as ComfyUI maps it."""
    weights = torch.tensor(factors.weights, dtype=latents.dtype)
    bias = torch.tensor(factors.bias, dtype=latents.dtype).view(1, 3, 1, 1)
    rgb = torch.einsum("bchw,cr->brhw", latents, weights) + bias
    return (rgb + 1) / 2


def _stretch_channels(latents: torch.Tensor) -> torch.Tensor:
    """(B, C, H, W) -> (B, 3, H, W) in [0, 1] for unknown spaces: channels 0..2 (the last repeated when fewer than
    3), each stretched by its own min/max over the image, so any latent shows its structure. Flat channels are 0."""
    picked = latents[:, [min(i, latents.shape[1] - 1) for i in range(3)]]
    low = picked.amin(dim=(2, 3), keepdim=True)
    high = picked.amax(dim=(2, 3), keepdim=True)
    return (picked - low) / (high - low).clamp_min(torch.finfo(picked.dtype).tiny)


@torch.inference_mode()
def latents_to_rgb(latents: torch.Tensor, space: str | RGBFactors | None) -> list[np.ndarray]:
    """(B, C, H, W) or (B, C, F, H, W) unpacked latents -> one uint8 (h, w, 3) array per batch item.

    Video latents show their middle latent frame. Only that frame leaves the device, as float32; the input is never
    modified (a CPU float32 input is read in place, so every step below makes new tensors).
    """
    if latents.ndim == 5:
        latents = latents[:, :, latents.shape[2] // 2]
    if latents.ndim != 4:
        raise ValueError(f"expected (B, C, H, W) or (B, C, F, H, W) latents, got shape {tuple(latents.shape)}")
    frame = latents.to("cpu", torch.float32)
    factors = space if isinstance(space, RGBFactors) else FACTORS.get(space) if space is not None else None
    if factors is not None and len(factors.weights) == frame.shape[1]:
        rgb = _project(frame, factors)
    else:
        rgb = _stretch_channels(frame)
    pixels = (rgb.clamp(0, 1) * 255).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()
    scale = math.ceil(MIN_PREVIEW_SIDE / max(pixels.shape[1:3]))
    if scale > 1:
        pixels = pixels.repeat(scale, axis=1).repeat(scale, axis=2)
    return [np.ascontiguousarray(image) for image in pixels]


def make_callback(
    every: int,
    space: str | RGBFactors | None,
    on_preview: Callable[[int, list[np.ndarray]], None],
    unpack: Callable[[torch.Tensor], torch.Tensor] | None = None,
) -> Callable[[Any, int, Any, dict[str, Any]], dict[str, Any]]:
    """A diffusers `callback_on_step_end(pipe, step, timestep, callback_kwargs)` that, on every `every`-th step
    (step index + 1 divisible by `every`), calls on_preview(step + 1, images) and returns callback_kwargs unchanged.

    `unpack` (the provider's `preview_unpacker`) turns the pipeline's packed latents into (B, C, H, W)/(B, C, F, H, W)
    first. Other steps only test the step index, so previews cost nothing between firings. The pipeline must expose
    "latents" in callback_kwargs (the default `callback_on_step_end_tensor_inputs` of diffusers pipelines). Latents of
    any other layout (a packed family whose provider declares no unpacker) turn previews off for the call with one
    warning: a preview never fails a batch.
    """
    if every < 1:
        raise ValueError(f"previews every {every} steps: must be at least 1 (0 means install no callback)")

    unreadable: list[tuple[int, ...]] = []

    def callback(pipe: Any, step: int, timestep: Any, callback_kwargs: dict[str, Any]) -> dict[str, Any]:
        if (step + 1) % every == 0 and not unreadable:
            with torch.inference_mode():
                latents = callback_kwargs["latents"]
                latents = unpack(latents) if unpack is not None else latents
                if latents.ndim not in (4, 5):
                    unreadable.append(tuple(latents.shape))
                    log.warning("previews off for this call: latents of shape %s are not (B, C, H, W) or "
                                "(B, C, F, H, W), and the provider declares no preview_unpacker", unreadable[0])
                    return callback_kwargs
                images = latents_to_rgb(latents, space)
            on_preview(step + 1, images)
        return callback_kwargs

    return callback
