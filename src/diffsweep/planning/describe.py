"""`describe=true|json`: what the composed builder takes, read from its provider; nothing is loaded or written.

Every fact comes from where diffsweep itself reads it when it plans a run: the provider's
PipelineSpec (parameters, defaults, output, batching, LoRA) and rules (`Provider.param_rules`),
the config schema (types, ranges, which keys a grid may sweep), and the composed config's
`generation` (the preset) and `sweep.params` layers.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any, TextIO

from diffsweep import devices, lora, providers, quantize
from diffsweep.conditioning import default_params as conditioning_defaults
from diffsweep.config.model import RunConfig
from diffsweep.config.schema import load_schema
from diffsweep.media import EXTENSIONS
from diffsweep.planning.plan import BUILDER_AXIS, DEFAULT_SEED, param_layers
from diffsweep.planning.stages import DEFAULT_INHERIT, stage_builder
from diffsweep.providers.base import PER_ITEM_PARAMS, PipelineSpec, Provider

ALWAYS = ("prompt", "seed")  # every pipeline takes these, whatever its spec lists
LISTED_PIPELINES = 40  # a provider with more pipeline classes than this (custom: all of diffusers) gives a count


@dataclass(frozen=True)
class Parameter:
    name: str
    type: str
    provider_default: Any  # the provider's default for this pipeline; None: the pipeline's own
    preset: Any  # the preset's `generation` value; None: not set there
    value: Any  # what an item gets unless a grid axis sets it; None: the pipeline's own default
    set_by: str  # where `value` comes from: provider, preset, sweep.params, diffsweep, builder.loras, pipeline
    # (its own default) or required (no default: the grid or sweep.params must give it)
    range: dict[str, Any]  # schema bounds: minimum, maximum, exclusiveMinimum, ...
    rules: list[str]  # provider rules beyond the schema
    grid_axis: bool  # may be swept as sweep.grid.<name>
    per_item: bool  # items differing only in it share one pipeline call


@dataclass(frozen=True)
class Description:
    provider: str
    pipeline: str
    model: str
    preset: str | None
    pipelines: list[str]  # the provider's pipeline classes (builder.pipeline); empty when too many to list
    pipeline_count: int
    output: str
    file_extension: str
    batchable: bool
    auto_batch_size: int
    multiplier: str | None
    lora: bool
    parameters: list[Parameter]
    builder_axes: list[str]
    controlnet: dict[str, Any] | None  # the ControlNet class the pipeline takes and the nets configured
    ip_adapter: dict[str, Any] | None  # whether the pipeline takes an IP-Adapter, and the one configured
    quantization: dict[str, Any]  # the builder's setting, and each preset with whether it can run here (or why not)
    stages: list[dict[str, Any]] = field(default_factory=list)  # a chain: what each stage takes and gives

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def _schema_type(schema: Mapping[str, Any], defs: Mapping[str, Any]) -> str:
    if "$ref" in schema:
        return _schema_type(defs[schema["$ref"].rsplit("/", 1)[-1]], defs)
    if "oneOf" in schema or "anyOf" in schema:
        parts = [_schema_type(s, defs) for s in schema.get("oneOf", schema.get("anyOf", []))]
        return " or ".join(p for p in parts if p != "null")
    if "enum" in schema:
        values = [v for v in schema["enum"] if v is not None]
        if len(values) > 4:  # the rules list them
            return " or ".join(sorted({type(v).__name__.replace("str", "string") for v in values}))
        return " or ".join(json.dumps(v) for v in values)
    if "const" in schema:
        return json.dumps(schema["const"])
    types = schema.get("type", "any")
    types = [types] if isinstance(types, str) else types
    return " or ".join(t for t in types if t != "null") or "null"


def _range(schema: Mapping[str, Any], defs: Mapping[str, Any]) -> dict[str, Any]:
    if "$ref" in schema:
        return _range(defs[schema["$ref"].rsplit("/", 1)[-1]], defs)
    for alternative in schema.get("oneOf", []):
        found = _range(alternative, defs)
        if found:
            return found
    return {key: schema[key] for key in ("minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum", "minLength")
            if key in schema}


def describe(config: RunConfig, preset: str | None = None) -> Description:
    """The composed builder as its provider states it."""
    builder = config.builder
    provider: Provider = providers.get(builder["provider"])
    spec: PipelineSpec = provider.spec(builder["pipeline"])
    schema = load_schema("config")
    defs = schema["$defs"]
    known = defs["params"]["properties"]
    lora_schema = next(iter(defs["params"]["patternProperties"].values()))
    layers = param_layers(spec, config)
    rules = provider.param_rules(spec)
    names = [*ALWAYS, *sorted(spec.params - set(ALWAYS))]
    adapters = list(builder.get("loras") or []) if spec.lora else []
    names += list(lora.default_scales(adapters))  # `lora.<adapter>`
    parameters = []
    for name in names:
        param_schema = lora_schema if name.startswith("lora.") else known.get(name, {})
        value: Any = None
        set_by = "pipeline"
        if name == "prompt":
            set_by = "required"  # from the grid or sweep.params; nothing supplies a default
        elif name == "seed":
            value, set_by = DEFAULT_SEED, "diffsweep"
        elif name.startswith("lora."):
            value, set_by = lora.default_scales(adapters)[name], "builder.loras"
        elif name in conditioning_defaults(builder):
            value, set_by = conditioning_defaults(builder)[name], "builder.ip_adapter"
        for layer_name, layer in layers:
            if layer.get(name) is not None:
                value, set_by = layer[name], layer_name
        parameters.append(Parameter(
            name=name, type=_schema_type(param_schema, defs), provider_default=spec.defaults.get(name),
            preset=config.generation.get(name), value=value, set_by=set_by, range=_range(param_schema, defs),
            rules=list(rules.get(name, [])), grid_axis=name in known or name.startswith("lora."),
            per_item=name in PER_ITEM_PARAMS))
    listed = isinstance(provider.pipelines, dict) and len(provider.pipelines) <= LISTED_PIPELINES
    net = spec.controlnet
    return Description(
        provider=provider.name, pipeline=spec.name, model=builder["model"], preset=preset,
        pipelines=list(provider.pipelines) if listed else [], pipeline_count=len(provider.pipelines),
        output=spec.output, file_extension=EXTENSIONS[spec.output], batchable=spec.batchable,
        auto_batch_size=provider.batch_limit(spec), multiplier=spec.multiplier, lora=spec.lora,
        parameters=parameters, builder_axes=[BUILDER_AXIS + key for key in defs["builder"]["properties"]],
        controlnet=None if net is None else {
            "model": net.model, "several": net.multi.rsplit(".", 1)[-1], "modes": net.modes,
            "loaded": [n["model"] for n in builder.get("controlnets") or []]},
        ip_adapter=None if spec.ip_adapter is None else {"loaded": (builder.get("ip_adapter") or {}).get("source")},
        quantization=_quantization(provider, builder, config.device), stages=_stages(config, spec))


def _stages(config: RunConfig, first: PipelineSpec) -> list[dict[str, Any]]:
    """A chain's stages as their config states them: each one's builder, what it takes from which stage (into which
    parameter, inheriting which parameters) and what it gives."""
    if not config.chained:
        return []
    assert config.stages is not None
    chain = config.stages.chain
    latents_from = {s.source for s in chain.values() if s.take == "latents" and isinstance(s.source, str)}

    def gives(name: str, spec: PipelineSpec) -> str:
        return "latents (safetensors + preview)" if name in latents_from else spec.output

    found = [{"name": config.stages.first, "builder": f"{config.builder['provider']}/{first.name}",
              "model": config.builder["model"], "takes": "the sweep (builder + sweep.grid)",
              "gives": gives(config.stages.first, first)}]
    for name, stage in chain.items():
        builder = stage_builder(config.builder, stage.builder)
        try:
            spec = providers.get(builder["provider"]).spec(builder["pipeline"])
        except (KeyError, LookupError):
            spec = None
        source = stage.source if isinstance(stage.source, str) else f"run {stage.source.run}"
        inherit = stage.inherit if stage.inherit is not None else list(DEFAULT_INHERIT)
        found.append({"name": name, "builder": f"{builder.get('provider')}/{builder.get('pipeline')}",
                      "model": builder.get("model"), "takes": f"{stage.take} of {source} into {stage.into}",
                      "inherits": inherit, "mode": stage.mode, "grid": sorted(stage.grid),
                      "gives": gives(name, spec) if spec else "?"})
    return found


def _quantization(provider: Provider, builder: dict[str, Any], device_name: str) -> dict[str, Any]:
    """The builder's quantization and every preset: `ok`, or the first reason it cannot run on this builder here."""
    device = devices.resolve_device(device_name)
    dtype = devices.resolve_dtype(builder.get("dtype", "auto"), device)
    slots = provider.component_slots(builder)
    options = {}
    for name in quantize.presets():
        setting = quantize.preset(name)
        found = quantize.problems(setting, slots, device, dtype) + quantize.environment_problems(setting, device)
        options[name] = "ok" if not found else found[0][1]
    chosen = builder.get("quantization")
    current = chosen if isinstance(chosen, str) else (chosen or {}).get("name", "none")
    return {"current": current, "options": options}


def _cell(value: Any, width: int) -> str:
    """A value in a column `width` wide: JSON, '-' for none, cut with '…' when longer."""
    text = "-" if value is None else json.dumps(value, ensure_ascii=False)
    text = text if len(text) < width else text[:width - 2] + "…"
    return f"{text:<{width}}"


def print_description(description: Description, out: TextIO, as_json: bool = False) -> None:
    if as_json:
        out.write(json.dumps(description.to_json(), indent=2, ensure_ascii=False) + "\n")
        return
    d = description
    preset = f", preset {d.preset}" if d.preset else ""
    out.write(f"builder    {d.provider}/{d.pipeline}  (model {d.model}{preset})\n")
    others = (", ".join(d.pipelines) if d.pipelines
              else f"{d.pipeline_count} classes: any diffusers pipeline, or your own by dotted path")
    out.write(f"pipelines  {others}  (builder.pipeline)\n")
    out.write(f"output     {d.output} ({d.file_extension})\n")
    if d.batchable:
        out.write(f"batching   up to {d.auto_batch_size} items per call with sweep.batch_size=auto; items share a "
                  f"call when they differ only in {', '.join(PER_ITEM_PARAMS)}\n")
    else:
        out.write("batching   none: one item per pipeline call\n")
    out.write(f"LoRA       {'yes: builder.loras, scales as lora.<name> (a grid axis)' if d.lora else 'no'}\n")
    if d.controlnet:
        modes = f", control_mode from the net's {d.controlnet['modes']}" if d.controlnet["modes"] else ""
        out.write(f"ControlNet builder.controlnets: {d.controlnet['model']} (several: {d.controlnet['several']}{modes}); "
                  f"loaded: {', '.join(d.controlnet['loaded']) or 'none'}\n")
    if d.ip_adapter:
        out.write(f"IP-Adapter builder.ip_adapter; loaded: {d.ip_adapter['loaded'] or 'none'}\n")
    ready = [name for name, status in d.quantization["options"].items() if status == "ok"]
    out.write(f"quantize   {d.quantization['current']} (builder.quantization); runs here: {', '.join(ready)}; "
              f"not here: {', '.join(n for n in d.quantization['options'] if n not in ready)} (describe=json says why)\n")
    out.write("parameters (value: what an item gets unless the grid sets it; '-': the pipeline's own default)\n")
    width = max(len(p.name) for p in d.parameters) + 2
    out.write(f"  {'name':<{width}}{'type':<20}{'provider':<10}{'preset':<10}{'value':<14}{'from':<14}"
              f"{'axis':<6}{'per-item':<10}rules\n")
    for p in d.parameters:
        bounds = [f"{'≥' if k == 'minimum' else '≤' if k == 'maximum' else '>' if k == 'exclusiveMinimum' else k} {v}"
                  for k, v in p.range.items() if k != "minLength"]
        rules = "; ".join([*(["range " + ", ".join(bounds)] if bounds else []), *p.rules])
        out.write(f"  {p.name:<{width}}{p.type:<20}{_cell(p.provider_default, 10)}{_cell(p.preset, 10)}"
                  f"{_cell(p.value, 14)}{p.set_by:<14}{'yes' if p.grid_axis else 'no':<6}"
                  f"{'yes' if p.per_item else 'no':<10}{rules}\n".rstrip() + "\n")
    out.write(f"builder axes  {', '.join(d.builder_axes)}  (each builder is loaded once)\n")
    if d.stages:
        out.write("stages (a chain: each item of a stage's source goes through its builder)\n")
        for stage in d.stages:
            extra = (f"; inherits {stage['inherits']}; {stage['mode']} over {stage['grid'] or 'no grid'}"
                     if "inherits" in stage else "")
            out.write(f"  {stage['name']}: {stage['builder']} ({stage['model']}); takes {stage['takes']}; gives "
                      f"{stage['gives']}{extra}\n")
