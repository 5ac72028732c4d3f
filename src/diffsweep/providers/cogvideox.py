"""CogVideoX (THUDM / zai-org): text-to-video and image-to-video.

| pipeline | inputs | generation params (besides prompt, seed) | defaults |
| --- | --- | --- | --- |
| CogVideoXPipeline | - | negative_prompt, guidance_scale, num_inference_steps, height, width, num_frames, max_sequence_length, fps | 720x480, 49 frames, 50 steps, guidance 6.0, 8 fps |
| CogVideoXImageToVideoPipeline | image (the first frame) | as CogVideoXPipeline | as CogVideoXPipeline |

Defaults are the CogVideoX-2b/5b model cards' (diffusers' own are the same); `fps` is consumed by diffsweep (the MP4
writer). `use_dynamic_cfg` (the 5b cards' cosine CFG schedule) keeps diffusers' default, off.

Load notes: plain `from_pretrained`. CogVideoX-5b-I2V is its own checkpoint (the transformer takes the image latents
as 16 extra input channels); a text-to-video checkpoint does not load as image-to-video.

Rules (checked at plan time, before anything loads):
- num_frames = 8k+1: the VAE compresses time 4x and its decoder, which doubles time twice, gives back exactly the
  frames asked for only when the latent frame count is odd (4k+1 with k odd gives 4k+4 frames).
- height and width are multiples of 16 (VAE factor 8 x 2x2 patches).
- max_sequence_length <= 226, the length the transformer's text embedding was trained with (`max_text_seq_length`).
- The I2V input image is resized to height x width.

LoRA: `CogVideoXLoraLoaderMixin` on both pipelines.

Output: video (`.frames`, np (B,F,H,W,3) in [0,1]), written as MP4 at `fps`. Step previews: the pipeline holds latents
frames-first, (B,F,C,h,w); they are reordered to (B,C,F,h,w) and show the middle latent frame through the generic
projection. Batching: a list of prompts with one CPU generator per item (`num_videos_per_prompt`=1).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from diffsweep.providers.base import PipelineSpec, Provider, TinyModel
from diffsweep.tiny import cogvideox as tiny

SIZE_MULTIPLE = 16
MAX_SEQUENCE_LENGTH = 226

_PARAMS = frozenset({"negative_prompt", "guidance_scale", "num_inference_steps", "height", "width", "num_frames",
                     "max_sequence_length", "fps"})
_DEFAULTS = {"height": 480, "width": 720, "num_frames": 49, "num_inference_steps": 50, "guidance_scale": 6.0,
             "fps": 8}


def _spec(name: str, params: frozenset[str]) -> PipelineSpec:
    return PipelineSpec(name, "video", params, _DEFAULTS, multiplier="num_videos_per_prompt",
                        size_multiple=SIZE_MULTIPLE, max_batch=2,
                        max_sequence_length=MAX_SEQUENCE_LENGTH)


class CogVideoX(Provider):
    name = "cogvideox"
    frame_step = 8
    pipelines = {spec.name: spec for spec in (
        _spec("CogVideoXPipeline", _PARAMS),
        _spec("CogVideoXImageToVideoPipeline", _PARAMS | {"image"}),
    )}
    tiny_models = {"cogvideox": TinyModel("CogVideoXPipeline", tiny.cogvideox,
                                          {"height": 32, "width": 32, "num_frames": 9, "max_sequence_length": 16},
                                          (9, 32, 32, 3))}

    def preview_unpacker(self, pipe: Any, spec: PipelineSpec, params: Mapping[str, Any]) -> Any:
        """Latents are held frames-first, (B, F, C, h, w): reorder to (B, C, F, h, w)."""
        return lambda latents: latents.permute(0, 2, 1, 3, 4)


PROVIDER = CogVideoX()
