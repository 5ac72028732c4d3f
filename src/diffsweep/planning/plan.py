"""Planning: from a validated config to builders, items and batches.

The plan hashes every builder and item, checks each distinct call shape against its provider's
rules (so bad values fail before any model loads), and yields batches lazily in an order where
the costly axes (builder, then call shape) change least.
"""

from __future__ import annotations

import copy
import hashlib
import itertools
import json
import logging
import math
import operator
from collections.abc import Callable, Container, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from diffsweep import control, hashing, lora, providers, quantize, schedulers
from diffsweep.conditioning import component_config
from diffsweep.conditioning import default_params as conditioning_defaults
from diffsweep.config.model import RunConfig
from diffsweep.config.schema import load_schema, range_checked_by_ends, subschema_checker
from diffsweep.devices import resolve_dtype
from diffsweep.errors import ConfigError, ConfigIssue, SourceOf, did_you_mean
from diffsweep.hub import TINY_PREFIX
from diffsweep.inputs import DIGEST_PREFIX, FILE_PARAMS, file_digest, map_paths
from diffsweep.labels import BUILDER_AXIS, BuilderLabel, builder_labels
from diffsweep.optimize import LOSSY_KEYS
from diffsweep.paths import find_file
from diffsweep.planning.grid import Axis, Grid, expand_axis, numbered_lines, range_length, repeated
from diffsweep.providers.base import PER_ITEM_PARAMS, PipelineClassError, PipelineSpec, Provider
from diffsweep.tiny import FACTORY_VERSION

log = logging.getLogger("diffsweep")
DEFAULT_SEED = 0
# Builder keys that define what is loaded; everything else in a builder is lossless.
IDENTITY_KEYS = ("provider", "pipeline", "model", "revision", "variant", "dtype", "scheduler", "components",
                 "single_file_config", "controlnets", "ip_adapter")



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
    stage: str | None = None  # in a chain of stages: the stage's name (diffsweep.planning.stages)
    parent: str | None = None  # in a later stage: the id of the source item it takes its input from

    @property
    def seed(self) -> int:
        return self.params["seed"]


@dataclass
class Batch:
    builder: BuilderPlan
    items: list[Item] = field(default_factory=list)
    # Items to commit when the plan is narrowed to some items: the others only share the call, so
    # the selected ones come out of the same batch, and so with the same bytes, as in a full run.
    keep: frozenset[str] | None = None
    stage: str | None = None  # in a chain: the stage whose items it holds

    def commits(self, item: Item) -> bool:
        return self.keep is None or item.item_id in self.keep


@dataclass(frozen=True)
class Shape:
    """One call shape of a product grid: a point of the builder and shared axes. Its items differ
    only in per-item values (prompts, seeds), so one serialisation of its params hashes them all."""

    positions: tuple[int, ...]  # on the outer axes
    builder: BuilderPlan
    first_index: int  # grid index of its item at the first value of every per-item axis
    params: dict[str, Any]  # every parameter in record order; per-item places hold a marker
    key: str  # see Plan.shape_key
    ids: Callable[[list[str]], str]  # per-item values' canonical JSON -> item id


_PER_ITEM = "<per-item value>"  # stands in a shape's params for what each item sets


def _number_kinds() -> dict[str, str]:
    """Generation parameter -> "integer" | "number" | other, read from the config schema."""
    kinds = {}
    for key, schema in load_schema("config")["$defs"]["params"]["properties"].items():
        types = schema.get("type", [])
        types = [types] if isinstance(types, str) else types
        kinds[key] = "integer" if "integer" in types else ("number" if "number" in types else "other")
    return kinds


def _axis_schema(name: str, source_of: SourceOf, prefix: str = "sweep.grid") -> dict[str, Any]:
    config_schema = load_schema("config")
    params = config_schema["$defs"]["params"]
    if name.startswith(BUILDER_AXIS):
        key = name.removeprefix(BUILDER_AXIS)
        builder_props = config_schema["$defs"]["builder"]["properties"]
        if key not in builder_props:
            raise ConfigError(ConfigIssue(f"{prefix}.{name}", f"unknown builder key{did_you_mean(key, builder_props)}; "
                                          f"builder axes: {', '.join('builder.' + k for k in builder_props)}",
                                          source_of(f"{prefix}.{name}")))
        return builder_props[key]
    if name.startswith("lora."):
        return next(iter(params["patternProperties"].values()))
    if name not in params["properties"]:
        raise ConfigError(ConfigIssue(f"{prefix}.{name}", f"unknown generation parameter"
                                      f"{did_you_mean(name, params['properties'])}", source_of(f"{prefix}.{name}")))
    return params["properties"][name]


def load_grid(config: RunConfig, base_dirs: list[Path], source_of: SourceOf) -> Grid:
    """Expand and type-check every grid axis; all element errors are reported together. A grid
    larger than `max_items` is refused before its values are made (a range typed with three
    extra zeros must fail as a config error, not as a MemoryError)."""
    return load_axes(config.sweep.grid, config.sweep.mode, config.max_items, base_dirs, source_of)


def load_axes(grid_spec: Mapping[str, Any], mode: str, limit: int, base_dirs: list[Path], source_of: SourceOf,
              prefix: str = "sweep.grid") -> Grid:
    """`load_grid` for any grid of the config: the sweep's (`sweep.grid`) or a stage's (`stages.chain.<name>.grid`)."""
    axes: list[Axis] = []
    issues: list[ConfigIssue] = []
    for name, spec in grid_spec.items():
        where = f"{prefix}.{name}"
        if isinstance(spec, Mapping) and "start" in spec and range_length(spec) > limit:
            raise ConfigError(ConfigIssue(where, f"range of {range_length(spec):,} values is more than max_items "
                                                 f"= {limit:,} items; narrow it, or raise max_items"
                                                 f"{_set_in(source_of('max_items'))}", source_of(where)))
        # a file axis in a config file is looked up beside that file first, as its author sees it
        axis_dirs = [*_folder_of(source_of(where)), *base_dirs]
        try:
            schema = _axis_schema(name, source_of, prefix)
            axis = expand_axis(name, spec, axis_dirs, source_of(where))
        except ConfigError as error:
            issues += error.issues
            continue
        check = subschema_checker(schema, source_of)
        ends = isinstance(spec, Mapping) and "start" in spec and range_checked_by_ends(schema)
        for position in sorted({0, len(axis.values) - 1}) if ends else range(len(axis.values)):
            value = axis.values[position]
            if value is None and not name.startswith(BUILDER_AXIS):  # builder.scheduler: null = the model's own
                issues.append(ConfigIssue(f"{where}[{position}]", "null is not a grid value", source_of(where)))
            else:
                issues += check(value, f"{where}[{position}]")
        if mode == "product":
            issues += _repeated_value_issues(axis, spec, axis_dirs, where, source_of(where))
        axes.append(axis)
    if issues:
        raise ConfigError(issues)
    grid = Grid(axes, mode, prefix)
    if len(grid) > limit:
        sizes = " × ".join(f"{a.name} {len(a.values):,}" for a in grid.axes)
        raise ConfigError(ConfigIssue(prefix, f"{len(grid):,} items ({sizes}) is more than max_items = "
                                              f"{limit:,}; narrow the grid, or raise max_items"
                                              f"{_set_in(source_of('max_items'))} to plan it", source_of(prefix)))
    if grid.mode == "zip":
        _refuse_repeated_points(grid, source_of(prefix), prefix)
    return grid


def _set_in(source: str | None) -> str:
    """Where a limit the message names was set: the grid's source is the issue's, the limit's may be another."""
    return f" (set in {source})" if source else ""


def _folder_of(source: str | None) -> list[Path]:
    """The folder of the config file a value was written in; none for a command-line override."""
    return [Path(source).parent] if source and Path(source).is_file() else []


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


def _refuse_repeated_points(grid: Grid, source: str | None, prefix: str = "sweep.grid") -> None:
    """In zip mode a value may repeat on one axis, but not a whole point."""
    points = [grid.point(index) for index in range(len(grid))]
    groups = repeated([list(point.values()) for point in points])
    if groups:
        raise ConfigError([ConfigIssue(
            prefix, f"zipped points {', '.join(map(str, found))} are the same "
            f"({', '.join(f'{name}={value!r}' for name, value in points[found[0]].items())}); each point may "
            f"appear once, since every item id must name one item", source) for found in groups])


def builder_identity(config: Mapping[str, Any], dtype: str,
                     optimization: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The hash input of a builder: what changes the loaded weights or the pixels, nothing else."""
    identity = {key: config[key] for key in IDENTITY_KEYS if config.get(key) not in (None, {}, [])}
    identity["dtype"] = dtype
    if config.get("loras"):
        identity["loras"] = lora.identity(config["loras"])
    if quantize.active(config):
        identity["quantization"] = quantize.identity(config["quantization"])
    for key in LOSSY_KEYS:  # optimizations that change pixels; the lossless rest stay out
        if optimization and optimization.get(key):
            identity[key] = optimization[key]
    if config["model"].startswith(TINY_PREFIX) and "revision" not in identity:
        identity["revision"] = f"factory-v{FACTORY_VERSION}"
    return identity


def _content(path: str) -> str:
    # a path that is no file stays a path here: planning refuses it (image_problem) before any item is made
    return DIGEST_PREFIX + file_digest(path) if Path(path).is_file() else path


def identity_params(params: dict[str, Any]) -> dict[str, Any]:
    """Params as hashed: input files stand for their content, not their location."""
    hashed = {k: map_paths(v, _content) if k in FILE_PARAMS else v for k, v in params.items()}
    if control.active(params) and "control_image" in params:
        hashed["control_image"] = map_paths(params["control_image"], lambda path: DIGEST_PREFIX + control.digest(
            path, params) if Path(path).is_file() else path)
    return hashed


def param_layers(spec: PipelineSpec, config: RunConfig) -> list[tuple[str, Mapping[str, Any]]]:
    """Where an item's parameters come from, later layers winning (a grid axis wins over all of them);
    a null value in a layer leaves the one below in force."""
    return [("provider", spec.defaults), ("preset", config.generation), ("sweep.params", config.sweep.params)]


# Layers of defaults rather than of what the user asked for: a size in them is not applied to a pipeline whose
# output has its input image's size (a txt2img preset's 64x64 under builder.pipeline=...Img2ImgPipeline).
DEFAULT_LAYERS = ("provider", "preset")


def _without(layer: Mapping[str, Any], keys: Container[str]) -> dict[str, Any]:
    return {k: v for k, v in layer.items() if k not in keys}


def unapplied_defaults(spec: PipelineSpec, config: RunConfig) -> dict[str, Any]:
    """The default sizes a pipeline sized by its input image does not get, where the user set none (one the user
    set is refused)."""
    user_set = {k for k, v in config.sweep.params.items() if v is not None} | set(config.sweep.grid)
    return {k: v for name, layer in param_layers(spec, config) if name in DEFAULT_LAYERS
            for k, v in layer.items() if k in spec.sized_by_input - user_set and v is not None}


class Plan:
    """Builders, items and batches of one sweep; items are produced lazily."""

    # In a chain (diffsweep.planning.stages), set before __init__: the first stage's name, and what its items are
    # called with beyond their parameters (output_type=latent where a later stage takes its latents).
    stage_name: str | None = None
    forced_params: Mapping[str, Any] = {}

    def __init__(self, config: RunConfig, grid: Grid, device: Any, source_of: SourceOf):
        self.config = config
        self.grid = grid
        self.device = device
        self._source_of = source_of
        self._kinds = _number_kinds()
        self._builder_axes = [a for a in grid.axes if a.name.startswith(BUILDER_AXIS)]
        self.builders: dict[str, BuilderPlan] = {}
        self._builder_by_point: dict[str, BuilderPlan] = {}
        self._checked_shapes: set[bytes] = set()
        self.total = len(grid)
        self.index_width = max(4, len(str(self.total - 1)))
        self.selected: frozenset[str] | None = None  # see select()
        self.rerun_of_items = False  # select() was given items to make again (not a narrowing by stages.make)
        self.notes: list[str] = []  # what the plan did not apply as configured, and why
        self._plan_builders()
        self._split_axes()
        self._check_shapes()

    # ----- builders ----------------------------------------------------------------------
    def _builder_points(self) -> list[dict[str, Any]]:
        if not self._builder_axes:
            return [{}]
        sub = Grid(self._builder_axes, "product" if self.grid.mode == "product" else "zip")
        return [point for _, point in sub.iter_points()]

    def _plan_builders(self) -> None:
        issues = []
        for point in self._builder_points():
            config = copy.deepcopy(dict(self.config.builder))
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
        for spec in {b.spec.name: b.spec for b in self.builders.values()}.values():
            unapplied = unapplied_defaults(spec, self.config)
            if unapplied:
                sizes = ", ".join(f"{key}={value}" for key, value in unapplied.items())
                self.notes.append(f"{sizes} (the preset's defaults) not applied: {spec.name} makes the input "
                                  f"image's size")
        for note in self.notes:
            log.info("%s", note)

    def _make_builder(self, config: dict[str, Any], point: Mapping[str, Any]) -> BuilderPlan:
        where = "sweep.grid.builder.pipeline" if "builder.pipeline" in point else "builder.pipeline"
        self._check_allowed(config["pipeline"], where)
        provider = providers.get(config["provider"])
        try:
            spec = provider.spec(config["pipeline"])
        except PipelineClassError as error:
            raise ConfigError(ConfigIssue(where, str(error), self._source_of(where))) from None
        except KeyError:
            names = list(provider.pipelines)
            choices = ", ".join(names[:12]) + (f", ... ({len(names)} in all)" if len(names) > 12 else "")
            raise ConfigError(ConfigIssue(where, f"{config['pipeline']!r} is not a {provider.name} pipeline"
                                          f"{did_you_mean(config['pipeline'], names)}; choose one of {choices}",
                                          self._source_of(where))) from None
        issues = self._quantization_issues(provider, config, point)
        issues += provider.check_builder(config)
        if config.get("loras") and not spec.lora:
            issues.append(("builder.loras", f"{spec.name} has no LoRA support in diffusers"))
        issues += [(f"builder.loras[{i}].source", problem) for i, adapter in enumerate(config.get("loras") or [])
                   if (problem := lora.source_problem(adapter))]
        if config.get("scheduler"):
            issues += schedulers.problems(spec.load_class(), config["scheduler"])
        if issues:
            raise ConfigError([ConfigIssue(k, m, self._source_of(k)) for k, m in issues])
        optimization = self.config.optimization
        identity = builder_identity(config, resolve_dtype(config.get("dtype", "auto"), self.device), optimization)
        weights = {k: v for k, v in identity.items() if k != "scheduler"}
        cache_key = hashing.digest("pipeline", {"weights": weights, "optimization": dict(optimization)})
        return BuilderPlan(hashing.builder_hash(identity), config, identity, provider, spec, cache_key)

    def _quantization_issues(self, provider: Provider, config: dict[str, Any],
                             point: Mapping[str, Any]) -> list[tuple[str, str]]:
        """Resolve `builder.quantization` (a preset name becomes its mapping, in place) and check it can run here."""
        where = "sweep.grid.builder.quantization" if "builder.quantization" in point else "builder.quantization"
        try:
            setting = quantize.resolve(config.get("quantization"))
        except KeyError as missing:
            return [(where, f"no quantization preset {missing}; presets: {', '.join(quantize.presets())}")]
        if setting.get("backend", "none") == "none":  # nothing to check, and nothing to record of it
            config.pop("quantization", None)
            return []
        config["quantization"] = setting
        dtype = resolve_dtype(config.get("dtype", "auto"), self.device)
        slots = provider.component_slots(config)
        transformer = (component_config(provider, config, "transformer")
                       if setting.get("backend") == "gguf" and slots and "transformer" in slots else None)
        name = setting.get("name") or setting["backend"]
        found = quantize.problems(setting, slots, self.device, dtype, transformer)
        for key, message in quantize.environment_problems(setting, self.device):
            if self.config.dry_run:  # a plan for another machine: said, not refused
                log.warning("quantization=%s cannot run here: %s", name, message)
            else:
                found.append((key, message))
        return [(f"{where}.{key}" if where == "builder.quantization" else where, f"quantization={name}: {message}")
                for key, message in found]

    def _check_allowed(self, pipeline: str, where: str) -> None:
        """A dotted pipeline path is imported only from the configured module prefixes."""
        if "." not in pipeline:
            return
        module = pipeline.rsplit(".", 1)[0]
        allowed = self.config.allowed_modules
        if not any(module == prefix or module.startswith(prefix + ".") for prefix in allowed):
            raise ConfigError(ConfigIssue(where, f"module '{module}' is not in allowed_modules ({', '.join(allowed)}); "
                                                 f"add its prefix there to trust it", self._source_of(where)))

    # ----- items ---------------------------------------------------------------------------
    # A product grid is walked as its call shapes (points of the builder and shared axes, costly
    # axes outermost), each holding the product of the per-item axes (prompts, seeds). Counts come
    # from axis lengths, grid indices from strides, item ids from one serialisation per shape: no
    # pass over the items keeps them, and a dry run touches only the items it prints.

    def _params(self, builder: BuilderPlan, point: Mapping[str, Any]) -> dict[str, Any]:
        params: dict[str, Any] = {"seed": DEFAULT_SEED, **lora.default_scales(builder.loras),
                                  **conditioning_defaults(builder.config)}
        layers = [_without(layer, builder.spec.sized_by_input) if name in DEFAULT_LAYERS else layer
                  for name, layer in param_layers(builder.spec, self.config)]
        for layer in (*layers, {k: v for k, v in point.items() if not k.startswith(BUILDER_AXIS)}):
            params.update({k: v for k, v in layer.items() if v is not None})
        params.update(self.forced_params)
        return {k: hashing.normalise_number(v, self._kinds.get(k, "number" if k.startswith("lora.") else "other"))
                for k, v in params.items()}

    def _split_axes(self) -> None:
        per_item = [a for a in self.grid.axes if a.name in PER_ITEM_PARAMS]
        outer = [*self._builder_axes, *(a for a in self.grid.axes if a not in self._builder_axes and a not in per_item)]
        self._outer_axes, self._item_axes = outer, per_item
        self._strides: dict[str, int] = {}
        stride = 1
        for axis in reversed(self.grid.axes):
            self._strides[axis.name] = stride
            stride *= len(axis.values)
        self._item_strides = [self._strides[a.name] for a in per_item]
        self._item_values = [tuple(hashing.normalise_number(v, self._kinds.get(a.name, "other")) for v in a.values)
                             for a in per_item]
        self._item_json = [[hashing.canonical_json(v) for v in values] for values in self._item_values]
        self.shape_size = math.prod(len(a.values) for a in per_item)
        self._last_shape: Shape | None = None

    def _shapes(self) -> Iterator[Shape]:
        """Every call shape of a product grid, in plan order."""
        for positions in itertools.product(*(range(len(a.values)) for a in self._outer_axes)):
            yield self._shape(positions)

    def _shape(self, positions: tuple[int, ...]) -> Shape:
        if self._last_shape is not None and self._last_shape.positions == positions:
            return self._last_shape
        point = {a.name: a.values[p] for a, p in zip(self._outer_axes, positions, strict=True)}
        builder_point = {k: v for k, v in point.items() if k.startswith(BUILDER_AXIS)}
        builder = self._builder_by_point[hashing.canonical_json(builder_point)]
        # per-item values go in last, as the full point would put them, so params keep their order
        params = self._params(builder, {**point, **{a.name: _PER_ITEM for a in self._item_axes}})
        first = sum(self._strides[a.name] * p for a, p in zip(self._outer_axes, positions, strict=True))
        ids = hashing.item_id_filler(builder.hash, identity_params(params), [a.name for a in self._item_axes])
        self._last_shape = Shape(positions, builder, first, params, self.shape_key(builder, params), ids)
        return self._last_shape

    def _item(self, shape: Shape, positions: tuple[int, ...]) -> Item:
        params = dict(shape.params)
        for axis, values, position in zip(self._item_axes, self._item_values, positions, strict=True):
            params[axis.name] = values[position]
        return Item(self._index(shape, positions), self._item_id(shape, positions), shape.builder.hash, params,
                    self.stage_name)

    def _index(self, shape: Shape, positions: tuple[int, ...]) -> int:
        return shape.first_index + sum(map(operator.mul, self._item_strides, positions))

    def _item_id(self, shape: Shape, positions: tuple[int, ...]) -> str:
        return shape.ids([texts[p] for texts, p in zip(self._item_json, positions, strict=True)])

    def _item_positions(self) -> Iterator[tuple[int, ...]]:
        return itertools.product(*(range(len(values)) for values in self._item_values))

    def _check_shapes(self) -> None:
        """Check each distinct call shape once, on its first item, before anything loads or is written."""
        if self.grid.mode == "zip":
            for _ in self._zip_items():
                pass
            return
        first = tuple(0 for _ in self._item_axes)
        for shape in self._shapes():
            self._check_shape(shape.builder, self._item(shape, first).params, shape.key)

    def _check_shape(self, builder: BuilderPlan, params: Mapping[str, Any], key: str) -> None:
        seen = hashlib.blake2b(key.encode(), digest_size=16).digest()  # a grid may have a million shapes
        if seen in self._checked_shapes:
            return
        params = {k: v for k, v in params.items() if k not in self.forced_params}
        problems = (builder.provider.check_params(builder.spec, params, builder.config)
                    + lora.problems(builder.loras, params))
        if "prompt" not in params:
            problems.append(("prompt", "no prompt: set sweep.grid.prompt or sweep.params.prompt"))
        if problems:
            raise ConfigError([ConfigIssue(self._where(k), m, self._source_of(self._where(k))) for k, m in problems])
        self._checked_shapes.add(seen)

    def _where(self, key: str) -> str:
        """The config key path of a parameter problem's key (`image[1]`: the second file of a list of images; on a
        grid axis, the axis, whose value in question the message names): the layer that set it, not one holding
        null there."""
        root = key.split("[", 1)[0]
        if root in self.config.sweep.grid:
            return f"sweep.grid.{root}"
        if self.config.sweep.params.get(root) is not None:
            return f"sweep.params.{key}"
        return f"generation.{key}"

    def _zip_item(self, index: int) -> Item:
        point = self.grid.point(index)
        builder = self._builder_by_point[hashing.canonical_json({k: v for k, v in point.items()
                                                                 if k.startswith(BUILDER_AXIS)})]
        params = self._params(builder, point)
        self._check_shape(builder, params, self.shape_key(builder, params))
        return Item(index, hashing.item_id(builder.hash, identity_params(params)), builder.hash, params,
                    self.stage_name)

    def _zip_items(self) -> Iterator[Item]:
        return (self._zip_item(index) for index in range(len(self.grid)))

    def select(self, wanted: Iterable[str | int]) -> None:
        """Narrow the plan to some items (a rerun of single items), each named by its item id (or a
        unique beginning of it) or its grid index; only they are counted and committed."""
        selected = set()
        for key in wanted:
            if isinstance(key, int):
                if not 0 <= key < len(self.grid):
                    raise ConfigError(ConfigIssue("--index", f"no item with index {key}: this run's items have "
                                                             f"indices 0 to {len(self.grid) - 1}"))
                selected.add(self.item(key).item_id)
                continue
            found = [item_id for item_id in self._all_item_ids() if item_id.startswith(key.lower())] if key else []
            if len(found) != 1:
                raise ConfigError(ConfigIssue("--item", f"item '{key}' is {'ambiguous' if found else 'not'} in this "
                                                        f"run's plan{' (give more of its id)' if found else ''}"))
            selected.add(found[0])
        self.selected = frozenset(selected)
        self.total = len(self.selected)
        self.rerun_of_items = True

    @property
    def size(self) -> int:
        """Every item of the plan (`total` counts a selection's)."""
        return len(self.grid)

    def items(self) -> Iterator[Item]:
        """Every item (of the selection, if any), builders and call shapes outermost."""
        for item in self._all_items():
            if self.selected is None or item.item_id in self.selected:
                yield item

    def _all_items(self) -> Iterator[Item]:
        """Every item of the grid, builders and call shapes outermost so equal work is adjacent."""
        if self.grid.mode == "zip":
            yield from self._zip_items()
            return
        for shape in self._shapes():
            for positions in self._item_positions():
                yield self._item(shape, positions)

    def item_ids(self) -> Iterator[str]:
        """The id of every planned item in plan order, without making the items: for counting what is done."""
        for item_id in self._all_item_ids():
            if self.selected is None or item_id in self.selected:
                yield item_id

    def _all_item_ids(self) -> Iterator[str]:
        if self.grid.mode == "zip":
            yield from (item.item_id for item in self._zip_items())
            return
        for shape in self._shapes():
            for positions in self._item_positions():
                yield self._item_id(shape, positions)

    def is_planned(self, index: int, item_id: str) -> bool:
        """Whether the plan has this item at this grid index (a record that says otherwise is not this run's)."""
        return 0 <= index < len(self.grid) and self.item(index).item_id == item_id and (
            self.selected is None or item_id in self.selected)

    def count_in(self, ids: Container[str]) -> int:
        """How many planned items have their id in `ids` (ids of items no longer planned do not count)."""
        return sum(1 for item_id in self.item_ids() if item_id in ids)

    def item(self, index: int) -> Item:
        """The item at a grid index, by index arithmetic."""
        if not 0 <= index < len(self.grid):
            raise IndexError(f"grid index {index} is not in 0..{len(self.grid) - 1}")
        if self.grid.mode == "zip":
            return self._zip_item(index)
        position = {a.name: index // self._strides[a.name] % len(a.values) for a in self.grid.axes}
        shape = self._shape(tuple(position[a.name] for a in self._outer_axes))
        return self._item(shape, tuple(position[a.name] for a in self._item_axes))

    @staticmethod
    def shape_key(builder: BuilderPlan, params: Mapping[str, Any]) -> str:
        """Items with equal keys can share one pipeline call."""
        shared = {k: v for k, v in params.items() if k not in PER_ITEM_PARAMS}
        present = sorted(k for k in PER_ITEM_PARAMS if k in params)
        return hashing.canonical_json([builder.hash, shared, present])

    def batch_size(self, builder: BuilderPlan) -> int:
        """`auto` is the provider's cap for the pipeline; an explicit size is honoured except where
        the pipeline cannot take several items in one call."""
        setting = self.config.sweep.batch_size
        if setting == "auto":
            return builder.provider.batch_limit(builder.spec)
        return int(setting) if builder.spec.batchable else 1

    def batches(self, skip: Container[str] = ()) -> Iterator[Batch]:
        """Batches of items not in `skip`, each one pipeline call; skipped items are never made. With a
        selection, the batches that hold a selected item, whole, so each is made as in a run of the
        full plan."""
        if self.selected is None:
            yield from self._batches(skip)
            return
        for batch in self._batches(()):
            if any(item.item_id in self.selected and item.item_id not in skip for item in batch.items):
                yield Batch(batch.builder, batch.items, self.selected, batch.stage)

    def _batches(self, skip: Container[str]) -> Iterator[Batch]:
        if self.grid.mode == "zip":
            yield from self._zip_batches(skip)
            return
        batch, key = None, None
        for shape in self._shapes():
            if batch is not None and key != shape.key:  # product order keeps a shape's items adjacent
                if batch.items:
                    yield batch
                batch = None
            if batch is None:
                batch, key, size = Batch(shape.builder), shape.key, self.batch_size(shape.builder)
            for positions in self._item_positions():
                if skip and self._item_id(shape, positions) in skip:
                    continue
                batch.items.append(self._item(shape, positions))
                if len(batch.items) >= size:
                    yield batch
                    batch = Batch(shape.builder)
        if batch is not None and batch.items:
            yield batch

    def _zip_batches(self, skip: Container[str]) -> Iterator[Batch]:
        """Zipped points need not put equal shapes together: a batch stays open until it is full."""
        open_batches: dict[str, Batch] = {}
        for item in self._zip_items():
            if item.item_id in skip:
                continue
            builder = self.builders[item.builder_hash]
            key = self.shape_key(builder, item.params)
            batch = open_batches.setdefault(key, Batch(builder))
            batch.items.append(item)
            if len(batch.items) >= self.batch_size(builder):
                yield open_batches.pop(key)
        yield from open_batches.values()

    def builder_labels(self) -> dict[str, BuilderLabel]:
        """Builder hash -> its label among this plan's builders (what differs between them)."""
        builders = list(self.builders.values())
        made = builder_labels([b.identity for b in builders], [b.hash for b in builders])
        return {b.hash: label for b, label in zip(builders, made, strict=True)}

    def summary(self) -> dict[str, Any]:
        """Counts for a dry run: items, builders, batches, pipeline calls, from the call shapes'
        sizes (no item is made)."""
        items = dict.fromkeys(self.builders, 0)
        batches = 0
        if self.grid.mode == "zip":
            for batch in self.batches():
                items[batch.builder.hash] += len(batch.items)
                batches += 1
        else:
            run_key, run_size, run_builder = None, 0, None
            for shape in self._shapes():
                items[shape.builder.hash] += self.shape_size
                if shape.key != run_key:
                    batches += -(-run_size // self.batch_size(run_builder)) if run_builder else 0
                    run_key, run_size, run_builder = shape.key, 0, shape.builder
                run_size += self.shape_size
            batches += -(-run_size // self.batch_size(run_builder)) if run_builder else 0
        labels = self.builder_labels()
        return {
            "items": self.total,
            "builders": [{"hash": b.short, "label": labels[b.hash].label, "provider": b.provider.name,
                          "pipeline": b.spec.name,
                          "model": b.config["model"], "dtype": b.identity["dtype"], "items": items[b.hash],
                          "batch_size": self.batch_size(b)} for b in self.builders.values()],
            "batches": batches,
            "calls": batches,
        }
