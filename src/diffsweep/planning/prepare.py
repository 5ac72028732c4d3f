"""From a composed config to a plan, before anything is written: validate, type, settle the values a rerun must
repeat (random seeds drawn, input paths made absolute, prompt files inlined), plan, and check what can be checked
before a run folder exists (the output root, models that are offline, the extras a setting needs).

Everything here raises ConfigError (exit 2) or ModelUnavailableError before the first file is written; a dry run
is this layer's report of the plan.
"""

from __future__ import annotations

import copy
import json
import os
import secrets
from collections.abc import Mapping
from pathlib import Path
from typing import Any, TextIO

from diffsweep import devices, hashing, lora
from diffsweep.config.extras import check_extras
from diffsweep.config.model import RunConfig
from diffsweep.config.schema import normalise, validate_config
from diffsweep.errors import ConfigError, ConfigIssue, ModelUnavailableError, SourceOf, no_source
from diffsweep.hub import hub_offline, is_single_file
from diffsweep.inputs import FILE_PARAMS, map_paths
from diffsweep.metrics import check_metrics
from diffsweep.paths import conf_dir, find_file
from diffsweep.planning.plan import Plan, load_axes, load_grid
from diffsweep.planning.stages import SourceReader, StagedPlan, check_make

DRY_RUN_ITEMS = 10  # items a dry run lists; the counts cover all of them


def validated(doc: Mapping[str, Any], source_of: SourceOf = no_source) -> RunConfig:
    """A resolved config, normalised, checked against the schema and typed."""
    doc = normalise(doc)
    validate_config(doc, source_of)
    return RunConfig.from_doc(doc)


def prepare(doc: Mapping[str, Any], *, source_of: SourceOf = no_source, base_dir: Path | None = None,
            read_source: SourceReader | None = None) -> Plan:
    """Validate and plan a resolved config; raises ConfigError before anything is written. The plan's config is
    what config.yaml records: seeds drawn, inputs absolute, file axes inlined, the output root absolute. A chain of
    stages is a StagedPlan; `read_source` reads a stage's source run folder (the run layer's reader)."""
    config = validated(doc, source_of)
    check_metrics(config.score_settings().metrics, config.allowed_modules)
    check_extras(config, source_of)
    base_dirs = [base_dir or Path.cwd(), conf_dir()]
    doc = absolutise_inputs(draw_random_seeds(config.to_doc()), base_dirs)
    doc["builder"]["loras"] = lora.absolutise(doc["builder"].get("loras") or [], base_dirs)
    quantization = doc["builder"].get("quantization")
    if isinstance(quantization, Mapping) and quantization.get("file"):  # a GGUF file, so config.yaml reruns anywhere
        found = find_file(quantization["file"], base_dirs)
        if found.is_file():
            doc["builder"]["quantization"] = {**quantization, "file": str(found.absolute())}
    doc["output"]["root"] = str(Path(doc["output"]["root"]).expanduser().absolute())
    for stage in ((doc.get("stages") or {}).get("chain") or {}).values():
        source = stage.get("source")
        if isinstance(source, Mapping) and isinstance(source.get("run"), str):  # so config.yaml reruns anywhere
            run = Path(source["run"]).expanduser()
            stage["source"] = {**source, "run": str(run if run.is_absolute() else (base_dirs[0] / run).absolute())}
    config = RunConfig.from_doc(doc)
    grid = load_grid(config, base_dirs, source_of)
    inlined = {axis.name: list(axis.values) for axis in grid.axes  # so config.yaml reruns without the file
               if isinstance(config.sweep.grid[axis.name], Mapping) and "file" in config.sweep.grid[axis.name]}
    if inlined:
        config = config.replace(sweep=config.sweep.model_copy(update={"grid": {**config.sweep.grid, **inlined}}))
    if not config.chained:
        if config.stages is not None and config.stages.make is not None:
            check_make(config.stages.make, [config.stages.first], source_of)
        return Plan(config, grid, devices.resolve_device(config.device), source_of)
    assert config.stages is not None
    stage_grids = {}
    chain = dict(config.stages.chain)
    for name, stage in chain.items():
        prefix = f"stages.chain.{name}.grid"
        stage_grid = load_axes(stage.grid, stage.mode, config.max_items, base_dirs, source_of, prefix)
        stage_grids[name] = stage_grid
        inlined = {axis.name: list(axis.values) for axis in stage_grid.axes
                   if isinstance(stage.grid[axis.name], Mapping) and "file" in stage.grid[axis.name]}
        if inlined:
            chain[name] = stage.model_copy(update={"grid": {**stage.grid, **inlined}})
    config = config.replace(stages=config.stages.model_copy(update={"chain": chain}))
    return StagedPlan(config, grid, devices.resolve_device(config.device), source_of, stage_grids, read_source)


def _sections(doc: dict[str, Any]) -> list[tuple[list[dict[str, Any]], dict[str, Any]]]:
    """(params-like layers, grid) of the sweep and of every later stage of a chain."""
    found = [([doc["generation"], doc["sweep"].setdefault("params", {})], doc["sweep"]["grid"])]
    for stage in ((doc.get("stages") or {}).get("chain") or {}).values():
        found.append(([stage.setdefault("generation", {}), stage.setdefault("params", {})], stage.setdefault("grid", {})))
    return found


def draw_random_seeds(doc: dict[str, Any]) -> dict[str, Any]:
    """A copy of `doc` where every `seed: random` is replaced by a drawn integer (recorded in config.yaml)."""
    doc = copy.deepcopy(doc)
    for layers, grid in _sections(doc):
        for params in layers:
            if params.get("seed") == "random":
                params["seed"] = secrets.randbelow(2**32)
        seeds = grid.get("seed")
        if isinstance(seeds, list):
            grid["seed"] = [secrets.randbelow(2**32) if s == "random" else s for s in seeds]
    return doc


def absolutise_inputs(doc: dict[str, Any], base_dirs: list[Path]) -> dict[str, Any]:
    """A copy of `doc` whose input-file parameters are absolute paths, so config.yaml reruns anywhere."""
    doc = copy.deepcopy(doc)

    def absolute(path: str) -> str:
        return str(find_file(path, base_dirs).absolute())

    for layers, grid in _sections(doc):
        for params in layers:
            for key in FILE_PARAMS:
                if key in params:
                    params[key] = map_paths(params[key], absolute)
        for key in FILE_PARAMS:
            values = grid.get(key)
            if isinstance(values, list):  # each grid value is a path, or a list of paths
                grid[key] = [map_paths(value, absolute) for value in values]
    return doc


def check_output_root(config: RunConfig, source_of: SourceOf = no_source) -> None:
    """The run folder `<root>/<name>/vNNNN` can be made: every existing part of the way is a writable
    folder. Checked before anything loads, dry runs included."""
    root, name = Path(config.output.root), config.sweep.name
    where, source = "output.root", source_of("output.root")
    existing = root
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if existing.exists() and not existing.is_dir():
        raise ConfigError(ConfigIssue(where, f"{existing} is a file, not a folder; set output.root to a folder "
                                             f"(it is created if missing)", source))
    sweep_dir = root / name
    if sweep_dir.exists() and not sweep_dir.is_dir():
        raise ConfigError(ConfigIssue(where, f"{sweep_dir} is a file, but run folders of sweep '{name}' go there; "
                                             f"move it or choose another output.root or sweep.name", source))
    writable = sweep_dir if sweep_dir.is_dir() else existing
    if not os.access(writable, os.W_OK | os.X_OK):
        raise ConfigError(ConfigIssue(where, f"{writable} is not writable (read-only file system or no permission); "
                                             f"set output.root to a folder you can write", source))


def check_models_available(plan: Plan) -> None:
    """Fail before any folder is created when a hub model cannot be had (offline and not cached)."""
    from huggingface_hub import try_to_load_from_cache  # noqa: PLC0415 - start-up time: the hub client loads only when a model is looked up

    for builder in plan.builders.values():
        source = builder.provider.resolve_source(builder.config)
        if is_single_file(source) and hub_offline() and not builder.config.get("single_file_config"):
            raise ModelUnavailableError(
                f"single-file checkpoint '{builder.config['model']}' needs builder.single_file_config offline: a "
                f"local diffusers-format folder (or cached repo) with the component configs, which diffusers "
                f"would otherwise fetch from the hub")
        if isinstance(source, str) and hub_offline():
            cached = try_to_load_from_cache(source, "model_index.json", revision=builder.config.get("revision"))
            if not isinstance(cached, str):
                raise ModelUnavailableError(
                    f"model '{source}' is not available offline: HF_HUB_OFFLINE is set and it is not in the local "
                    f"Hugging Face cache ({os.environ.get('HF_HOME') or '~/.cache/huggingface'}); download it first "
                    f"with `hf download {source}` or point builder.model at a local folder")


def print_plan(plan: Plan, out: TextIO) -> None:
    """The dry run: counts, builders, the first items, and where the run would go."""
    summary = plan.summary()
    out.write(f"dry run: {summary['items']} items, {len(summary['builders'])} builder(s), "
              f"{summary['batches']} batches ({summary['calls']} pipeline calls); nothing written\n")
    for b in summary["builders"]:
        out.write(f"  builder {b['hash']}  {b['label']}  ({b['provider']}/{b['pipeline']}  {b['model']}  "
                  f"dtype={b['dtype']})  items={b['items']}  batch_size={b['batch_size']}\n")
    for stage in summary.get("stages", ()):
        takes = (f"takes {stage['take']} of '{stage['source']}' into {stage['into']}" if stage["source"] else
                 "the sweep")
        if not stage["items"]:  # stages.make leaves it out
            out.write(f"  stage {stage['name']}: {takes}; not made (stages.make)\n")
            continue
        out.write(f"  stage {stage['name']}: {takes}; {stage['items']} items, {len(stage['builders'])} load(s) "
                  f"(builder {', '.join(stage['builders'])}), {stage['batches']} calls; gives {stage['output']}\n")
    if "order" in summary:
        out.write(f"  stage order: {summary['order']['order']} ({summary['order']['why']})\n")
    labels = {hashing.short(h): label.label for h, label in plan.builder_labels().items()}
    varying = [axis.name for axis in plan.grid.axes if len(axis.values) > 1]
    if isinstance(plan, StagedPlan):
        varying += [axis.name for stage in plan.stages for axis in stage.planner.grid.axes
                    if len(axis.values) > 1 and axis.name not in varying]
    first = [plan.item(index) for index in range(min(DRY_RUN_ITEMS, plan.total))]
    more = f" (first {len(first)} of {plan.total})" if plan.total > len(first) else ""
    out.write(f"  items{more}, by grid index:\n")
    for item in first:
        shown = {name: item.params[name] for name in varying if name in item.params}
        shown["seed"] = item.seed
        values = "  ".join(f"{name}={json.dumps(value, ensure_ascii=False)}" for name, value in shown.items())
        builder = hashing.short(item.builder_hash)
        lineage = (f"  stage {item.stage}" + (f" <- {hashing.short(item.parent)}" if item.parent else "")
                   if item.stage else "")
        out.write(f"    #{item.index:<4} {hashing.short(item.item_id)}  builder {builder} [{labels[builder]}]{lineage}  "
                  f"{values}\n")
    out.write(f"  output: {Path(plan.config.output.root) / plan.config.sweep.name}/v<next>\n")
