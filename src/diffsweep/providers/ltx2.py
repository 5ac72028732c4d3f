"""LTX-2 (Lightricks): text-to-video and image-to-video with synchronised sound, from one DiT over video and audio.

| pipeline | inputs | generation params (besides prompt, seed) | defaults |
| --- | --- | --- | --- |
| LTX2Pipeline | - | negative_prompt, guidance_scale, audio_guidance_scale, stg_scale, modality_scale, num_inference_steps, height, width, num_frames, max_sequence_length, decode_timestep, decode_noise_scale, fps | 768x512, 121 frames, 30 steps, guidance 3.0, 24 fps |
| LTX2ImageToVideoPipeline | image (the first frame) | as LTX2Pipeline | as LTX2Pipeline |

Defaults are diffusers' (its `__call__` follows the LTX-2.5 reference: audio guidance 7.0, STG 1.0 on block 28,
modality guidance 3.0, guidance rescale 0.7, which diffsweep leaves as they are); the documented LTX-2 settings live
in the conf/provider presets.
`num_frames` is always given (121 by default): diffusers' duration head, which picks a length from the prompt, is an
optional component these presets do not load, so the record's frame count is the one asked for. `fps` is both the
MP4's frame rate and the pipeline's `frame_rate`, which sets the audio's length (num_frames / fps seconds) and scales
the transformer's temporal positions, so the conditioning, the sound and the file always agree.

Load notes: plain `from_pretrained` (a 19B audio-video DiT, Gemma 3 12B as the text encoder with text connectors,
a video VAE compressing 32x in space and 8x in time, an audio VAE over mel spectrograms and a vocoder). The optional
processor, prompt enhancer and duration head are left out.

Rules (checked at plan time, before anything loads):
- num_frames = 8k+1 (the VAE compresses time 8x after the first frame).
- height and width are multiples of 32 (diffusers refuses others).
- max_sequence_length <= 1024 (diffusers' default Gemma prompt length).
- The I2V input image is resized to height x width (diffusers first re-compresses it as one H.264 frame, as the model
  was trained).

LoRA: `LTX2LoraLoaderMixin` on both pipelines.

Output: video with sound (`.frames`, np (B,F,H,W,3) in [0,1], and `.audio`, (B, channels, samples) from the vocoder
at its `output_sampling_rate`), written as one MP4: H.264 at `fps` with an AAC track (diffsweep.media). Records state
frames and size, and the sound's samples, sample rate and duration. Step previews unpack the pipeline's video token
sequence with its own `_unpack_latents` and show the middle latent frame (generic projection; the audio latents are
not previewed). Batching: T2V takes a list of prompts with one CPU generator per item (`num_videos_per_prompt`=1);
I2V runs one item per call: diffusers re-compresses a single PIL input image but then encodes image i for
generator i, so a batch of several items cannot be given its image.
"""

from __future__ import annotations

from typing import Any

from diffsweep.providers.base import PipelineSpec, Provider, TinyModel
from diffsweep.providers.ltx import LTX
from diffsweep.tiny import ltx2 as tiny

SIZE_MULTIPLE = 32
MAX_SEQUENCE_LENGTH = 1024

_PARAMS = frozenset({"negative_prompt", "guidance_scale", "audio_guidance_scale", "stg_scale", "modality_scale",
                     "num_inference_steps", "height", "width", "num_frames", "max_sequence_length", "decode_timestep",
                     "decode_noise_scale", "fps"})
# num_frames and fps are diffsweep's to fix: the pipeline would otherwise default to 121 frames at 24 fps anyway
_DEFAULTS = {"height": 512, "width": 768, "num_frames": 121, "num_inference_steps": 30, "guidance_scale": 3.0,
             "fps": 24}


def _spec(name: str, params: frozenset[str], batchable: bool = True) -> PipelineSpec:
    return PipelineSpec(name, "video_audio", params, _DEFAULTS, multiplier="num_videos_per_prompt",
                        batchable=batchable, size_multiple=SIZE_MULTIPLE, max_batch=2,
                        max_sequence_length=MAX_SEQUENCE_LENGTH, frame_rate_param="frame_rate")


def _scale(description: str, minimum: float = 0) -> dict[str, Any]:
    return {"description": description, "type": ["number", "null"], "minimum": minimum}


class LTX2(Provider):
    name = "ltx2"
    frame_step = 8
    pipelines = {spec.name: spec for spec in (
        _spec("LTX2Pipeline", _PARAMS),
        _spec("LTX2ImageToVideoPipeline", _PARAMS | {"image"}, batchable=False),
    )}
    tiny_models = {"ltx2": TinyModel("LTX2Pipeline", tiny.ltx2,
                                     {"height": 32, "width": 32, "num_frames": 9, "max_sequence_length": 16},
                                     (9, 32, 32, 3))}
    parameters = {
        # the decode settings mean what they mean for LTX-Video: one schema for both families
        **{key: LTX.parameters[key] for key in ("decode_timestep", "decode_noise_scale")},
        "audio_guidance_scale": _scale("LTX-2: classifier-free guidance of the sound (null: guidance_scale)"),
        "stg_scale": _scale("LTX-2: spatio-temporal guidance (0 switches it off)"),
        "modality_scale": _scale("LTX-2: modality isolation guidance between picture and sound (1 switches it off)"),
    }

    def param_rules(self, spec: PipelineSpec) -> dict[str, list[str]]:
        rules = super().param_rules(spec)
        rules["fps"] = ["frame rate of the written MP4, also passed as the pipeline's frame_rate: the sound lasts "
                        "num_frames / fps seconds"]
        return rules

    # the video latents are packed as LTX-Video's are (the step callback never sees the audio ones)
    preview_unpacker = LTX.preview_unpacker


PROVIDER = LTX2()
