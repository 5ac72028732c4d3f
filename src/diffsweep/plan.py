"""Planning: from a validated config to builders, items and batches.

The plan hashes every builder and item, checks each distinct call shape against its provider's
rules (so bad values fail before any model loads), and yields batches lazily in an order where
the costly axes (builder, then call shape) change least.
"""

from __future__ import annotations

import copy
import json
import secrets
from collections.abc import Callable, Container, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from diffsweep import hashing, lora, providers, schedulers
from diffsweep.devices import resolve_dtype
from diffsweep.errors import ConfigError, ConfigIssue
from diffsweep.grid import Axis, Grid, expand_axis, find_file, numbered_lines, repeated
from diffsweep.inputs import FILE_PARAMS, identity_params
from diffsweep.optimize import LOSSY_KEYS
from diffsweep.providers.base import PER_ITEM_PARAMS, TINY_PREFIX, PipelineSpec, Provider
from diffsweep.validate import did_you_mean, load_schema, subschema_issues

SourceOf = Callable[[str], "str | None"]
BUILDER_AXIS = "builder."
DEFAULT_SEED = 0
# Builder keys that define what is loaded; everything else in a builder is lossless.
IDENTITY_KEYS = ("provider", "pipeline", "model", "revision", "variant", "dtype", "scheduler", "components",
                 "single_file_config")



@dataclass(frozen=True)
class BuilderPlan:
    hash: str
    config: dict[str, Any]  # the builder as configured (axes applied)
    identity: dict[str, Any]  # the hash input
    provider: Provider
    spec: PipelineSpec
    cache_key: str  # what the loaded object depends on: identity less scheduler, plus every optimization

    @property
    def loras(self) -> list[dict[str, Any]]:
        return list(self.config.get("loras") or [])

    @property
    def short(self) -> str:
        return hashing.short(self.hash)


@dataclass(frozen=True)
class Item:
    index: int
    item_id: str
    builder_hash: str
    params: dict[str, Any]  # every generation parameter, seed included

    @property
    def seed(self) -> int:
        return self.params["seed"]


@dataclass
class Batch:
    builder: BuilderPlan
    items: list[Item] = field(default_factory=list)


def _number_kinds() -> dict[str, str]:
    """Generation parameter -> "integer" | "number" | other, read from the config schema."""
    kinds = {}
    for key, schema in load_schema("config")["$defs"]["params"]["properties"].items():
        types = schema.get("type", [])
        types = [types] if isinstance(types, str) else types
        kinds[key] = "integer" if "integer" in types else ("number" if "number" in types else "other")
    return kinds


def draw_random_seeds(doc: dict[str, Any]) -> dict[str, Any]:
    """A copy of `doc` where every `seed: random` is replaced by a drawn integer (recorded in config.yaml)."""
    doc = copy.deepcopy(doc)
    for params in (doc["generation"], doc["sweep"]["params"]):
        if params.get("seed") == "random":
            params["seed"] = secrets.randbelow(2**32)
    seeds = doc["sweep"]["grid"].get("seed")
    if isinstance(seeds, list):
        doc["sweep"]["grid"]["seed"] = [secrets.randbelow(2**32) if s == "random" else s for s in seeds]
    return doc


def absolutise_inputs(doc: dict[str, Any], base_dirs: list[Path]) -> dict[str, Any]:
    """A copy of `doc` whose input-file parameters are absolute paths, so config.yaml reruns anywhere."""
    doc = copy.deepcopy(doc)
    for params in (doc["generation"], doc["sweep"]["params"]):
        for key in FILE_PARAMS:
            if isinstance(params.get(key), str):
                params[key] = str(find_file(params[key], base_dirs).absolute())
    for key in FILE_PARAMS:
        values = doc["sweep"]["grid"].get(key)
        if isinstance(values, list):
            doc["sweep"]["grid"][key] = [str(find_file(v, base_dirs).absolute()) if isinstance(v, str) else v
                                         for v in values]
    return doc


def _axis_schema(name: str, source_of: SourceOf) -> dict[str, Any]:
    config_schema = load_schema("config")
    params = config_schema["$defs"]["params"]
    if name.startswith(BUILDER_AXIS):
        key = name.removeprefix(BUILDER_AXIS)
        builder_props = config_schema["$defs"]["builder"]["properties"]
        if key not in builder_props:
            raise ConfigError(ConfigIssue(f"sweep.grid.{name}", f"unknown builder key{did_you_mean(key, builder_props)}; "
                                          f"builder axes: {', '.join('builder.' + k for k in builder_props)}",
                                          source_of(f"sweep.grid.{name}")))
        return builder_props[key]
    if name.startswith("lora."):
        return next(iter(params["patternProperties"].values()))
    if name not in params["properties"]:
        raise ConfigError(ConfigIssue(f"sweep.grid.{name}", f"unknown generation parameter"
                                      f"{did_you_mean(name, params['properties'])}", source_of(f"sweep.grid.{name}")))
    return params["properties"][name]


def load_grid(doc: Mapping[str, Any], base_dirs: list[Path], source_of: SourceOf) -> Grid:
    """Expand and type-check every grid axis; all element errors are reported together."""
    axes: list[Axis] = []
    issues: list[ConfigIssue] = []
    for name, spec in doc["sweep"]["grid"].items():
        where = f"sweep.grid.{name}"
        try:
            schema = _axis_schema(name, source_of)
            axis = expand_axis(name, spec, base_dirs, source_of(where))
        except ConfigError as error:
            issues += error.issues
            continue
        for position, value in enumerate(axis.values):
            if value is None and not name.startswith(BUILDER_AXIS):  # builder.scheduler: null = the model's own
                issues.append(ConfigIssue(f"{where}[{position}]", "null is not a grid value", source_of(where)))
            else:
                issues += subschema_issues(value, schema, f"{where}[{position}]", source_of)
        if doc["sweep"]["mode"] == "product":
            issues += _repeated_value_issues(axis, spec, base_dirs, where, source_of(where))
        axes.append(axis)
    if issues:
        raise ConfigError(issues)
    grid = Grid(axes, doc["sweep"]["mode"])
    if grid.mode == "zip":
        _refuse_repeated_points(grid, source_of("sweep.grid"))
    return grid


def _repeated_value_issues(axis: Axis, spec: Any, base_dirs: list[Path], where: str,
                           source: str | None) -> list[ConfigIssue]:
    """An item id names one item: a value given twice on a product axis would make two items one."""
    groups = repeated(axis.values)
    if not groups:
        return []
    in_file = find_file(spec["file"], base_dirs) if isinstance(spec, Mapping) and "file" in spec else None
    line_of = [number for number, _ in numbered_lines(in_file)] if in_file else []

    def place(found: list[int]) -> str:
        if in_file:
            return f"lines {', '.join(str(line_of[p]) for p in found)} of {in_file}"
        return f"positions {', '.join(map(str, found))}"

    return [ConfigIssue(where, f"value {json.dumps(axis.values[found[0]], ensure_ascii=False, default=str)} is given "
                               f"{len(found)} times ({place(found)}); each value may appear once, since every "
                               f"item id must name one item", source) for found in groups]


def _refuse_repeated_points(grid: Grid, source: str | None) -> None:
    """In zip mode a value may repeat on one axis, but not a whole point."""
    points = [grid.point(index) for index in range(len(grid))]
    groups = repeated([list(point.values()) for point in points])
    if groups:
        raise ConfigError([ConfigIssue(
            "sweep.grid", f"zipped points {', '.join(map(str, found))} are the same "
            f"({', '.join(f'{name}={value!r}' for name, value in points[found[0]].items())}); each point may "
            f"appear once, since every item id must name one item", source) for found in groups])


def builder_identity(config: Mapping[str, Any], dtype: str,
                     optimization: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The hash input of a builder: what changes the loaded weights or the pixels, nothing else."""
    identity = {key: config[key] for key in IDENTITY_KEYS if config.get(key) not in (None, {}, [])}
    identity["dtype"] = dtype
    if config.get("loras"):
        identity["loras"] = lora.identity(config["loras"])
    for key in LOSSY_KEYS:  # optimizations that change pixels; the lossless rest stay out
        if (optimization or {}).get(key):
            identity[key] = optimization[key]
    if config["model"].startswith(TINY_PREFIX) and "revision" not in identity:
        from diffsweep.tiny import FACTORY_VERSION

        identity["revision"] = f"factory-v{FACTORY_VERSION}"
    return identity


class Plan:
    """Builders, items and batches of one sweep; items are produced lazily."""

    def __init__(self, doc: Mapping[str, Any], grid: Grid, device: Any, source_of: SourceOf):
        self.doc = doc
        self.grid = grid
        self.device = device
        self._source_of = source_of
        self._kinds = _number_kinds()
        self._builder_axes = [a for a in grid.axes if a.name.startswith(BUILDER_AXIS)]
        self.builders: dict[str, BuilderPlan] = {}
        self._builder_by_point: dict[str, BuilderPlan] = {}
        self._checked_shapes: set[str] = set()
        self.total = len(grid)
        self.index_width = max(4, len(str(self.total - 1)))
        self._plan_builders()
        for _ in self.items():  # checks every call shape before anything loads or is written
            pass

    # ----- builders ----------------------------------------------------------------------
    def _builder_points(self) -> list[dict[str, Any]]:
        if not self._builder_axes:
            return [{}]
        sub = Grid(self._builder_axes, "product" if self.grid.mode == "product" else "zip")
        return [point for _, point in sub.iter_points()]

    def _plan_builders(self) -> None:
        issues = []
        for point in self._builder_points():
            config = copy.deepcopy(dict(self.doc["builder"]))
            for name, value in point.items():
                config[name.removeprefix(BUILDER_AXIS)] = value
            try:
                plan = self._make_builder(config, point)
            except ConfigError as error:
                issues += error.issues
                continue
            self._builder_by_point[hashing.canonical_json(point)] = plan
            self.builders.setdefault(plan.hash, plan)
        if issues:
            raise ConfigError(issues)

    def _make_builder(self, config: dict[str, Any], point: Mapping[str, Any]) -> BuilderPlan:
        where = "sweep.grid.builder.pipeline" if "builder.pipeline" in point else "builder.pipeline"
        self._check_allowed(config["pipeline"], where)
        provider = providers.get(config["provider"])
        try:
            spec = provider.spec(config["pipeline"])
        except KeyError:
            names = list(provider.pipelines)
            choices = ", ".join(names[:12]) + (f", ... ({len(names)} in all)" if len(names) > 12 else "")
            raise ConfigError(ConfigIssue(where, f"{config['pipeline']!r} is not a {provider.name} pipeline"
                                          f"{did_you_mean(config['pipeline'], names)}; choose one of {choices}",
                                          self._source_of(where))) from None
        issues = provider.check_builder(config)
        if config.get("loras") and not spec.lora:
            issues.append(("builder.loras", f"{spec.name} has no LoRA support in diffusers"))
        issues += [(f"builder.loras[{i}].source", problem) for i, adapter in enumerate(config.get("loras") or [])
                   if (problem := lora.source_problem(adapter))]
        if config.get("scheduler"):
            issues += schedulers.problems(spec.load_class(), config["scheduler"])
        if issues:
            raise ConfigError([ConfigIssue(k, m, self._source_of(k)) for k, m in issues])
        optimization = self.doc["optimization"]
        identity = builder_identity(config, resolve_dtype(config.get("dtype", "auto"), self.device), optimization)
        weights = {k: v for k, v in identity.items() if k != "scheduler"}
        cache_key = hashing.digest("pipeline", {"weights": weights, "optimization": dict(optimization)})
        return BuilderPlan(hashing.builder_hash(identity), config, identity, provider, spec, cache_key)

    def _check_allowed(self, pipeline: str, where: str) -> None:
        """A dotted pipeline path is imported only from the configured module prefixes."""
        if "." not in pipeline:
            return
        module = pipeline.rsplit(".", 1)[0]
        allowed = self.doc["allowed_modules"]
        if not any(module == prefix or module.startswith(prefix + ".") for prefix in allowed):
            raise ConfigError(ConfigIssue(where, f"module '{module}' is not in allowed_modules ({', '.join(allowed)}); "
                                                 f"add its prefix there to trust it", self._source_of(where)))

    # ----- items ---------------------------------------------------------------------------
    def _params(self, builder: BuilderPlan, point: Mapping[str, Any]) -> dict[str, Any]:
        params: dict[str, Any] = {"seed": DEFAULT_SEED, **lora.default_scales(builder.loras)}
        for layer in (builder.spec.defaults, self.doc["generation"], self.doc["sweep"]["params"],
                      {k: v for k, v in point.items() if not k.startswith(BUILDER_AXIS)}):
            params.update({k: v for k, v in layer.items() if v is not None})
        return {k: hashing.normalise_number(v, self._kinds.get(k, "number" if k.startswith("lora.") else "other"))
                for k, v in params.items()}

    def _check_shape(self, builder: BuilderPlan, params: Mapping[str, Any], key: str) -> None:
        if key in self._checked_shapes:
            return
        problems = builder.provider.check_params(builder.spec, params, builder.config) + lora.problems(builder.loras, params)
        if "prompt" not in params:
            problems.append(("prompt", "no prompt: set sweep.grid.prompt or sweep.params.prompt"))
        if problems:
            raise ConfigError([ConfigIssue(self._where(k), m, self._source_of(self._where(k))) for k, m in problems])
        self._checked_shapes.add(key)

    def _where(self, key: str) -> str:
        if key in self.doc["sweep"]["grid"]:
            return f"sweep.grid.{key}"
        if key in self.doc["sweep"]["params"]:
            return f"sweep.params.{key}"
        return f"generation.{key}"

    def items(self) -> Iterator[Item]:
        """Every item, builders and call shapes outermost so equal work is adjacent."""
        per_item = [a.name for a in self.grid.axes if a.name in PER_ITEM_PARAMS]
        outer = [a.name for a in self._builder_axes]
        outer += [a.name for a in self.grid.axes if a.name not in outer and a.name not in per_item]
        for index, point in self.grid.iter_points(outer):
            builder_point = {k: v for k, v in point.items() if k.startswith(BUILDER_AXIS)}
            builder = self._builder_by_point[hashing.canonical_json(builder_point)]
            params = self._params(builder, point)
            shape = self.shape_key(builder, params)
            self._check_shape(builder, params, shape)
            yield Item(index, hashing.item_id(builder.hash, identity_params(params)), builder.hash, params)

    @staticmethod
    def shape_key(builder: BuilderPlan, params: Mapping[str, Any]) -> str:
        """Items with equal keys can share one pipeline call."""
        shared = {k: v for k, v in params.items() if k not in PER_ITEM_PARAMS}
        present = sorted(k for k in PER_ITEM_PARAMS if k in params)
        return hashing.canonical_json([builder.hash, shared, present])

    def batch_size(self, builder: BuilderPlan) -> int:
        """`auto` is the provider's cap for the pipeline; an explicit size is honoured except where
        the pipeline cannot take several items in one call."""
        setting = self.doc["sweep"]["batch_size"]
        if setting == "auto":
            return builder.provider.batch_limit(builder.spec)
        return int(setting) if builder.spec.batchable else 1

    def batches(self, skip: Container[str] = ()) -> Iterator[Batch]:
        """Batches of items not in `skip`, each one pipeline call."""
        open_batches: dict[str, Batch] = {}
        for item in self.items():
            if item.item_id in skip:
                continue
            builder = self.builders[item.builder_hash]
            key = self.shape_key(builder, item.params)
            batch = open_batches.setdefault(key, Batch(builder))
            batch.items.append(item)
            if len(batch.items) >= self.batch_size(builder):
                yield open_batches.pop(key)
            elif self.grid.mode == "product" and len(open_batches) > 1:
                # product order makes equal shapes adjacent: a new shape closes the older ones
                for old in [k for k in open_batches if k != key]:
                    yield open_batches.pop(old)
        yield from open_batches.values()

    def summary(self) -> dict[str, Any]:
        """Counts for a dry run: items, builders, batches, pipeline calls."""
        batches = list(self.batches())
        return {
            "items": self.total,
            "builders": [{"hash": b.short, "provider": b.provider.name, "pipeline": b.spec.name,
                          "model": b.config["model"], "dtype": b.identity["dtype"],
                          "items": sum(len(x.items) for x in batches if x.builder.hash == b.hash),
                          "batch_size": self.batch_size(b)} for b in self.builders.values()],
            "batches": len(batches),
            "calls": len(batches),
        }
