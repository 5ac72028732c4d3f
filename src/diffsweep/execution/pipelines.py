"""Loaded pipelines and their calls: a builder materialised once (through the process cache), its scheduler put on
the cached weights, and one pipeline call per batch, each item drawing its noise from its own CPU generator."""

from __future__ import annotations

import inspect
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import torch

from diffsweep import conditioning, devices, lora, previews, schedulers
from diffsweep.execution.cache import Entry, PipelineCache
from diffsweep.hashing import canonical_json
from diffsweep.hub import hub_token
from diffsweep.media import Generated
from diffsweep.optimize import place_and_optimize
from diffsweep.planning.plan import Batch, BuilderPlan

log = logging.getLogger("diffsweep")


@dataclass(frozen=True)
class Loaded:
    """A builder's pipeline as the cache gave it: `fresh` when it was loaded for this call."""

    pipeline: Any
    entry: Entry
    fresh: bool


def quiet_library_progress_bars() -> None:
    """diffsweep shows one progress bar for the sweep; loading and saving bars would bury it. Called where a pipeline
    is loaded, not on import: a dry run or a resume with nothing to do loads no diffusers at all."""
    import diffusers  # noqa: PLC0415 - start-up time: diffusers and transformers load only with a pipeline
    import transformers  # noqa: PLC0415 - start-up time, as diffusers above

    diffusers.utils.logging.disable_progress_bar()
    transformers.utils.logging.disable_progress_bar()


def materialise(builder: BuilderPlan) -> Any:
    """Load a builder's pipeline on the CPU, LoRAs included; placement comes after eviction."""
    quiet_library_progress_bars()
    pipe = builder.provider.load(builder.config, devices.torch_dtype(builder.identity["dtype"]))
    if builder.loras:
        lora.load(pipe, builder.loras, hub_token())  # before fuse_qkv, which then leaves adapters alone
    pipe.set_progress_bar_config(disable=True)
    return pipe


def pipeline_for(builder: BuilderPlan, cache: PipelineCache, device: torch.device,
                 optimization: Mapping[str, Any]) -> Loaded:
    """The loaded pipeline of a builder, from the cache or loaded once, with the builder's scheduler on it."""
    pipe, entry, fresh = cache.get(builder.cache_key, lambda: materialise(builder), device,
                                   place=lambda p: place_and_optimize(p, optimization, device))
    use_scheduler(pipe, entry, builder)
    if fresh:
        log.info("loaded %s/%s %s (%s) in %.2fs", builder.provider.name, builder.spec.name, builder.config["model"],
                 builder.short, entry.load_seconds)
        for applied in entry.applied:
            log.info("  %s=%s %s%s", applied.option, applied.value, applied.status,
                     f": {applied.detail}" if applied.detail else "")
    return Loaded(pipe, entry, fresh)


def use_scheduler(pipe: Any, entry: Entry, builder: BuilderPlan) -> None:
    """Put the builder's scheduler on a cached pipeline; the weights stay loaded."""
    if entry.scheduler_key is None:  # first use: the pipeline carries the model's own scheduler
        entry.base_scheduler_config = dict(pipe.scheduler.config)
        entry.scheduler_key = canonical_json(None)
    wanted = builder.config.get("scheduler")
    key = canonical_json(wanted)
    if entry.scheduler_key == key:
        return
    pipe.scheduler = (schedulers.build(wanted, entry.base_scheduler_config) if wanted
                      else schedulers.restore(entry.base_scheduler_config))
    entry.scheduler_key = key
    log.info("scheduler for %s: %s", builder.short, wanted["name"] if wanted else "the model's own")


def offload_model(pipe: Any, device: torch.device) -> None:
    """The out-of-memory fallback's last resort: whole models move to the device only while they run."""
    pipe.enable_model_cpu_offload(device=device)


def generate(pipe: Any, batch: Batch, preview_every: int = 0,
             on_preview: Callable[[int, list[Any]], None] | None = None,
             inputs: Mapping[str, Any] | None = None) -> list[Generated]:
    """One pipeline call for a batch; each item draws its noise from its own CPU generator.

    With previews on, a step callback projects the latents to RGB every `preview_every` steps; with them off no
    callback is installed at all, so they cost nothing. `inputs` are call arguments a chain's later stage takes from
    its parent (the loaded image, or latents), in place of the parameter that names the parent's file. Items called
    with output_type=latent give their latents undecoded (kind "latents")."""
    builder = batch.builder
    shared = batch.items[0].params
    lora.apply_scales(pipe, builder.loras, shared)
    conditioning.apply_ip_adapter_scale(pipe, builder.config, shared)
    generators = [torch.Generator("cpu").manual_seed(item.seed) for item in batch.items]
    inputs = inputs or {}
    latent = shared.get("output_type") == "latent"
    files = {k: v for k, v in inputs.items() if isinstance(v, str)}  # a parent's file: read as an input file is
    tensors = {k: v for k, v in inputs.items() if k not in files}
    params = [{k: files.get(k, v) for k, v in item.params.items() if k not in tensors and k != "output_type"}
              for item in batch.items]
    kwargs = builder.provider.call_kwargs(builder.spec, params, generators)
    kwargs.update({builder.spec.call_names.get(k, k): v for k, v in tensors.items()})
    if latent:
        kwargs["output_type"] = "latent"
    builder.provider.prepare_call(pipe, builder.spec, shared)
    if preview_every and on_preview and "callback_on_step_end" in inspect.signature(pipe.__call__).parameters:
        unpack = builder.provider.preview_unpacker(pipe, builder.spec, shared)
        kwargs["callback_on_step_end"] = previews.make_callback(
            preview_every, builder.provider.preview_space(builder.spec), on_preview, unpack)
        kwargs["callback_on_step_end_tensor_inputs"] = ["latents"]
    with torch.inference_mode():
        result = pipe(**kwargs)
    if latent:
        return [Generated("latents", latents) for latents in result.images]
    return builder.provider.outputs(builder.spec, result, pipe)
