"""ControlNets and IP-Adapters: what a pipeline spec says about them, how they load, and what is refused first.

A family declares, per pipeline spec, the diffusers ControlNet class it takes (`ControlNetSupport`) and whether it
takes an IP-Adapter (`IPAdapterSupport`), plus tiny random-weight nets and adapters for its tiny base models
(`TinyPart`). Which nets and adapter are loaded is builder identity (`builder.controlnets`, `builder.ip_adapter`);
their scales and images are generation parameters, so sweeping them never reloads the pipeline.

Architecture checks read configs, not weights: a net's `config.json` against the base model's denoiser config
(e.g. `cross_attention_dim` 768 for SD 1.5, 2048 for SDXL), an adapter's key/value projection width (from the
safetensors header) against the denoiser's. What cannot be read before loading (a hub model not in the local cache,
a single-file net) is checked again once loaded.
"""

from __future__ import annotations

import functools
import importlib
import inspect
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from diffsweep import control
from diffsweep.errors import ModelUnavailableError
from diffsweep.hub import (
    TINY_PREFIX,
    cached_file,
    describe_load_failure,
    hub_kwargs,
    is_single_file,
    looks_local,
    model_json,
)
from diffsweep.paths import build_folder_once, cache_dir
from diffsweep.tiny import FACTORY_VERSION

if TYPE_CHECKING:
    from diffsweep.providers.base import PipelineSpec, Provider

CONTROL_PARAMS = ("control_image", "controlnet_conditioning_scale", "control_guidance_start", "control_guidance_end")
PER_NET_PARAMS = ("controlnet_conditioning_scale", "control_guidance_start", "control_guidance_end", "control_mode")
IP_ADAPTER_PARAMS = ("ip_adapter_image", "ip_adapter_scale")
IP_ADAPTER_WEIGHTS = "ip_adapter.safetensors"  # the file name a tiny adapter is saved under


@dataclass(frozen=True)
class ControlNetSupport:
    """The ControlNet a pipeline takes: diffusers' class for one net and for several, the base component whose
    config a net must match, the config keys that must agree, and the net config key counting Union modes."""

    model: str
    multi: str  # a class diffusers exports, or a dotted path to one it does not
    denoiser: str
    matching: tuple[str, ...]
    modes: str | None = None


@dataclass(frozen=True)
class IPAdapterSupport:
    """An IP-Adapter's key/value projections take the denoiser config's `width_key` features (the text embedding
    width): 768 for SD 1.5, 2048 for SDXL, 4096 for Flux."""

    denoiser: str
    width_key: str


@dataclass(frozen=True)
class TinyPart:
    """A tiny random-weight ControlNet or IP-Adapter for the tiny model `base`, built offline.

    `factory` returns the ControlNet model, or for an IP-Adapter its state dict (`image_proj.*`, `ip_adapter.*`
    keys) and its CLIP image encoder."""

    kind: Literal["controlnet", "ip_adapter"]
    base: str
    factory: Callable[[], Any]


# ----- sources ------------------------------------------------------------------------------------------------------
def _tiny_part(provider: Provider, source: str, kind: str) -> tuple[str, TinyPart]:

    name = source.removeprefix(TINY_PREFIX)
    parts = {n: p for n, p in provider.tiny_parts.items() if p.kind == kind}
    if name not in parts:
        known = ", ".join(TINY_PREFIX + n for n in sorted(parts)) or "none"
        raise ModelUnavailableError(f"'{source}' is not a tiny {kind} of {provider.name} (known: {known})")
    return name, parts[name]


@functools.cache
def _built_part(provider: Provider, name: str) -> Any:
    """A tiny part's objects in memory, made once per process (planning reads their configs, building saves them)."""
    return provider.tiny_parts[name].factory()


def locate_part(provider: Provider, source: str, kind: str, build: bool = True) -> Path | str:
    """A local folder or file, a tiny part's cache folder (built on first use unless `build` is false), else the
    hub id as given."""

    if source.startswith(TINY_PREFIX):
        name, part = _tiny_part(provider, source, kind)
        folder = cache_dir() / "tiny" / f"{name}-v{FACTORY_VERSION}"
        if build:
            marker = "config.json" if kind == "controlnet" else IP_ADAPTER_WEIGHTS
            build_folder_once(folder, marker, lambda staging: _save_part(part, _built_part(provider, name), staging))
        return folder
    local = Path(source).expanduser()
    return local.resolve() if local.exists() else source


def _save_part(part: TinyPart, built: Any, folder: Path) -> None:
    if part.kind == "controlnet":
        built.save_pretrained(folder, safe_serialization=True)
        return
    from safetensors.torch import save_file  # noqa: PLC0415 - start-up time: weights files are read only when an adapter is built or checked

    state_dict, image_encoder = built
    save_file({f"{section}.{key}": value.contiguous() for section, weights in state_dict.items()
               for key, value in weights.items()}, str(folder / IP_ADAPTER_WEIGHTS))
    image_encoder.save_pretrained(folder / "image_encoder", safe_serialization=True)


# ----- configs, read without loading weights --------------------------------------------------------------------------
@functools.cache
def _tiny_component_config(provider: Provider, tiny_name: str, component: str) -> dict[str, Any] | None:
    model = provider.tiny_models[tiny_name].factory().get(component)
    return dict(model.config) if model is not None and hasattr(model, "config") else None


def component_config(provider: Provider, builder: Mapping[str, Any], component: str) -> dict[str, Any] | None:
    """The config of the base model's `component` (unet, transformer, vae), or None where it cannot be read without
    loading (a single-file checkpoint, a hub model not in the local cache)."""

    model = builder["model"]
    if model.startswith(TINY_PREFIX):
        name = model.removeprefix(TINY_PREFIX)
        return _tiny_component_config(provider, name, component) if name in provider.tiny_models else None
    source = provider.locate(builder, build=False)
    if is_single_file(source):
        return None
    return model_json(source, f"{component}/config.json", builder.get("revision"))


def net_config(provider: Provider, net: Mapping[str, Any]) -> dict[str, Any] | None:
    """A ControlNet's config, or None where it cannot be read without loading."""

    model = net["model"]
    if model.startswith(TINY_PREFIX):
        name, _ = _tiny_part(provider, model, "controlnet")
        return dict(_built_part(provider, name).config)
    source = locate_part(provider, model, "controlnet", build=False)
    name = "/".join(filter(None, [net.get("subfolder"), "config.json"]))
    return model_json(source, name, net.get("revision"))


def _adapter_width(provider: Provider, adapter: Mapping[str, Any]) -> int | None:
    """The input width of an IP-Adapter's key projections, from its weights' header; None where unreadable."""

    source = adapter["source"]
    if source.startswith(TINY_PREFIX):
        name, _ = _tiny_part(provider, source, "ip_adapter")
        shapes = {f"ip_adapter.{k}": tuple(v.shape) for k, v in _built_part(provider, name)[0]["ip_adapter"].items()}
    else:
        located = locate_part(provider, source, "ip_adapter", build=False)
        relative = "/".join(filter(None, [adapter.get("subfolder"), adapter.get("weight_name") or IP_ADAPTER_WEIGHTS]))
        path = (located / relative if located.is_dir() else located) if isinstance(located, Path) else cached_file(
            located, relative, adapter.get("revision"))
        if path is None or not path.is_file() or path.suffix != ".safetensors":
            return None
        from safetensors import safe_open  # noqa: PLC0415 - start-up time: weights files are read only when an adapter is built or checked

        with safe_open(str(path), framework="pt") as weights:
            shapes = {key: tuple(weights.get_slice(key).get_shape()) for key in weights.keys()}  # noqa: SIM118
    widths = [shape[-1] for key, shape in shapes.items() if key.endswith(("to_k_ip.weight", "k_proj.weight"))]
    return widths[0] if widths else None


# ----- checks before anything is written ------------------------------------------------------------------------------
def builder_problems(provider: Provider, spec: PipelineSpec, builder: Mapping[str, Any]) -> list[tuple[str, str]]:
    """(key, message) for ControlNets and an IP-Adapter this builder cannot take."""
    return _controlnet_builder_problems(provider, spec, builder) + _ip_adapter_builder_problems(provider, spec, builder)


def _missing(source: str) -> bool:

    return looks_local(source) and not Path(source).expanduser().exists()


def _controlnet_builder_problems(provider: Provider, spec: PipelineSpec,
                                 builder: Mapping[str, Any]) -> list[tuple[str, str]]:
    nets = builder.get("controlnets") or []
    support = spec.controlnet
    if support is None:
        if not nets:
            return []
        takers = [s.name for s in provider.declared_specs() if s.controlnet is not None]
        instead = f"; use one of {', '.join(takers)}" if takers else f"; {provider.name} has no ControlNet pipeline"
        return [("builder.controlnets", f"{spec.name} takes no ControlNet{instead}")]
    if not nets:
        return [("builder.controlnets", f"{spec.name} needs at least one ControlNet (builder.controlnets: "
                                        f"[{{model: ...}}])")]
    problems = []
    base = component_config(provider, builder, support.denoiser)
    for index, net in enumerate(nets):
        where = f"builder.controlnets[{index}].model"
        if _missing(net["model"]):
            problems.append((where, f"{net['model']} does not exist (a local folder or file, from {Path.cwd()})"))
            continue
        try:
            config = net_config(provider, net)
        except ModelUnavailableError as error:
            problems.append((where, str(error)))
            continue
        problems += [(where, problem) for problem in mismatch(support, spec, net["model"], config, base)]
    return problems


def mismatch(support: ControlNetSupport, spec: PipelineSpec, name: str, config: Mapping[str, Any] | None,
             base: Mapping[str, Any] | None) -> list[str]:
    """Why a net (by its config) does not fit the base model (by its denoiser config); both may be unknown."""
    if config is None:
        return []
    found = []
    kind = config.get("_class_name")
    if kind and kind != support.model:
        found.append(f"{name} is a {kind}; {spec.name} takes a {support.model}")
    if base is not None:
        differ = [f"{key} {config[key]!r} (the base model's {support.denoiser} has {base[key]!r})"
                  for key in support.matching if key in config and key in base and config[key] != base[key]]
        if differ:
            found.append(f"{name} is a ControlNet for another architecture than the base model: its "
                         f"{', '.join(differ)} (e.g. an SD 1.5 net on SDXL)")
    return found


def _ip_adapter_builder_problems(provider: Provider, spec: PipelineSpec,
                                 builder: Mapping[str, Any]) -> list[tuple[str, str]]:
    adapter = builder.get("ip_adapter")
    if not adapter:
        return []
    support = spec.ip_adapter
    if support is None:
        takers = [s.name for s in provider.declared_specs() if s.ip_adapter is not None]
        instead = f"; pipelines that do: {', '.join(takers)}" if takers else ""
        return [("builder.ip_adapter", f"{spec.name} takes no IP-Adapter in diffusers{instead}")]
    if _missing(adapter["source"]):
        return [("builder.ip_adapter.source", f"{adapter['source']} does not exist (a local folder or file, "
                                              f"from {Path.cwd()})")]
    try:
        width = _adapter_width(provider, adapter)
    except ModelUnavailableError as error:
        return [("builder.ip_adapter.source", str(error))]
    base = component_config(provider, builder, support.denoiser)
    expected = (base or {}).get(support.width_key)
    if width is not None and expected is not None and width != expected:
        return [("builder.ip_adapter.source", f"{adapter['source']} is an IP-Adapter for another architecture: its "
                                              f"projections take {width} features, the base model's "
                                              f"{support.denoiser} {support.width_key} is {expected} (e.g. an SD 1.5 "
                                              f"adapter on SDXL)")]
    return []


def _count(value: Any) -> int:
    return len(value) if isinstance(value, list) else 1


def param_problems(provider: Provider, spec: PipelineSpec, params: Mapping[str, Any],
                   builder: Mapping[str, Any] | None) -> list[tuple[str, str]]:
    """(key, message) for control and adapter parameters an item cannot have with this builder."""
    builder = builder or {}
    problems = control.problems(params) if control.PARAM in spec.params else []
    nets = builder.get("controlnets") or []
    if spec.controlnet is not None and nets:
        problems += _control_param_problems(provider, spec, params, nets)
    if spec.ip_adapter is not None:
        present = [key for key in IP_ADAPTER_PARAMS if key in params]
        if not builder.get("ip_adapter"):
            problems += [(key, f"{key} needs an IP-Adapter loaded: set builder.ip_adapter") for key in present]
        elif "ip_adapter_image" not in params:
            problems.append(("ip_adapter_image", "builder.ip_adapter is set: give ip_adapter_image, the image it "
                                                 "conditions on"))
    return problems


def _control_param_problems(provider: Provider, spec: PipelineSpec, params: Mapping[str, Any],
                            nets: Sequence[Mapping[str, Any]]) -> list[tuple[str, str]]:
    problems = []
    if "control_image" not in params:
        problems.append(("control_image", f"{spec.name} needs a control_image (one per ControlNet, in the order of "
                                          f"builder.controlnets)"))
    for key in ("control_image", *PER_NET_PARAMS):
        if key in params and isinstance(params[key], list) and len(nets) == 1 and key != "control_image":
            problems.append((key, f"a list of {len(params[key])} values for 1 ControlNet; give one value"))
        elif key in params and _count(params[key]) != len(nets) and (key == "control_image" or
                                                                     isinstance(params[key], list)):
            problems.append((key, f"{_count(params[key])} value(s) for {len(nets)} ControlNets "
                                  f"(builder.controlnets); give one per net, in order"))
    if spec.controlnet is not None and spec.controlnet.modes is not None:
        problems += _mode_problems(provider, spec.controlnet.modes, params, nets)
    return problems


def _mode_problems(provider: Provider, modes_key: str, params: Mapping[str, Any],
                   nets: Sequence[Mapping[str, Any]]) -> list[tuple[str, str]]:
    """A Union net needs a control_mode among its own; a net without modes takes none."""
    problems = []
    modes = params.get("control_mode")
    wanted = modes if isinstance(modes, list) else [modes] * len(nets)
    for index, (net, mode) in enumerate(zip(nets, wanted, strict=False)):
        config = net_config(provider, net)
        if config is None:
            continue
        count = config.get(modes_key)
        if not count and mode is not None:
            problems.append(("control_mode", f"ControlNet {net['model']} has no control modes (it is not a "
                                             f"Union model: its {modes_key} is {count}); leave control_mode out"))
        elif count and mode is None:
            problems.append(("control_mode", f"ControlNet {net['model']} is a Union model with {count} control "
                                             f"modes: give control_mode (0 to {count - 1})"))
        elif count and not 0 <= mode < count:
            where = f"control_mode[{index}]" if isinstance(modes, list) else "control_mode"
            problems.append((where, f"{mode} is not a control mode of {net['model']}: it has {count} "
                                    f"(0 to {count - 1})"))
    return problems


def param_rules(spec: PipelineSpec) -> dict[str, list[str]]:
    """describe's rules of the conditioning parameters a spec takes, in words."""
    rules: dict[str, list[str]] = {}
    if spec.controlnet is not None:
        rules["control_image"] = ["an image file, or a list of one per net in builder.controlnets (required)"]
        for key in PER_NET_PARAMS[:3]:
            rules[key] = ["a value for every net, or a list of one per net"]
        if spec.controlnet.modes:
            rules["control_mode"] = [f"a Union net's mode, 0 to its {spec.controlnet.modes} - 1 (required for a "
                                     f"Union net, refused for others)"]
    if control.PARAM in spec.params:
        rules[control.PARAM] = [f"none | canny (built in) | {' | '.join(control.AUX_DETECTORS)} "
                                f"(controlnet-aux: diffsweep[control])"]
        for key, default in control.THRESHOLDS.items():
            rules[key] = [f"canny only; default {default}; low ≤ high"]
    if spec.ip_adapter is not None:
        rules["ip_adapter_image"] = ["an image file, or a list; required with builder.ip_adapter"]
        rules["ip_adapter_scale"] = ["needs builder.ip_adapter; set on the loaded pipeline (no reload)"]
    return rules


# ----- loading and calling --------------------------------------------------------------------------------------------
def load_controlnets(provider: Provider, spec: PipelineSpec, builder: Mapping[str, Any],
                     torch_dtype: Any) -> dict[str, Any]:
    """The `controlnet` constructor argument: each net through diffusers' own loader (from_pretrained, or
    from_single_file for a checkpoint file), several in the family's multi-net class."""
    support, nets = spec.controlnet, builder.get("controlnets") or []
    if support is None or not nets:
        return {}
    import diffusers  # noqa: PLC0415 - start-up time: torch and diffusers load only with a pipeline

    model_class = getattr(diffusers, support.model)
    loaded = []
    for index, net in enumerate(nets):
        source = locate_part(provider, net["model"], "controlnet")
        kwargs: dict[str, Any] = {"dtype": torch_dtype, **hub_kwargs(net, source)}
        try:
            if is_single_file(source):
                model = model_class.from_single_file(str(source), **kwargs)
            else:
                if net.get("subfolder"):
                    kwargs["subfolder"] = net["subfolder"]
                model = model_class.from_pretrained(str(source), **kwargs)
        except Exception as error:
            raise ModelUnavailableError(f"builder.controlnets[{index}]: " + describe_load_failure(
                net, source, error)) from error
        loaded.append(model)
    if len(loaded) == 1:
        return {"controlnet": loaded[0]}
    module, _, name = support.multi.rpartition(".")
    return {"controlnet": getattr(importlib.import_module(module or "diffusers"), name)(loaded)}  # the family's multi


def check_loaded(provider: Provider, spec: PipelineSpec, builder: Mapping[str, Any], pipe: Any) -> None:
    """What planning could not read (a net from a single file or the hub), checked on the loaded models."""
    support = spec.controlnet
    if support is None or not builder.get("controlnets"):
        return
    base = dict(getattr(pipe, support.denoiser).config)
    nets = pipe.controlnet.nets if hasattr(pipe.controlnet, "nets") else [pipe.controlnet]
    for index, (net, model) in enumerate(zip(builder["controlnets"], nets, strict=True)):
        found = mismatch(support, spec, net["model"], {"_class_name": type(model).__name__, **model.config}, base)
        if found:
            raise ModelUnavailableError(f"builder.controlnets[{index}].model: {'; '.join(found)}")


def load_ip_adapter(provider: Provider, pipe: Any, builder: Mapping[str, Any]) -> None:
    """Load `builder.ip_adapter` through the pipeline's own `load_ip_adapter`."""

    adapter = builder.get("ip_adapter")
    if not adapter:
        return
    source = locate_part(provider, adapter["source"], "ip_adapter")
    kwargs: dict[str, Any] = {"subfolder": adapter.get("subfolder") or "",
                              "weight_name": adapter.get("weight_name") or IP_ADAPTER_WEIGHTS,
                              **hub_kwargs(adapter, source)}
    if ENCODER_AS_MODEL in inspect.signature(pipe.load_ip_adapter).parameters:
        # Flux's loader takes the encoder as a model of its own, in float16 unless told: the pipeline's dtype here
        kwargs[ENCODER_AS_MODEL] = _encoder_model(source, adapter)
        kwargs["image_encoder_dtype"] = pipe.dtype
    elif adapter.get("image_encoder"):
        kwargs["image_encoder_folder"] = adapter["image_encoder"]
    pipe.load_ip_adapter(str(source), **kwargs)


ENCODER_AS_MODEL = "image_encoder_pretrained_model_name_or_path"
XLABS_IMAGE_ENCODER = "openai/clip-vit-large-patch14"  # the encoder XLabs' Flux IP-Adapter was trained with


def _encoder_model(source: Path | str, adapter: Mapping[str, Any]) -> str:
    """The image encoder a Flux IP-Adapter loads: `image_encoder` as a folder beside the adapter's weights (a local
    or tiny adapter), else as given (a hub id or a path); without one, the adapter's own `image_encoder` folder where
    it has one, else XLabs' CLIP ViT-L/14."""
    named = adapter.get("image_encoder")
    if isinstance(source, Path):
        beside = source / (adapter.get("subfolder") or "") / (named or "image_encoder")
        if beside.is_dir():
            return str(beside)
    return named or XLABS_IMAGE_ENCODER


def default_params(builder: Mapping[str, Any]) -> dict[str, Any]:
    """Generation parameters a builder's adapters add to every item, at their defaults."""
    return {"ip_adapter_scale": 1.0} if builder.get("ip_adapter") else {}


def apply_ip_adapter_scale(pipe: Any, builder: Mapping[str, Any], params: Mapping[str, Any]) -> None:
    """The batch's adapter scale (a generation parameter, so a scale sweep never reloads)."""
    if builder.get("ip_adapter"):
        pipe.set_ip_adapter_scale(float(params.get("ip_adapter_scale", 1.0)))
