"""Wan 2.1 / 2.2 (Wan-AI): text-to-video and image-to-video, including Wan 2.2 TI2V-5B.

| pipeline | inputs | generation params (besides prompt, seed) | defaults |
| --- | --- | --- | --- |
| WanPipeline | - | negative_prompt, guidance_scale, num_inference_steps, height, width, num_frames, max_sequence_length, fps | 832x480, 81 frames, 50 steps, guidance 5.0, 16 fps |
| WanImageToVideoPipeline | image (the first frame) | as WanPipeline | as WanPipeline |

Defaults: frames and guidance are those of Griptape Nodes' Diffusion Pipeline nodes, size and steps diffusers'; `fps` is
consumed by diffsweep (the MP4 writer), not passed to the pipeline. Model-card values live in conf/provider presets.

Load notes: plain `from_pretrained`. One class serves both layouts: Wan 2.1 (one transformer) and Wan 2.2 A14B
(`transformer_2` plus `boundary_ratio` in model_index.json: the second expert denoises the low-noise steps). The VAE,
and the Wan 2.1 I2V CLIP image encoder, are kept in float32 whatever the builder dtype, as the model cards load them
(the pipelines cast latents and pixels to those components' dtypes). Wan 2.1 I2V needs `image_encoder` +
`image_processor`; Wan 2.2 I2V A14B has neither. Wan 2.2's `guidance_scale_2` (low-noise expert) is not exposed: it follows
guidance_scale. Wan 2.2 TI2V-5B is a third layout of the same classes: one 5B transformer, the Wan 2.2 VAE (48 latent
channels, 16x spatial compression) and `expand_timesteps: true` in model_index.json (one timestep per latent token, so
image-to-video keeps the first latent frame as the clean input image); one checkpoint serves WanPipeline (text-to-video)
and WanImageToVideoPipeline (image-to-video, no CLIP image encoder).
diffusers 0.42.1's I2V module calls `ftfy.fix_text` even when ftfy is not installed (WanPipeline skips it then); without
ftfy, diffsweep gives that module the same skip, so prompts are cleaned exactly as WanPipeline cleans them.

Rules (checked at plan time, before anything loads):
- num_frames = 4k+1 (the VAE compresses time 4x after the first frame); diffusers would silently round.
- height and width are multiples of 16 (VAE factor 8 x 2x2 patches), or of 32 for TI2V-5B (VAE factor 16 x 2x2
  patches); diffusers would silently round down. TI2V-5B is recognised by its hub id, its tiny stand-in, or a local
  or cached model_index.json with `expand_timesteps: true`; a TI2V-5B checkpoint under another name that is not yet
  downloaded is held to 16 at plan time, and its items fail at call time (never rounded) when a side is off 32.
- The I2V input image is resized (not cropped) to height x width: match its aspect ratio.

Output: video (`.frames`, np (B,F,H,W,3) in [0,1]), written as MP4 at `fps`; step previews use the "wan" latent
space (its middle latent frame). Batching: a list of prompts with one CPU generator per item
(`num_videos_per_prompt`=1); I2V items share their input image within a call.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from diffsweep.hub import TINY_PREFIX
from diffsweep.providers.base import PipelineSpec, Provider, TinyModel
from diffsweep.tiny import wan as tiny

SIZE_MULTIPLE = 16
TI2V_SIZE_MULTIPLE = 32  # the TI2V-5B VAE compresses 16x, then 2x2 patches
TI2V_MODELS = frozenset({"Wan-AI/Wan2.2-TI2V-5B-Diffusers"})
TI2V_TINY_MODELS = frozenset({"wan22_ti2v"})

_PARAMS = frozenset({"negative_prompt", "guidance_scale", "num_inference_steps", "height", "width", "num_frames",
                     "max_sequence_length", "fps"})
_DEFAULTS = {"height": 480, "width": 832, "num_frames": 81, "num_inference_steps": 50, "guidance_scale": 5.0,
             "fps": 16}


def _spec(name: str, params: frozenset[str]) -> PipelineSpec:
    return PipelineSpec(name, "video", params, _DEFAULTS, multiplier="num_videos_per_prompt",
                        size_multiple=SIZE_MULTIPLE, max_batch=2, latent_space="wan")


class Wan(Provider):
    name = "wan"
    frame_step = 4
    pipelines = {spec.name: spec for spec in (
        _spec("WanPipeline", _PARAMS),
        _spec("WanImageToVideoPipeline", _PARAMS | {"image"}),
    )}
    tiny_models = {name: TinyModel("WanPipeline", factory, {"height": 32, "width": 32, "num_frames": 5},
                                   (5, 32, 32, 3))
                   for name, factory in (("wan", tiny.wan), ("wan22", tiny.wan22), ("wan22_ti2v", tiny.wan22_ti2v))}

    def size_multiple(self, spec: PipelineSpec, builder: Mapping[str, Any] | None) -> int:
        return TI2V_SIZE_MULTIPLE if builder is not None and expands_timesteps(builder) else SIZE_MULTIPLE

    def before_load(self, spec: PipelineSpec) -> None:
        if spec.name != "WanImageToVideoPipeline":
            return
        from diffusers.pipelines.wan import pipeline_wan_i2v  # noqa: PLC0415 - start-up time: torch and diffusers load only with a pipeline
        from diffusers.utils import is_ftfy_available  # noqa: PLC0415 - start-up time: torch and diffusers load only with a pipeline

        if not is_ftfy_available() and not hasattr(pipeline_wan_i2v, "ftfy"):
            pipeline_wan_i2v.ftfy = SimpleNamespace(fix_text=lambda text: text)

    def prepare_call(self, pipe: Any, spec: PipelineSpec, params: Mapping[str, Any]) -> None:
        """Refuse a size the loaded model would round down (a TI2V-5B model the plan could not recognise)."""
        transformer = pipe.transformer if pipe.transformer is not None else pipe.transformer_2
        multiple = pipe.vae_scale_factor_spatial * transformer.config.patch_size[1]
        for key in ("height", "width"):
            if params.get(key) is not None and params[key] % multiple:
                raise ValueError(f"{key} {params[key]} must be a multiple of {multiple} for this model "
                                 f"(VAE factor {pipe.vae_scale_factor_spatial} x 2x2 patches); diffusers would "
                                 f"round it down")

    def after_load(self, pipe: Any, builder: Mapping[str, Any]) -> Any:
        import torch  # noqa: PLC0415 - start-up time: torch and diffusers load only with a pipeline

        for name in ("vae", "image_encoder"):
            component = getattr(pipe, name, None)
            if component is not None:
                component.to(torch.float32)
        return pipe


def expands_timesteps(builder: Mapping[str, Any]) -> bool:
    """Whether the builder's model is the TI2V-5B layout, from what is known without the hub."""
    model = builder["model"]
    if model.startswith(TINY_PREFIX):
        return model.removeprefix(TINY_PREFIX) in TI2V_TINY_MODELS
    if model in TI2V_MODELS:
        return True
    index = Path(model).expanduser() / "model_index.json"
    if not index.is_file():
        from huggingface_hub import try_to_load_from_cache  # noqa: PLC0415 - start-up time: the hub client loads only when a model is looked up

        try:
            cached = try_to_load_from_cache(model, "model_index.json", revision=builder.get("revision"))
        except ValueError:  # not a repo id (e.g. a single-file path)
            return False
        if not isinstance(cached, str):
            return False
        index = Path(cached)
    try:
        return json.loads(index.read_text(encoding="utf-8")).get("expand_timesteps") is True
    except (OSError, ValueError):
        return False


PROVIDER = Wan()
