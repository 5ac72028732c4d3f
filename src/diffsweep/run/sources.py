"""A stage fed from an existing run folder: its done items, those matching axis values, or its top k by a stored score.

The source folder is data, read only through the run folder's readers (run.json, the manifest, scores.jsonl): none of
its config is composed or run. What was chosen is recorded in run.json (`stages[].source_run`: the run, its config
hash, its manifest's SHA-256 and the chosen item ids); a resume or verify that finds the source changed since is
refused.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from diffsweep.config.model import SourceRun
from diffsweep.errors import ConfigError, ConfigIssue, DiffsweepError
from diffsweep.hashing import file_digest
from diffsweep.media import kind_of
from diffsweep.planning.stages import LATENTS_EXTENSION, SourceItem, SourceReader, SourceRunItems, StagedPlan
from diffsweep.store.folder import RunFolder
from diffsweep.store.records import ItemRecord, RunInfo


def source_reader(base_dir: Path | None = None) -> SourceReader:
    """Reads a stage's source run folder; a relative path is taken from `base_dir` (the working directory)."""

    def read(source: SourceRun, where: str) -> SourceRunItems:
        path = Path(source.run).expanduser()
        path = path if path.is_absolute() else (base_dir or Path.cwd()) / path
        return read_source_run(path, source, where)

    return read


def read_source_run(path: Path, source: SourceRun, where: str) -> SourceRunItems:
    run = RunFolder(path)
    try:
        info = run.check_is_run()
    except ConfigError as error:
        raise ConfigError(ConfigIssue(f"{where}.run", f"{path} is not a run folder diffsweep can read: "
                                                      f"{error.issues[0].message if error.issues else error}")) from None
    except DiffsweepError as error:
        raise ConfigError(ConfigIssue(f"{where}.run", f"{path}: {error}")) from None
    records = sorted((r for r in run.items().values() if r.ok and run.is_intact(r)), key=lambda r: r.index)
    chosen_by = ["done items"]
    stage = source.stage or (info.stages[-1].name if info.stages else None)
    if info.stages:
        names = [s.name for s in info.stages]
        if stage not in names:
            raise ConfigError(ConfigIssue(f"{where}.stage", f"the run {path} has no stage '{stage}'; its stages: "
                                                            f"{', '.join(names)}"))
        records = [r for r in records if (r.stage or names[0]) == stage]
        chosen_by.append(f"of stage {stage}")
    elif source.stage is not None:
        raise ConfigError(ConfigIssue(f"{where}.stage", f"the run {path} has no stages; leave stage out"))
    for key, values in source.where.items():
        records = [r for r in records if key in r.params and r.params[key] in values]
        chosen_by.append(f"{key} in {values}")
    if source.top is not None:
        records = _top(run, records, source.top.metric, source.top.k, source.top.lowest, f"{where}.top")
        chosen_by.append(f"{'lowest' if source.top.lowest else 'top'} {source.top.k} by {source.top.metric}")
    if not records:
        raise ConfigError(ConfigIssue(where, f"no item of the run {path} is chosen ({', '.join(chosen_by)}): it has "
                                             f"no done item that fits"))
    return SourceRunItems(run=str(run.path), run_id=f"{info.name}/{info.version}", config_hash=info.config_hash,
                          manifest_sha256=file_digest(run.manifest_path), items=[_item(run, r) for r in records],
                          chosen_by=", ".join(chosen_by))


def _top(run: RunFolder, records: list[ItemRecord], metric: str, k: int, lowest: bool,
         where: str) -> list[ItemRecord]:
    scores = [s for s in run.read_scores() if s.value is not None]
    values = {s.item_id: float(s.value) for s in scores if s.metric == metric and s.value is not None}
    if not values:
        metrics = sorted({s.metric for s in scores})
        raise ConfigError(ConfigIssue(f"{where}.metric", f"the run {run.path} has no {metric} scores (scores.jsonl: "
                                                         f"{', '.join(metrics) or 'none; score it with diffsweep-runs score'})"))
    scored = [r for r in records if r.item_id in values]
    scored.sort(key=lambda r: (values[r.item_id] if lowest else -values[r.item_id], r.index))
    return sorted(scored[:k], key=lambda r: r.index)


def _item(run: RunFolder, record: ItemRecord) -> SourceItem:
    latents = [o for o in record.outputs if o.endswith(LATENTS_EXTENSION)]
    output = latents[0] if latents else record.outputs[0]
    kind = "latents" if latents else kind_of(output, record.has_sound)
    return SourceItem(item_id=record.item_id, index=record.index, params=dict(record.params),
                      output=str(run.path / output), kind=kind)


def check_sources_unchanged(plan: object, info: RunInfo, source_of: Callable[[str], str | None]) -> None:
    """A run fed from another run: its source is what the run read when it started (the same run, config, manifest
    and chosen items), or the run is refused (exit 2), naming what changed."""
    if not isinstance(plan, StagedPlan) or not info.stages:
        return
    recorded = {s.name: s.source_run for s in info.stages if s.source_run is not None}
    issues = []
    for stage in plan.stages:
        before, now = recorded.get(stage.name), stage.source_run
        if before is None or now is None:
            continue
        where = f"stages.chain.{stage.name}.source"
        changed = [what for what, differs in (
            ("its config", before.config_hash != now.config_hash),
            ("its manifest", before.manifest_sha256 != now.manifest_sha256),
            ("the items chosen", before.items != [item.item_id for item in now.items])) if differs]
        if changed:
            issues.append(ConfigIssue(where, f"the source run {before.run_id} ({before.run}) changed since this run "
                                             f"read it ({', '.join(changed)}); start a new run to take it as it is now",
                                      source_of(where)))
    if issues:
        raise ConfigError(issues)
