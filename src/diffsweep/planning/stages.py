"""Chains of stages: later stages that take each item of an earlier one (its image, or its latents where the two
builders share a latent space) and fan it out over their own builder, params and grid.

The first stage is the sweep as it always was (builder + sweep); `StagedPlan` is that plan with the later stages'
items after it, in one index space: the first stage's items keep their grid indices, each later stage's follow in
order, its items in source-item order, then in its own grid order. A later item's id is derived from its parent's
id, its builder hash and its own params, so a change upstream changes everything downstream and nothing else.
Every chain is checked here, before anything is written: sources that do not exist or come later, cycles, output
kinds a stage cannot take, latents between different latent spaces. A distributed run cuts a chain into families,
a root batch with every descendant of its items (`families`), so that one worker makes a parent and its children.
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Callable, Container, Iterable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from diffsweep import hashing
from diffsweep.conditioning import component_config
from diffsweep.config.model import RunConfig, SourceRun, StageSettings, SweepSettings
from diffsweep.config.schema import subschema_checker
from diffsweep.errors import ConfigError, ConfigIssue, SourceOf, did_you_mean
from diffsweep.hub import TINY_PREFIX
from diffsweep.labels import BUILDER_AXIS
from diffsweep.media import EXTENSIONS, KINDS
from diffsweep.planning.grid import Grid
from diffsweep.planning.plan import Batch, BuilderPlan, Item, Plan, identity_params

log = logging.getLogger("diffsweep")

# what a later stage takes from its parent unless it says otherwise (where its pipeline takes the parameter)
DEFAULT_INHERIT = ("prompt", "prompt_2", "negative_prompt", "negative_prompt_2", "seed")
LATENTS_EXTENSION = ".safetensors"
LATENT_OUTPUT = {"output_type": "latent"}
UPSCALE = "upscale"  # a hires fix: the factor a later stage resizes its source image by before the call


@dataclass(frozen=True)
class SourceItem:
    """An item of an existing run folder that feeds a stage: read through the run folder's own readers (the run
    layer), handed to the plan as data."""

    item_id: str
    index: int
    params: dict[str, Any]
    output: str  # absolute path of the output the stage takes
    kind: str  # "image", "video", "latents", ...


@dataclass(frozen=True)
class SourceRunItems:
    """What a run-folder source gave: the run's identity (to refuse it once it changed) and the items chosen."""

    run: str  # the run folder, absolute
    run_id: str  # `<sweep name>/<version>`
    config_hash: str | None
    manifest_sha256: str
    items: list[SourceItem]
    chosen_by: str  # "all done items", "where ...", "top k by metric"


# the run layer's reader of a run-folder source (planning does not read run folders itself)
SourceReader = Callable[[SourceRun, str], SourceRunItems]


class _StageBuilders(Plan):
    """A later stage's builders and parameter layers, planned as a sweep of its own (its grid, params, generation
    defaults and builder); its items are made by StagedPlan, parent by parent, and checked there."""

    def _check_shapes(self) -> None:
        """Its call shapes are checked with each parent's values (StagedPlan)."""

    def builder_at(self, point: Mapping[str, Any]) -> BuilderPlan:
        return self._builder_by_point[hashing.canonical_json(point_builder(point))]

    def params_at(self, builder: BuilderPlan, point: Mapping[str, Any]) -> dict[str, Any]:
        return self._params(builder, point)


@dataclass
class Stage:
    """One later stage of a chain, its items materialised in index order."""

    name: str
    settings: StageSettings
    source: str  # the source stage's name, or "run:<folder>"
    planner: _StageBuilders
    inherit: dict[str, str]  # child parameter -> parent parameter
    first_index: int = 0
    items: list[Item] = field(default_factory=list)
    output: str = "image"  # what its items make: a media kind, or "latents" where a later stage takes them
    source_run: SourceRunItems | None = None
    builders: list[BuilderPlan] = field(default_factory=list)

    @property
    def prefix(self) -> str:
        return f"stages.chain.{self.name}"


def _stage_path(path: str, prefix: str) -> str:
    """A key path the stage's own planner reports (as if it were the sweep) as the config names it."""
    for old, new in (("sweep.grid", "grid"), ("sweep.params", "params"), ("generation", "generation"),
                     ("builder", "builder")):
        if path == old or path.startswith((old + ".", old + "[")):
            return f"{prefix}.{new}{path[len(old):]}"
    return path


def _in_stage(error: ConfigError, prefix: str, source_of: SourceOf) -> ConfigError:
    return ConfigError([ConfigIssue(_stage_path(i.path, prefix), i.message, source_of(_stage_path(i.path, prefix)))
                        for i in error.issues])


def stage_builder(first: Mapping[str, Any], stage: Mapping[str, Any]) -> dict[str, Any]:
    """A stage's builder: with a provider, its own; without one, the first stage's with these keys changed (a hires
    fix names only its img2img pipeline). A stage that changes the model keeps none of the first stage's LoRAs,
    component overrides, ControlNets, IP-Adapter or quantization."""
    if stage.get("provider"):
        return dict(stage)
    merged = dict(first)
    if "model" in stage and stage["model"] != first.get("model"):
        for key in ("loras", "components", "controlnets", "ip_adapter", "quantization", "single_file_config"):
            merged.pop(key, None)
    merged.update(stage)
    return merged


class StagedPlan(Plan):
    """The first stage's plan (the sweep) with the items of every later stage after it."""

    def __init__(self, config: RunConfig, grid: Grid, device: Any, source_of: SourceOf,
                 stage_grids: Mapping[str, Grid], read_source: SourceReader | None = None):
        assert config.stages is not None
        chain = config.stages.chain
        self.first_stage = config.stages.first
        self.stage_name = self.first_stage
        _check_sources(config, source_of)
        takes_latents = {s.source for s in chain.values() if isinstance(s.source, str) and s.take == "latents"}
        self.forced_params = LATENT_OUTPUT if self.first_stage in takes_latents else {}
        try:
            super().__init__(config, grid, device, source_of)
        except ConfigError as error:  # refused as the first stage: name it so when a later one fits it better
            raise error from None
        self.base_total = self.total
        self._source_of = source_of
        self.stages: list[Stage] = []
        by_name: dict[str, Stage] = {}
        first_output = self._first_output(takes_latents)
        # first every stage's builders and size, so that file names (whose index width the whole chain's size sets)
        # are known before a child records its parent's output path
        index, sizes = self.base_total, {self.first_stage: self.base_total}
        for name, settings in chain.items():
            stage = self._plan_stage(name, settings, stage_grids[name], device, source_of)
            stage.output = self._stage_output(stage, takes_latents)
            if not isinstance(settings.source, str):
                if read_source is None:
                    raise ConfigError(ConfigIssue(f"{stage.prefix}.source.run", "a run folder as a source is read "
                                                  "when the run is planned", source_of(f"{stage.prefix}.source")))
                stage.source_run = read_source(settings.source, f"{stage.prefix}.source")
            parents = len(stage.source_run.items) if stage.source_run else sizes[str(settings.source)]
            stage.first_index = index
            index += parents if settings.mode == "zip" and settings.grid else parents * len(stage.planner.grid)
            sizes[name] = index - stage.first_index
            if index > config.max_items:
                raise ConfigError(ConfigIssue(stage.prefix, f"the chain plans {index:,} items, more than max_items = "
                                                            f"{config.max_items:,}; narrow a grid, or raise max_items",
                                              source_of(stage.prefix)))
            self.stages.append(stage)
            for builder in stage.builders:
                self.builders.setdefault(builder.hash, builder)
        self.total = index
        self.index_width = max(4, len(str(self.total - 1)))
        for stage in self.stages:
            self._make_items(stage, self._parents(stage, by_name, first_output), source_of)
            by_name[stage.name] = stage
        _check_unique(self.stages, source_of)
        if config.stages.make is not None:
            self._make_only(config.stages.make, source_of)
        self.order, self.order_reason = _order(config, self)

    # ----- planning the stages ----------------------------------------------------------------
    def _first_output(self, takes_latents: Container[str]) -> dict[str, str]:
        """Builder hash -> what the first stage's items make."""
        return {h: "latents" if self.first_stage in takes_latents else b.spec.output for h, b in self.builders.items()}

    def _plan_stage(self, name: str, settings: StageSettings, grid: Grid, device: Any, source_of: SourceOf) -> Stage:
        prefix = f"stages.chain.{name}"
        builder = stage_builder(self.config.builder, settings.builder)
        problems = subschema_checker({"$ref": "#/$defs/builder"}, source_of)(builder, f"{prefix}.builder")
        if problems:
            raise ConfigError(problems)
        sweep = SweepSettings(name=self.config.sweep.name, mode=settings.mode, grid=settings.grid,
                              params=settings.params, batch_size=settings.batch_size)
        stage_config = self.config.replace(builder=builder, generation=settings.generation, sweep=sweep)
        try:
            planner = _StageBuilders(stage_config, grid, device, source_of=lambda path: source_of(
                _stage_path(path, prefix)))
        except ConfigError as error:
            raise _in_stage(error, prefix, source_of) from None
        planner.stage_name = name
        source = settings.source if isinstance(settings.source, str) else f"run:{settings.source.run}"
        inherit = _inherit_of(settings)
        stage = Stage(name, settings, source, planner, inherit, builders=list(planner.builders.values()))
        issues = []
        for builder_plan in stage.builders:
            spec = builder_plan.spec
            accepted = spec.params | {"prompt", "seed"}
            if settings.into not in spec.params:
                issues.append(ConfigIssue(f"{prefix}.into", f"{spec.name} takes no '{settings.into}'"
                                          f"{_takes(spec.params)}", source_of(f"{prefix}.into")))
            if settings.take == "latents" and spec.latents_in != settings.into:
                issues.append(ConfigIssue(f"{prefix}.take", f"{spec.name} cannot take latents"
                                          + (f" (it takes them into '{spec.latents_in}')" if spec.latents_in else
                                             "; take: image gives it the decoded image"),
                                          source_of(f"{prefix}.take")))
            if settings.inherit is not None:
                for child, parent in inherit.items():
                    if child not in accepted:
                        issues.append(ConfigIssue(f"{prefix}.inherit", f"'{child}' (from the source's '{parent}') is "
                                                  f"not a parameter of {spec.name}", source_of(f"{prefix}.inherit")))
        if issues:
            raise ConfigError(issues)
        return stage

    def _stage_output(self, stage: Stage, takes_latents: Container[str]) -> str:
        if stage.name in takes_latents:
            for builder in stage.builders:
                if not builder.spec.latents_out:
                    raise ConfigError(ConfigIssue(f"{stage.prefix}.builder.pipeline",
                                                  f"a later stage takes latents from '{stage.name}', but "
                                                  f"{builder.spec.name} cannot give them undecoded",
                                                  self._source_of(f"{stage.prefix}.builder.pipeline")))
            return "latents"
        outputs = {b.spec.output for b in stage.builders}
        return outputs.pop() if len(outputs) == 1 else "mixed"

    def _parents(self, stage: Stage, by_name: Mapping[str, Stage],
                 first_output: Mapping[str, str]) -> list[tuple[Item, str, str, BuilderPlan | None]]:
        """(parent item, output path as the child records it, the parent output's kind, its builder) per source
        item, in source order; checks that the stage can take what the source makes."""
        settings = stage.settings
        if stage.source_run is not None:
            found = stage.source_run
            parents: list[tuple[Item, str, str, BuilderPlan | None]] = [
                (Item(s.index, s.item_id, "", s.params), s.output, s.kind, None) for s in found.items]
            for kind in {s.kind for s in found.items}:
                self._check_take(stage, kind, f"run {found.run_id}", None)
            return parents
        assert isinstance(settings.source, str)
        if settings.source == self.first_stage:
            items = [self.item(index) for index in range(self.base_total)]
            made = [(item, first_output[item.builder_hash], self.builders[item.builder_hash]) for item in items]
        else:
            source = by_name[settings.source]
            made = [(item, source.output, self.builders[item.builder_hash]) for item in source.items]
        width = self.index_width
        seen: set[tuple[str, str]] = set()
        parents = []
        for item, kind, builder in made:
            if (builder.hash, kind) not in seen:
                seen.add((builder.hash, kind))
                self._check_take(stage, kind, f"'{settings.source}'", builder)
            extension = LATENTS_EXTENSION if kind == "latents" else EXTENSIONS.get(kind, ".png")
            parents.append((item, f"items/{item.index:0{width}d}-{hashing.short(item.item_id)}{extension}", kind,
                            builder))
        return parents

    def _check_take(self, stage: Stage, kind: str, source_name: str, source_builder: BuilderPlan | None) -> None:
        settings = stage.settings
        where = f"{stage.prefix}.take"
        wanted = {"image": ("image",), "video": ("video", "video_audio"), "latents": ("latents",)}[settings.take]
        if kind not in wanted:
            makes = "latents (a later stage takes them undecoded)" if kind == "latents" else kind
            maker = f" ({source_builder.spec.name})" if source_builder is not None else ""
            raise ConfigError(ConfigIssue(where, f"stage '{stage.name}' takes {settings.take} from {source_name}, "
                                                 f"whose items{maker} make {makes}", self._source_of(where)))
        if settings.take == "latents" and source_builder is not None:
            for builder in stage.builders:
                problem = latent_space_problem(source_builder, builder)
                if problem:
                    raise ConfigError(ConfigIssue(where, f"stage '{stage.name}' cannot take latents from "
                                                         f"{source_name}: {problem}", self._source_of(where)))

    def _make_items(self, stage: Stage, parents: list[tuple[Item, str, str, BuilderPlan | None]],
                    source_of: SourceOf) -> None:
        settings, planner, grid = stage.settings, stage.planner, stage.planner.grid
        points = len(grid)
        if settings.mode == "zip" and points != len(parents) and settings.grid:
            raise ConfigError(ConfigIssue(f"{stage.prefix}.mode", f"zip pairs each source item with one grid point: "
                                                                  f"{len(parents)} source item(s), {points} grid "
                                                                  f"point(s)", source_of(f"{stage.prefix}.mode")))
        own_fixed = {k for k, v in settings.params.items() if v is not None} | set(settings.grid)
        forced = LATENT_OUTPUT if stage.output == "latents" else {}
        checked: set[str] = set()
        items: list[Item] = []
        for rank, (parent, path, _, _) in enumerate(parents):
            for position in ([rank] if settings.mode == "zip" and settings.grid else range(points)):
                point = grid.point(position)
                builder = planner.builder_at(point)
                params = planner.params_at(builder, point)
                accepted = builder.spec.params | {"prompt", "seed"}
                for child, parent_key in stage.inherit.items():
                    if child not in own_fixed and parent_key in parent.params and child in accepted:
                        params[child] = parent.params[parent_key]
                params.update(forced)
                key = hashing.canonical_json([builder.hash, {k: v for k, v in params.items() if k != "seed"}])
                if key not in checked:
                    self._check_child(stage, builder, params, forced)
                    checked.add(key)
                own = dict(params)
                params[settings.into] = path
                item_id = hashing.digest("item", {"builder": builder.hash, "parent": parent.item_id,
                                                  "params": identity_params(own)})
                items.append(Item(stage.first_index + len(items), item_id, builder.hash, params, stage.name,
                                  parent.item_id))
        stage.items = items

    def _check_child(self, stage: Stage, builder: BuilderPlan, params: Mapping[str, Any],
                     forced: Mapping[str, Any]) -> None:
        into = stage.settings.into
        checked = {k: v for k, v in params.items() if k not in forced and k not in (into, UPSCALE)}
        problems = [(k, m) for k, m in builder.provider.check_params(builder.spec, checked, builder.config)
                    if k.split("[", 1)[0] != into]
        if UPSCALE in params and (stage.settings.take != "image" or into != "image"):
            problems.append((UPSCALE, "upscale resizes the source image of a stage that takes an image into 'image'"))
        if "prompt" not in params:
            problems.append(("prompt", f"no prompt: set {stage.prefix}.params.prompt or grid.prompt, or inherit it"))
        if problems:
            issues = [ConfigIssue(self._stage_where(stage, k), m, self._source_of(self._stage_where(stage, k)))
                      for k, m in problems]
            raise ConfigError(issues)

    @staticmethod
    def _stage_where(stage: Stage, key: str) -> str:
        root = key.split("[", 1)[0]
        settings = stage.settings
        if root in settings.grid:
            return f"{stage.prefix}.grid.{root}"
        if settings.params.get(root) is not None:
            return f"{stage.prefix}.params.{key}"
        if root in stage.inherit and root not in settings.generation:
            return f"{stage.prefix}.inherit"
        return f"{stage.prefix}.generation.{key}"

    # ----- the plan's interface over every stage ---------------------------------------------
    def _all_items(self) -> Iterator[Item]:
        yield from super()._all_items()
        for stage in self.stages:
            yield from stage.items

    def _all_item_ids(self) -> Iterator[str]:
        yield from super()._all_item_ids()
        for stage in self.stages:
            yield from (item.item_id for item in stage.items)

    def item(self, index: int) -> Item:
        if index < self.base_total:
            return super().item(index)
        for stage in self.stages:
            if index < stage.first_index + len(stage.items):
                return stage.items[index - stage.first_index]
        raise IndexError(f"item index {index} is not in 0..{self.total - 1}")

    def is_planned(self, index: int, item_id: str) -> bool:
        return (0 <= index < self.size and self.item(index).item_id == item_id
                and (self.selected is None or item_id in self.selected))

    @property
    def size(self) -> int:
        """Every item of the chain (`total` counts a selection's)."""
        return self.base_total + sum(len(stage.items) for stage in self.stages)

    def select(self, wanted: Iterable[str | int]) -> None:
        """Narrow the chain to some items and their ancestors: a later item is made from its parent's output in the
        same run folder."""
        everything = {item.item_id: item for item in self._all_items()}
        chosen: set[str] = set()
        for key in wanted:
            if isinstance(key, int):
                if not 0 <= key < self.size:
                    raise ConfigError(ConfigIssue("--index", f"no item with index {key}: this run's items have "
                                                             f"indices 0 to {self.size - 1}"))
                chosen.add(self.item(key).item_id)
                continue
            found = [item_id for item_id in everything if item_id.startswith(key.lower())] if key else []
            if len(found) != 1:
                raise ConfigError(ConfigIssue("--item", f"item '{key}' is {'ambiguous' if found else 'not'} in this "
                                                        f"run's plan{' (give more of its id)' if found else ''}"))
            chosen.add(found[0])
        self._narrow(chosen, everything)
        self.rerun_of_items = True

    def _narrow(self, chosen: Iterable[str], everything: Mapping[str, Item]) -> None:
        """Plan only the items `chosen` and their ancestors in this run (an item fed from another run folder has
        none here, even where its parent's id is one of this run's)."""
        fed_by_run = {stage.name for stage in self.stages if stage.source_run is not None}
        narrowed = set(chosen)
        for item_id in list(narrowed):
            item = everything[item_id]
            while item.stage not in fed_by_run and item.parent is not None and item.parent in everything:
                item = everything[item.parent]
                narrowed.add(item.item_id)
        self.selected = frozenset(narrowed)
        self.total = len(narrowed)

    def _make_only(self, names: Iterable[str], source_of: SourceOf) -> None:
        """`stages.make`: the items of these stages and what they need."""
        check_make(names, self.stage_names(), source_of)
        wanted = set(names)
        everything = {item.item_id: item for item in self._all_items()}
        self._narrow((item_id for item_id, item in everything.items() if item.stage in wanted), everything)

    def stage_planned(self, name: str) -> int:
        """How many of a stage's items the run plans (of a selection: the selected ones)."""
        stage = self.stage_of(name)
        ids = [i.item_id for i in stage.items] if stage else list(super()._all_item_ids())
        return len(ids) if self.selected is None else sum(1 for item_id in ids if item_id in self.selected)

    def stage_of(self, name: str) -> Stage | None:
        return next((stage for stage in self.stages if stage.name == name), None)

    def stage_names(self) -> list[str]:
        return [self.first_stage, *(stage.name for stage in self.stages)]

    def stage_builders(self, name: str) -> list[BuilderPlan]:
        if name == self.first_stage:
            return [self.builders[h] for h in dict.fromkeys(
                b.hash for b in self._builder_by_point.values())]
        stage = self.stage_of(name)
        return list(stage.builders) if stage else []

    def stage_batch_size(self, stage: Stage, builder: BuilderPlan) -> int:
        return stage.planner.batch_size(builder)

    def stage_batches(self, stage: Stage, items: list[Item], skip: Container[str]) -> Iterator[Batch]:
        """The batches of some of a stage's items: items that share a call shape (and so a parent) go together."""
        open_batches: dict[str, Batch] = {}
        for item in items:
            if item.item_id in skip:
                continue
            builder = self.builders[item.builder_hash]
            key = self.shape_key(builder, item.params)
            batch = open_batches.setdefault(key, Batch(builder, stage=stage.name))
            batch.items.append(item)
            if len(batch.items) >= self.stage_batch_size(stage, builder):
                yield open_batches.pop(key)
        yield from open_batches.values()

    def _batches(self, skip: Container[str]) -> Iterator[Batch]:
        first = (replace(batch, stage=self.first_stage) for batch in super()._batches(skip))
        yield from self._chain_batches(first, skip)

    def _chain_batches(self, first: Iterable[Batch], skip: Container[str]) -> Iterator[Batch]:
        """The first stage's batches `first` and the batches of the later stages' items not in `skip`, in the chain's
        order (breadth or depth)."""
        if self.order == "breadth":
            yield from first
            for stage in self.stages:
                yield from self.stage_batches(stage, stage.items, skip)
            return
        yield from self._depth_first(first, skip)

    def _depth_first(self, first: Iterable[Batch], skip: Container[str]) -> Iterator[Batch]:
        """Each batch followed at once by the batches of the stages that take its items, and theirs."""
        children: dict[str, dict[str, list[Item]]] = {stage.name: {} for stage in self.stages}
        for stage in self.stages:
            for item in stage.items:
                children[stage.name].setdefault(item.parent or "", []).append(item)
        reached: dict[str, set[str]] = {stage.name: set() for stage in self.stages}

        def below(batch: Batch) -> Iterator[Batch]:
            yield batch
            for stage in self.stages:
                if stage.source != batch.stage:
                    continue
                mine = [c for item in batch.items for c in children[stage.name].get(item.item_id, [])]
                reached[stage.name].update(c.item_id for c in mine)
                for child in self.stage_batches(stage, mine, skip):
                    yield from below(child)

        for batch in first:
            yield from below(batch)
        for stage in self.stages:  # children of parents made earlier (a resume), and theirs
            rest = [item for item in stage.items if item.item_id not in reached[stage.name]]
            for batch in self.stage_batches(stage, rest, skip):
                yield from below(batch)

    # ----- families: what one shard of a distributed run holds --------------------------------
    def root_batches(self) -> Iterator[Batch]:
        """The batches of items whose parent is not in the plan, in plan order: the first stage's, then those of each
        stage fed from another run folder (of a plan narrowed by `stages.make`, those it makes). Every other item
        descends from an item of exactly one of them."""
        first = (replace(batch, stage=self.first_stage) for batch in super()._batches(()))
        yield from (batch for batch in first if self._holds_planned(batch.items))
        for stage in self.stages:
            if stage.source_run is not None:
                yield from self.stage_batches(stage, stage.items, self._not_planned())

    def _holds_planned(self, items: Iterable[Item]) -> bool:
        return self.selected is None or any(item.item_id in self.selected for item in items)

    def _not_planned(self) -> Container[str]:
        """The ids a narrowed plan leaves out (`stages.make`), as a `skip`."""
        return () if self.selected is None else _NotHeld(self.selected, ())

    def families(self) -> Iterator[tuple[Batch, list[Item]]]:
        """Each root batch with every planned descendant of its items: their children, the children of those, and so
        on (of a plan narrowed by `stages.make`, those it makes)."""
        children: dict[str, list[Item]] = {}
        for stage in self.stages:
            if stage.source_run is None:  # a run folder's item ids may equal this plan's: they are no parents here
                for item in stage.items:
                    children.setdefault(item.parent or "", []).append(item)
        for batch in self.root_batches():
            descendants: list[Item] = []
            parents = [item.item_id for item in batch.items]
            while parents:
                found = children.get(parents.pop(), [])
                descendants += found
                parents += [child.item_id for child in found]
            yield batch, [item for item in descendants if self.selected is None or item.item_id in self.selected]

    def family_batches(self, first: int, stop: int, skip: Container[str]) -> Iterator[Batch]:
        """The batches of root batches `first` up to (not including) `stop` and of every descendant of their items,
        less the items in `skip`, in the order a one-process run makes them: a shard of a distributed run. A later
        stage's batch holds the children of one parent, so the shard's batches are the one-process run's."""
        roots: list[Batch] = []
        held: set[str] = set()
        for batch, descendants in itertools.islice(self.families(), first, stop):
            roots.append(batch)
            held.update(item.item_id for item in (*batch.items, *descendants))
        first_stage = (Batch(batch.builder, items, stage=batch.stage) for batch in roots
                       if batch.stage == self.first_stage
                       and (items := [item for item in batch.items if item.item_id not in skip]))
        yield from self._chain_batches(first_stage, _NotHeld(held, skip))

    def released_after(self, stage: str) -> list[BuilderPlan]:
        """Builders of `stage` no later stage uses: unloaded once it is finished (breadth order)."""
        names = self.stage_names()
        later = {b.hash for name in names[names.index(stage) + 1:] for b in self.stage_builders(name)}
        return [b for b in self.stage_builders(stage) if b.hash not in later]

    def summary(self) -> dict[str, Any]:
        summary = super().summary()  # the first stage's, counted from its call shapes
        summary["items"] = self.total
        per_builder = {b["hash"]: b for b in summary["builders"]}
        narrowed = self.selected is not None
        if narrowed:  # `stages.make`: what the plan makes, item by item
            for builder in per_builder.values():
                builder["items"] = 0
            for item in self.items():
                per_builder[hashing.short(item.builder_hash)]["items"] += 1
            summary["batches"] = sum(1 for batch in self.batches() if batch.stage == self.first_stage)
        stages = [{"name": self.first_stage, "source": None, "take": None, "into": None,
                   "items": self.stage_planned(self.first_stage),
                   "builders": [b.short for b in self.stage_builders(self.first_stage)],
                   "batches": summary["batches"], "output": self._first_output_kind()}]
        for stage in self.stages:
            batches = sum(1 for _ in self.stage_batches(stage, stage.items, self._not_planned()))
            if not narrowed:
                for item in stage.items:
                    per_builder[hashing.short(item.builder_hash)]["items"] += 1
            stages.append({"name": stage.name, "source": stage.source, "take": stage.settings.take,
                           "into": stage.settings.into, "items": self.stage_planned(stage.name),
                           "builders": [b.short for b in stage.builders], "batches": batches,
                           "output": stage.output})
            summary["batches"] += batches
        summary["calls"] = summary["batches"]
        for builder in per_builder.values():  # a builder used by several stages is loaded once
            builder.setdefault("stages", [s["name"] for s in stages if builder["hash"] in s["builders"]])
        summary["stages"] = stages
        summary["order"] = {"order": self.order, "why": self.order_reason}
        return summary

    def summary_output(self) -> str:
        """What the first stage's items give."""
        return self._first_output_kind()

    def _first_output_kind(self) -> str:
        if self.forced_params:
            return "latents"
        outputs = {b.spec.output for b in self.stage_builders(self.first_stage)}
        return outputs.pop() if len(outputs) == 1 else "mixed"


@dataclass(frozen=True)
class _NotHeld:
    """The item ids a shard does not make: those outside it, and those in `skip`."""

    held: Container[str]
    skip: Container[str]

    def __contains__(self, item_id: object) -> bool:
        return item_id not in self.held or item_id in self.skip


# ----- checks of the chain's shape ------------------------------------------------------------------
def check_make(names: Iterable[str], known: list[str], source_of: SourceOf) -> None:
    """`stages.make` names stages of the chain (of a sweep without later stages: its first stage)."""
    issues = [ConfigIssue(f"stages.make[{position}]", f"no stage named '{name}'{did_you_mean(name, known)}; the "
                                                      f"stages are {', '.join(known)}", source_of("stages.make"))
              for position, name in enumerate(names) if name not in known]
    if issues:
        raise ConfigError(issues)


def _check_unique(stages: Iterable[Stage], source_of: SourceOf) -> None:
    """No two later items are the same work (the same parent, builder and params, as when two stages repeat each
    other, or a stage fed from a run of this chain repeats one of its stages): an item id names exactly one item."""
    made_by: dict[str, str] = {}
    for stage in stages:
        for item in stage.items:
            if item.item_id in made_by:
                raise ConfigError(ConfigIssue(stage.prefix, f"item {item.item_id[:12]} is the same work as an item of "
                                                            f"stage {made_by[item.item_id]} (the same parent, builder "
                                                            f"and params): change its params, or drop one of the two",
                                              source_of(stage.prefix)))
            made_by[item.item_id] = stage.name


def _check_sources(config: RunConfig, source_of: SourceOf) -> None:
    """Every source names an earlier stage (or a run folder): no unknown names, none later, no cycles."""
    assert config.stages is not None
    chain, first = config.stages.chain, config.stages.first
    names = [first, *chain]
    issues = []
    if first in chain:
        issues.append(ConfigIssue(f"stages.chain.{first}", f"'{first}' is the first stage's name (stages.first); "
                                                           f"name this stage otherwise", source_of("stages.first")))
    for position, (name, stage) in enumerate(chain.items(), start=1):
        where = f"stages.chain.{name}.source"
        if not isinstance(stage.source, str):
            continue
        if stage.source == name:
            issues.append(ConfigIssue(where, f"stage '{name}' takes its own items: a cycle", source_of(where)))
        elif stage.source not in names:
            issues.append(ConfigIssue(where, f"no stage named '{stage.source}'; the stages are "
                                             f"{', '.join(names)}", source_of(where)))
        elif names.index(stage.source) > position:
            cycle = _cycle(chain, name)
            issues.append(ConfigIssue(where, (f"a cycle: {' -> '.join(cycle)}" if cycle else
                                              f"stage '{stage.source}' comes after '{name}'") +
                                      "; a stage takes items of an earlier stage only", source_of(where)))
    if issues:
        raise ConfigError(issues)


def _cycle(chain: Mapping[str, StageSettings], start: str) -> list[str]:
    path, name = [start], start
    while True:
        source = chain[name].source if name in chain else None
        if not isinstance(source, str) or source not in chain and source != start:
            return []
        path.append(source)
        if source == start:
            return path
        if source in path[:-1]:
            return []
        name = source


def _inherit_of(settings: StageSettings) -> dict[str, str]:
    if settings.inherit is None:
        return {name: name for name in DEFAULT_INHERIT}
    if isinstance(settings.inherit, list):
        return {name: name for name in settings.inherit}
    return dict(settings.inherit)


def _takes(params: frozenset[str]) -> str:
    inputs = sorted(p for p in params if p in ("image", "control_image", "ip_adapter_image", "video"))
    return f" (it takes {', '.join(inputs)})" if inputs else " (it takes no input image)"


def latent_space_problem(source: BuilderPlan, target: BuilderPlan) -> str | None:
    """Why latents of one builder cannot go to another: a different latent space (packing), or VAEs whose channels
    or scaling factors differ where both configs can be read."""
    if source.spec.latent_space != target.spec.latent_space:
        return (f"{source.spec.name} makes '{source.spec.latent_space}' latents and {target.spec.name} takes "
                f"'{target.spec.latent_space}' latents")
    mine, theirs = _vae_config(source), _vae_config(target)
    if mine and theirs:
        for key in ("latent_channels", "scaling_factor", "shift_factor"):
            if mine.get(key) != theirs.get(key):
                return f"their VAEs differ in {key} ({mine.get(key)} and {theirs.get(key)})"
    return None


def _vae_config(builder: BuilderPlan) -> dict[str, Any] | None:
    """The builder's VAE config where it can be read without loading or downloading anything."""
    return component_config(builder.provider, builder.config, "vae")


def _order(config: RunConfig, plan: StagedPlan) -> tuple[str, str]:
    """Breadth (finish a stage, unload it, load the next) or depth (children as soon as their parents' batch is
    done), and why."""
    assert config.stages is not None
    asked = config.stages.order
    if asked != "auto":
        return asked, "stages.order"
    sizes = [_weights_bytes(b) for b in plan.builders.values()]
    if any(size is None for size in sizes):
        return "breadth", "auto: the size of some stage's weights is not known before loading"
    total = sum(size or 0 for size in sizes)
    room = _room_bytes(plan.device)
    if room is None or total > room:
        return "breadth", f"auto: the stages' weights ({total / 2**30:.1f} GiB) do not fit together"
    return "depth", f"auto: every stage's weights fit together ({total / 2**20:.1f} MiB)"


def _weights_bytes(builder: BuilderPlan) -> int | None:
    model = builder.config["model"]
    if model.startswith(TINY_PREFIX):
        return 4 << 20  # a tiny random-weight model: a few megabytes at most
    source = builder.provider.locate(builder.config, build=False)
    if not isinstance(source, Path) or not source.is_dir():
        return None
    return sum(f.stat().st_size for f in source.rglob("*") if f.suffix in (".safetensors", ".bin", ".gguf"))


def _room_bytes(device: Any) -> int | None:
    """Memory the stages' pipelines may hold together: most of the accelerator's total, or half the machine's RAM."""
    import os  # noqa: PLC0415 - only a chain asks

    if getattr(device, "type", "cpu") == "cuda":
        import torch  # noqa: PLC0415 - start-up time: torch loads only where an accelerator is asked about

        return int(torch.cuda.get_device_properties(device).total_memory * 0.8)
    try:
        return int(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // 2)
    except (ValueError, OSError, AttributeError):
        return None


def is_chain_kind(kind: str) -> bool:
    """A kind of output a stage can hand on."""
    return kind in KINDS or kind == "latents"


def point_builder(point: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in point.items() if k.startswith(BUILDER_AXIS)}
