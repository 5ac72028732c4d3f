"""Stable Diffusion 1.x / 2.x, SDXL and SD3: pipelines, rules and tiny stand-ins."""

from __future__ import annotations

from diffsweep.providers.base import PipelineSpec, Provider, TinyModel
from diffsweep.tiny import stable_diffusion as tiny

_SIZE = frozenset({"height", "width"})
_TEXT = frozenset({"negative_prompt", "num_inference_steps", "guidance_scale"}) | _SIZE
_SD_DEFAULTS = {"num_inference_steps": 30, "guidance_scale": 7.5}
_SDXL_DEFAULTS = {"num_inference_steps": 30, "guidance_scale": 5.0}
_SDXL_TEXT = _TEXT | {"prompt_2", "negative_prompt_2"}
_SD3_TEXT = _SDXL_TEXT | {"max_sequence_length"}
_IMG2IMG = frozenset({"image", "strength"})
_INPAINT = frozenset({"image", "mask_image", "strength"})


class StableDiffusion(Provider):
    name = "stable_diffusion"
    pipelines = {spec.name: spec for spec in (
        PipelineSpec("StableDiffusionPipeline", "image", _TEXT, _SD_DEFAULTS, latent_space="sd"),
        # img2img takes no height/width: its output has the input image's size (diffusers would swallow them)
        PipelineSpec("StableDiffusionImg2ImgPipeline", "image", _TEXT - _SIZE | _IMG2IMG, _SD_DEFAULTS,
                     latent_space="sd", truncates_strength_steps=True),
        PipelineSpec("StableDiffusionInpaintPipeline", "image", _TEXT | _INPAINT, _SD_DEFAULTS, latent_space="sd",
                     truncates_strength_steps=True),
        PipelineSpec("StableDiffusionXLPipeline", "image", _SDXL_TEXT, _SDXL_DEFAULTS, max_batch=4,
                     latent_space="sdxl"),
        PipelineSpec("StableDiffusionXLImg2ImgPipeline", "image", _SDXL_TEXT - _SIZE | _IMG2IMG, _SDXL_DEFAULTS,
                     max_batch=4, latent_space="sdxl", truncates_strength_steps=True),
        PipelineSpec("StableDiffusionXLInpaintPipeline", "image", _SDXL_TEXT | _INPAINT, _SDXL_DEFAULTS,
                     max_batch=4, latent_space="sdxl", truncates_strength_steps=True),
        PipelineSpec("StableDiffusion3Pipeline", "image", _SD3_TEXT,
                     {"num_inference_steps": 28, "guidance_scale": 7.0}, size_multiple=16, max_batch=4, max_sequence_length=512,
                     latent_space="sd3"),
    )}
    tiny_models = {
        "sd": TinyModel("StableDiffusionPipeline", tiny.sd, {"height": 64, "width": 64}, (64, 64, 3)),
        "sd_v2": TinyModel("StableDiffusionPipeline", tiny.sd_v2, {"height": 64, "width": 64}, (64, 64, 3)),
        "sdxl": TinyModel("StableDiffusionXLPipeline", tiny.sdxl, {"height": 64, "width": 64}, (64, 64, 3)),
        "sd3": TinyModel("StableDiffusion3Pipeline", tiny.sd3, {"height": 32, "width": 32, "max_sequence_length": 32},
                         (32, 32, 3)),
    }


PROVIDER = StableDiffusion()
