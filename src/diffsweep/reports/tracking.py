"""Experiment tracking: a finished run (or resume) copied to MLflow or TensorBoard.

The run folder stays the record; tracking puts a summary of it where the rest of a researcher's
experiments live. It runs after the run's records and reports are written, and its failure never
fails the run: it is logged as a warning and recorded in run.json's `tracking` entry.

MLflow: one MLflow run per diffsweep run (a resume logs into the same one), params = the flattened
resolved config, metrics = counts, timings, peak memory and `scores_summary.csv`, artifacts = the
run-level files and the score plots. A Hydra multirun opens a parent run first (`diffsweep.cli.multirun.TrackJobs`) and
passes it to its jobs through the environment, which process-per-job launchers inherit.

TensorBoard: one event folder per run, `<log folder>/<sweep.name>/<version>`, with the config as
hparams, the same metrics as scalars and an image grid per builder.
"""

from __future__ import annotations

import atexit
import csv
import importlib.util
import json
import logging
import math
import os
import re
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from diffsweep import hashing
from diffsweep.config.extras import TRACKING_MODULES
from diffsweep.config.model import RunConfig, TrackingSettings
from diffsweep.store.folder import MANIFEST, RUN_JSON, RunFolder
from diffsweep.store.records import ItemRecord, RunInfo, Tracking
from diffsweep.store.runconfig import read_overrides

log = logging.getLogger("diffsweep")

PARENT_ENV = "DIFFSWEEP_MLFLOW_PARENT"  # {"uri", "experiment_id", "run_id"} of a multirun's parent run
SCORES_SUMMARY = "scores_summary.csv"
SCORE_PLOTS = "scores"  # the folder of score plots (diffsweep.reports.score_stats)
# run-level files logged as MLflow artifacts when present; run.json goes last, once it records the tracking
RUN_FILES = ("config.yaml", "overrides.yaml", MANIFEST, "index.html", "data.js", "run.log", "scores.jsonl",
             SCORES_SUMMARY)
MLFLOW_PARAM_LIMIT = 6000  # MLflow's longest param value (mlflow.utils.validation.MAX_PARAM_VAL_LENGTH)
MLFLOW_KEY_LIMIT = 250
TRUNCATED = "...[truncated: the full config is the config.yaml artifact]"
GRID_ITEMS = 64  # items shown in a builder's TensorBoard grid
THUMBNAIL = 128
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp")


def track_run(run: RunFolder, config: RunConfig, info: RunInfo) -> None:
    """Log a finished attempt to the configured backend and record the outcome in run.json."""
    backend = config.tracking.backend
    if backend == "none":
        return
    tracker: MlflowTracker | TensorBoardTracker = (
        MlflowTracker(run.path, config, info) if backend == "mlflow" else TensorBoardTracker(run.path, config, info))
    try:
        info.tracking = Tracking.model_validate({**tracker.log(), "status": "logged"})
        run.write_info(info)
        tracker.close()
        log.info("tracked with %s: %s", backend, tracker.where())
    except Exception as error:  # noqa: BLE001 - the run is complete on disk whatever the tracker does
        log.warning("tracking with %s failed (the run itself is complete in %s): %s: %s", backend, run.path,
                    type(error).__name__, error)
        info.tracking = Tracking.model_validate({**tracker.record, "status": "failed",
                                                 "error": f"{type(error).__name__}: {error}"})
        run.write_info(info)


def describe_tracking(record: Tracking) -> str:
    """run.json's `tracking` entry as one line: backend, outcome, where, which run."""
    text = f"{record.backend} ({record.status})"
    if record.backend == "tensorboard":
        text += f" {record.log_dir}"
    else:
        ids = [f"experiment {record.experiment_id}" if record.experiment_id else "",
               f"parent run {record.parent_run_id}" if record.parent_run_id else "",
               f"run {record.run_id}" if record.run_id else ""]
        text += f" {record.uri}  " + ", ".join(i for i in ids if i)
    return text + (f"  {record.error}" if record.error else "")


# --- what is logged --------------------------------------------------------------------------------


def flatten(doc: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """`{"builder": {"model": "x"}}` -> `{"builder.model": "x"}`; lists and empty mappings stay values."""
    flat: dict[str, Any] = {}
    for key, value in doc.items():
        if isinstance(value, Mapping) and value:
            flat.update(flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def as_text(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)


def truncated(text: str, limit: int = MLFLOW_PARAM_LIMIT) -> str:
    """`text` cut to `limit` characters with a marker saying where the whole value is."""
    return text if len(text) <= limit else text[:limit - len(TRUNCATED)] + TRUNCATED


def metric_key(key: str) -> str:
    """A key MLflow accepts (letters, digits, `_-. /:`); other characters become `_`."""
    return re.sub(r"[^\w.\- /:]", "_", key)[:MLFLOW_KEY_LIMIT]


def run_metrics(run_dir: Path, info: RunInfo) -> dict[str, float]:
    """Counts, timings, cache use and peak memory of the run, and its score summaries if scored."""
    timings, cache = info.timings, info.cache
    values: dict[str, float | int | None] = {
        **{f"items/{key}": value for key, value in info.counts.model_dump().items()},
        "timings/load_seconds": timings.load_seconds, "timings/first_call_seconds": timings.first_call_seconds,
        "timings/steady_seconds": timings.steady_seconds,
        "timings/steady_items_per_second": timings.steady_items_per_second,
        "memory/peak_bytes": timings.peak_memory_bytes, "cache/loads": cache.loads, "cache/hits": cache.hits}
    metrics = {key: float(value) for key, value in values.items() if value is not None}
    metrics.update(score_metrics(run_dir / SCORES_SUMMARY))
    return metrics


def score_metrics(path: Path) -> dict[str, float]:
    """`scores/<metric>[/<axis>/<value>]/<statistic>` from scores_summary.csv (columns metric, axis,
    value, n, mean, std, ci_low, ci_high); nothing when the run was not scored."""
    if not path.is_file():
        return {}
    metrics: dict[str, float] = {}
    with path.open(newline="", encoding="utf-8") as handle:
        for row in csv.DictReader(handle):
            base = "/".join(part for part in ("scores", row.get("metric"), row.get("axis"), row.get("value")) if part)
            for statistic in ("n", "mean", "std", "ci_low", "ci_high"):
                try:
                    number = float(row.get(statistic) or "nan")
                except ValueError:
                    continue
                if math.isfinite(number):
                    metrics[metric_key(f"{base}/{statistic}")] = number
    return metrics


def _status(info: RunInfo) -> str:
    return {"complete": "FINISHED", "failed": "FAILED", "interrupted": "KILLED"}.get(info.status, "RUNNING")


# --- MLflow ----------------------------------------------------------------------------------------


def mlflow_uri(settings: TrackingSettings, root: Path) -> str:
    """The configured tracking URI, or a SQLite store under the output root."""
    return settings.uri or f"sqlite:///{root / 'mlflow.db'}"


def _quiet_mlflow() -> None:
    """MLflow and its database migrations log at INFO on every start; diffsweep's own line says enough."""
    for name in ("mlflow", "alembic"):
        logging.getLogger(name).setLevel(logging.WARNING)


def mlflow_experiment(client: Any, name: str, uri: str, root: Path) -> str:
    """The id of experiment `name`, created if new (by another job at the same time, too); in the
    default local store its artifacts go to <output.root>/mlartifacts, not the working directory."""
    from mlflow.exceptions import MlflowException  # noqa: PLC0415 - optional extra: loaded only when tracking with it

    found = client.get_experiment_by_name(name)
    if found is not None:
        return found.experiment_id
    local = uri == mlflow_uri(TrackingSettings(), root)
    try:
        return client.create_experiment(name, artifact_location=(root / "mlartifacts").as_uri() if local else None)
    except MlflowException:
        found = client.get_experiment_by_name(name)
        if found is None:
            raise
        return found.experiment_id


@dataclass
class ParentRun:
    """The MLflow run that groups the jobs of one multirun."""

    uri: str
    experiment_id: str
    run_id: str

    def to_env(self) -> str:
        return json.dumps({"uri": self.uri, "experiment_id": self.experiment_id, "run_id": self.run_id})

    @classmethod
    def from_env(cls) -> ParentRun | None:
        raw = os.environ.get(PARENT_ENV)
        return cls(**json.loads(raw)) if raw else None


def start_parent(settings: TrackingSettings, output_root: str, name: str,
                 overrides: Iterable[str]) -> ParentRun | None:
    """Open the parent run of a multirun (with tracking=mlflow) and hand it to the jobs."""
    if settings.backend != "mlflow" or any(importlib.util.find_spec(m) is None for m in TRACKING_MODULES["mlflow"]):
        return None
    from mlflow.tracking import MlflowClient  # noqa: PLC0415 - optional extra: loaded only when tracking with it
    from mlflow.utils.mlflow_tags import MLFLOW_RUN_NAME  # noqa: PLC0415 - optional extra: loaded only when tracking with it

    _quiet_mlflow()
    root = Path(output_root).expanduser().absolute()
    root.mkdir(parents=True, exist_ok=True)
    uri = mlflow_uri(settings, root)
    client = MlflowClient(tracking_uri=uri)
    experiment_id = mlflow_experiment(client, settings.experiment or name, uri, root)
    run = client.create_run(experiment_id, tags={MLFLOW_RUN_NAME: f"{name} multirun", "diffsweep.multirun": "true",
                                                 "diffsweep.overrides": truncated(" ".join(overrides))})
    parent = ParentRun(uri, experiment_id, run.info.run_id)
    os.environ[PARENT_ENV] = parent.to_env()
    atexit.register(_end_failed_parent, parent)  # a job that raised skips on_multirun_end
    log.info("multirun tracked under MLflow parent run %s (%s)", parent.run_id, uri)
    return parent


def end_parent(parent: ParentRun, status: str = "FINISHED") -> None:
    """Close the parent run with the number of job runs under it (once: later calls do nothing)."""
    if os.environ.get(PARENT_ENV) != parent.to_env():
        return
    del os.environ[PARENT_ENV]
    from mlflow.tracking import MlflowClient  # noqa: PLC0415 - optional extra: loaded only when tracking with it
    from mlflow.utils.mlflow_tags import MLFLOW_PARENT_RUN_ID  # noqa: PLC0415 - optional extra: loaded only when tracking with it

    client = MlflowClient(tracking_uri=parent.uri)
    jobs = client.search_runs([parent.experiment_id], f"tags.`{MLFLOW_PARENT_RUN_ID}` = '{parent.run_id}'")
    client.log_metric(parent.run_id, "jobs", len(jobs))
    client.set_terminated(parent.run_id, status)


def _end_failed_parent(parent: ParentRun) -> None:
    try:
        end_parent(parent, "FAILED")
    except Exception as error:  # noqa: BLE001 - at exit, a warning is all that can be done
        log.warning("could not close the MLflow parent run %s: %s", parent.run_id, error)


class MlflowTracker:
    """One diffsweep run as one MLflow run; a resume logs into the run it logged to before."""

    def __init__(self, run_dir: Path, config: RunConfig, info: RunInfo):
        self.run_dir, self.config, self.info = run_dir, config, info
        self.settings = config.tracking
        self.root = Path(config.output.root)
        self.uri = mlflow_uri(self.settings, self.root)
        self.record: dict[str, Any] = {"backend": "mlflow", "uri": self.uri}
        self.client: Any = None
        self.run_id: str | None = None

    def where(self) -> str:
        return f"run {self.run_id} in {self.uri}"

    def log(self) -> dict[str, Any]:
        from mlflow.entities import Metric, Param  # noqa: PLC0415 - optional extra: loaded only when tracking with it
        from mlflow.tracking import MlflowClient  # noqa: PLC0415 - optional extra: loaded only when tracking with it

        _quiet_mlflow()
        self.client = MlflowClient(tracking_uri=self.uri)
        self.run_id = self._reopened() or self._created()
        self.record["run_id"] = self.run_id
        step, stamp = len(self.info.attempts) - 1, int(time.time() * 1000)
        params = [Param(metric_key(key), truncated(as_text(value))) for key, value in flatten(self.config.to_doc()).items()]
        metrics = [Metric(key, value, stamp, step) for key, value in run_metrics(self.run_dir, self.info).items()]
        for start in range(0, len(params), 100):  # MLflow's batch limits: 100 params, 1000 metrics
            self.client.log_batch(self.run_id, params=params[start:start + 100])
        for start in range(0, len(metrics), 1000):
            self.client.log_batch(self.run_id, metrics=metrics[start:start + 1000])
        self.client.set_tag(self.run_id, "diffsweep.status", self.info.status)
        for path in [*(self.run_dir / name for name in RUN_FILES), *sorted(self.run_dir.glob("*.png"))]:
            if path.is_file():
                self.client.log_artifact(self.run_id, str(path))
        if (self.run_dir / SCORE_PLOTS).is_dir():
            self.client.log_artifacts(self.run_id, str(self.run_dir / SCORE_PLOTS), SCORE_PLOTS)
        if self.settings.log_items and (self.run_dir / "items").is_dir():
            self.client.log_artifacts(self.run_id, str(self.run_dir / "items"), "items")
        return dict(self.record)

    def close(self) -> None:
        """run.json last, as it now records where the run was tracked; then the run's status."""
        self.client.log_artifact(self.run_id, str(self.run_dir / RUN_JSON))
        self.client.set_terminated(self.run_id, _status(self.info))

    def _reopened(self) -> str | None:
        from mlflow.exceptions import MlflowException  # noqa: PLC0415 - optional extra: loaded only when tracking with it

        earlier = self.info.tracking
        if earlier is None or earlier.backend != "mlflow" or earlier.uri != self.uri or not earlier.run_id:
            return None
        try:
            self.client.get_run(earlier.run_id)
        except MlflowException:
            return None  # deleted from the store since: log a new one
        self.record.update({k: v for k in ("experiment_id", "parent_run_id") if (v := getattr(earlier, k))})
        self.client.update_run(earlier.run_id, status="RUNNING")
        return earlier.run_id

    def _created(self) -> str:
        from mlflow.utils.mlflow_tags import MLFLOW_PARENT_RUN_ID, MLFLOW_RUN_NAME  # noqa: PLC0415 - optional extra: loaded only when tracking with it

        name = self.config.sweep.name
        parent = ParentRun.from_env()
        if parent is not None and parent.uri != self.uri:
            log.warning("this job tracks to %s, its multirun's parent run is in %s: not grouped", self.uri, parent.uri)
            parent = None
        experiment_id = (parent.experiment_id if parent else
                         mlflow_experiment(self.client, self.settings.experiment or name, self.uri, self.root))
        tags = {MLFLOW_RUN_NAME: f"{name}/{self.info.version}", "diffsweep.run_dir": str(self.run_dir),
                "diffsweep.overrides": truncated(" ".join(read_overrides(self.run_dir)))}
        if parent is not None:
            tags[MLFLOW_PARENT_RUN_ID] = parent.run_id
            self.record["parent_run_id"] = parent.run_id
        self.record["experiment_id"] = experiment_id
        return self.client.create_run(experiment_id, tags=tags).info.run_id


# --- TensorBoard -----------------------------------------------------------------------------------


class TensorBoardTracker:
    """One diffsweep run as one TensorBoard event folder; a resume adds a step to it."""

    def __init__(self, run_dir: Path, config: RunConfig, info: RunInfo):
        self.run_dir, self.config, self.info = run_dir, config, info
        self.settings = config.tracking
        base = (Path(self.settings.uri).expanduser().absolute() if self.settings.uri
                else Path(config.output.root) / "tensorboard")
        self.log_dir = base / config.sweep.name / info.version
        self.record: dict[str, Any] = {"backend": "tensorboard", "log_dir": str(self.log_dir)}

    def where(self) -> str:
        return str(self.log_dir)

    def log(self) -> dict[str, Any]:
        from torch.utils.tensorboard import SummaryWriter  # noqa: PLC0415 - optional extra: loaded only when tracking with it

        step = len(self.info.attempts) - 1
        records = sorted(RunFolder(self.run_dir).items().values(), key=lambda r: r.index)
        with SummaryWriter(log_dir=str(self.log_dir)) as writer:
            for builder_hash, images in builder_images(self.run_dir, records).items():
                writer.add_image(f"builders/{hashing.short(builder_hash)}", image_grid(images[:GRID_ITEMS]), step,
                                 dataformats="HWC")
            if self.settings.log_items:
                for record in records:
                    for output in image_outputs(record):
                        writer.add_image(f"items/{Path(output).stem}", _rgb(self.run_dir / output), step,
                                         dataformats="HWC")
            hparams = {metric_key(key): value if isinstance(value, (bool, int, float, str)) else as_text(value)
                       for key, value in flatten(self.config.to_doc()).items()}
            # the metrics become this folder's scalars and the hparams table's columns
            writer.add_hparams(hparams, run_metrics(self.run_dir, self.info), run_name=".", global_step=step)
        return dict(self.record)

    def close(self) -> None:
        pass  # the writer is closed and flushed in `log`


def image_outputs(record: ItemRecord) -> list[str]:
    return [o for o in record.outputs if record.ok and o.lower().endswith(IMAGE_SUFFIXES)]


def builder_images(run_dir: Path, records: Iterable[ItemRecord]) -> dict[str, list[Path]]:
    """Each builder's image files, in item order (video and audio items have none)."""
    grouped: dict[str, list[Path]] = {}
    for record in records:
        for output in image_outputs(record):
            grouped.setdefault(record.builder_hash, []).append(run_dir / output)
    return grouped


def _rgb(path: Path) -> np.ndarray:
    with Image.open(path) as image:
        return np.asarray(image.convert("RGB"))


def image_grid(paths: list[Path]) -> np.ndarray:
    """Thumbnails in a near-square grid, as one HWC uint8 array."""
    thumbnails = []
    for path in paths:
        with Image.open(path) as image:
            thumbnail = image.convert("RGB")
            thumbnail.thumbnail((THUMBNAIL, THUMBNAIL))
            thumbnails.append(thumbnail)
    columns = math.ceil(math.sqrt(len(thumbnails)))
    rows = math.ceil(len(thumbnails) / columns)
    cell_w, cell_h = max(t.width for t in thumbnails), max(t.height for t in thumbnails)
    sheet = Image.new("RGB", (columns * cell_w, rows * cell_h))
    for position, thumbnail in enumerate(thumbnails):
        sheet.paste(thumbnail, ((position % columns) * cell_w, (position // columns) * cell_h))
    return np.asarray(sheet)
