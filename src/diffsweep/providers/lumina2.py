"""Lumina-Image 2.0 (Alpha-VLLM): text-to-image with a unified next-DiT and Gemma-2 prompts.

| pipeline | inputs | generation params (besides prompt, seed) | defaults |
| --- | --- | --- | --- |
| Lumina2Pipeline | - | negative_prompt, guidance_scale, num_inference_steps, height, width, max_sequence_length, cfg_trunc_ratio | 1024x1024, 30 steps, guidance 4.0, cfg_trunc_ratio 1.0 |

Defaults are diffusers'; the model card's values (50 steps, cfg_trunc_ratio 0.25) live in the conf/provider preset.
`cfg_trunc_ratio` is the fraction of the steps that run CFG (the rest run the conditional pass only);
`cfg_normalization` keeps diffusers' default (on) and `system_prompt` its built-in text.

Load notes: plain `from_pretrained` (a 2.6B DiT, Gemma-2 2B, the 16-channel Flux.1 VAE).

Rules (checked at plan time, before anything loads):
- height and width are multiples of 16 (VAE factor 8, which Lumina2Pipeline hard-codes, x 2x2 patches); diffusers
  refuses others.
- max_sequence_length <= 256 (diffusers' default, the card's prompt length).

LoRA: `Lumina2LoraLoaderMixin`.

Output: image (`.images`, np (B,H,W,3) in [0,1]); step previews use the "flux" latent space (the Flux.1 VAE; the
latents are held unpacked, (B,16,h,w)). Batching: a list of prompts with one CPU generator per item
(`num_images_per_prompt`=1).
"""

from __future__ import annotations

from diffsweep.providers.base import PipelineSpec, Provider, TinyModel
from diffsweep.tiny import lumina2 as tiny

SIZE_MULTIPLE = 16
MAX_SEQUENCE_LENGTH = 256

_PARAMS = frozenset({"negative_prompt", "guidance_scale", "num_inference_steps", "height", "width",
                     "max_sequence_length", "cfg_trunc_ratio"})
_DEFAULTS = {"height": 1024, "width": 1024, "num_inference_steps": 30, "guidance_scale": 4.0, "cfg_trunc_ratio": 1.0}


class Lumina2(Provider):
    name = "lumina2"
    pipelines = {"Lumina2Pipeline": PipelineSpec("Lumina2Pipeline", "image", _PARAMS, _DEFAULTS,
                                                 size_multiple=SIZE_MULTIPLE, max_batch=4, latent_space="flux",
                                                 max_sequence_length=MAX_SEQUENCE_LENGTH)}
    tiny_models = {"lumina2": TinyModel("Lumina2Pipeline", tiny.lumina2,
                                        {"height": 32, "width": 64, "max_sequence_length": 32}, (32, 64, 3))}
    parameters = {"cfg_trunc_ratio": {
        "description": "Lumina 2: the fraction of the denoising steps that run classifier-free guidance",
        "type": ["number", "null"], "minimum": 0, "maximum": 1,
    }}


PROVIDER = Lumina2()
