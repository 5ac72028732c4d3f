"""What every provider module declares, and the loading and calling logic they share.

A provider module is the whole of a model family: it names its diffusers pipeline classes in one
`PipelineSpec` each (generation parameters, defaults, size rules, output kind, batching, LoRA,
latent space), the JSON Schema of any generation parameter the shared vocabulary lacks
(`Provider.parameters`), how its latents unpack for previews (`Provider.preview_unpacker`) and its
tiny stand-ins (`TinyModel`). Everything else in diffsweep reads those declarations (found by
`diffsweep.providers`) and never names a pipeline class.
"""

from __future__ import annotations

import contextlib
import functools
import importlib
import json
import logging
import math
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from importlib.metadata import version
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from diffsweep import conditioning, control, quantize
from diffsweep.conditioning import ControlNetSupport, IPAdapterSupport, TinyPart
from diffsweep.errors import ModelUnavailableError
from diffsweep.hub import (
    TINY_PREFIX,
    describe_load_failure,
    hub_kwargs,
    hub_token,
    is_single_file,
    looks_local,
    model_json,
)
from diffsweep.inputs import FILE_PARAMS, image_problem, image_size, load_image, map_paths, named_paths
from diffsweep.media import KINDS, Generated
from diffsweep.paths import build_folder_once, cache_dir
from diffsweep.tiny import FACTORY_VERSION

log = logging.getLogger(__name__)


# Parameters that may differ between the items of one batched call: each becomes a list.
PER_ITEM_PARAMS = ("prompt", "negative_prompt", "prompt_2", "negative_prompt_2", "seed")
# Parameters diffsweep consumes itself instead of passing to the pipeline: the seed and frame rate, how a control
# image is prepared (diffsweep.control), the IP-Adapter's scale (set on the pipeline before each call) and how a
# chain's later stage resizes its source image (`upscale`, a hires fix).
OUTPUT_PARAMS = ("seed", "fps", control.PARAM, *control.THRESHOLDS, "ip_adapter_scale", "upscale")


@dataclass(frozen=True)
class PipelineSpec:
    """One diffusers pipeline class as diffsweep drives it."""

    name: str
    output: str  # a kind of diffsweep.media.KINDS: "image" | "video" | "audio" | "video_audio" (video with sound)
    params: frozenset[str]  # generation parameters the pipeline takes (besides prompt and seed)
    defaults: Mapping[str, Any] = field(default_factory=dict)
    multiplier: str | None = "num_images_per_prompt"
    batchable: bool = True  # several prompts and a generator list in one call
    size_multiple: int = 8  # height and width must be multiples of this
    lora: bool = True
    module: str = "diffusers"  # where the class is importable from
    max_batch: int = 8  # auto batch size cap on an accelerator
    image_required: bool = True  # when `image` is a parameter, whether it must be given
    max_images: int | None = 1  # how many files `image` may name (a list for more than one); None: any number
    # the pipeline denoises for int(num_inference_steps * strength) steps, and fails after loading when that is 0
    truncates_strength_steps: bool = False
    # the pipeline's own frame-rate parameter (LTX: `frame_rate`), which gets `fps` too, so what the pipeline
    # conditions on (and, with sound, how long the sound lasts) is the rate the MP4 is written at
    frame_rate_param: str | None = None
    latent_space: str | None = None  # for cheap previews (diffsweep.previews); None: generic projection
    # chains of stages (diffsweep.planning.stages): the pipeline gives its denoised latents undecoded with
    # output_type="latent", and the parameter that takes such latents in place of an image (SDXL's refiner recipe)
    latents_out: bool = False
    latents_in: str | None = None
    max_sequence_length: int | None = None  # the text encoder's token limit, where the pipeline takes the param
    controlnet: ControlNetSupport | None = None  # the ControlNet a ControlNet pipeline takes (builder.controlnets)
    ip_adapter: IPAdapterSupport | None = None  # where the pipeline takes an IP-Adapter (builder.ip_adapter)
    # diffsweep's name of a parameter -> the pipeline's keyword for it, where they differ (SD's ControlNet
    # pipelines call their control image `image`; diffsweep calls it `control_image` in every family)
    call_names: Mapping[str, str] = field(default_factory=dict)

    @property
    def sized_by_input(self) -> frozenset[str]:
        """height and width where the pipeline takes neither but an input image, whose size its output has."""
        return frozenset(k for k in ("height", "width") if k not in self.params) if "image" in self.params \
            else frozenset()

    def load_class(self) -> type[Any]:
        """The pipeline class; a missing one (e.g. a deprecated pipeline a later diffusers dropped)
        is reported as unavailable rather than crashing the run."""
        try:
            return getattr(importlib.import_module(self.module), self.name)
        except (ImportError, AttributeError) as error:
            raise ModelUnavailableError(
                f"{self.name} is unavailable: the installed diffusers {version('diffusers')} has no {self.name} in "
                f"{self.module} ({type(error).__name__}: {error}); install diffusers 0.42.1, where it is present"
            ) from error


@dataclass(frozen=True)
class RGBFactors:
    """A latent space's linear map to RGB (for previews): one (R, G, B) row per latent channel, plus an RGB bias."""

    weights: tuple[tuple[float, float, float], ...]
    bias: tuple[float, float, float] = (0.0, 0.0, 0.0)


@dataclass(frozen=True)
class TinyModel:
    """A tiny random-weight stand-in of a pipeline, built offline from `factory`'s components.

    `call` is a smoke call that must work on it (besides prompt, 2 steps and a generator) and `shape` the shape one
    item's output then has: (H, W, 3) for an image, (F, H, W, 3) for a video, (samples,) for audio. The factory test
    runs every tiny model this way, so a new one is tested the moment a provider declares it.
    """

    pipeline: str  # the pipeline class it builds, one of the provider's specs
    factory: Callable[[], dict[str, Any]]  # the pipeline constructor's keyword arguments
    call: Mapping[str, Any] = field(default_factory=dict)
    shape: tuple[int, ...] = ()


class Provider:
    """A model family: its pipelines, rules and tiny stand-ins. Subclasses fill in the tables."""

    name: str = ""
    pipelines: Mapping[str, PipelineSpec] = {}
    tiny_models: Mapping[str, TinyModel] = {}  # tiny model name (`tiny:<name>`, unique across providers) -> stand-in
    # tiny ControlNets and IP-Adapters for the tiny models (`tiny:<name>` in builder.controlnets / ip_adapter)
    tiny_parts: Mapping[str, TinyPart] = {}
    # JSON Schemas of generation parameters this family adds to the shared vocabulary (schemas/config.schema.json's
    # $defs.params); each is merged into the config schema, so the key is validated and typed like any other.
    parameters: Mapping[str, Mapping[str, Any]] = {}
    # RGB factors of latent spaces this family brings (a spec's latent_space names one); the spaces diffsweep.previews
    # publishes (sd, sdxl, sd3, flux, wan, qwen_image) need none here. Unknown spaces get a generic projection.
    latent_factors: Mapping[str, RGBFactors] = {}
    # Video families whose VAE packs frames in groups take num_frames = frame_step * k + 1.
    frame_step: int | None = None

    def declared_specs(self) -> Sequence[PipelineSpec]:
        """Every spec this provider declares, for the checks made when providers are discovered."""
        return list(self.pipelines.values())

    # ----- rules, checked before anything loads -----------------------------------------
    def spec(self, pipeline: str) -> PipelineSpec:
        """The spec of a pipeline class name; KeyError when this provider has no such pipeline, PipelineClassError
        when a dotted path names one that cannot be had (and why)."""
        return self.pipelines[pipeline]

    def check_builder(self, builder: Mapping[str, Any]) -> list[tuple[str, str]]:
        """(key, message) for builder settings this provider refuses, checked while planning: here,
        component overrides naming a slot a local base model does not have (hub models are checked
        when they load, since reading their index needs the hub)."""
        missing = missing_local_paths(builder)
        if missing:
            return missing
        if builder.get("pipeline") in self.pipelines:
            missing = conditioning.builder_problems(self, self.spec(builder["pipeline"]), builder)
            if missing:
                return missing
        overrides = builder.get("components") or {}
        source = self.locate(builder, build=False) if overrides else None
        index = model_json(source, "model_index.json", None) if isinstance(source, Path) else None
        if index is None:
            return []
        slots = [key for key in index if not key.startswith("_")]
        return [(f"builder.components.{name}", f"the base model has no component '{name}' (it has: "
                                               f"{', '.join(slots)})") for name in overrides if name not in slots]

    def component_slots(self, builder: Mapping[str, Any]) -> dict[str, Any] | None:
        """The base model's components as model_index.json lists them (name -> [library, class]), read without
        loading or building anything; None where that needs the hub or a single file's conversion."""
        model = builder["model"]
        if model.startswith(TINY_PREFIX):
            name = model.removeprefix(TINY_PREFIX)
            return _tiny_slots(self, name) if name in self.tiny_models else None
        source = self.locate(builder, build=False)
        if is_single_file(source):
            return None
        if isinstance(source, str) and looks_local(source):  # a local path that is not there: check_builder says so
            return None
        return model_json(source, "model_index.json", builder.get("revision"))

    def size_multiple(self, spec: PipelineSpec, builder: Mapping[str, Any] | None) -> int:
        """What height and width must be multiples of; a provider whose models differ overrides this."""
        return spec.size_multiple

    def check_params(self, spec: PipelineSpec, params: Mapping[str, Any],
                     builder: Mapping[str, Any] | None = None) -> list[tuple[str, str]]:
        """(key, message) for every parameter this pipeline cannot take as given (by the builder's model)."""
        problems = []
        accepted = spec.params | {"prompt", "seed", "fps"} | ({"lora"} if spec.lora else set())
        for key in params:
            root = key.split(".", 1)[0]
            if root == "lora" and not spec.lora:
                problems.append((key, f"{spec.name} has no LoRA support in diffusers"))
            elif root in spec.sized_by_input:
                problems.append((key, f"not a parameter of {spec.name}: its output has the input image's size; "
                                      f"leave {key} out"))
            elif root not in accepted:
                problems.append((key, f"not a parameter of {spec.name} (it takes: "
                                      f"{', '.join(sorted(accepted - {'lora'}))})"))
        length = params.get("max_sequence_length")
        if spec.max_sequence_length is not None and length is not None and length > spec.max_sequence_length:
            problems.append(("max_sequence_length", f"max_sequence_length {length} exceeds "
                                                    f"{spec.max_sequence_length}, the text encoder limit of {spec.name}"))
        if "fps" in params and not KINDS[spec.output].moving:
            problems.append(("fps", f"fps applies to video output; {spec.name} makes {spec.output}"))
        multiple = self.size_multiple(spec, builder)
        for key in ("height", "width"):
            value = params.get(key)
            if value is not None and value % multiple:
                low = value - value % multiple
                problems.append((key, f"{key} {value} must be a multiple of {multiple} for "
                                      f"{self.name}; nearest: {low} or {low + multiple}"))
        problems += _strength_step_problems(spec, params)
        frames = params.get("num_frames")
        if self.frame_step and frames is not None and (frames - 1) % self.frame_step:
            low = frames - (frames - 1) % self.frame_step
            problems.append(("num_frames", f"num_frames {frames} must be {self.frame_step}k+1 for {self.name}; "
                                           f"nearest: {low} or {low + self.frame_step}"))
        problems += self._input_problems(spec, params)
        problems += conditioning.param_problems(self, spec, params, builder)
        return problems

    def param_rules(self, spec: PipelineSpec) -> dict[str, list[str]]:
        """The rules check_params enforces beyond the config schema, per parameter, in words."""
        rules: dict[str, list[str]] = {}
        for key in ("height", "width"):
            if key in spec.params:
                rules[key] = [f"multiple of {spec.size_multiple}"]
        if spec.max_sequence_length is not None and "max_sequence_length" in spec.params:
            rules["max_sequence_length"] = [f"at most {spec.max_sequence_length} (the text encoder's limit)"]
        if "fps" in spec.params:
            rules["fps"] = ([f"frame rate of the written MP4, also passed as the pipeline's {spec.frame_rate_param}"]
                            if spec.frame_rate_param else
                            ["frame rate of the written MP4; used by diffsweep, not passed to the pipeline"])
        if "image" in spec.params:
            files = ("an input image file" if spec.max_images == 1 else
                     f"an input image file, or a list of up to {spec.max_images}" if spec.max_images else
                     "an input image file, or a list of them")
            rules["image"] = [files + (" (required)" if spec.image_required else " (optional)")]
        if spec.truncates_strength_steps:
            rules["strength"] = ["strength x num_inference_steps is at least 1 (the steps it denoises: the integer part)"]
        if "mask_image" in spec.params:
            rules["mask_image"] = ["a mask image file the size of `image`, white = repaint (required)"]
        if self.frame_step and "num_frames" in spec.params:
            step = self.frame_step
            rules["num_frames"] = [f"{step}k+1 (e.g. {step + 1}, {4 * step + 1}, {20 * step + 1})"]
        rules.update(conditioning.param_rules(spec))
        return rules

    @staticmethod
    def _input_problems(spec: PipelineSpec, params: Mapping[str, Any]) -> list[tuple[str, str]]:
        image = params.get("image")
        if isinstance(image, list) and spec.max_images is not None and len(image) > spec.max_images:
            most = "one input image" if spec.max_images == 1 else f"at most {spec.max_images} input images"
            return [("image", f"{spec.name} takes {most}; {len(image)} were given")]
        problems = [(where, problem) for key in FILE_PARAMS for where, path in named_paths(key, params.get(key))
                    if (problem := image_problem(path))]
        if problems:
            return problems
        if "mask_image" in spec.params and "mask_image" not in params:
            problems.append(("mask_image", f"{spec.name} needs a mask_image (white = repaint)"))
        if "image" in spec.params and "image" not in params and spec.image_required:
            problems.append(("image", f"{spec.name} needs an input image"))
        if isinstance(params.get("image"), str) and isinstance(params.get("mask_image"), str):
            image, mask = image_size(params["image"]), image_size(params["mask_image"])
            if image != mask:
                problems.append(("mask_image", f"mask size {mask[0]}x{mask[1]} does not match image size "
                                               f"{image[0]}x{image[1]}"))
        return problems

    def batch_limit(self, spec: PipelineSpec) -> int:
        return spec.max_batch if spec.batchable else 1

    # ----- loading ---------------------------------------------------------------------
    def resolve_source(self, builder: Mapping[str, Any]) -> Path | str:
        """Where to load from, once the provider's policy allows it (see Custom)."""
        return self.locate(builder)

    def locate(self, builder: Mapping[str, Any], build: bool = True) -> Path | str:
        """A local folder for tiny and local models; the hub id (downloaded on load) otherwise.

        With `build=False` (planning, dry runs) a tiny model is only located, never built: the folder
        may not exist yet."""
        model = builder["model"]
        if model.startswith(TINY_PREFIX):
            name = model.removeprefix(TINY_PREFIX)
            return ensure_tiny(self, name) if build else tiny_folder(self, name)
        local = Path(model).expanduser()
        if local.exists():
            return local.resolve()
        return model

    def model_path(self, builder: Mapping[str, Any]) -> str:
        """Where the weights were loaded from: a local folder, or the hub snapshot folder."""
        source = self.resolve_source(builder)
        if isinstance(source, Path):
            return str(source)
        from huggingface_hub import try_to_load_from_cache  # noqa: PLC0415 - start-up time: the hub client loads only when a model is looked up

        cached = try_to_load_from_cache(source, "model_index.json", revision=builder.get("revision"))
        return str(Path(cached).parent) if isinstance(cached, str) else source

    def load(self, builder: Mapping[str, Any], torch_dtype: Any) -> Any:
        """Materialise the pipeline through diffusers' own loaders (`from_pretrained`/`from_single_file`)."""
        spec = self.spec(builder["pipeline"])
        source = self.resolve_source(builder)
        self.before_load(spec)
        try:
            pipe = self.from_source(spec, source, builder, torch_dtype)
            conditioning.check_loaded(self, spec, builder, pipe)
            conditioning.load_ip_adapter(self, pipe, builder)
        except ModelUnavailableError:
            raise
        except Exception as error:
            raise ModelUnavailableError(describe_load_failure(builder, source, error)) from error
        return self.after_load(pipe, builder)

    def from_source(self, spec: PipelineSpec, source: Path | str, builder: Mapping[str, Any], torch_dtype: Any) -> Any:
        pipeline_class = spec.load_class()
        kwargs = {**hub_kwargs(builder, source), "dtype": torch_dtype}
        kwargs.update(load_components(builder, source, torch_dtype))
        kwargs.update(conditioning.load_controlnets(self, spec, builder, torch_dtype))
        kwargs.update(quantize.load_kwargs(builder, source, torch_dtype))
        if is_single_file(source):
            kwargs.pop("variant", None)
            if builder.get("single_file_config"):
                config = Path(builder["single_file_config"]).expanduser()
                kwargs["config"] = str(config) if config.exists() else builder["single_file_config"]
            return pipeline_class.from_single_file(str(source), **kwargs)
        return pipeline_class.from_pretrained(str(source), **kwargs)

    def before_load(self, spec: PipelineSpec) -> None:
        """Hook for fixes that must precede `from_pretrained` (e.g. registering classes)."""

    def after_load(self, pipe: Any, builder: Mapping[str, Any]) -> Any:
        """Hook for provider-specific fixes that must follow every load."""
        return pipe

    # ----- calling ---------------------------------------------------------------------
    def prepare_call(self, pipe: Any, spec: PipelineSpec, params: Mapping[str, Any]) -> None:
        """Hook run before each call with the batch's shared params (e.g. per-size VAE tiling)."""

    def call_kwargs(self, spec: PipelineSpec, items: Sequence[Mapping[str, Any]],
                    generators: list[Any]) -> dict[str, Any]:
        """Keyword arguments for one pipeline call over `items` (which share their call shape)."""
        first = items[0]
        kwargs: dict[str, Any] = {k: v for k, v in first.items()
                                  if k not in PER_ITEM_PARAMS and k not in OUTPUT_PARAMS
                                  and not k.startswith("lora.") and v is not None}
        for key in PER_ITEM_PARAMS:
            if key != "seed" and first.get(key) is not None:
                kwargs[key] = [item[key] for item in items]
        if spec.multiplier:
            kwargs[spec.multiplier] = 1
        if spec.frame_rate_param and first.get("fps") is not None:
            kwargs[spec.frame_rate_param] = first["fps"]
        for key in FILE_PARAMS:
            if key == "control_image" and key in kwargs:
                kwargs[key] = map_paths(kwargs[key], lambda path: Image.fromarray(control.prepared(path, first)))
            elif key in kwargs:
                mode = "L" if key == "mask_image" else "RGB"
                kwargs[key] = map_paths(kwargs[key], functools.partial(load_image, mode=mode))
        for name, keyword in spec.call_names.items():
            if name in kwargs:
                kwargs[keyword] = kwargs.pop(name)
        kwargs["generator"] = generators if spec.batchable else generators[0]
        kwargs["output_type"] = "np"
        return kwargs

    def outputs(self, spec: PipelineSpec, result: Any, pipe: Any) -> list[Generated]:
        """Split a pipeline result into one Generated per item."""
        if spec.output == "image":
            return [Generated("image", image) for image in result.images]
        if spec.output == "video":
            return [Generated("video", frames) for frames in result.frames]
        if spec.output == "video_audio":
            rate = self.sample_rate(pipe)
            return [Generated("video_audio", frames, sample_rate=rate, audio=np.asarray(audio, dtype=np.float32))
                    for frames, audio in zip(result.frames, _numpy(result.audio), strict=True)]
        return [Generated("audio", audio, sample_rate=self.sample_rate(pipe)) for audio in result.audios]

    def sample_rate(self, pipe: Any) -> int:
        """The sample rate of the audio a pipeline makes: its vocoder's output rate (`output_sampling_rate` where the
        vocoder upsamples to it from another, as LTX-2's does; else `sampling_rate`)."""
        config = pipe.vocoder.config
        return int(getattr(config, "output_sampling_rate", None) or config.sampling_rate)

    # ----- previews --------------------------------------------------------------------
    def preview_space(self, spec: PipelineSpec) -> RGBFactors | str | None:
        """The factors of the spec's latent space where this family declares them, else the space's name."""
        return self.latent_factors.get(spec.latent_space or "", spec.latent_space)

    def preview_unpacker(self, pipe: Any, spec: PipelineSpec,
                         params: Mapping[str, Any]) -> Callable[[Any], Any] | None:
        """For pipelines that hold latents packed while denoising: a function that turns them into
        (B, C, H, W) or (B, C, F, H, W) for diffsweep.previews; None where they already are.
        `params` are the call's shared generation parameters."""
        return None


def _strength_step_problems(spec: PipelineSpec, params: Mapping[str, Any]) -> list[tuple[str, str]]:
    steps, strength = params.get("num_inference_steps"), params.get("strength")
    if not spec.truncates_strength_steps or steps is None or strength is None or int(steps * strength) >= 1:
        return []
    if strength <= 0:
        return [("strength", f"strength 0 leaves no denoising step in {spec.name}; use a strength above 0")]
    return [("strength", f"strength {strength} x num_inference_steps {steps} leaves no denoising step: "
                         f"{spec.name} runs int({steps} x {strength}) = 0 steps; raise strength to at least "
                         f"{math.ceil(100 / steps) / 100:g} or num_inference_steps to at least {math.ceil(1 / strength)}")]


def pipeline_unpacker(pipe: Any, params: Mapping[str, Any]) -> Callable[[Any], Any] | None:
    """The pipeline's own `_unpack_latents(latents, height, width, vae_scale_factor)` (Flux, Qwen-Image), so a
    preview follows exactly the layout the pipeline decodes; None when the call's size is not known."""
    if "height" not in params or "width" not in params:
        return None
    height, width, scale_factor = params["height"], params["width"], pipe.vae_scale_factor
    return lambda latents: pipe._unpack_latents(latents, height, width, scale_factor)


def _numpy(batch: Any) -> Any:
    """A pipeline's batched tensor output (diffusers returns audio as a torch tensor whatever output_type says)."""
    return batch.detach().float().cpu().numpy() if hasattr(batch, "detach") else batch


def missing_local_paths(builder: Mapping[str, Any]) -> list[tuple[str, str]]:
    """(key, message) for each model, component or config path that names a local file or folder
    that is not there: said before anything loads, instead of a hub error about a malformed id."""
    named = [("builder.model", builder.get("model")), ("builder.single_file_config", builder.get("single_file_config"))]
    named += [(f"builder.components.{name}.model", component.get("model"))
              for name, component in (builder.get("components") or {}).items() if isinstance(component, Mapping)]
    return [(key, f"{value} does not exist (a local path, from {Path.cwd()}; a hub model is named 'org/name')")
            for key, value in named if isinstance(value, str) and looks_local(value)
            and not Path(value).expanduser().exists()]


def load_components(builder: Mapping[str, Any], source: Path | str, torch_dtype: Any) -> dict[str, Any]:
    """Component overrides (`builder.components.<name>`), each loaded with the class the base
    model's model_index.json names for that slot, e.g. a separate VAE or text encoder."""
    overrides = builder.get("components") or {}
    if not overrides:
        return {}
    if is_single_file(source):  # the checkpoint has no model_index.json; its config source does
        config = builder.get("single_file_config")
        if not config:
            raise ModelUnavailableError("builder.components with a single-file checkpoint needs "
                                        "builder.single_file_config (a diffusers-format folder or repo)")
        source = Path(config).expanduser() if Path(config).expanduser().exists() else config
    index = _model_index(source, builder)
    loaded = {}
    for name, component in overrides.items():
        if name not in index:
            slots = ", ".join(k for k in index if not k.startswith("_"))
            raise ModelUnavailableError(f"builder.components.{name}: the base model has no component '{name}' "
                                        f"(it has: {slots})")
        library, class_name = index[name]
        if library is None or class_name is None:  # an optional slot the model leaves empty: [null, null]
            raise ModelUnavailableError(f"builder.components.{name}: the base model leaves its '{name}' slot empty "
                                        f"(null in model_index.json), so the class to load it with is unknown")
        component_class = getattr(importlib.import_module(library), class_name)
        target = component["model"]
        local = Path(target).expanduser()
        kwargs = {"subfolder": component.get("subfolder"), "dtype": torch_dtype,
                  **hub_kwargs(component, local if local.exists() else target)}
        try:
            loaded[name] = component_class.from_pretrained(str(local if local.exists() else target),
                                                           **{k: v for k, v in kwargs.items() if v is not None})
        except Exception as error:
            raise ModelUnavailableError(
                f"builder.components.{name}: " + describe_load_failure(component, local if local.exists() else target,
                                                                       error)) from error
    return loaded


def _model_index(source: Path | str, builder: Mapping[str, Any]) -> dict[str, Any]:
    if isinstance(source, Path):
        path = source / "model_index.json"
    else:
        from huggingface_hub import hf_hub_download  # noqa: PLC0415 - start-up time: the hub client loads only when a model is looked up

        path = Path(hf_hub_download(source, "model_index.json", revision=builder.get("revision") or "main",
                                    token=hub_token()))
    return json.loads(path.read_text(encoding="utf-8"))


class PipelineClassError(LookupError):
    """A dotted pipeline path (`mypipes.MyPipe`) that names no usable class: its module cannot be imported, has no
    such class, or the class is no DiffusionPipeline. The message says which, and what to do."""


@functools.cache
def _tiny_slots(provider: Provider, tiny_name: str) -> dict[str, Any]:
    """A tiny model's model_index.json entries, from its components made in memory (nothing is written)."""
    slots: dict[str, Any] = {}
    for name, component in provider.tiny_models[tiny_name].factory().items():
        if component is None or isinstance(component, (bool, int, float, str)):
            slots[name] = [None, None] if component is None else component
        else:
            slots[name] = [type(component).__module__.split(".")[0], type(component).__name__]
    return slots


def tiny_folder(provider: Provider, tiny_name: str) -> Path:
    """Where a tiny model is (or will be) built in the cache; unknown names are refused."""
    if tiny_name not in provider.tiny_models:
        known = ", ".join(TINY_PREFIX + n for n in sorted(provider.tiny_models))
        raise ModelUnavailableError(f"'{TINY_PREFIX}{tiny_name}' is not a tiny model of {provider.name} (known: {known})")
    return cache_dir() / "tiny" / f"{tiny_name}-v{FACTORY_VERSION}"


@contextlib.contextmanager
def without_progress_bars() -> Iterator[None]:
    """transformers' and diffusers' progress bars off for the block: saving a tiny model writes its one shard in no
    time, and a bar for it is noise on a first run."""
    from diffusers.utils import logging as diffusers_logging  # noqa: PLC0415 - start-up time: torch and diffusers load only with a pipeline
    from transformers.utils import logging as transformers_logging  # noqa: PLC0415 - start-up time: torch and diffusers load only with a pipeline

    shown = [(lib, lib.is_progress_bar_enabled()) for lib in (transformers_logging, diffusers_logging)]
    for lib, _ in shown:
        lib.disable_progress_bar()
    try:
        yield
    finally:
        for lib, enabled in shown:
            if enabled:
                lib.enable_progress_bar()


def ensure_tiny(provider: Provider, tiny_name: str) -> Path:
    """Build a tiny random-weight pipeline into the cache once; later calls reuse the folder."""
    target = tiny_folder(provider, tiny_name)
    tiny = provider.tiny_models[tiny_name]

    def save(folder: Path) -> None:
        pipeline_class = provider.spec(tiny.pipeline).load_class()
        with without_progress_bars():
            pipeline_class(**tiny.factory()).save_pretrained(folder, safe_serialization=True)

    if build_folder_once(target, "model_index.json", save):
        log.info("built tiny model %s into %s", tiny_name, target)
    return target
