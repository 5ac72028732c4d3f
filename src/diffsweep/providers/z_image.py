"""Z-Image (Tongyi-MAI): text-to-image, image-to-image and inpainting.

| pipeline | inputs | generation params (besides prompt, seed) | defaults |
| --- | --- | --- | --- |
| ZImagePipeline | - | negative_prompt, guidance_scale, num_inference_steps, height, width, max_sequence_length | 1024x1024, 50 steps, guidance 5.0 |
| ZImageImg2ImgPipeline | image | negative_prompt, guidance_scale, num_inference_steps, strength, max_sequence_length | 50 steps, guidance 5.0, strength 0.6 |
| ZImageInpaintPipeline | image, mask_image (white = repaint) | as Img2Img | as Img2Img, strength 1.0 |

Defaults are diffusers'; the Turbo model-card values (8 denoising steps, guidance 0: it is distilled and needs no
CFG) live in the conf/provider presets. `cfg_normalization` and `cfg_truncation` keep diffusers' defaults (off).

Load notes: plain `from_pretrained` (a 6B single-stream DiT, a Qwen3-4B text encoder and the 16-channel Flux VAE).
Prompts go through the tokenizer's chat template.

Rules (checked at plan time, before anything loads):
- height and width are multiples of 16 (VAE factor 8 x 2x2 patches); diffusers refuses other sizes.
- Img2Img and Inpaint make an image the size of their input and take no height/width: diffusers 0.42.1 reads the
  size from the input image, and a different height/width crashes inside the pipeline. So the input's sides must be
  multiples of 16 (diffusers would otherwise shrink the input silently), and the record names the input (by content
  digest), which fixes the output size. The mask must match the input's size.

LoRA: `ZImageLoraLoaderMixin` on every pipeline.

Output: image (`.images`, np (B,H,W,3) in [0,1]); step previews use the "flux" latent space (Z-Image decodes with
the Flux.1 VAE; ComfyUI's comfy/supported_models.py gives `class ZImage` the Flux latent format), and the latents are
held unpacked, (B,16,h,w). Batching: a list of prompts with one CPU generator per item
(`num_images_per_prompt`=1); img2img/inpaint items share their input image within a call.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from diffsweep.inputs import image_size
from diffsweep.providers.base import PipelineSpec, Provider, TinyModel
from diffsweep.tiny import z_image as tiny

SIZE_MULTIPLE = 16

_COMMON = frozenset({"negative_prompt", "guidance_scale", "num_inference_steps", "max_sequence_length"})
_DEFAULTS = {"num_inference_steps": 50, "guidance_scale": 5.0}


def _spec(name: str, params: frozenset[str], defaults: Mapping[str, Any]) -> PipelineSpec:
    return PipelineSpec(name, "image", params, defaults, size_multiple=SIZE_MULTIPLE, max_batch=4,
                        latent_space="flux")


class ZImage(Provider):
    name = "z_image"
    pipelines = {spec.name: spec for spec in (
        _spec("ZImagePipeline", _COMMON | {"height", "width"}, {**_DEFAULTS, "height": 1024, "width": 1024}),
        _spec("ZImageImg2ImgPipeline", _COMMON | {"image", "strength"}, {**_DEFAULTS, "strength": 0.6}),
        _spec("ZImageInpaintPipeline", _COMMON | {"image", "mask_image", "strength"}, {**_DEFAULTS, "strength": 1.0}),
    )}
    tiny_models = {"z_image": TinyModel("ZImagePipeline", tiny.z_image,
                                        {"height": 32, "width": 32, "max_sequence_length": 32}, (32, 32, 3))}

    def check_params(self, spec: PipelineSpec, params: Mapping[str, Any],
                     builder: Mapping[str, Any] | None = None) -> list[tuple[str, str]]:
        problems = super().check_params(spec, params, builder)
        image = params.get("image")
        if "height" in spec.params or not isinstance(image, str) or any(key == "image" for key, _ in problems):
            return problems
        width, height = image_size(image)
        if width % SIZE_MULTIPLE or height % SIZE_MULTIPLE:
            problems.append(("image", f"input image {image} is {width}x{height}; {spec.name} makes an image of the "
                                      f"input's size, whose sides must be multiples of {SIZE_MULTIPLE} (diffusers "
                                      f"would shrink it to {width - width % SIZE_MULTIPLE}x"
                                      f"{height - height % SIZE_MULTIPLE})"))
        return problems


PROVIDER = ZImage()
