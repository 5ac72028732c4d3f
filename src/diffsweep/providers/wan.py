"""Wan 2.1 / 2.2 (Wan-AI): text-to-video and image-to-video.

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
guidance_scale. The Wan 2.2 TI2V-5B layout (`expand_timesteps`, 16x VAE) is not covered by these rules.
diffusers 0.42.1's I2V module calls `ftfy.fix_text` even when ftfy is not installed (WanPipeline skips it then); without
ftfy, diffsweep gives that module the same skip, so prompts are cleaned exactly as WanPipeline cleans them.

Rules (checked at plan time, before anything loads):
- num_frames = 4k+1 (the VAE compresses time 4x after the first frame); diffusers would silently round.
- height and width are multiples of 16 (VAE factor 8 x 2x2 patches); diffusers would silently round down.
- The I2V input image is resized (not cropped) to height x width: match its aspect ratio.

Output: video (`.frames`, np (B,F,H,W,3) in [0,1]), written as MP4 at `fps`; step previews use the "wan" latent
space (its middle latent frame). Batching: a list of prompts with one CPU generator per item
(`num_videos_per_prompt`=1); I2V items share their input image within a call.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import SimpleNamespace
from typing import Any

from diffsweep.providers.base import PipelineSpec, Provider, TinyModel
from diffsweep.tiny import wan as tiny

SIZE_MULTIPLE = 16
FRAME_STEP = 4  # num_frames = FRAME_STEP * k + 1

_PARAMS = frozenset({"negative_prompt", "guidance_scale", "num_inference_steps", "height", "width", "num_frames",
                     "max_sequence_length", "fps"})
_DEFAULTS = {"height": 480, "width": 832, "num_frames": 81, "num_inference_steps": 50, "guidance_scale": 5.0,
             "fps": 16}


def _spec(name: str, params: frozenset[str]) -> PipelineSpec:
    return PipelineSpec(name, "video", params, _DEFAULTS, multiplier="num_videos_per_prompt",
                        size_multiple=SIZE_MULTIPLE, max_batch=2, latent_space="wan")


class Wan(Provider):
    name = "wan"
    pipelines = {spec.name: spec for spec in (
        _spec("WanPipeline", _PARAMS),
        _spec("WanImageToVideoPipeline", _PARAMS | {"image"}),
    )}
    tiny_models = {name: TinyModel("WanPipeline", factory, {"height": 32, "width": 32, "num_frames": 5},
                                   (5, 32, 32, 3)) for name, factory in (("wan", tiny.wan), ("wan22", tiny.wan22))}

    def check_params(self, spec: PipelineSpec, params: Mapping[str, Any]) -> list[tuple[str, str]]:
        problems = super().check_params(spec, params)
        frames = params.get("num_frames")
        if frames is not None and (frames - 1) % FRAME_STEP:
            low = frames - (frames - 1) % FRAME_STEP
            problems.append(("num_frames", f"num_frames {frames} must be {FRAME_STEP}k+1 for {self.name}; "
                                           f"nearest: {low} or {low + FRAME_STEP}"))
        return problems

    def param_rules(self, spec: PipelineSpec) -> dict[str, list[str]]:
        rules = super().param_rules(spec)
        rules.setdefault("num_frames", []).append(f"{FRAME_STEP}k+1 (e.g. {FRAME_STEP + 1}, {4 * FRAME_STEP + 1}, "
                                                  f"{20 * FRAME_STEP + 1})")
        return rules

    def before_load(self, spec: PipelineSpec) -> None:
        if spec.name != "WanImageToVideoPipeline":
            return
        from diffusers.pipelines.wan import pipeline_wan_i2v
        from diffusers.utils import is_ftfy_available

        if not is_ftfy_available() and not hasattr(pipeline_wan_i2v, "ftfy"):
            pipeline_wan_i2v.ftfy = SimpleNamespace(fix_text=lambda text: text)

    def after_load(self, pipe: Any, builder: Mapping[str, Any]) -> Any:
        import torch

        for name in ("vae", "image_encoder"):
            component = getattr(pipe, name, None)
            if component is not None:
                component.to(torch.float32)
        return pipe


PROVIDER = Wan()
