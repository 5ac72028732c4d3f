"""LTX-Video (Lightricks): text-to-video and image-to-video.

| pipeline | inputs | generation params (besides prompt, seed) | defaults |
| --- | --- | --- | --- |
| LTXPipeline | - | negative_prompt, guidance_scale, num_inference_steps, height, width, num_frames, max_sequence_length, decode_timestep, decode_noise_scale, fps | 704x512, 161 frames, 50 steps, guidance 3.0, 25 fps |
| LTXImageToVideoPipeline | image (the first frame) | as LTXPipeline | as LTXPipeline |

Defaults are diffusers'; the documented settings for the timestep-aware VAE (0.9.1 and later: decode_timestep 0.03,
decode_noise_scale 0.025, 768x512 at 24 fps) live in the conf/provider presets. `fps` is both the MP4's frame rate and
the pipeline's `frame_rate` (which scales the transformer's temporal positions), so the conditioning and the file
always agree. `guidance_rescale` keeps diffusers' default (0).

Load notes: plain `from_pretrained` (a 2B or 13B DiT, T5-XXL, a video VAE compressing 32x in space and 8x in time).

Rules (checked at plan time, before anything loads):
- num_frames = 8k+1 (the VAE compresses time 8x after the first frame).
- height and width are multiples of 32 (the VAE's spatial factor with 1x1 patches); diffusers refuses others.
- max_sequence_length <= 128 (diffusers' default; the T5 prompt length LTX-Video was trained with).
- The I2V input image is resized to height x width.

LoRA: `LTXVideoLoraLoaderMixin` on both pipelines.

Output: video (`.frames`, np (B,F,H,W,3) in [0,1]), written as MP4 at `fps`. Step previews unpack the pipeline's
token sequence with its own `_unpack_latents` and show the middle latent frame (generic projection). Batching: a list
of prompts with one CPU generator per item (`num_videos_per_prompt`=1); I2V gets its input image once per prompt,
since diffusers encodes image i for prompt i.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from diffsweep.providers.base import PipelineSpec, Provider, TinyModel
from diffsweep.tiny import ltx as tiny

SIZE_MULTIPLE = 32
MAX_SEQUENCE_LENGTH = 128

_PARAMS = frozenset({"negative_prompt", "guidance_scale", "num_inference_steps", "height", "width", "num_frames",
                     "max_sequence_length", "decode_timestep", "decode_noise_scale", "fps"})
_DEFAULTS = {"height": 512, "width": 704, "num_frames": 161, "num_inference_steps": 50, "guidance_scale": 3.0,
             "fps": 25}


def _spec(name: str, params: frozenset[str]) -> PipelineSpec:
    return PipelineSpec(name, "video", params, _DEFAULTS, multiplier="num_videos_per_prompt",
                        size_multiple=SIZE_MULTIPLE, max_batch=2, max_sequence_length=MAX_SEQUENCE_LENGTH,
                        frame_rate_param="frame_rate")


class LTX(Provider):
    name = "ltx"
    frame_step = 8
    pipelines = {spec.name: spec for spec in (
        _spec("LTXPipeline", _PARAMS),
        _spec("LTXImageToVideoPipeline", _PARAMS | {"image"}),
    )}
    tiny_models = {"ltx": TinyModel("LTXPipeline", tiny.ltx,
                                    {"height": 32, "width": 32, "num_frames": 9, "max_sequence_length": 16},
                                    (9, 32, 32, 3))}
    parameters = {name: {"description": description, "type": ["number", "null"], "minimum": 0, "maximum": 1}
                  for name, description in (
                      ("decode_timestep", "LTX-Video: the timestep the timestep-aware VAE decodes at"),
                      ("decode_noise_scale", "LTX-Video: noise mixed into the latents before a timestep-aware decode"))}

    def call_kwargs(self, spec: PipelineSpec, items: Sequence[Mapping[str, Any]],
                    generators: list[Any]) -> dict[str, Any]:
        kwargs = super().call_kwargs(spec, items, generators)
        if spec.name == "LTXImageToVideoPipeline":  # diffusers encodes image i for prompt i
            kwargs["image"] = [kwargs["image"]] * len(items)
        return kwargs

    def preview_unpacker(self, pipe: Any, spec: PipelineSpec, params: Mapping[str, Any]) -> Any:
        """Latents are held as a (B, tokens, C) sequence; the pipeline's own `_unpack_latents` gives (B, C, F, h, w)."""
        if not {"height", "width", "num_frames"} <= params.keys():
            return None
        frames = (params["num_frames"] - 1) // pipe.vae_temporal_compression_ratio + 1
        rows = params["height"] // pipe.vae_spatial_compression_ratio
        cols = params["width"] // pipe.vae_spatial_compression_ratio
        patch, patch_t = pipe.transformer_spatial_patch_size, pipe.transformer_temporal_patch_size
        return lambda latents: pipe._unpack_latents(latents, frames, rows, cols, patch, patch_t)


PROVIDER = LTX()
