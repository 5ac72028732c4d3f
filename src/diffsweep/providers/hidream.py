"""HiDream-I1 (HiDream.ai): text-to-image with a sparse mixture-of-experts DiT and four text encoders.

| pipeline | inputs | generation params (besides prompt, seed) | defaults |
| --- | --- | --- | --- |
| HiDreamImagePipeline | - | negative_prompt, guidance_scale, num_inference_steps, height, width | 1024x1024, 50 steps, guidance 5.0 |

Defaults are diffusers'; the model cards' values (Full: 50 steps, guidance 5.0; Dev: 28 steps, no CFG; Fast: 16 steps,
no CFG) live in the conf/provider presets. The prompt goes to all four encoders (CLIP-L, CLIP-G, T5-XXL, Llama 3.1);
`prompt_2`..`prompt_4` and their negatives are not exposed, and `max_sequence_length` keeps diffusers' 128: all four
cut a prompt at 128 tokens, the CLIP ones too (past their tokenizers' own model_max_length, which diffsweep sets to that
cut after loading so that an item records what the CLIP and T5 tokenizers cut; the Llama's cut is not measured).

Size: HiDreamImagePipeline does not make the asked size. It rescales height x width to a fixed area, the square of
128 latent pixels x the VAE factor (1024x1024 px on the published models), keeping the aspect ratio and rounding each
side down to a multiple of 2 x the VAE factor: height and width set the aspect ratio and only approximately the size.
So that no record claims a size that was not made, diffsweep takes only sizes the pipeline keeps as they are (e.g.
1024x1024, 1168x880, 880x1168, 1360x768) and refuses others at plan time, naming what diffusers would make and the
nearest sizes it keeps; the item records also carry the size read off each output (`made`).

Load notes: the diffusers-format repos of HiDream-I1 Full, Dev and Fast ship no fourth encoder; as diffusers' example
does, the presets load Llama-3.1-8B-Instruct (`meta-llama/Llama-3.1-8B-Instruct`, gated: accept its licence on the hub
and set HF_TOKEN) through `builder.components.text_encoder_4` / `tokenizer_4`, which this provider loads with
`LlamaForCausalLM` / `AutoTokenizer` (whatever the base model's index says) and passes to `from_pretrained`. The presets
keep each repo's own scheduler config (`scheduler: null`), which is where the shift of HiDream's inference script
belongs (Full 3.0, Dev 6.0, Fast 3.0); that the configs carry it was not checked without hub access.

Rules (checked at plan time, before anything loads):
- height x width is a size the pipeline keeps (above). The area is 1024x1024 px unless a local model folder's or a
  local `builder.components.vae`'s config says otherwise, or the model is the tiny stand-in (VAE factor 1: 128x128 px);
  the loaded model is checked again before each call, so a size it would change (a hub VAE override of another
  factor) fails the item, never a record.

LoRA: `HiDreamImageLoraLoaderMixin` (transformer only).

Output: image (`.images`, np (B,H,W,3) in [0,1]); step previews use the "flux" latent space (the Flux.1 VAE; the
latents are held unpacked, (B,16,h,w), and patchified inside the transformer). Batching: a list of prompts with one
CPU generator per item (`num_images_per_prompt`=1).
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from diffsweep.errors import ModelUnavailableError
from diffsweep.hub import hub_kwargs
from diffsweep.providers.base import (
    TINY_PREFIX,
    PipelineSpec,
    Provider,
    TinyModel,
    describe_load_failure,
    is_single_file,
    load_components,
)
from diffsweep.tiny import hidream as tiny

LATENT_SIDE = 128  # HiDreamImagePipeline.default_sample_size, hard-coded: the latent area is its square
VAE_FACTOR = 8  # the Flux.1 VAE every published HiDream-I1 checkpoint uses
TINY_VAE_FACTORS = {"hidream": 1}
SUGGESTIONS = 3
CLIP_TOKENS = 128  # where diffusers cuts the CLIP prompts: min(max_sequence_length, 218), max_sequence_length being 128
# The Llama encoder and tokenizer, loaded as diffusers' example loads them, whatever the base model's index says
SEPARATE_LLAMA = {"text_encoder_4": "LlamaForCausalLM", "tokenizer_4": "AutoTokenizer"}

_PARAMS = frozenset({"negative_prompt", "guidance_scale", "num_inference_steps", "height", "width"})
_DEFAULTS = {"height": 1024, "width": 1024, "num_inference_steps": 50, "guidance_scale": 5.0}


def made_size(width: int, height: int, vae_factor: int) -> tuple[int, int]:
    """(width, height) of the image HiDreamImagePipeline makes when asked for width x height: its own arithmetic."""
    division = vae_factor * 2
    scale = math.sqrt((LATENT_SIDE * vae_factor) ** 2 / (width * height))
    return int(width * scale // division * division), int(height * scale // division * division)


def kept_sizes_near(width: int, height: int, vae_factor: int) -> list[tuple[int, int]]:
    """The sizes the pipeline keeps as asked whose aspect ratio is closest to width:height, closest first."""
    division, side = vae_factor * 2, LATENT_SIDE * vae_factor
    kept: set[tuple[int, int]] = set()
    for w in range(division, 4 * side + 1, division):
        low = side * side // w // division * division
        kept.update((w, h) for h in (low - division, low, low + division)
                    if h > 0 and made_size(w, h, vae_factor) == (w, h))
    target = math.log(width / height)
    return sorted(kept, key=lambda size: (abs(math.log(size[0] / size[1]) - target), -size[0] * size[1]))[:SUGGESTIONS]


def size_problem(width: int, height: int, vae_factor: int, spec: str) -> str | None:
    """Why the pipeline would not make width x height, or None when it makes exactly that."""
    made = made_size(width, height, vae_factor)
    if made == (width, height):
        return None
    side = LATENT_SIDE * vae_factor
    near = ", ".join(f"{w}x{h}" for w, h in kept_sizes_near(width, height, vae_factor))
    return (f"width x height {width}x{height} is not a size {spec} makes: it rescales every size to the area of "
            f"{side}x{side} px at the asked aspect ratio, each side a multiple of {2 * vae_factor}, and would make "
            f"{made[0]}x{made[1]}; sizes it keeps near this aspect ratio (width x height): {near}")


def vae_factor(builder: Mapping[str, Any] | None) -> int:
    """The builder's VAE factor, from what is known without the hub: a local VAE override's config, the tiny
    stand-in's, a local model folder's VAE config, else the published models' 8."""
    builder = builder or {}
    model = builder.get("model") or ""
    vae = (builder.get("components") or {}).get("vae")
    if isinstance(vae, Mapping) and isinstance(vae.get("model"), str):
        local = Path(vae["model"]).expanduser() / (vae.get("subfolder") or "")
        return _local_vae_factor(local / "config.json") or VAE_FACTOR
    if model.startswith(TINY_PREFIX):
        return TINY_VAE_FACTORS.get(model.removeprefix(TINY_PREFIX), VAE_FACTOR)
    return _local_vae_factor(Path(model).expanduser() / "vae" / "config.json") or VAE_FACTOR


def _local_vae_factor(config: Path) -> int | None:
    try:
        return 2 ** (len(json.loads(config.read_text(encoding="utf-8"))["block_out_channels"]) - 1)
    except (OSError, ValueError, KeyError, TypeError):
        return None


class HiDream(Provider):
    name = "hidream"
    pipelines = {"HiDreamImagePipeline": PipelineSpec("HiDreamImagePipeline", "image", _PARAMS, _DEFAULTS,
                                                      size_multiple=2 * VAE_FACTOR, max_batch=4, latent_space="flux")}
    tiny_models = {"hidream": TinyModel("HiDreamImagePipeline", tiny.hidream, {"height": 112, "width": 144},
                                        (112, 144, 3))}

    def check_builder(self, builder: Mapping[str, Any]) -> list[tuple[str, str]]:
        """The base checks, except that the base model need not have the Llama slots given in builder.components."""
        return [(key, message) for key, message in super().check_builder(builder)
                if key.removeprefix("builder.components.") not in SEPARATE_LLAMA]

    def from_source(self, spec: PipelineSpec, source: Path | str, builder: Mapping[str, Any], torch_dtype: Any) -> Any:
        """`builder.components.text_encoder_4`/`tokenizer_4` load with LlamaForCausalLM/AutoTokenizer and are passed to
        `from_pretrained`, as in diffusers' example: the published repos ship no Llama."""
        components = builder.get("components") or {}
        separate = {slot: component for slot, component in components.items() if slot in SEPARATE_LLAMA}
        if not separate or is_single_file(source):
            return super().from_source(spec, source, builder, torch_dtype)
        rest = {**builder, "components": {k: v for k, v in components.items() if k not in separate}}
        kwargs = {**hub_kwargs(builder, source), "dtype": torch_dtype, **load_components(rest, source, torch_dtype)}
        kwargs.update({slot: _load_llama_part(slot, component, torch_dtype) for slot, component in separate.items()})
        return spec.load_class().from_pretrained(str(source), **kwargs)

    def after_load(self, pipe: Any, builder: Mapping[str, Any]) -> Any:
        """diffusers cuts the CLIP prompts at 128 tokens whatever the CLIP tokenizers' own model_max_length; the
        prompt-truncation record reads model_max_length, so it is set to the cut diffusers makes (the pipeline never
        reads it)."""
        for slot in ("tokenizer", "tokenizer_2"):
            tokenizer = getattr(pipe, slot, None)
            if tokenizer is not None:
                tokenizer.model_max_length = CLIP_TOKENS
        return pipe

    def size_multiple(self, spec: PipelineSpec, builder: Mapping[str, Any] | None) -> int:
        return 2 * vae_factor(builder)

    def check_params(self, spec: PipelineSpec, params: Mapping[str, Any],
                     builder: Mapping[str, Any] | None = None) -> list[tuple[str, str]]:
        """The base rules, the multiple-of rule folded into one: the size must be one the pipeline keeps."""
        problems = [p for p in super().check_params(spec, params, builder) if p[0] not in ("height", "width")]
        factor = vae_factor(builder)
        width, height = params.get("width") or LATENT_SIDE * factor, params.get("height") or LATENT_SIDE * factor
        problem = size_problem(width, height, factor, spec.name)
        if problem:
            problems.append(("width" if made_size(width, height, factor)[0] != width else "height", problem))
        return problems

    def param_rules(self, spec: PipelineSpec) -> dict[str, list[str]]:
        rules = super().param_rules(spec)
        side = LATENT_SIDE * VAE_FACTOR
        for key in ("height", "width"):
            rules[key].append(f"width x height is a size the pipeline makes as asked: the area of {side}x{side} px "
                              f"on the published models (e.g. 1024x1024, 1168x880, 1360x768); other sizes would set "
                              f"only the aspect ratio (diffusers rescales them to that area), so they are refused")
        return rules

    def prepare_call(self, pipe: Any, spec: PipelineSpec, params: Mapping[str, Any]) -> None:
        """Refuse a size the loaded model would change (a VAE the plan could not know of)."""
        factor = pipe.vae_scale_factor
        side = pipe.default_sample_size * factor
        width, height = params.get("width") or side, params.get("height") or side
        if pipe.default_sample_size != LATENT_SIDE:
            raise ValueError(f"{spec.name} has default_sample_size {pipe.default_sample_size}, not {LATENT_SIDE}: "
                             f"this diffusers sizes images differently from what diffsweep checks")
        problem = size_problem(width, height, factor, spec.name)
        if problem:
            raise ValueError(problem)


def _load_llama_part(slot: str, component: Mapping[str, Any], torch_dtype: Any) -> Any:
    import transformers  # noqa: PLC0415 - start-up time: torch and diffusers load only with a pipeline

    target = component["model"]
    local = Path(target).expanduser()
    kwargs: dict[str, Any] = {"subfolder": component.get("subfolder")}
    if slot == "text_encoder_4":
        kwargs["dtype"] = torch_dtype
    kwargs.update(hub_kwargs(component, local if local.exists() else target))
    where = str(local) if local.exists() else target
    try:
        return getattr(transformers, SEPARATE_LLAMA[slot]).from_pretrained(
            where, **{k: v for k, v in kwargs.items() if v is not None})
    except Exception as error:
        raise ModelUnavailableError(f"builder.components.{slot}: "
                                    + describe_load_failure(component, local if local.exists() else target,
                                                            error)) from error


PROVIDER = HiDream()
