"""Chroma (lodestones): text-to-image, image-to-image and inpainting on a Flux.1-schnell-derived 8.9B transformer.

| pipeline | inputs | generation params (besides prompt, seed) | defaults |
| --- | --- | --- | --- |
| ChromaPipeline | - | negative_prompt, guidance_scale, num_inference_steps, height, width, max_sequence_length | 1024x1024, 35 steps, guidance 5.0 |
| ChromaImg2ImgPipeline | image | as ChromaPipeline + strength | as ChromaPipeline + strength 0.9 |
| ChromaInpaintPipeline | image, mask_image (white = repaint) | as Img2Img | 1024x1024, 28 steps, guidance 7.0, strength 0.6 |

Defaults are diffusers'; the model-card values (Chroma1-HD: 40 steps, guidance 3.0 with a negative prompt) live in the
conf/provider presets.

Load notes: plain `from_pretrained`; T5-XXL is the only text encoder (no CLIP). Chroma runs real CFG: guidance_scale > 1
makes two transformer passes per step with negative_prompt (an empty one when not given). ChromaInpaintPipeline takes
a `true_cfg_scale` argument that diffusers 0.42.1 never reads, so it is not a parameter here (a record never claims
a setting the pipeline ignored). ChromaInpaintPipeline in diffusers 0.42.1 also reads
`transformer.config.guidance_embeds`, which Chroma's transformer config does not have (Chroma has no guidance
embedding), so every call fails with an AttributeError; after loading, diffsweep records `guidance_embeds: false`
in the loaded transformer's in-memory config, which is what Chroma is.

Rules (checked at plan time, before anything loads):
- height and width are multiples of 16 (VAE factor 8 x 2x2 latent packing); diffusers would round down with a warning.
  Input images and masks are resized to height x width, so the output is always height x width.
- max_sequence_length <= 512 (the T5 encoder's limit).

LoRA: `FluxLoraLoaderMixin` (Chroma loads Flux-style LoRAs).

Output: image (`.images`, np (B,H,W,3) in [0,1]); step previews use the "flux" latent space (the Flux.1 VAE), unpacked
with the pipeline's own `_unpack_latents`. Batching: a list of prompts with one CPU generator per item
(`num_images_per_prompt`=1); items that differ in any other parameter run in separate calls.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from diffsweep.providers.base import PipelineSpec, Provider, TinyModel, pipeline_unpacker
from diffsweep.tiny import chroma as tiny

SIZE_MULTIPLE = 16
MAX_SEQUENCE_LENGTH = 512

_TEXT = frozenset({"negative_prompt", "guidance_scale", "num_inference_steps", "height", "width",
                   "max_sequence_length"})
_DEFAULTS = {"height": 1024, "width": 1024, "num_inference_steps": 35, "guidance_scale": 5.0}


def _spec(name: str, params: frozenset[str], defaults: Mapping[str, Any]) -> PipelineSpec:
    return PipelineSpec(name, "image", params, defaults, size_multiple=SIZE_MULTIPLE, max_batch=4, latent_space="flux",
                        max_sequence_length=MAX_SEQUENCE_LENGTH)


class Chroma(Provider):
    name = "chroma"
    pipelines = {spec.name: spec for spec in (
        _spec("ChromaPipeline", _TEXT, _DEFAULTS),
        _spec("ChromaImg2ImgPipeline", _TEXT | {"image", "strength"}, {**_DEFAULTS, "strength": 0.9}),
        _spec("ChromaInpaintPipeline", _TEXT | {"image", "mask_image", "strength"},
              {**_DEFAULTS, "num_inference_steps": 28, "guidance_scale": 7.0, "strength": 0.6}),
    )}
    tiny_models = {"chroma": TinyModel("ChromaPipeline", tiny.chroma,
                                       {"height": 32, "width": 32, "max_sequence_length": 32}, (32, 32, 3))}

    def after_load(self, pipe: Any, builder: Mapping[str, Any]) -> Any:
        if "guidance_embeds" not in pipe.transformer.config:  # read by ChromaInpaintPipeline (see the docstring)
            pipe.transformer.register_to_config(guidance_embeds=False)
        return pipe

    def preview_unpacker(self, pipe: Any, spec: PipelineSpec, params: Mapping[str, Any]) -> Any:
        """Latents are held as (B, patches, 4C) sequences of 2x2 patches while denoising, as in Flux.1."""
        return pipeline_unpacker(pipe, params)


PROVIDER = Chroma()
