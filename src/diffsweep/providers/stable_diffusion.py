"""Stable Diffusion 1.x / 2.x, SDXL and SD3: pipelines, rules and tiny stand-ins.

ControlNet pipelines take `builder.controlnets` (ControlNetModel for SD 1.x/2.x and SDXL, ControlNetUnionModel for
SDXL Union with `control_mode`, SD3ControlNetModel for SD3); a net must match the base UNet's text width and added
embeddings (an SD 1.5 net on SDXL is refused before loading). SD 1.x/2.x and SDXL pipelines take an IP-Adapter
(`builder.ip_adapter`, `ip_adapter_image`, `ip_adapter_scale`).
"""

from __future__ import annotations

from diffsweep.conditioning import ControlNetSupport, IPAdapterSupport, TinyPart
from diffsweep.providers.base import PipelineSpec, Provider, TinyModel
from diffsweep.tiny import stable_diffusion as tiny

_SIZE = frozenset({"height", "width"})
_TEXT = frozenset({"negative_prompt", "num_inference_steps", "guidance_scale"}) | _SIZE
_SD_DEFAULTS = {"num_inference_steps": 30, "guidance_scale": 7.5}
_SDXL_DEFAULTS = {"num_inference_steps": 30, "guidance_scale": 5.0}
_SDXL_TEXT = _TEXT | {"prompt_2", "negative_prompt_2"}
_SD3_TEXT = _SDXL_TEXT | {"max_sequence_length"}
_IMG2IMG = frozenset({"image", "strength"})
# the ensemble of experts (base `denoising_end` + output_type="latent", refiner `denoising_start`)
_DENOISE_END = frozenset({"denoising_end"})
_DENOISE_BOTH = frozenset({"denoising_start", "denoising_end"})
_FRACTION = {"type": ["number", "null"], "exclusiveMinimum": 0, "exclusiveMaximum": 1}
_INPAINT = frozenset({"image", "mask_image", "strength"})
# ControlNet parameters; control_preprocess and its thresholds are diffsweep's (diffsweep.control)
_CONTROL = frozenset({"control_image", "controlnet_conditioning_scale", "control_guidance_start", "control_guidance_end",
                      "control_preprocess", "control_low_threshold", "control_high_threshold"})
_CONTROL_DEFAULTS = {"controlnet_conditioning_scale": 1.0, "control_guidance_start": 0.0, "control_guidance_end": 1.0}
_IP = frozenset({"ip_adapter_image", "ip_adapter_scale"})
_IP_SUPPORT = IPAdapterSupport("unet", "cross_attention_dim")
# a net's text width and added embeddings tell SD 1.x (768, none), 2.x (1024, none) and SDXL (2048, text_time) apart
_UNET_MATCH = ("cross_attention_dim", "addition_embed_type", "in_channels")
_NET = ControlNetSupport("ControlNetModel", "MultiControlNetModel", "unet", _UNET_MATCH)
_UNION = ControlNetSupport("ControlNetUnionModel",
                           "diffusers.models.controlnets.multicontrolnet_union.MultiControlNetUnionModel", "unet",
                           _UNET_MATCH, modes="num_control_type")
_SD3_NET = ControlNetSupport("SD3ControlNetModel", "SD3MultiControlNetModel", "transformer",
                             ("joint_attention_dim", "attention_head_dim", "num_attention_heads",
                              "caption_projection_dim", "pooled_projection_dim"))
_IMAGE_IS_CONTROL = {"control_image": "image"}  # SD and SDXL ControlNet pipelines call the control image `image`


class StableDiffusion(Provider):
    name = "stable_diffusion"
    parameters = {
        "denoising_end": {**_FRACTION, "description": "SDXL: stop denoising at this fraction of the schedule (the "
                                                      "base of an ensemble of experts; high_noise_frac)"},
        "denoising_start": {**_FRACTION, "description": "SDXL img2img: start denoising at this fraction (the "
                                                        "refiner of an ensemble of experts; high_noise_frac)"},
    }
    pipelines = {spec.name: spec for spec in (
        PipelineSpec("StableDiffusionPipeline", "image", _TEXT | _IP, _SD_DEFAULTS, latent_space="sd",
                     ip_adapter=_IP_SUPPORT, latents_out=True),
        # img2img takes no height/width: its output has the input image's size (diffusers would swallow them)
        PipelineSpec("StableDiffusionImg2ImgPipeline", "image", _TEXT - _SIZE | _IMG2IMG | _IP, _SD_DEFAULTS,
                     latent_space="sd", truncates_strength_steps=True, ip_adapter=_IP_SUPPORT, latents_out=True,
                     latents_in="image"),
        PipelineSpec("StableDiffusionInpaintPipeline", "image", _TEXT | _INPAINT | _IP, _SD_DEFAULTS, latent_space="sd",
                     truncates_strength_steps=True, ip_adapter=_IP_SUPPORT),
        PipelineSpec("StableDiffusionControlNetPipeline", "image", _TEXT | _CONTROL | _IP,
                     {**_SD_DEFAULTS, **_CONTROL_DEFAULTS}, latent_space="sd", controlnet=_NET,
                     ip_adapter=_IP_SUPPORT, call_names=_IMAGE_IS_CONTROL),
        PipelineSpec("StableDiffusionXLPipeline", "image", _SDXL_TEXT | _IP | _DENOISE_END, _SDXL_DEFAULTS, max_batch=4,
                     latent_space="sdxl", ip_adapter=_IP_SUPPORT, latents_out=True),
        PipelineSpec("StableDiffusionXLImg2ImgPipeline", "image", _SDXL_TEXT - _SIZE | _IMG2IMG | _IP | _DENOISE_BOTH,
                     _SDXL_DEFAULTS, max_batch=4, latent_space="sdxl", truncates_strength_steps=True,
                     ip_adapter=_IP_SUPPORT, latents_out=True, latents_in="image"),
        PipelineSpec("StableDiffusionXLInpaintPipeline", "image", _SDXL_TEXT | _INPAINT | _IP, _SDXL_DEFAULTS,
                     max_batch=4, latent_space="sdxl", truncates_strength_steps=True, ip_adapter=_IP_SUPPORT),
        PipelineSpec("StableDiffusionXLControlNetPipeline", "image", _SDXL_TEXT | _CONTROL | _IP,
                     {**_SDXL_DEFAULTS, **_CONTROL_DEFAULTS}, max_batch=4, latent_space="sdxl", controlnet=_NET,
                     ip_adapter=_IP_SUPPORT, call_names=_IMAGE_IS_CONTROL),
        PipelineSpec("StableDiffusionXLControlNetUnionPipeline", "image", _SDXL_TEXT | _CONTROL | _IP | {"control_mode"},
                     {**_SDXL_DEFAULTS, **_CONTROL_DEFAULTS}, max_batch=4, latent_space="sdxl", controlnet=_UNION,
                     ip_adapter=_IP_SUPPORT),
        PipelineSpec("StableDiffusion3Pipeline", "image", _SD3_TEXT,
                     {"num_inference_steps": 28, "guidance_scale": 7.0}, size_multiple=16, max_batch=4, max_sequence_length=512,
                     latent_space="sd3"),
        PipelineSpec("StableDiffusion3ControlNetPipeline", "image", _SD3_TEXT | _CONTROL,
                     {"num_inference_steps": 28, "guidance_scale": 7.0, **_CONTROL_DEFAULTS}, size_multiple=16,
                     max_batch=4, max_sequence_length=512, latent_space="sd3", controlnet=_SD3_NET),
    )}
    tiny_models = {
        "sd": TinyModel("StableDiffusionPipeline", tiny.sd, {"height": 64, "width": 64}, (64, 64, 3)),
        "sd_v2": TinyModel("StableDiffusionPipeline", tiny.sd_v2, {"height": 64, "width": 64}, (64, 64, 3)),
        "sdxl": TinyModel("StableDiffusionXLPipeline", tiny.sdxl, {"height": 64, "width": 64}, (64, 64, 3)),
        "sd3": TinyModel("StableDiffusion3Pipeline", tiny.sd3, {"height": 32, "width": 32, "max_sequence_length": 32},
                         (32, 32, 3)),
    }
    tiny_parts = {
        "sd_controlnet": TinyPart("controlnet", "sd", tiny.sd_controlnet),
        "sdxl_controlnet_union": TinyPart("controlnet", "sdxl", tiny.sdxl_controlnet_union),
        "sd3_controlnet": TinyPart("controlnet", "sd3", tiny.sd3_controlnet),
        "sd_ip_adapter": TinyPart("ip_adapter", "sd", tiny.sd_ip_adapter),
    }


PROVIDER = StableDiffusion()
