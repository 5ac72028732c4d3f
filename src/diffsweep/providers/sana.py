"""Sana (NVIDIA Efficient-Large-Model): text-to-image with linear attention, and Sana Sprint (1-4 step distilled).

| pipeline | inputs | generation params (besides prompt, seed) | defaults |
| --- | --- | --- | --- |
| SanaPipeline | - | negative_prompt, guidance_scale, num_inference_steps, height, width, max_sequence_length, use_resolution_binning | 1024x1024, 20 steps, guidance 4.5, binning on |
| SanaSprintPipeline | - | guidance_scale, num_inference_steps, height, width, max_sequence_length, use_resolution_binning | 1024x1024, 2 steps, guidance 4.5, binning on |

Defaults are diffusers' (which are the model cards'); Sprint's `guidance_scale` is an embedding input of the distilled
transformer (no CFG pass, no negative prompt). `complex_human_instruction` (the instruction text diffusers prepends
to every prompt for Gemma) and Sprint's `max_timesteps`/`intermediate_timesteps` keep diffusers' defaults.

Load notes: plain `from_pretrained` of the `*_diffusers` repos; Gemma-2 2B is the text encoder, the DC-AE VAE
compresses 32x.

Rules (checked at plan time, before anything loads):
- height and width are multiples of 32 (the DC-AE factor); diffusers refuses other sizes.
- use_resolution_binning (default on, as in diffusers): the model denoises at the nearest trained size of its class
  (the 512/1024/2048/4096 aspect-ratio bins, chosen by the transformer's sample_size) and the image is resized and
  cropped to height x width afterwards; the file is always height x width. Off, it denoises at height x width. The
  tiny stand-ins (bins of 1024-px classes would make them slow) set it off in their presets.
- max_sequence_length <= 300 (the model cards' prompt length; the instruction tokens come on top).

LoRA: `SanaLoraLoaderMixin` on both pipelines.

Output: image (`.images`, np (B,H,W,3) in [0,1]); step previews show the DC-AE latents through the generic
projection. Batching: a list of prompts with one CPU generator per item (`num_images_per_prompt`=1).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from diffsweep.providers.base import PipelineSpec, Provider, TinyModel
from diffsweep.tiny import sana as tiny

SIZE_MULTIPLE = 32
MAX_SEQUENCE_LENGTH = 300

_COMMON = frozenset({"guidance_scale", "num_inference_steps", "height", "width", "max_sequence_length",
                     "use_resolution_binning"})
_DEFAULTS = {"height": 1024, "width": 1024, "guidance_scale": 4.5, "use_resolution_binning": True}


def _spec(name: str, params: frozenset[str], defaults: Mapping[str, Any]) -> PipelineSpec:
    return PipelineSpec(name, "image", params, defaults, size_multiple=SIZE_MULTIPLE, max_batch=4,
                        max_sequence_length=MAX_SEQUENCE_LENGTH)


class Sana(Provider):
    name = "sana"
    pipelines = {spec.name: spec for spec in (
        _spec("SanaPipeline", _COMMON | {"negative_prompt"}, {**_DEFAULTS, "num_inference_steps": 20}),
        _spec("SanaSprintPipeline", _COMMON, {**_DEFAULTS, "num_inference_steps": 2}),
    )}
    tiny_models = {name: TinyModel(pipeline, factory, {"height": 32, "width": 64, "use_resolution_binning": False},
                                   (32, 64, 3))
                   for name, pipeline, factory in (("sana", "SanaPipeline", tiny.sana),
                                                   ("sana_sprint", "SanaSprintPipeline", tiny.sana_sprint))}
    parameters = {"use_resolution_binning": {
        "description": "Sana: denoise at the nearest trained size of the model's class, then resize to height x width",
        "type": ["boolean", "null"],
    }}


PROVIDER = Sana()
