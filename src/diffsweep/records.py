"""Typed records of a run folder: manifest lines (`ItemRecord`) and run.json (`RunInfo`).

The JSON Schemas in schemas/ (item.schema.json, run.schema.json) are the published contract for
other readers; these classes are how diffsweep itself writes and reads those files. A file is
parsed once, where it is read (`diffsweep.rundir.RunFolder`), and everything downstream handles
these objects. Keys a newer diffsweep adds are kept in `extra`, so reading and writing back a
record never drops what another version wrote.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

from diffsweep.errors import DiffsweepError

RUN_SCHEMA_VERSION = 2  # 2: counts describe the run's items; each attempt is kept in `attempts`
STATUSES = ("running", "complete", "failed", "interrupted")


class RecordError(DiffsweepError):
    """A record on disk does not have the shape its schema promises."""


def now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds")


def _int(raw: Mapping[str, Any], key: str, default: int | None = None) -> int:
    value = raw.get(key, default)
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise RecordError(f"{key}: expected a non-negative integer, got {value!r}")
    return value


def _number(raw: Mapping[str, Any], key: str, default: float | None = None) -> float | None:
    value = raw.get(key, default)
    if value is None:
        return None
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        raise RecordError(f"{key}: expected a number, got {value!r}")
    return value


def _text(raw: Mapping[str, Any], key: str, default: str | None = None) -> str:
    value = raw.get(key, default)
    if not isinstance(value, str):
        raise RecordError(f"{key}: expected a string, got {value!r}")
    return value


def _mapping(raw: Any, what: str) -> Mapping[str, Any]:
    if not isinstance(raw, Mapping):
        raise RecordError(f"{what}: expected a JSON object, got {type(raw).__name__}")
    return raw


def _extra(raw: Mapping[str, Any], known: Iterable[str]) -> dict[str, Any]:
    names = known if isinstance(known, frozenset) else set(known)
    return {key: value for key, value in raw.items() if key not in names}


# --- items -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class ItemRecord:
    """One committed item: a line of manifest.jsonl (and the core of its sidecar)."""

    index: int
    item_id: str
    builder_hash: str
    status: str  # "ok" | "failed"
    params: Mapping[str, Any]
    seed: int
    outputs: tuple[str, ...]
    seconds: float
    error: str | None = None
    made: Mapping[str, int] | None = None  # what the output holds: width/height (frames), or samples/sample_rate
    # prompts a text encoder cut: {parameter: {tokenizer: {tokens, used_tokens, dropped_text}}}
    prompt_truncated: Mapping[str, Any] | None = None
    extra: Mapping[str, Any] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    @property
    def short_id(self) -> str:
        return self.item_id[:12]

    @classmethod
    def from_json(cls, raw: Any) -> ItemRecord:
        raw = _mapping(raw, "manifest line")
        status = _text(raw, "status")
        if status not in ("ok", "failed"):
            raise RecordError(f"status: expected ok or failed, got {status!r}")
        outputs = raw.get("outputs", [])
        if not isinstance(outputs, list) or not all(isinstance(o, str) for o in outputs):
            raise RecordError(f"outputs: expected a list of paths, got {outputs!r}")
        error = raw.get("error")
        made = raw.get("made")
        if made is not None and not (isinstance(made, Mapping) and all(
                isinstance(v, int) and not isinstance(v, bool) for v in made.values())):
            raise RecordError(f"made: expected a mapping of integers, got {made!r}")
        return cls(index=_int(raw, "index"), item_id=_text(raw, "item_id"), builder_hash=_text(raw, "builder_hash"),
                   status=status, params=dict(_mapping(raw.get("params"), "params")), seed=_int(raw, "seed"),
                   outputs=tuple(outputs), seconds=float(_number(raw, "seconds", 0.0) or 0.0),
                   error=None if error is None else str(error), made=None if made is None else dict(made),
                   prompt_truncated=dict(_mapping(raw["prompt_truncated"], "prompt_truncated"))
                   if raw.get("prompt_truncated") is not None else None,
                   extra=_extra(raw, _ITEM_FIELDS))

    def to_json(self) -> dict[str, Any]:
        record: dict[str, Any] = {"index": self.index, "item_id": self.item_id, "builder_hash": self.builder_hash,
                                  "status": self.status, "params": dict(self.params), "seed": self.seed,
                                  "outputs": list(self.outputs), "seconds": round(self.seconds, 4)}
        if self.error is not None:
            record["error"] = self.error
        if self.made is not None:
            record["made"] = dict(self.made)
        if self.prompt_truncated:
            record["prompt_truncated"] = dict(self.prompt_truncated)
        record.update(self.extra)
        return record


_ITEM_FIELDS = frozenset(f.name for f in dataclasses.fields(ItemRecord))  # read once, not per manifest line


SIDECAR_SCHEMA_VERSION = 1


@dataclass(frozen=True)
class Sidecar:
    """An item's sidecar (`items/<stem>.json`; its PNG `diffsweep` chunk holds the same less the volatile fields):
    the item record plus what rebuilds the item, the builder that made it, its scheduler and generator."""

    record: ItemRecord
    builder_identity: Mapping[str, Any]
    builder_config: Mapping[str, Any]
    scheduler: str | None
    run: Mapping[str, Any]
    created: str | None = None

    @classmethod
    def from_json(cls, raw: Any) -> Sidecar:
        raw = _mapping(raw, "sidecar")
        builder = _mapping(raw.get("builder"), "builder")
        scheduler, created = raw.get("scheduler"), raw.get("created")
        known = ("schema_version", "builder", "scheduler", "generator", "run", "created")
        return cls(record=ItemRecord.from_json({k: v for k, v in raw.items() if k not in known}),
                   builder_identity=dict(_mapping(builder.get("identity"), "builder.identity")),
                   builder_config=dict(_mapping(builder.get("config", {}), "builder.config")),
                   scheduler=scheduler if isinstance(scheduler, str) else None,
                   run=dict(_mapping(raw.get("run", {}), "run")), created=created if isinstance(created, str) else None)

    def to_json(self) -> dict[str, Any]:
        return {"schema_version": SIDECAR_SCHEMA_VERSION, **self.record.to_json(),
                "builder": {"hash": self.record.builder_hash, "identity": dict(self.builder_identity),
                            "config": dict(self.builder_config)},
                "scheduler": self.scheduler, "generator": {"device": "cpu", "seed": self.record.seed},
                "run": dict(self.run), "created": self.created}


# --- run.json --------------------------------------------------------------------------------


@dataclass
class Counts:
    """The run's items: `done` ok, `failed` failed (latest attempt of each), `skipped` not made yet."""

    planned: int = 0
    done: int = 0
    failed: int = 0
    skipped: int = 0

    @classmethod
    def of(cls, planned: int, items: Iterable[ItemRecord]) -> Counts:
        done = failed = 0
        for item in items:
            done += item.ok
            failed += not item.ok
        return cls(planned, done, failed, max(0, planned - done - failed))

    @classmethod
    def from_json(cls, raw: Any) -> Counts:
        raw = _mapping(raw, "counts")
        return cls(*(_int(raw, key, 0) for key in ("planned", "done", "failed", "skipped")))

    def to_json(self) -> dict[str, int]:
        return dataclasses.asdict(self)


@dataclass
class AttemptCounts:
    """What one attempt did: items it generated, items that failed in it, items it kept from before."""

    planned: int = 0
    generated: int = 0
    failed: int = 0
    kept: int = 0

    @classmethod
    def from_json(cls, raw: Any) -> AttemptCounts:
        raw = _mapping(raw, "attempt counts")
        return cls(*(_int(raw, key, 0) for key in ("planned", "generated", "failed", "kept")))

    def count(self, record: ItemRecord) -> None:
        """One item this attempt committed."""
        if record.ok:
            self.generated += 1
        else:
            self.failed += 1

    def to_json(self) -> dict[str, int]:
        return dataclasses.asdict(self)


@dataclass
class CacheStats:
    loads: int = 0
    hits: int = 0

    @classmethod
    def from_json(cls, raw: Any) -> CacheStats:
        raw = _mapping(raw, "cache")
        return cls(_int(raw, "loads", 0), _int(raw, "hits", 0))

    @classmethod
    def total(cls, parts: Iterable[CacheStats]) -> CacheStats:
        parts = list(parts)
        return cls(sum(p.loads for p in parts), sum(p.hits for p in parts))

    def to_json(self) -> dict[str, int]:
        return dataclasses.asdict(self)


@dataclass
class Timings:
    """Load, first-call and steady-state timings; the steady rate excludes the first (warm-up) call."""

    load_seconds: float = 0.0
    first_call_seconds: float | None = None
    steady_items: int = 0
    steady_seconds: float = 0.0
    peak_memory_bytes: int | None = None

    def call(self, seconds: float, items: int) -> None:
        if self.first_call_seconds is None:
            self.first_call_seconds = seconds
        else:
            self.steady_items += items
            self.steady_seconds += seconds

    @property
    def steady_items_per_second(self) -> float | None:
        return self.steady_items / self.steady_seconds if self.steady_seconds > 0 else None

    @property
    def made_calls(self) -> bool:
        return self.first_call_seconds is not None

    @classmethod
    def merged(cls, parts: Iterable[Timings]) -> Timings:
        """Timings of several attempts or workers as one: loads add up, the steady rate is items over
        seconds of all of them, the first call is the first one made, peak memory the highest."""
        parts = list(parts)
        first = next((p.first_call_seconds for p in parts if p.made_calls), None)
        peaks = [p.peak_memory_bytes for p in parts if p.peak_memory_bytes is not None]
        return cls(load_seconds=sum(p.load_seconds for p in parts), first_call_seconds=first,
                   steady_items=sum(p.steady_items for p in parts),
                   steady_seconds=sum(p.steady_seconds for p in parts), peak_memory_bytes=max(peaks, default=None))

    @classmethod
    def from_json(cls, raw: Any) -> Timings:
        raw = _mapping(raw or {}, "timings")
        first = _number(raw, "first_call_seconds")
        peak = raw.get("peak_memory_bytes")
        return cls(load_seconds=float(_number(raw, "load_seconds", 0.0) or 0.0), first_call_seconds=first,
                   steady_items=_int(raw, "steady_items", 0),
                   steady_seconds=float(_number(raw, "steady_seconds", 0.0) or 0.0),
                   peak_memory_bytes=peak if isinstance(peak, int) and not isinstance(peak, bool) else None)

    def to_json(self) -> dict[str, Any]:
        rate = self.steady_items_per_second
        return {"load_seconds": round(self.load_seconds, 4),
                "first_call_seconds": None if self.first_call_seconds is None else round(self.first_call_seconds, 4),
                "steady_items_per_second": None if rate is None else round(rate, 3),
                "steady_items": self.steady_items, "steady_seconds": round(self.steady_seconds, 4),
                "peak_memory_bytes": self.peak_memory_bytes}


@dataclass
class Attempt:
    """One execution of a run: the first run, each resume, or one worker of a distributed run."""

    kind: str  # "run" | "resume"
    command: list[str]
    started: str
    host: str
    pid: int
    finished: str | None = None
    status: str = "running"
    counts: AttemptCounts = field(default_factory=AttemptCounts)
    cache: CacheStats = field(default_factory=CacheStats)
    timings: Timings = field(default_factory=Timings)
    oom_events: list[dict[str, Any]] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_json(cls, raw: Any) -> Attempt:
        raw = _mapping(raw, "attempt")
        command = raw.get("command", [])
        return cls(kind=_text(raw, "kind", "run"), command=[str(c) for c in command] if isinstance(command, list)
                   else [str(command)], started=_text(raw, "started", ""), host=_text(raw, "host", ""),
                   pid=_int(raw, "pid", 0), finished=raw.get("finished"), status=_text(raw, "status", "running"),
                   counts=AttemptCounts.from_json(raw.get("counts", {})), cache=CacheStats.from_json(raw.get("cache", {})),
                   timings=Timings.from_json(raw.get("timings")), oom_events=list(raw.get("oom_events") or []),
                   extra=_extra(raw, (f.name for f in dataclasses.fields(cls))))

    def to_json(self) -> dict[str, Any]:
        record = {"kind": self.kind, "command": list(self.command), "started": self.started,
                  "finished": self.finished, "status": self.status, "host": self.host, "pid": self.pid,
                  "counts": self.counts.to_json(), "cache": self.cache.to_json(), "timings": self.timings.to_json()}
        if self.oom_events:
            record["oom_events"] = list(self.oom_events)
        record.update(self.extra)
        return record


@dataclass
class BuilderRecord:
    """One entry of run.json's `builders`: what was loaded, and its name among the run's builders.

    `label` is short and readable; `identity` holds the fields that tell this builder from the
    others in the run (empty for a lone builder); `full_identity` is the builder hash input."""

    hash: str
    provider: str
    pipeline: str
    model: str
    revision: str | None
    dtype: str | None
    label: str
    identity: dict[str, Any] = field(default_factory=dict)
    full_identity: dict[str, Any] = field(default_factory=dict)
    model_path: str | None = None
    load_seconds: float | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_json(cls, raw: Any) -> BuilderRecord:
        raw = _mapping(raw, "builder")
        model = _text(raw, "model", "")
        label = raw.get("label")
        revision, dtype, path = raw.get("revision"), raw.get("dtype"), raw.get("model_path")
        return cls(hash=_text(raw, "hash"), provider=_text(raw, "provider", ""), pipeline=_text(raw, "pipeline", ""),
                   model=model, revision=None if revision is None else str(revision),
                   dtype=None if dtype is None else str(dtype),
                   label=label if isinstance(label, str) and label else model,  # runs written before labels
                   identity=dict(raw.get("identity") or {}), full_identity=dict(raw.get("full_identity") or {}),
                   model_path=None if path is None else str(path), load_seconds=_number(raw, "load_seconds"),
                   extra=_extra(raw, (f.name for f in dataclasses.fields(cls))))

    def to_json(self) -> dict[str, Any]:
        return {"hash": self.hash, "label": self.label, "identity": self.identity, "provider": self.provider,
                "pipeline": self.pipeline, "model": self.model, "model_path": self.model_path,
                "revision": self.revision, "dtype": self.dtype, "load_seconds": self.load_seconds,
                "full_identity": self.full_identity, **self.extra}


@dataclass
class Worker(Attempt):
    """One worker of a distributed run: the attempt it makes at its shard (shards/shard-NNNN/worker.json).

    `heartbeat` is rewritten every few seconds while it runs; `loaded` lists the builders it loaded;
    `builders` holds its records of them (load time, model path, optimizations), merged into run.json."""

    shard: int = 0
    attempt: int = 0  # the run attempt (index in run.json `attempts`) this worker belongs to
    rank: int | None = None
    device: str = ""
    heartbeat: str = ""
    loaded: list[str] = field(default_factory=list)
    builders: list[dict[str, Any]] = field(default_factory=list)

    @property
    def finished_ok(self) -> bool:
        return self.finished is not None and self.status == "complete"

    @classmethod
    def from_json(cls, raw: Any) -> Worker:
        base = Attempt.from_json(raw)
        raw = _mapping(raw, "worker")
        rank = raw.get("rank")
        worker = cls(**{f.name: getattr(base, f.name) for f in dataclasses.fields(Attempt)})
        worker.shard, worker.attempt = _int(raw, "shard", 0), _int(raw, "attempt", 0)
        worker.rank = rank if isinstance(rank, int) and not isinstance(rank, bool) else None
        worker.device, worker.heartbeat = _text(raw, "device", ""), _text(raw, "heartbeat", "")
        worker.loaded = [str(b) for b in raw.get("loaded") or []]
        worker.builders = [dict(b) for b in raw.get("builders") or [] if isinstance(b, Mapping)]
        worker.extra = _extra(raw, (f.name for f in dataclasses.fields(cls)))
        return worker

    def to_json(self) -> dict[str, Any]:
        record = super().to_json()
        for key in ("builders", "loaded", "heartbeat", "device", "rank", "attempt", "shard"):
            record.pop(key, None)
        return {"shard": self.shard, "attempt": self.attempt, "rank": self.rank, "device": self.device, **record,
                "heartbeat": self.heartbeat, "loaded": list(self.loaded), "builders": list(self.builders)}


@dataclass(frozen=True)
class ShardLayout:
    """How a distributed run's plan is cut (shards/layout.json): shard k runs the plan's batches
    `batches[k][0]` up to (not including) `batches[k][1]`, `planned[k]` items of `builders[k]`."""

    batches: tuple[tuple[int, int], ...]
    planned: tuple[int, ...]
    builders: tuple[tuple[str, ...], ...]

    @property
    def count(self) -> int:
        return len(self.batches)

    @classmethod
    def from_json(cls, raw: Any) -> ShardLayout:
        raw = _mapping(raw, "shard layout")
        shards = raw.get("shards")
        if not isinstance(shards, list):
            raise RecordError(f"shards: expected a list, got {shards!r}")
        shards = [_mapping(s, "shard") for s in shards]
        return cls(batches=tuple((_int(s, "first_batch"), _int(s, "stop_batch")) for s in shards),
                   planned=tuple(_int(s, "planned") for s in shards),
                   builders=tuple(tuple(str(b) for b in s.get("builders") or []) for s in shards))

    def to_json(self) -> dict[str, Any]:
        return {"shards": [{"shard": k, "first_batch": first, "stop_batch": stop, "planned": planned,
                            "builders": list(builders)}
                           for k, ((first, stop), planned, builders)
                           in enumerate(zip(self.batches, self.planned, self.builders, strict=True))]}


@dataclass
class RunInfo:
    """run.json: the run as a whole (status, counts, builders, totals) and the history of its attempts.

    Totals (`cache`, `timings`) are merged over every attempt, so a resume that has nothing to do
    changes neither; the top-level `command` is the one that started the run."""

    status: str
    name: str
    version: str
    started: str
    device: str
    counts: Counts
    builders: list[dict[str, Any]]
    versions: dict[str, Any]
    command: list[str]
    finished: str | None = None
    optimization: dict[str, Any] = field(default_factory=dict)
    attempts: list[Attempt] = field(default_factory=list)
    # a distributed run: its shard count, the hash of its config.yaml (workers must match it) and
    # the latest worker of each shard
    shards: int | None = None
    config_hash: str | None = None
    workers: list[Worker] = field(default_factory=list)
    # where the run was tracked (backend, status, run id or log folder); None with tracking=none
    tracking: dict[str, Any] | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def cache(self) -> CacheStats:
        return CacheStats.total(a.cache for a in self.attempts)

    @property
    def timings(self) -> Timings:
        return Timings.merged(a.timings for a in self.attempts)

    def builder(self, builder_hash: str) -> dict[str, Any] | None:
        return next((b for b in self.builders if b.get("hash") == builder_hash), None)

    def builder_records(self) -> list[BuilderRecord]:
        """The builders as typed records; an entry too damaged to read is left out."""
        records = []
        for raw in self.builders:
            try:
                records.append(BuilderRecord.from_json(raw))
            except RecordError:
                continue
        return records

    def merge_workers(self, workers: Iterable[Worker]) -> None:
        """A distributed run: the last attempt takes the counts, cache loads/hits, timings and OOM events
        of the workers that worked for it; `workers` lists the latest worker of every shard."""
        workers = list(workers)
        self.workers = workers
        if not self.attempts:
            return
        number = len(self.attempts) - 1
        mine = [w for w in workers if w.attempt == number]
        attempt = self.attempts[-1]
        attempt.counts.generated = sum(w.counts.generated for w in mine)
        attempt.counts.failed = sum(w.counts.failed for w in mine)
        attempt.cache = CacheStats.total(w.cache for w in mine)
        attempt.timings = Timings.merged(w.timings for w in mine)
        attempt.oom_events = [event for w in mine for event in w.oom_events]

    @classmethod
    def from_json(cls, raw: Any) -> RunInfo:
        raw = _mapping(raw, "run.json")
        status = _text(raw, "status")
        if status not in STATUSES:
            raise RecordError(f"status: expected one of {', '.join(STATUSES)}, got {status!r}")
        attempts = [Attempt.from_json(a) for a in raw.get("attempts") or []]
        if not attempts:  # schema 1 kept one set of totals and no history
            attempts = [Attempt(kind="run", command=[str(c) for c in raw.get("command") or []],
                                started=_text(raw, "started", ""), host="", pid=0, finished=raw.get("finished"),
                                status=status, cache=CacheStats.from_json(raw.get("cache", {})),
                                timings=Timings.from_json(raw.get("timings")))]
        counts = Counts.from_json(raw.get("counts", {}))
        if raw.get("schema_version", 1) == 1:  # schema 1 counted items kept by a resume as both done and skipped
            counts.skipped = max(0, counts.planned - counts.done - counts.failed)
        builders = raw.get("builders") or []
        command = raw.get("command") or []
        shards, config_hash = raw.get("shards"), raw.get("config_hash")
        known = {f.name for f in dataclasses.fields(cls)} | {"schema_version", "cache", "timings", "resumed"}
        return cls(status=status, name=_text(raw, "name", ""), version=_text(raw, "version", ""),
                   started=_text(raw, "started", ""), device=_text(raw, "device", ""), counts=counts,
                   builders=[dict(b) for b in builders if isinstance(b, Mapping)],
                   versions=dict(raw.get("versions") or {}), command=[str(c) for c in command],
                   finished=raw.get("finished"), optimization=dict(raw.get("optimization") or {}),
                   attempts=attempts, shards=shards if isinstance(shards, int) and not isinstance(shards, bool) else None,
                   config_hash=config_hash if isinstance(config_hash, str) else None,
                   workers=[Worker.from_json(w) for w in raw.get("workers") or []],
                   tracking=dict(raw["tracking"]) if isinstance(raw.get("tracking"), Mapping) else None,
                   extra=_extra(raw, known))

    def to_json(self) -> dict[str, Any]:
        record = {"schema_version": RUN_SCHEMA_VERSION, "status": self.status, "name": self.name,
                  "version": self.version, "started": self.started, "finished": self.finished, "device": self.device,
                  "counts": self.counts.to_json(), "cache": self.cache.to_json(), "timings": self.timings.to_json(),
                  "builders": self.builders, "optimization": self.optimization, "versions": self.versions,
                  "command": self.command, "attempts": [a.to_json() for a in self.attempts]}
        if self.shards is not None:
            record.update(shards=self.shards, config_hash=self.config_hash,
                          workers=[w.to_json() for w in self.workers])
        if self.tracking is not None:
            record["tracking"] = self.tracking
        return {**record, **self.extra}
