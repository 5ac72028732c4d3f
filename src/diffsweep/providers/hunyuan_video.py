"""HunyuanVideo (Tencent): text-to-video with a 13B dual/single-stream DiT.

| pipeline | inputs | generation params (besides prompt, seed) | defaults |
| --- | --- | --- | --- |
| HunyuanVideoPipeline | - | prompt_2, negative_prompt(_2), true_cfg_scale, guidance_scale, num_inference_steps, height, width, num_frames, max_sequence_length, fps | 1280x720, 129 frames, 50 steps, guidance 6.0, true_cfg 1.0, 24 fps |

Defaults are diffusers'; the documented settings (61 frames, 30 steps, 15 fps) live in the conf/provider preset.
`guidance_scale` is the embedded (distilled) guidance; negative_prompt(_2) take effect only with true_cfg_scale > 1
(two transformer passes per step). `prompt_template` keeps diffusers' default (the Llama chat template whose first
95 tokens are cropped).

Load notes: plain `from_pretrained` of the diffusers-format community repo; Llama-3-8B (LLaVA) hidden states and CLIP-L
pooled output condition the transformer.

Rules (checked at plan time, before anything loads):
- num_frames = 4k+1 (the VAE compresses time 4x after the first frame).
- height and width are multiples of 16 (VAE factor 8 x 2x2 patches).

LoRA: `HunyuanVideoLoraLoaderMixin`.

Output: video (`.frames`, np (B,F,H,W,3) in [0,1]), written as MP4 at `fps`; step previews show the middle latent
frame of the (B,C,F,h,w) latents (generic projection). Batching: a list of prompts with one CPU generator per item
(`num_videos_per_prompt`=1).
"""

from __future__ import annotations

from diffsweep.providers.base import PipelineSpec, Provider, TinyModel
from diffsweep.tiny import hunyuan_video as tiny

SIZE_MULTIPLE = 16

_PARAMS = frozenset({"prompt_2", "negative_prompt", "negative_prompt_2", "true_cfg_scale", "guidance_scale",
                     "num_inference_steps", "height", "width", "num_frames", "max_sequence_length", "fps"})
_DEFAULTS = {"height": 720, "width": 1280, "num_frames": 129, "num_inference_steps": 50, "guidance_scale": 6.0,
             "true_cfg_scale": 1.0, "fps": 24}


class HunyuanVideo(Provider):
    name = "hunyuan_video"
    frame_step = 4
    pipelines = {"HunyuanVideoPipeline": PipelineSpec(
        "HunyuanVideoPipeline", "video", _PARAMS, _DEFAULTS, multiplier="num_videos_per_prompt",
        size_multiple=SIZE_MULTIPLE, max_batch=2)}
    tiny_models = {"hunyuan_video": TinyModel("HunyuanVideoPipeline", tiny.hunyuan_video,
                                              {"height": 32, "width": 32, "num_frames": 5, "max_sequence_length": 16},
                                              (5, 32, 32, 3))}


PROVIDER = HunyuanVideo()
