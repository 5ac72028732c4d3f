"""Allegro (rhymes-ai): text to video.

| pipeline          | params (besides prompt, seed)                                    | defaults                |
| ----------------- | ---------------------------------------------------------------- | ----------------------- |
| `AllegroPipeline` | negative_prompt, num_inference_steps, guidance_scale             | 100 steps, guidance 7.5 |
|                   | num_frames, height, width                                        | the checkpoint's        |
|                   | fps (diffsweep's: the mp4 frame rate, not a pipeline argument)   | 15                      |

- **Load.** `AutoencoderKLAllegro` decodes only tiled, and `enable_tiling()` is a runtime flag that `save_pretrained`
  does not keep, so `after_load` sets it after every load. Unset num_frames/height/width fall back to the checkpoint's
  transformer config (rhymes-ai/Allegro: 88 frames, 720x1280).
- **Tiles**. The VAE decodes tiles of 24 frames x 320 x 320 px that step 16 frames, 200 px
  down and 240 px across; what no tile covers stays flat 0.5 gray, and a clip shorter than one tile crashes or stays
  gray. So, per dimension: one shorter than its tile is decoded as a single tile of its own size (`prepare_call` sets
  `vae.kernel`/`vae.stride` for each call's size, since the pipeline is cached across sizes); a longer one must be
  covered exactly: num_frames 24 + 16k, height 320 + 200k, width 320 + 240k (88x720x1280 fits). Height and width are
  multiples of 16 (VAE x8, transformer patches of 2).
- **Output.** video: frames (F, H, W, 3) in [0, 1]; `fps` only sets the mp4's frame rate.
- **Batching.** none: `__call__` forces `num_videos_per_prompt` to 1 and `tiled_decode` hard-codes a batch of one, so
  each call makes one video from one generator.
- **LoRA.** none in diffusers.
- **Captions.** `clean_caption` stays at the pipeline default; diffusers skips the cleaning (with a warning) where
  beautifulsoup4/ftfy are not installed, so install them for outputs that match the reference implementation.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from diffsweep.providers.base import PipelineSpec, Provider, TinyModel
from diffsweep.tiny import allegro as tiny

FRAMES_PER_LATENT = 4  # AutoencoderKLAllegro.temporal_compression_ratio
# (parameter, tile length, tile step) of AutoencoderKLAllegro's hard-coded tiling (sample_size 320).
TILES = (("num_frames", 24, 16), ("height", 320, 200), ("width", 320, 240))


def tiling(params: Mapping[str, Any]) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """The VAE's (kernel, stride) for one call: the default tile, or one tile spanning a shorter dimension."""
    kernel: list[int] = []
    stride: list[int] = []
    for key, tile, step in TILES:
        size = params[key]
        if size >= tile:
            kernel.append(tile)
            stride.append(step)
            continue
        if key == "num_frames":  # whole latent frames, counted as AllegroPipeline.prepare_latents does
            latent = -(-size // FRAMES_PER_LATENT) if size % 2 == 0 else -(-(size - 1) // FRAMES_PER_LATENT) + 1
            size = latent * FRAMES_PER_LATENT
        kernel.append(size)
        stride.append(size)
    return tuple(kernel), tuple(stride)


class Allegro(Provider):
    name = "allegro"
    pipelines = {spec.name: spec for spec in (
        PipelineSpec("AllegroPipeline", "video",
                     frozenset({"negative_prompt", "num_inference_steps", "guidance_scale", "num_frames", "height",
                                "width"}),
                     {"num_inference_steps": 100, "guidance_scale": 7.5, "fps": 15},
                     multiplier="num_videos_per_prompt", batchable=False, size_multiple=16, lora=False),
    )}
    tiny_models = {"allegro": TinyModel("AllegroPipeline", tiny.allegro, {"height": 32, "width": 32, "num_frames": 24},
                                        (24, 32, 32, 3))}

    def check_params(self, spec: PipelineSpec, params: Mapping[str, Any],
                     builder: Mapping[str, Any] | None = None) -> list[tuple[str, str]]:
        """The base rules, plus: a dimension longer than its tile must be covered by whole tile steps."""
        problems = super().check_params(spec, params, builder)
        for key, tile, step in TILES:
            value = params.get(key)
            if isinstance(value, int) and value > tile and (value - tile) % step:
                low = value - (value - tile) % step
                problems.append((key, f"{key} {value} is not covered by Allegro's VAE tiles ({tile} + {step}k); the "
                                      f"rest would decode as flat gray; nearest: {low} or {low + step}, or below "
                                      f"{tile} (decoded as one tile)"))
        return problems

    def param_rules(self, spec: PipelineSpec) -> dict[str, list[str]]:
        rules = super().param_rules(spec)
        for key, tile, step in TILES:
            rules.setdefault(key, []).append(f"at most {tile} (one VAE tile) or {tile} + {step}k (whole tiles)")
        return rules

    def after_load(self, pipe: Any, builder: Mapping[str, Any]) -> Any:
        """The VAE cannot decode untiled, and the tiling flag is not saved with the model."""
        pipe.vae.enable_tiling()
        return pipe

    def prepare_call(self, pipe: Any, spec: PipelineSpec, params: Mapping[str, Any]) -> None:
        """Tiles for this call's size (unset sizes are the pipeline's own defaults, from the transformer config)."""
        config = pipe.transformer.config
        size = {"num_frames": config.sample_frames * pipe.vae_scale_factor_temporal,
                "height": config.sample_height * pipe.vae_scale_factor_spatial,
                "width": config.sample_width * pipe.vae_scale_factor_spatial, **params}
        pipe.vae.kernel, pipe.vae.stride = tiling(size)


PROVIDER = Allegro()
