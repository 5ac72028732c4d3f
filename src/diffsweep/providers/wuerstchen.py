"""Wuerstchen (warp-ai): text to image in three stages, prior -> decoder -> VQ-GAN, driven as one combined pipeline.

| pipeline                     | params (besides prompt, seed)                               | defaults        |
| ---------------------------- | ----------------------------------------------------------- | --------------- |
| `WuerstchenCombinedPipeline` | prior_num_inference_steps, prior_guidance_scale             | 60 steps, 4.0   |
|                              | num_inference_steps, decoder_guidance_scale (the decoder's) | 12 steps, 0.0   |
|                              | negative_prompt, height, width                              | 512x512         |

- **Load.** Deprecated in diffusers: the classes live in
  `diffusers.pipelines.deprecated.wuerstchen`, and a later diffusers may drop them; the provider then reports itself
  unavailable instead of crashing. A folder saved by diffusers 0.42.1 names its models `["diffusers",
  "WuerstchenPrior"]` etc., which diffusers does not export, so `from_pretrained` fails; checkpoints saved
  before the move name the library `wuerstchen`, the module's old home, which no longer exists. So `before_load`
  (idempotent) registers the three model classes on the `diffusers` module under their own names and exposes the
  deprecated module as `diffusers.pipelines.wuerstchen` again.
- **Sizes.** The prior's latent side is ceil(side / 42.67); the decoder's is int(that x 10.67), must be even (its
  pixel_unshuffle halves it) and is decoded 4x by the VQ-GAN. Multiples of 128 give an even decoder latent that
  decodes to exactly the requested size (side 128 -> latent 32 -> 128 px; 1024 -> 256 -> 1024); 64 gives an odd
  latent (21) and fails, and other sizes come out at another size, so height and width must be multiples of 128.
  Unset sizes are 512.
- **Output.** image.
- **Batching.** prompt lists, `num_images_per_prompt` and generator lists all work, one generator per item.
- **LoRA.** none in diffusers.
"""

from __future__ import annotations

import importlib
import math
from collections.abc import Mapping
from typing import Any

from diffsweep.providers.base import PipelineSpec, Provider, TinyModel
from diffsweep.tiny import wuerstchen as tiny

MODULE = "diffusers.pipelines.deprecated.wuerstchen"
MODEL_CLASSES = ("WuerstchenPrior", "WuerstchenDiffNeXt", "PaellaVQModel")
SIZE_STEP = 128
PRIOR_RESOLUTION_MULTIPLE = 42.67  # WuerstchenPriorPipeline config
DECODER_LATENT_SCALE = 10.67  # WuerstchenDecoderPipeline config
VQGAN_SCALE = 4  # PaellaVQModel: pixel unshuffle 2 x one 2x level


def decoder_latent(side: int) -> int:
    """The decoder latent's side for an image side, computed as the prior and decoder pipelines do."""
    return int(math.ceil(side / PRIOR_RESOLUTION_MULTIPLE) * DECODER_LATENT_SCALE)


def size_problem(key: str, side: int) -> str:
    latent = decoder_latent(side)
    why = (f"an odd decoder latent ({latent}), which the decoder cannot halve" if latent % 2
           else f"a decoder latent of {latent}, decoded to {latent * VQGAN_SCALE} px instead")
    low = side - side % SIZE_STEP
    nearest = f"{low} or {low + SIZE_STEP}" if low else str(SIZE_STEP)
    return f"{key} {side} gives {why}; Wuerstchen sizes are multiples of {SIZE_STEP} (nearest: {nearest})"


class Wuerstchen(Provider):
    name = "wuerstchen"
    pipelines = {spec.name: spec for spec in (
        PipelineSpec("WuerstchenCombinedPipeline", "image",
                       frozenset({"negative_prompt", "height", "width", "prior_num_inference_steps",
                                  "prior_guidance_scale", "num_inference_steps", "decoder_guidance_scale"}),
                       {"prior_num_inference_steps": 60, "prior_guidance_scale": 4.0, "num_inference_steps": 12,
                        "decoder_guidance_scale": 0.0},
                       size_multiple=SIZE_STEP, lora=False, module=MODULE),
    )}
    parameters = {
        "prior_num_inference_steps": {"type": ["integer", "null"], "minimum": 1, "maximum": 1000},
        "prior_guidance_scale": {"type": ["number", "null"], "minimum": 0, "maximum": 100},
        "decoder_guidance_scale": {"type": ["number", "null"], "minimum": 0, "maximum": 100},
    }
    tiny_models = {"wuerstchen": TinyModel("WuerstchenCombinedPipeline", tiny.wuerstchen,
                                           {"height": 128, "width": 128, "prior_num_inference_steps": 2},
                                           (128, 128, 3))}

    def check_params(self, spec: PipelineSpec, params: Mapping[str, Any],
                     builder: Mapping[str, Any] | None = None) -> list[tuple[str, str]]:
        """The base's multiple-of rule, with the reason spelled out for each refused side."""
        off = [k for k in ("height", "width") if isinstance(params.get(k), int) and params[k] % SIZE_STEP]
        problems = [p for p in super().check_params(spec, params, builder) if p[0] not in off]
        return problems + [(key, size_problem(key, params[key])) for key in off]

    def before_load(self, spec: PipelineSpec) -> None:
        import diffusers  # noqa: PLC0415 - start-up time: torch and diffusers load only with a pipeline

        spec.load_class()  # the clear "unavailable" error comes before the model classes are looked up
        module = importlib.import_module(MODULE)
        for name in MODEL_CLASSES:
            setattr(diffusers, name, getattr(module, name))
        diffusers.pipelines.wuerstchen = module


PROVIDER = Wuerstchen()
