"""aMUSEd (open MUSE): masked-token image generation, text to image, image to image and inpainting.

| pipeline                | params (besides prompt, seed)                                 | defaults                  |
| ----------------------- | ------------------------------------------------------------- | ------------------------- |
| all three               | negative_prompt, num_inference_steps, guidance_scale          | 12 steps, guidance 10     |
| `AmusedPipeline`        | + height, width                                               | the checkpoint's          |
| `AmusedImg2ImgPipeline` | + image, strength                                             | strength 0.5              |
| `AmusedInpaintPipeline` | + image, mask_image (white = repaint), strength               | strength 1.0              |

- **Load.** Deprecated in diffusers: the classes live in
  `diffusers.pipelines.deprecated.amused` and a later diffusers may drop them; the provider then reports itself
  unavailable instead of crashing.
- **Sizes.** Multiples of 32: the VQ-VAE downsamples 16x (amused-256/512) and the U-ViT halves the token grid again.
  Unset sizes come from the checkpoint (256 or 512); img2img and inpainting take the input image's size.
- **Output.** image.
- **Batching.** none: a generator list fails (`'list' object has no attribute 'device'`), and one generator shared
  by a batch would make items depend on their batch, so each call makes one image.
- **LoRA.** none in diffusers.
"""

from __future__ import annotations

from diffsweep.providers.base import PipelineSpec, Provider, TinyModel
from diffsweep.tiny import amused as tiny

MODULE = "diffusers.pipelines.deprecated.amused"
_TEXT = frozenset({"negative_prompt", "num_inference_steps", "guidance_scale"})
_DEFAULTS = {"num_inference_steps": 12, "guidance_scale": 10.0}


class Amused(Provider):
    name = "amused"
    pipelines = {spec.name: spec for spec in (
        PipelineSpec("AmusedPipeline", "image", _TEXT | {"height", "width"}, _DEFAULTS, batchable=False,
                       size_multiple=32, lora=False, module=MODULE),
        PipelineSpec("AmusedImg2ImgPipeline", "image", _TEXT | {"image", "strength"},
                       {**_DEFAULTS, "strength": 0.5}, batchable=False, size_multiple=32, lora=False, module=MODULE),
        PipelineSpec("AmusedInpaintPipeline", "image", _TEXT | {"image", "mask_image", "strength"},
                       {**_DEFAULTS, "strength": 1.0}, batchable=False, size_multiple=32, lora=False, module=MODULE),
    )}
    tiny_models = {"amused": TinyModel("AmusedPipeline", tiny.amused, {"height": 32, "width": 32}, (32, 32, 3))}


PROVIDER = Amused()
