"""Scoring a run folder: `scores.jsonl`, one line per (item, metric).

Each line is `{"item_id", "metric", "value", "model", "revision", "time", "skipped"}`: `value` is null
and `skipped` says why when a metric does not take an item's kind of output. Scoring is resumable:
only (item, metric) pairs without a line, or whose line was scored with other weights than the metric
now uses (another `score.clip.model`), are scored, and the file is rewritten atomically after every
batch, so an interrupted scoring keeps what it finished. The run's own records (manifest, run.json,
items) are only read. Video is scored on `score.video_frames` frames sampled evenly (the item's value
is their mean); audio is scored only by metrics that take audio.
"""

from __future__ import annotations

import io
import logging
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from diffsweep import media
from diffsweep.errors import DiffsweepError
from diffsweep.metrics import Metric, Sample, ScoreSettings, check_metrics, metric_class
from diffsweep.store.folder import RunFolder
from diffsweep.store.records import ItemRecord, ScoreRecord, now

log = logging.getLogger("diffsweep")

MODEL_FREE = ("sharpness", "colourfulness")  # what `diffsweep-runs score` runs when nothing names a metric


@dataclass
class ScoreOutcome:
    """What one scoring pass did."""

    scored: int = 0
    skipped: int = 0
    kept: int = 0
    outdated: int = 0  # lines scored again because the metric's weights changed
    items: int = 0
    seconds: float = 0.0
    damaged: list[str] = field(default_factory=list)  # "item <id>: <file> <what is wrong>", not scored

    @property
    def items_per_second(self) -> float | None:
        return self.items / self.seconds if self.seconds > 0 else None


@dataclass(frozen=True)
class Output:
    """An item's output decoded for scoring: image frames (one for an image, sampled ones for a video) or audio."""

    kind: str  # image | video | audio (a video with sound is scored on its frames, as video)
    frames: np.ndarray | None = None  # (F, H, W, 3) uint8
    audio: np.ndarray | None = None
    sample_rate: int | None = None


def sampled_frames(count: int, wanted: int) -> list[int]:
    """`wanted` frame indices spread evenly from the first frame to the last."""
    return sorted({int(round(i)) for i in np.linspace(0, count - 1, min(wanted, count))})


def decode(path: Path, video_frames: int) -> Output:
    suffix = path.suffix.lower()
    if suffix == ".mp4":
        frames = media.decode_mp4(path.read_bytes())
        return Output("video", frames=frames[sampled_frames(len(frames), video_frames)])
    if suffix == ".wav":
        import soundfile  # noqa: PLC0415 - start-up time: codecs load only for the media that need them

        audio, rate = soundfile.read(io.BytesIO(path.read_bytes()), dtype="float32")
        return Output("audio", audio=audio, sample_rate=rate)
    with Image.open(path) as image:
        return Output("image", frames=np.asarray(image.convert("RGB"))[None])


def skip_reason(metric: type[Metric], name: str, kind: str) -> str | None:
    if kind == "audio" and not metric.takes_audio:
        return f"audio output; {name} does not take audio"
    if kind != "audio" and not metric.takes_images:
        return f"{kind} output; {name} scores audio only"
    return None


def samples_of(record: ItemRecord, output: Output) -> list[Sample]:
    prompt = str(record.params.get("prompt", ""))
    if output.kind == "audio":
        return [Sample(record.item_id, prompt, audio=output.audio, sample_rate=output.sample_rate)]
    return [Sample(record.item_id, prompt, pixels=frame) for frame in (output.frames if output.frames is not None else [])]


def resolve_metrics(names: Sequence[str], settings: ScoreSettings, where: str) -> dict[str, type[Metric]]:
    check_metrics(names, settings.allowed_modules, where)
    return {name: metric_class(name, settings.allowed_modules, where) for name in names}


def score_run(run_dir: Path, settings: ScoreSettings, device: Any, where: str = "score.metrics") -> ScoreOutcome:
    """Score a run folder under its writer lock; see `score_folder`."""
    run = RunFolder(run_dir)
    classes = resolve_metrics(settings.metrics, settings, where)  # bad names fail before the lock is taken
    with run.locked():
        return score_folder(run, settings, device, classes)


def score_folder(run: RunFolder, settings: ScoreSettings, device: Any,
                 classes: Mapping[str, type[Metric]] | None = None) -> ScoreOutcome:
    """Score every ok item for every metric it has no line for; the caller holds the run's lock."""
    classes = classes if classes is not None else resolve_metrics(settings.metrics, settings, "score.metrics")
    started = time.perf_counter()
    lines = {record.key: record for record in run.read_scores()}
    weights = {name: cls.weights(settings) for name, cls in classes.items()}
    current = {key for key, line in lines.items() if key[1] in weights and _made_with(line, *weights[key[1]])}
    items = sorted((r for r in run.items().values() if r.ok and r.outputs), key=lambda r: r.index)
    damaged = {r.item_id: f"item {r.item_id}: {problem}" for r in items if (problem := run.damage(r))}
    for line in damaged.values():
        log.error("%s; it is not scored (a resume makes it again)", line)
    items = [r for r in items if r.item_id not in damaged]
    todo = [(record, [name for name in classes if (record.item_id, name) not in current]) for record in items]
    todo = [(record, names) for record, names in todo if names]
    outcome = ScoreOutcome(kept=sum(1 for r in items for name in classes if (r.item_id, name) in current),
                           outdated=sum(1 for r, names in todo for name in names if (r.item_id, name) in lines),
                           damaged=list(damaged.values()))
    loaded: dict[str, Metric] = {}
    for chunk in _chunks(todo, settings.batch_size):
        outputs = {record.item_id: decode(run.path / record.outputs[0], settings.video_frames) for record, _ in chunk}
        for name, cls in classes.items():
            wanted = [record for record, names in chunk if name in names]
            if not wanted:
                continue
            new = _score_one_metric(name, cls, wanted, outputs, loaded, settings, device)
            for record in new:
                lines[record.key] = record
                outcome.skipped += record.skipped is not None
                outcome.scored += record.skipped is None
        outcome.items += len(chunk)
        run.write_scores(lines.values())
    outcome.seconds = time.perf_counter() - started
    return outcome


def _made_with(line: ScoreRecord, model: str | None, revision: str | None) -> bool:
    """Whether a line holds what the metric would give now: skipped lines do, scores made with other weights not."""
    return line.skipped is not None or (line.model == model and (revision is None or line.revision == revision))


def _score_one_metric(name: str, cls: type[Metric], records: Sequence[ItemRecord], outputs: Mapping[str, Output],
                      loaded: dict[str, Metric], settings: ScoreSettings, device: Any) -> list[ScoreRecord]:
    stamp = now()
    skipped = {r.item_id: reason for r in records if (reason := skip_reason(cls, name, outputs[r.item_id].kind))}
    scored = [r for r in records if r.item_id not in skipped]
    values: dict[str, float] = {}
    model = revision = None
    if scored:
        if name not in loaded:
            loaded[name] = cls(settings, device)  # models load only when something needs them
        metric = loaded[name]
        model, revision = metric.model, metric.revision
        samples = [s for r in scored for s in samples_of(r, outputs[r.item_id])]
        results = metric.score(samples)
        if len(results) != len(samples):
            raise DiffsweepError(f"metric {name} returned {len(results)} scores for {len(samples)} samples")
        per_item: dict[str, list[float]] = {}
        for sample, value in zip(samples, results, strict=True):
            per_item.setdefault(sample.item_id, []).append(float(value))
        values = {item_id: float(np.mean(v)) for item_id, v in per_item.items()}
        for record in scored:
            found = values.get(record.item_id)
            if found is None:
                skipped[record.item_id] = "no frames could be decoded"
            elif not np.isfinite(found):  # JSON has no NaN; a null with its reason tells the truth
                skipped[record.item_id] = f"{name} gave {found}"
    return [ScoreRecord(item_id=r.item_id, metric=name, value=None if r.item_id in skipped else values[r.item_id],
                        skipped=skipped.get(r.item_id), model=None if r.item_id in skipped else model,
                        revision=None if r.item_id in skipped else revision, time=stamp)
            for r in records]


def _chunks(values: Sequence[Any], size: int) -> Iterator[Sequence[Any]]:
    for start in range(0, len(values), max(1, size)):
        yield values[start:start + size]
