"""AudioLDM and AudioLDM2 (cvssp): text to audio.

| pipeline            | params (besides prompt, seed)                                           | defaults           |
| ------------------- | ----------------------------------------------------------------------- | ------------------ |
| `AudioLDMPipeline`  | negative_prompt, num_inference_steps, guidance_scale, audio_length_in_s | 10 steps, 2.5      |
| `AudioLDM2Pipeline` | negative_prompt, num_inference_steps, guidance_scale, audio_length_in_s | 200 steps, 3.5     |

- **Load.** `AudioLDMPipeline` is deprecated in diffusers and lives in
  `diffusers.pipelines.deprecated.audioldm`; a later diffusers may drop it, and the provider then reports it
  unavailable instead of crashing. `AudioLDM2Pipeline` is current.
- **Length.** Unset `audio_length_in_s` comes from the checkpoint (5.12 s for AudioLDM, 10.24 s for AudioLDM2); the
  pipeline rounds the mel length up to what the VAE takes and cuts the waveform back to the requested length.
  Height, width and frames do not apply and are refused.
- **Output.** audio: a waveform per item; the sample rate is the vocoder's (16 kHz for the cvssp checkpoints).
- **Batching.** prompt lists, `num_waveforms_per_prompt` and generator lists all work, one generator per item.
  diffsweep always asks for one waveform per prompt, so AudioLDM2 never re-ranks candidates with CLAP.
- **LoRA.** none in diffusers.
"""

from __future__ import annotations

from diffsweep.providers.base import PipelineSpec, Provider, TinyModel
from diffsweep.tiny import audioldm as tiny

_PARAMS = frozenset({"negative_prompt", "num_inference_steps", "guidance_scale", "audio_length_in_s"})
_WAVEFORMS = "num_waveforms_per_prompt"


class AudioLDM(Provider):
    name = "audioldm"
    pipelines = {spec.name: spec for spec in (
        PipelineSpec("AudioLDMPipeline", "audio", _PARAMS, {"num_inference_steps": 10, "guidance_scale": 2.5},
                       multiplier=_WAVEFORMS, lora=False, module="diffusers.pipelines.deprecated.audioldm"),
        PipelineSpec("AudioLDM2Pipeline", "audio", _PARAMS, {"num_inference_steps": 200, "guidance_scale": 3.5},
                     multiplier=_WAVEFORMS, lora=False),
    )}
    parameters = {"audio_length_in_s": {"type": ["number", "null"], "exclusiveMinimum": 0, "maximum": 600}}
    tiny_models = {"audioldm": TinyModel("AudioLDMPipeline", tiny.audioldm, {}, (256,)),
                   "audioldm2": TinyModel("AudioLDM2Pipeline", tiny.audioldm2, {}, (256,))}


PROVIDER = AudioLDM()
