"""Flux.1 (black-forest-labs): text-to-image, image-to-image, fill (inpaint/outpaint) and Kontext (edit).

| pipeline | inputs | generation params (besides prompt, seed) | defaults |
| --- | --- | --- | --- |
| FluxPipeline | - | prompt_2, negative_prompt(_2), true_cfg_scale, guidance_scale, num_inference_steps, height, width, max_sequence_length | 1024x1024, 20 steps, guidance 3.5, true_cfg 1.0 |
| FluxImg2ImgPipeline | image | as FluxPipeline + strength | as FluxPipeline + strength 0.3 |
| FluxFillPipeline | image, mask_image (white = repaint) | prompt_2, guidance_scale, num_inference_steps, height, width, strength, max_sequence_length | 1024x1024, 20 steps, guidance 3.5, strength 1.0 |
| FluxKontextPipeline | image (optional) | as FluxPipeline | as FluxPipeline |

Defaults are those of Griptape Nodes' Diffusion Pipeline nodes; the model-card values (schnell: 4 steps, guidance 0;
dev: 28 steps; Kontext: guidance 2.5; Fill: 50 steps, guidance 30) live in the conf/provider presets.

ControlNet: FluxControlNetPipeline with `builder.controlnets` (FluxControlNetModel: InstantX/Shakker-Labs Union-Pro
with `control_mode`, Union-Pro 2.0 without); the control image goes through the VAE like the latents. FluxPipeline and
FluxControlNetPipeline take an IP-Adapter (XLabs' Flux IP-Adapter with its CLIP image encoder).

Load notes: plain `from_pretrained`; FLUX.1-dev, -Fill-dev and -Kontext-dev are gated (HF_TOKEN). The dev models
are guidance-distilled (`guidance_scale` is an embedding input, not CFG); schnell ignores `guidance_scale`.

Rules (checked at plan time, before anything loads):
- height and width are multiples of 16 (VAE factor 8 x 2x2 latent packing); diffusers would silently round down.
  Input images are resized to height x width (which default to 1024x1024, as in diffusers, not to the input's size).
- max_sequence_length <= 512 (the T5 encoder's limit; schnell was trained at 256).

Call notes: negative_prompt(_2) takes effect only together with true_cfg_scale > 1 (true CFG, two transformer passes
per step); diffusers ignores either one alone. Kontext outputs exactly height x width: diffsweep passes
`max_area=height*width`, where diffusers would otherwise rescale every output to about 1 MP; Kontext's input image is
resized to the nearest of its training resolutions (about 1 MP) whatever the output size, unless `auto_resize` is
false (diffusers' `_auto_resize`), which keeps the input at its own size.

Output: image (`.images`, np (B,H,W,3) in [0,1]); step previews use the "flux" latent space. Batching: a list of
prompts with one CPU generator per item (`num_images_per_prompt`=1), so an item's pixels do not depend on its batch;
items that differ in any other parameter (input image, size, steps) run in separate calls.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from diffsweep.conditioning import ControlNetSupport, IPAdapterSupport, TinyPart
from diffsweep.providers.base import PipelineSpec, Provider, TinyModel, pipeline_unpacker
from diffsweep.tiny import flux as tiny

SIZE_MULTIPLE = 16
MAX_SEQUENCE_LENGTH = 512

_TEXT = frozenset({"prompt_2", "negative_prompt", "negative_prompt_2", "true_cfg_scale", "guidance_scale",
                   "num_inference_steps", "height", "width", "max_sequence_length"})
_FILL = frozenset({"prompt_2", "guidance_scale", "num_inference_steps", "height", "width", "strength",
                   "max_sequence_length", "image", "mask_image"})
_IP = frozenset({"ip_adapter_image", "ip_adapter_scale"})
_IP_SUPPORT = IPAdapterSupport("transformer", "joint_attention_dim")
_CONTROL = frozenset({"control_image", "controlnet_conditioning_scale", "control_guidance_start", "control_guidance_end",
                      "control_mode", "control_preprocess", "control_low_threshold", "control_high_threshold"})
# Griptape's Flux ControlNet defaults; Union-Pro takes control_mode, Union-Pro 2.0 has none (its num_mode is null)
_CONTROL_DEFAULTS = {"controlnet_conditioning_scale": 0.7, "control_guidance_start": 0.0, "control_guidance_end": 0.8}
_NET = ControlNetSupport("FluxControlNetModel", "FluxMultiControlNetModel", "transformer",
                         ("attention_head_dim", "num_attention_heads", "joint_attention_dim", "pooled_projection_dim",
                          "in_channels"), modes="num_mode")
_DEFAULTS = {"height": 1024, "width": 1024, "num_inference_steps": 20, "guidance_scale": 3.5}
_TEXT_DEFAULTS = {**_DEFAULTS, "true_cfg_scale": 1.0}


def _spec(name: str, params: frozenset[str], defaults: Mapping[str, Any], **options: Any) -> PipelineSpec:
    return PipelineSpec(name, "image", params, defaults, size_multiple=SIZE_MULTIPLE, max_batch=4, latent_space="flux",
                        max_sequence_length=MAX_SEQUENCE_LENGTH,
                        **options)


class Flux(Provider):
    name = "flux"
    pipelines = {spec.name: spec for spec in (
        _spec("FluxPipeline", _TEXT | _IP, _TEXT_DEFAULTS, ip_adapter=_IP_SUPPORT),
        _spec("FluxControlNetPipeline", _TEXT | _CONTROL | _IP, {**_TEXT_DEFAULTS, **_CONTROL_DEFAULTS},
              controlnet=_NET, ip_adapter=_IP_SUPPORT),
        _spec("FluxImg2ImgPipeline", _TEXT | {"image", "strength"}, {**_TEXT_DEFAULTS, "strength": 0.3}),
        _spec("FluxFillPipeline", _FILL, {**_DEFAULTS, "strength": 1.0}),
        _spec("FluxKontextPipeline", _TEXT | {"image", "auto_resize"}, {**_TEXT_DEFAULTS, "auto_resize": True},
              image_required=False, call_names={"auto_resize": "_auto_resize"}),
    )}
    tiny_models = {"flux": TinyModel("FluxPipeline", tiny.flux,
                                     {"height": 32, "width": 32, "max_sequence_length": 32, "guidance_scale": 3.5},
                                     (32, 32, 3))}
    tiny_parts = {"flux_controlnet": TinyPart("controlnet", "flux", tiny.flux_controlnet),
                  "flux_ip_adapter": TinyPart("ip_adapter", "flux", tiny.flux_ip_adapter)}
    parameters = {"auto_resize": {
        "description": "Kontext: resize the input image to the nearest of its training resolutions (about 1 MP), as "
                       "diffusers does; false keeps the input's own size (rounded down to a multiple of 16)",
        "type": ["boolean", "null"],
    }}

    def call_kwargs(self, spec: PipelineSpec, items: Sequence[Mapping[str, Any]],
                    generators: list[Any]) -> dict[str, Any]:
        kwargs = super().call_kwargs(spec, items, generators)
        if spec.name == "FluxKontextPipeline":
            kwargs["max_area"] = kwargs["height"] * kwargs["width"]
        return kwargs


    def preview_unpacker(self, pipe: Any, spec: PipelineSpec, params: Mapping[str, Any]) -> Any:
        """Latents are held as (B, patches, 4C) sequences of 2x2 patches while denoising."""
        return pipeline_unpacker(pipe, params)


PROVIDER = Flux()
