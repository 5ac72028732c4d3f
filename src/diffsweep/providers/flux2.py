"""Flux.2 (black-forest-labs): [dev] and [klein] text-to-image, optionally conditioned on reference images.

| pipeline | inputs | generation params (besides prompt, seed) | defaults |
| --- | --- | --- | --- |
| Flux2Pipeline | image (optional: a reference image, or a list of them) | guidance_scale, num_inference_steps, height, width, max_sequence_length | 1024x1024, 50 steps, guidance 4.0 |
| Flux2KleinPipeline | image (as Flux2Pipeline) | as Flux2Pipeline | as Flux2Pipeline |

Defaults are diffusers'; the model-card values (klein distilled: 4 steps, guidance 1.0) live in the conf/provider
presets. Both share the Flux.2 transformer, the 32-channel Flux.2 VAE and `Flux2LoraLoaderMixin`; they differ in the
text encoder: [dev] (32B) encodes with Mistral-Small-3.1 (24B) through a Pixtral processor, [klein] (4B/9B) with Qwen3.
[dev] is guidance-distilled (`guidance_scale` is an embedding input); [klein] base models run true CFG when
guidance_scale > 1, the distilled [klein] models (`is_distilled: true` in model_index.json) ignore it above 1 with a
warning, so their presets set 1.0. `caption_upsample_temperature` ([dev] prompt rewriting by the text encoder) and
`text_encoder_out_layers` are not exposed.

Load notes: plain `from_pretrained`; FLUX.2-dev is gated (HF_TOKEN). transformers cannot build the Pixtral processor
of [dev] without torchvision, so Flux2Pipeline fails to load, with a message saying so, where torchvision is not
installed. For the same reason the tiny stand-in is [klein] only (`tiny:flux2_klein`): a tiny [dev] needs a
`PixtralProcessor` as its tokenizer, and transformers refuses to construct one without torchvision, which diffsweep
does not install.

Rules (checked at plan time, before anything loads):
- height and width are multiples of 16 (VAE factor 8 x 2x2 latent patches); diffusers would silently round down.
- max_sequence_length <= 512.
- Each reference image is at least 64 px on each side with an aspect ratio of at most 8 (diffusers refuses others);
  it is cropped to multiples of 16 and scaled to at most 1 MP as conditioning, while the output stays height x width.
  Several references (`image: [a.png, b.png]`) condition one output together, in the order given.

Output: image (`.images`, np (B,H,W,3) in [0,1]); step previews unpack the pipeline's token sequence (raster order of
2x2 latent patches) and unpatchify it to the VAE's channels; the 32 Flux.2 channels use the generic projection.
Batching: a list of prompts with one CPU generator per item (`num_images_per_prompt`=1); items of one call share the
reference images.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from diffsweep.errors import ModelUnavailableError
from diffsweep.inputs import image_size, named_paths
from diffsweep.providers.base import PipelineSpec, Provider, TinyModel
from diffsweep.tiny import flux2 as tiny

SIZE_MULTIPLE = 16
MAX_SEQUENCE_LENGTH = 512
MIN_REFERENCE_SIDE = 64
MAX_REFERENCE_ASPECT = 8

_PARAMS = frozenset({"image", "guidance_scale", "num_inference_steps", "height", "width", "max_sequence_length"})
_DEFAULTS = {"height": 1024, "width": 1024, "num_inference_steps": 50, "guidance_scale": 4.0}


def _spec(name: str) -> PipelineSpec:
    return PipelineSpec(name, "image", _PARAMS, _DEFAULTS, size_multiple=SIZE_MULTIPLE, max_batch=4,
                        image_required=False, max_images=None, latent_space="flux2", max_sequence_length=MAX_SEQUENCE_LENGTH)


class Flux2(Provider):
    name = "flux2"
    pipelines = {spec.name: spec for spec in (_spec("Flux2Pipeline"), _spec("Flux2KleinPipeline"))}
    tiny_models = {"flux2_klein": TinyModel("Flux2KleinPipeline", tiny.flux2_klein,
                                            {"height": 32, "width": 32, "max_sequence_length": 32}, (32, 32, 3))}

    def check_params(self, spec: PipelineSpec, params: Mapping[str, Any],
                     builder: Mapping[str, Any] | None = None) -> list[tuple[str, str]]:
        problems = super().check_params(spec, params, builder)
        if any(key.startswith("image") for key, _ in problems):
            return problems
        for key, path in named_paths("image", params.get("image")):
            width, height = image_size(path)
            if min(width, height) < MIN_REFERENCE_SIDE:
                problems.append((key, f"reference image {path} is {width}x{height}; {spec.name} needs at least "
                                      f"{MIN_REFERENCE_SIDE} px on each side"))
            elif max(width, height) / min(width, height) > MAX_REFERENCE_ASPECT:
                problems.append((key, f"reference image {path} is {width}x{height}; {spec.name} takes aspect "
                                      f"ratios up to {MAX_REFERENCE_ASPECT}:1"))
        return problems

    def preview_unpacker(self, pipe: Any, spec: PipelineSpec, params: Mapping[str, Any]) -> Any:
        """Tokens in raster order of 2x2 latent patches, (B, h*w, 4C) -> (B, 4C, h, w), then the pipeline's own
        `_unpatchify_latents` to the VAE's (B, C, 2h, 2w)."""
        if "height" not in params or "width" not in params:
            return None
        rows = params["height"] // (pipe.vae_scale_factor * 2)
        cols = params["width"] // (pipe.vae_scale_factor * 2)

        def unpack(latents: Any) -> Any:
            grid = latents.permute(0, 2, 1).reshape(latents.shape[0], latents.shape[2], rows, cols)
            return pipe._unpatchify_latents(grid)

        return unpack

    def before_load(self, spec: PipelineSpec) -> None:
        from transformers.utils import is_torchvision_available  # noqa: PLC0415 - start-up time: torch and diffusers load only with a pipeline

        if spec.name == "Flux2Pipeline" and not is_torchvision_available():
            raise ModelUnavailableError(f"{spec.name} needs torchvision: transformers cannot build its Pixtral "
                                        f"processor without it; install the torchvision build matching your torch")


PROVIDER = Flux2()
