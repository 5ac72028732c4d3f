"""Every record a run folder holds, declared once: manifest lines and sidecars, run.json with its attempts and
builders, a distributed run's shard layout and worker records, and score lines.

These pydantic models are the one declaration of each record. diffsweep reads and writes the files through them
(`diffsweep.store.folder`, `diffsweep.store.scores`), and the JSON Schemas in schemas/ that other readers use are
generated from them (`diffsweep.store.schemas`; a test keeps the committed files equal to what is generated).
Validation is strict (no string for a number, no bool for an integer, no NaN): a record either has the shape its
schema promises or is not read. Keys a newer diffsweep adds are kept, so reading a record and writing it back never
drops what another version wrote.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, computed_field, model_validator
from typing_extensions import Self

from diffsweep.errors import DiffsweepError

if TYPE_CHECKING:  # a type only: reading records must not load the planner (and torch)
    from diffsweep.planning.shards import Shard

RUN_SCHEMA_VERSION = 2  # 2: counts describe the run's items; each attempt is kept in `attempts`
SIDECAR_SCHEMA_VERSION = 1
Status = Literal["running", "complete", "failed", "interrupted"]
STATUSES: tuple[Status, ...] = ("running", "complete", "failed", "interrupted")

Digest = Annotated[str, Field(pattern=r"^[0-9a-f]{64}$", description="a full SHA-256 hex digest")]
Count = Annotated[int, Field(ge=0)]
Seconds = Annotated[float, Field(ge=0)]


class RecordError(DiffsweepError):
    """A record on disk does not have the shape its schema promises."""


def now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds")


class Record(BaseModel):
    """A record of a run folder: strict types, unknown keys kept (a newer diffsweep may add some)."""

    model_config = ConfigDict(strict=True, extra="allow", allow_inf_nan=False, validate_assignment=False)

    @classmethod
    def from_json(cls, raw: Any) -> Self:
        """A record from parsed JSON; RecordError naming the first bad field when it has another shape."""
        try:
            return cls.model_validate(raw)
        except ValidationError as error:
            raise RecordError(_first_problem(error)) from None

    @classmethod
    def from_json_bytes(cls, raw: bytes | str) -> Self:
        try:
            return cls.model_validate_json(raw)
        except ValidationError as error:
            raise RecordError(_first_problem(error)) from None

    def to_json(self) -> dict[str, Any]:
        return self.model_dump(mode="json")


def _first_problem(error: ValidationError) -> str:
    first = error.errors(include_url=False)[0]
    where = ".".join(str(part) for part in first["loc"]) or "record"
    return f"{where}: {first['msg'].lower()}" + (f", got {first['input']!r}" if first["type"] != "missing" else "")


# --- items -----------------------------------------------------------------------------------


class Made(Record):
    """What an output file holds, measured from the generated output (not from the parameters, which a pipeline may
    not take: an img2img image has its input's size)."""

    model_config = ConfigDict(extra="forbid")

    width: Annotated[int, Field(ge=1)] | None = None
    height: Annotated[int, Field(ge=1)] | None = None
    frames: Annotated[int, Field(ge=1)] | None = None
    samples: Annotated[int, Field(ge=1)] | None = None
    sample_rate: Annotated[int, Field(ge=1)] | None = None
    duration: Annotated[float, Field(ge=0, description="seconds of sound: samples / sample_rate, to the ms")] | None = None

    def to_json(self) -> dict[str, Any]:
        return self.model_dump(mode="json", exclude_none=True)


class Truncation(Record):
    """What one tokenizer cut from one prompt."""

    tokens: Annotated[int, Field(ge=1)]
    used_tokens: Annotated[int, Field(ge=1)]
    dropped_text: str


# a file directly in the run folder's items/ (never `.` or `..`, never a URL): the viewer links nothing else
OutputPath = Annotated[str, Field(pattern=r"^items/[^/\\:]*[^/\\:.][^/\\:]*$", description="relative to the run folder")]


class FileCheck(Record):
    """What an output file held when it was committed, so that a missing, cut or altered file is found."""

    model_config = ConfigDict(frozen=True)

    bytes: Count
    sha256: Digest


class PreparedControl(Record):
    """A control image prepared from an input image (diffsweep.control), kept once per content in the run folder."""

    source: str = Field(description="the input image the item's control_image names")
    preprocess: str = Field(description="the preprocessor: canny, or a controlnet-aux detector")
    settings: dict[str, Any] = Field(default_factory=dict, description="the preprocessor's settings (thresholds)")
    path: Annotated[str, Field(pattern=r"^control/[^/]+\.png$", description="relative to the run folder")]
    sha256: Digest = Field(description="what stands for the control image in the item id")


class ItemRecord(Record):
    """One committed item: a line of manifest.jsonl (and the core of its sidecar)."""

    model_config = ConfigDict(frozen=True, json_schema_extra={
        "if": {"properties": {"status": {"const": "failed"}}}, "then": {"required": ["error"]},
        "else": {"properties": {"outputs": {"minItems": 1}}}})

    index: Count = Field(description="position in the grid")
    item_id: Digest
    builder_hash: Digest
    status: Literal["ok", "failed"]
    params: dict[str, Any] = Field(description="every generation parameter, prompt and seed included")
    seed: Count
    outputs: list[OutputPath]
    seconds: Seconds
    error: str | None = None
    made: Made | None = None
    prompt_truncated: dict[str, dict[str, Truncation]] | None = Field(
        default=None, description="prompts a text encoder cut, measured with the pipeline's tokenizers before the "
                                  "call: per prompt parameter and tokenizer")
    files: dict[OutputPath, FileCheck] | None = Field(
        default=None, description="size and SHA-256 of each output as committed (absent in runs made before they "
                                  "were recorded)")
    control_prepared: list[PreparedControl] | None = Field(
        default=None, description="control images prepared from control_image (control_preprocess), one per file")
    stage: str | None = Field(default=None, description="in a chain of stages: the stage that made it")
    parent: Digest | None = Field(default=None, description="in a later stage of a chain: the id of the source "
                                  "item whose output it took")
    reused_from: str | None = Field(default=None, description="reuse: the run (`<sweep>/v<NNNN>`) that made this "
                                    "item, whose outputs were committed here instead of being made again")

    @model_validator(mode="after")
    def _failed_items_say_why(self) -> Self:
        if self.status == "failed" and self.error is None:
            raise ValueError("a failed item records its error")
        if self.status == "ok" and not self.outputs:
            raise ValueError("an ok item has an output")
        return self

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    @property
    def has_sound(self) -> bool:
        """Its output carries sound (audio, or a video with an AAC track): the record states a sample rate."""
        return self.made is not None and self.made.sample_rate is not None

    def to_json(self) -> dict[str, Any]:
        record = self.model_dump(mode="json", exclude={"error", "made", "prompt_truncated", "files",
                                                       "control_prepared", "stage", "parent", "reused_from"})
        for optional in ("stage", "parent", "reused_from"):  # absent, not null, where they do not apply
            if getattr(self, optional) is not None:
                record[optional] = getattr(self, optional)
        record["seconds"] = round(self.seconds, 4)
        if self.error is not None:
            record["error"] = self.error
        if self.made is not None:
            record["made"] = self.made.to_json()
        if self.prompt_truncated:
            record["prompt_truncated"] = {key: {slot: cut.to_json() for slot, cut in by_slot.items()}
                                          for key, by_slot in self.prompt_truncated.items()}
        if self.files is not None:
            record["files"] = {path: check.to_json() for path, check in self.files.items()}
        if self.control_prepared:
            record["control_prepared"] = [prepared.to_json() for prepared in self.control_prepared]
        return record


class SidecarBuilder(Record):
    hash: Digest
    identity: dict[str, Any] = Field(description="the builder hash input")
    config: dict[str, Any] = Field(default_factory=dict, description="the builder as configured (axes applied)")


class Generator(Record):
    device: Literal["cpu"]
    seed: Count


class Sidecar(ItemRecord):
    """An item's sidecar (`items/<stem>.json`; its PNG `diffsweep` chunk holds the same less the volatile fields):
    the item record plus what rebuilds the item, the builder that made it, its scheduler and generator."""

    schema_version: Literal[1] = 1
    builder: SidecarBuilder
    scheduler: str | None = Field(default=None, description="the scheduler class that sampled the item")
    generator: Generator | None = None
    run: dict[str, Any] = Field(default_factory=dict, description="name and version of the run that made it")
    created: str | None = None

    @property
    def record(self) -> ItemRecord:
        return ItemRecord.model_validate({name: getattr(self, name) for name in ItemRecord.model_fields})

    @classmethod
    def of(cls, record: ItemRecord, identity: dict[str, Any], config: dict[str, Any], scheduler: str | None,
           run: dict[str, Any], created: str | None) -> Sidecar:
        return cls.model_validate({**record.model_dump(), "schema_version": SIDECAR_SCHEMA_VERSION,
                                   "builder": {"hash": record.builder_hash, "identity": identity, "config": config},
                                   "scheduler": scheduler, "generator": {"device": "cpu", "seed": record.seed},
                                   "run": run, "created": created})

    def to_json(self) -> dict[str, Any]:
        return {"schema_version": self.schema_version, **self.record.to_json(),
                **self.model_dump(mode="json", include={"builder", "scheduler", "generator", "run", "created"}),
                **(self.model_extra or {})}


# --- run.json --------------------------------------------------------------------------------


class Counts(Record):
    """The run's items, the latest record of each: done (ok, files intact) + failed + skipped (not made yet) =
    planned."""

    planned: Count = 0
    done: Count = 0
    failed: Count = 0
    skipped: Count = 0

    @classmethod
    def of(cls, planned: int, items: Iterable[ItemRecord]) -> Counts:
        done = failed = 0
        for item in items:
            done += item.ok
            failed += not item.ok
        return cls(planned=planned, done=done, failed=failed, skipped=max(0, planned - done - failed))


class AttemptCounts(Record):
    """What one attempt did: items it generated, items that failed in it, intact items it found done."""

    planned: Count = 0
    generated: Count = 0
    failed: Count = 0
    kept: Count = 0
    reused: Count = Field(default=0, exclude_if=lambda count: count == 0,  # absent from runs without reuse
                          description="items committed from another version of the sweep (reuse)")

    def count(self, record: ItemRecord) -> None:
        """One item this attempt committed."""
        if record.reused_from is not None:
            self.reused += 1
        elif record.ok:
            self.generated += 1
        else:
            self.failed += 1


class CacheStats(Record):
    """Pipeline loads and cache hits."""

    loads: Count = 0
    hits: Count = 0

    @classmethod
    def total(cls, parts: Iterable[CacheStats]) -> CacheStats:
        parts = list(parts)
        return cls(loads=sum(p.loads for p in parts), hits=sum(p.hits for p in parts))


class Timings(Record):
    """Load, first-call and steady-state timings; the steady rate excludes the first (warm-up) call."""

    load_seconds: Seconds = 0.0
    first_call_seconds: Seconds | None = Field(default=None, description="the first pipeline call, warm-up included")
    steady_items: Count = 0
    steady_seconds: Seconds = 0.0
    peak_memory_bytes: Count | None = None

    def call(self, seconds: float, items: int) -> None:
        if self.first_call_seconds is None:
            self.first_call_seconds = seconds
        else:
            self.steady_items += items
            self.steady_seconds += seconds

    @computed_field(description="items over seconds of every call after the first")  # type: ignore[prop-decorator]
    @property
    def steady_items_per_second(self) -> float | None:
        return self.steady_items / self.steady_seconds if self.steady_seconds > 0 else None

    @property
    def made_calls(self) -> bool:
        return self.first_call_seconds is not None

    @classmethod
    def merged(cls, parts: Iterable[Timings]) -> Timings:
        """Timings of several attempts or workers as one: loads add up, the steady rate is items over seconds of
        all of them, the first call is the first one made, peak memory the highest."""
        parts = list(parts)
        peaks = [p.peak_memory_bytes for p in parts if p.peak_memory_bytes is not None]
        return cls(load_seconds=sum(p.load_seconds for p in parts),
                   first_call_seconds=next((p.first_call_seconds for p in parts if p.made_calls), None),
                   steady_items=sum(p.steady_items for p in parts),
                   steady_seconds=sum(p.steady_seconds for p in parts), peak_memory_bytes=max(peaks, default=None))

    @model_validator(mode="before")
    @classmethod
    def _drop_derived(cls, raw: Any) -> Any:
        # written for readers, derived here: items over seconds of every call after the first
        return {k: v for k, v in raw.items() if k != "steady_items_per_second"} if isinstance(raw, dict) else raw

    def to_json(self) -> dict[str, Any]:
        rate = self.steady_items_per_second
        return {"load_seconds": round(self.load_seconds, 4),
                "first_call_seconds": None if self.first_call_seconds is None else round(self.first_call_seconds, 4),
                "steady_items_per_second": None if rate is None else round(rate, 3),
                "steady_items": self.steady_items, "steady_seconds": round(self.steady_seconds, 4),
                "peak_memory_bytes": self.peak_memory_bytes, **(self.model_extra or {})}


class StageTimes(Record):
    """What one attempt did for one stage of a chain: its pipeline loads and calls, the items it made."""

    loads: Count = 0
    load_seconds: Seconds = 0.0
    calls: Count = 0
    call_seconds: Seconds = 0.0
    generated: Count = 0
    failed: Count = 0
    reused: Count = Field(default=0, exclude_if=lambda count: count == 0,  # absent from runs without reuse
                          description="items committed from another version of the sweep (reuse)")
    waiting: Count = Field(default=0, description="items not made because their parent's output was not there")

    def to_json(self) -> dict[str, Any]:
        return {**self.model_dump(mode="json"), "load_seconds": round(self.load_seconds, 4),
                "call_seconds": round(self.call_seconds, 4)}

    @classmethod
    def total(cls, parts: Iterable[StageTimes]) -> StageTimes:
        parts = list(parts)
        return cls(**{key: sum(getattr(p, key) for p in parts) for key in cls.model_fields})


class SourceRunRecord(Record):
    """A stage's source that is another run folder: which run, how its items were chosen, and what it was when read
    (a resume or verify refuses it once either changed)."""

    run: str = Field(description="the source run folder, absolute")
    run_id: str = Field(description="<sweep name>/<version> of the source run")
    config_hash: Digest | None = None
    manifest_sha256: Digest = Field(description="SHA-256 of the source run's manifest.jsonl when it was read")
    chosen_by: str
    items: list[Digest] = Field(description="the ids of the source items taken, in order")


class StageRecord(Record):
    """One stage of a chain in run.json: what it takes and gives, its builders, its items' counts, its loads and
    timings over every attempt."""

    name: str
    source: str | None = Field(description="the source stage's name, run:<folder> for a run folder, null for the "
                                           "first stage")
    take: Literal["image", "video", "latents"] | None = None
    into: str | None = None
    output: str = Field(description="what its items give: an output kind, or latents (safetensors + preview)")
    builders: list[Digest]
    counts: Counts
    loads: Count = Field(description="pipeline loads for this stage, over every attempt")
    load_seconds: Seconds = 0.0
    call_seconds: Seconds = 0.0
    source_run: SourceRunRecord | None = None

    def to_json(self) -> dict[str, Any]:
        record = self.model_dump(mode="json", exclude={"source_run"})
        record["load_seconds"], record["call_seconds"] = round(self.load_seconds, 4), round(self.call_seconds, 4)
        if self.source_run is not None:
            record["source_run"] = self.source_run.to_json()
        return record


class StageOrder(Record):
    """How a chain ran: breadth (a stage finished and unloaded before the next loads) or depth (children as soon as
    their parents' batch is done), and why."""

    order: Literal["breadth", "depth"]
    why: str


class OomEvent(Record):
    """Out of memory on some items, and what the fallback did about it."""

    items: list[Count]
    action: Literal["split", "offload", "failed"]
    detail: str


class Attempt(Record):
    """One execution of a run: the first run, each resume, or one worker of a distributed run."""

    kind: Literal["run", "resume"]
    command: list[str]
    started: str
    finished: str | None
    status: Status
    host: str
    pid: Count
    counts: AttemptCounts = Field(description=AttemptCounts.__doc__)
    cache: CacheStats
    timings: Timings
    oom_events: list[OomEvent] = Field(default_factory=list)
    trusted: list[str] = Field(default_factory=list, description="key paths of code the run folder's config names "
                               "that this attempt ran because the user trusted the folder (--trust)")
    manifest_offset: Count | None = Field(default=None, description="size of the manifest it appends to when it "
                                          "started: its own lines follow, to count exactly after a kill")
    stages: dict[str, StageTimes] | None = Field(default=None, description="a chain: per stage, its loads, calls "
                                                 "and items in this attempt")

    @classmethod
    def started_now(cls, kind: str, command: list[str], host: str, pid: int, **fields: Any) -> Self:
        """A new attempt, running since now, with nothing counted yet."""
        return cls.model_validate({"kind": kind, "command": command, "started": now(), "finished": None,
                                   "status": "running", "host": host, "pid": pid, "counts": AttemptCounts(),
                                   "cache": CacheStats(), "timings": Timings(), **fields})

    def to_json(self) -> dict[str, Any]:
        record = self.model_dump(mode="json", exclude={"timings", "oom_events", "trusted", "manifest_offset",
                                                       "stages"})
        record["timings"] = self.timings.to_json()
        if self.oom_events:
            record["oom_events"] = [event.to_json() for event in self.oom_events]
        if self.trusted:
            record["trusted"] = list(self.trusted)
        if self.manifest_offset is not None:
            record["manifest_offset"] = self.manifest_offset
        if self.stages is not None:
            record["stages"] = {name: times.to_json() for name, times in self.stages.items()}
        return record


class AppliedOption(Record):
    """One speed or memory option as it was applied to a loaded pipeline."""

    option: str
    value: Any
    status: Literal["applied", "skipped"]
    detail: str = ""


class QuantizationRecord(Record):
    """How a quantized builder's weights are stored (diffsweep.quantize), measured once it loaded."""

    backend: Literal["bitsandbytes", "torchao", "quanto", "gguf"]
    weights: str | None = Field(default=None, description="the quantized type; a GGUF file carries its own")
    components: list[str] = Field(description="the pipeline components quantized")
    dtype: str = Field(description="the builder's dtype: what the components compute in")
    bytes_before: Count = Field(description="bytes of the quantized components' weights at the builder's dtype")
    bytes_after: Count = Field(description="bytes they hold quantized (packed data, scales and the layers kept)")
    file: str | None = Field(default=None, description="gguf: the single-file transformer loaded")


class BuilderRecord(Record):
    """One entry of run.json's `builders`: what was loaded, and its name among the run's builders.

    `label` is short and readable; `identity` holds the fields that tell this builder from the others in the run
    (empty for a lone builder); `full_identity` is the builder hash input. What loading it did is filled in when it
    is first used: `model_path`, `load_seconds` (0 when the process had it cached: `reused_from_cache`) and the
    speed and memory options applied, and for a quantized builder how its weights are stored (`quantization`)."""

    hash: Digest
    label: Annotated[str, Field(min_length=1, description="short readable name: what tells this builder from the "
                                                          "run's other builders (its model for a lone builder)")]
    identity: dict[str, Any] = Field(default_factory=dict, description="the identity fields in which this builder "
                                     "differs from the run's other builders; empty for a lone builder")
    provider: str
    pipeline: str
    model: str
    model_path: str | None = Field(description="where it was loaded from; null until it is first used")
    revision: str | None
    dtype: str | None = None
    load_seconds: Seconds | None = Field(description="null until it is first used; 0 when the process had it")
    full_identity: dict[str, Any] = Field(default_factory=dict, description="every identity field of the builder: "
                                          "the input of its hash")
    reused_from_cache: bool | None = None
    optimization: list[AppliedOption] | None = None
    oom_offload_items: list[Count] | None = Field(
        default=None, description="items this builder made with model CPU offload switched on by the out-of-memory "
                                  "fallback (the rest ran as configured)")
    load_error: str | None = Field(default=None, description="why it could not be loaded (its items were not made)")
    quantization: QuantizationRecord | None = Field(default=None, description=QuantizationRecord.__doc__)

    @model_validator(mode="before")
    @classmethod
    def _label_of_old_runs(cls, raw: Any) -> Any:
        if isinstance(raw, dict) and not raw.get("label") and isinstance(raw.get("model"), str) and raw["model"]:
            return {**raw, "label": raw["model"]}  # runs written before labels
        return raw

    @property
    def loaded(self) -> bool:
        return self.model_path is not None

    def to_json(self) -> dict[str, Any]:
        return self.model_dump(mode="json", exclude_none=False, exclude={
            key for key in ("reused_from_cache", "optimization", "oom_offload_items", "load_error")
            if getattr(self, key) is None})


class Worker(Attempt):
    """One worker of a distributed run: the attempt it makes at its shard (shards/shard-NNNN/worker.json).

    `heartbeat` is rewritten every few seconds while it runs; `loaded` lists the builders it loaded; `builders`
    holds its records of them (load time, model path, optimizations), merged into run.json."""

    shard: Count
    attempt: Count = Field(description="index in run.json `attempts` of the attempt it worked for")
    rank: Count | None = Field(description="its rank under torchrun / accelerate launch")
    device: str
    heartbeat: str
    loaded: list[Digest]
    builders: list[BuilderRecord] = Field(default_factory=list)

    @property
    def finished_ok(self) -> bool:
        return self.finished is not None and self.status == "complete"

    def to_json(self) -> dict[str, Any]:
        return {"shard": self.shard, "attempt": self.attempt, "rank": self.rank, "device": self.device,
                **super().to_json(), "heartbeat": self.heartbeat, "loaded": list(self.loaded),
                "builders": [b.to_json() for b in self.builders]}


class ShardRange(Record):
    shard: Count
    first_batch: Count
    stop_batch: Count
    planned: Count
    builders: list[Digest] = Field(default_factory=list)
    stages: dict[str, Count] | None = Field(default=None, description="a chain: the items of each stage the shard "
                                            "holds")


class ShardLayout(Record):
    """How a distributed run's plan is cut (shards/layout.json): shard k runs the plan's batches `first_batch` up
    to (not including) `stop_batch`, `planned` items of `builders`; a chain's shard runs its root batches in that
    range and every descendant of their items (`cut`)."""

    shards: list[ShardRange]
    cut: Literal["root_batches"] | None = Field(
        default=None, description="what first_batch and stop_batch count: absent, the plan's batches in plan order; "
        "`root_batches`, a chain's batches of items without a parent in the plan (the first stage's, then those of "
        "stages fed from another run folder), each shard holding every descendant of their items, so a child is made "
        "by its parent's worker")

    def to_json(self) -> dict[str, Any]:
        return self.model_dump(mode="json", exclude_none=True)  # a sweep without stages writes what it wrote before

    @property
    def count(self) -> int:
        return len(self.shards)

    @property
    def planned(self) -> list[int]:
        return [s.planned for s in self.shards]

    @classmethod
    def of(cls, shards: Iterable[Shard]) -> ShardLayout:
        ranges = [ShardRange(shard=k, first_batch=s.first_batch, stop_batch=s.stop_batch, planned=s.planned,
                             builders=list(s.builders), stages=None if s.stages is None else dict(s.stages))
                  for k, s in enumerate(shards)]
        return cls(shards=ranges, cut="root_batches" if any(r.stages is not None for r in ranges) else None)


class Tracking(Record):
    """Where a run was tracked: the backend, whether logging worked, and where it went."""

    backend: Literal["mlflow", "tensorboard"]
    status: Literal["logged", "failed"] | None = None
    uri: str | None = None
    experiment_id: str | None = None
    run_id: str | None = None
    parent_run_id: str | None = None
    log_dir: str | None = None
    error: str | None = None

    def to_json(self) -> dict[str, Any]:
        return self.model_dump(mode="json", exclude_none=True)


class Versions(Record):
    """Library and hardware versions that decide whether a rerun can reproduce bytes."""

    python: str
    torch: str
    diffusers: str
    transformers: str
    diffsweep: str
    cuda: str | None
    gpu: str | None
    platform: str | None = None


class RunInfo(Record):
    """run.json: the run as a whole (status, counts, builders, totals) and the history of its attempts.

    Totals (`cache`, `timings`) are merged over every attempt, so a resume that has nothing to do changes neither;
    the top-level `command` is the one that started the run."""

    schema_version: Literal[1, 2] = Field(default=2, description="2: counts describe the run's "
                                          "items and every attempt is kept in `attempts`")
    status: Status
    name: str = ""
    version: Annotated[str, Field(pattern=r"^v[0-9]{4,}$")] | Literal[""] = ""
    started: str
    finished: str | None
    device: str = ""
    counts: Counts = Field(description=Counts.__doc__)
    builders: list[BuilderRecord]
    optimization: dict[str, Any] = Field(default_factory=dict)
    versions: Versions
    command: list[str] = Field(description="the command that started the run")
    attempts: list[Attempt] = Field(description="every execution of the run in order: the first run, then each "
                                                "resume")
    selected_items: list[Digest] | None = Field(
        default=None, description="a rerun of single items (diffsweep-runs rerun --item/--index): the item ids it "
                                  "makes; a resume makes these, not the whole grid")
    plan_size: Count | None = Field(
        default=None, description="a run that makes part of its plan (a rerun of single items, stages.make): every "
                                  "item of the whole plan, made or not; the item indices are below it")
    shards: Count | None = Field(default=None, description="a distributed run: its shard count")
    config_hash: Digest | None = Field(default=None, description="SHA-256 of the config.yaml the run started with")
    config_keys: dict[str, str] | None = Field(
        default=None, description="a short digest of each config value by key path, to name what changed when "
                                  "config.yaml no longer matches config_hash")
    workers: list[Worker] = Field(default_factory=list, description="a distributed run: the latest worker of each "
                                  "shard, what it did and where")
    tracking: Tracking | None = None
    notes: list[str] = Field(default_factory=list, description="what the run did not apply as configured, and why "
                                                               "(a preset's size for a pipeline that makes the input "
                                                               "image's size)")
    stages: list[StageRecord] | None = Field(default=None, description="a chain of stages: each stage, first to last")
    stage_order: StageOrder | None = None

    @classmethod
    def from_json(cls, raw: Any) -> Self:
        return super().from_json(_upgraded_run_json(raw))

    @classmethod
    def from_json_bytes(cls, raw: bytes | str) -> Self:
        try:
            parsed = json.loads(raw)
        except ValueError as error:
            raise RecordError(f"not JSON: {error}") from None
        return cls.from_json(parsed)

    @computed_field(description="pipeline loads and cache hits, summed over every attempt")  # type: ignore[prop-decorator]
    @property
    def cache(self) -> CacheStats:
        return CacheStats.total(a.cache for a in self.attempts)

    @computed_field(description="merged over every attempt: loads add up, the steady rate covers all calls after "  # type: ignore[prop-decorator]
                                "each attempt's first")
    @property
    def timings(self) -> Timings:
        return Timings.merged(a.timings for a in self.attempts)

    def builder(self, builder_hash: str) -> BuilderRecord | None:
        return next((b for b in self.builders if b.hash == builder_hash), None)

    def merge_workers(self, workers: Iterable[Worker]) -> None:
        """A distributed run: the last attempt takes the counts, cache loads/hits, timings, OOM events and (of a
        chain) per-stage work of the workers that worked for it; `workers` lists the latest worker of every shard."""
        self.workers = list(workers)
        if not self.attempts:
            return
        number = len(self.attempts) - 1
        mine = [w for w in self.workers if w.attempt == number]
        attempt = self.attempts[-1]
        attempt.counts.generated = sum(w.counts.generated for w in mine)
        attempt.counts.failed = sum(w.counts.failed for w in mine)
        attempt.counts.reused = sum(w.counts.reused for w in mine)
        attempt.cache = CacheStats.total(w.cache for w in mine)
        attempt.timings = Timings.merged(w.timings for w in mine)
        attempt.oom_events = [event for w in mine for event in w.oom_events]
        staged = [w.stages for w in mine if w.stages is not None]
        if staged:  # a chain: each stage's loads, calls and items summed over the workers
            names = dict.fromkeys(name for stages in staged for name in stages)
            attempt.stages = {name: StageTimes.total(s[name] for s in staged if name in s) for name in names}

    def to_json(self) -> dict[str, Any]:
        record: dict[str, Any] = {
            "schema_version": RUN_SCHEMA_VERSION, "status": self.status, "name": self.name, "version": self.version,
            "started": self.started, "finished": self.finished, "device": self.device,
            "counts": self.counts.to_json(), "cache": self.cache.to_json(), "timings": self.timings.to_json(),
            "builders": [b.to_json() for b in self.builders], "optimization": self.optimization,
            "versions": self.versions.to_json() if self.versions else None, "command": self.command,
            "attempts": [a.to_json() for a in self.attempts]}
        if self.selected_items is not None:
            record["selected_items"] = self.selected_items
        if self.plan_size is not None:
            record["plan_size"] = self.plan_size
        if self.config_hash is not None:
            record.update(config_hash=self.config_hash, config_keys=self.config_keys)
        if self.shards is not None:
            record.update(shards=self.shards, workers=[w.to_json() for w in self.workers])
        if self.tracking is not None:
            record["tracking"] = self.tracking.to_json()
        if self.notes:
            record["notes"] = self.notes
        if self.stages is not None:
            record["stages"] = [stage.to_json() for stage in self.stages]
        if self.stage_order is not None:
            record["stage_order"] = self.stage_order.to_json()
        return {**record, **(self.model_extra or {})}


def _upgraded_run_json(raw: Any) -> Any:
    """run.json as this version reads it. Totals (`cache`, `timings`) are derived from the attempts. Schema 1 kept
    one set of totals and no history, and counted items kept by a resume as both done and skipped."""
    if not isinstance(raw, dict):
        return raw
    upgraded = {k: v for k, v in raw.items() if k not in ("cache", "timings", "resumed")}
    if not raw.get("attempts"):
        upgraded["attempts"] = [{"kind": "run", "command": raw.get("command") or [], "started": raw.get("started", ""),
                                 "finished": raw.get("finished"), "status": raw.get("status", "running"), "host": "",
                                 "pid": 0, "counts": {}, "cache": raw.get("cache") or {},
                                 "timings": raw.get("timings") or {}}]
    counts = raw.get("counts")
    if raw.get("schema_version", 1) == 1 and isinstance(counts, dict):
        planned, done, failed = (counts.get(k, 0) for k in ("planned", "done", "failed"))
        if all(type(n) is int for n in (planned, done, failed)):
            upgraded["counts"] = {**counts, "skipped": max(0, planned - done - failed)}
    return upgraded


# --- scores.jsonl ----------------------------------------------------------------------------


class ScoreRecord(Record):
    """One line of scores.jsonl: a metric's value for an item, or why it was skipped, and the weights it used."""

    model_config = ConfigDict(frozen=True)

    item_id: Digest
    metric: str
    value: float | None
    model: str | None = None
    revision: str | None = None
    time: str
    skipped: str | None = None

    @property
    def key(self) -> tuple[str, str]:
        return self.item_id, self.metric
