"""The config after validation: typed, read by attribute by the plan, the execution core and the reports.

schemas/config.schema.json stays the contract of what a key may hold (it is what validation reports against, key
path and did-you-mean included); these models are the same keys as Python types, built from a config that has
passed it. A test keeps the two in step: every key of the schema is a field here and every field a key there.
`RunConfig.to_doc()` gives back the plain mapping that config.yaml records, so whatever builds a run can write the
config that rebuilds it.

The builder, the generation parameters, the grid and the optimization options stay mappings: their keys are the
providers' vocabulary (a builder is passed to its provider, parameters to its pipeline), not diffsweep's.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from diffsweep.errors import ConfigError, ConfigIssue, SourceOf
from diffsweep.metrics import DEFAULT_CLIP, ScoreSettings


class Section(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class OutputSettings(Section):
    root: str


class SweepSettings(Section):
    name: str
    mode: Literal["product", "zip"] = "product"
    grid: dict[str, Any]
    params: dict[str, Any] = Field(default_factory=dict)
    batch_size: int | Literal["auto"] = "auto"


class TopK(Section):
    metric: str
    k: int
    lowest: bool = False


class SourceRun(Section):
    """A stage's source that is an existing run folder: its done items, those matching `where`, or its `top` k by
    a stored score."""

    run: str
    stage: str | None = None
    where: dict[str, list[Any]] = Field(default_factory=dict)
    top: TopK | None = None


class StageSettings(Section):
    """A later stage of a chain: its source, what it takes into which parameter, its builder, params and grid."""

    source: str | SourceRun
    take: Literal["image", "video", "latents"] = "image"
    into: Literal["image", "control_image", "ip_adapter_image", "video"] = "image"
    inherit: list[str] | dict[str, str] | None = None
    builder: dict[str, Any] = Field(default_factory=dict)
    generation: dict[str, Any] = Field(default_factory=dict)
    params: dict[str, Any] = Field(default_factory=dict)
    grid: dict[str, Any] = Field(default_factory=dict)
    mode: Literal["product", "zip"] = "product"
    batch_size: int | Literal["auto"] = "auto"


class StagesSettings(Section):
    order: Literal["auto", "breadth", "depth"] = "auto"
    first: str = "base"
    make: tuple[str, ...] | None = None  # only these stages and the items they need; None: every stage
    chain: dict[str, StageSettings] = Field(default_factory=dict)


class PreviewSettings(Section):
    every: int = 0


class ClipSettings(Section):
    model: str = DEFAULT_CLIP
    revision: str | None = None


class ScoreConfig(Section):
    metrics: tuple[str, ...] = ()
    clip: ClipSettings = Field(default_factory=ClipSettings)
    batch_size: int = 64
    video_frames: int = 4


class DistributeSettings(Section):
    backend: Literal["none", "local", "slurm"] = "none"
    tasks: int = 1
    wait: bool = True
    partition: str | None = None
    gpus_per_task: int = 0
    cpus_per_task: int | None = None
    mem_gb: float | None = None
    time_min: int | None = None
    array_parallelism: int | None = None
    requeue_on_timeout: bool = False
    setup: tuple[str, ...] = ()
    slurm: dict[str, Any] = Field(default_factory=dict)


class TrackingSettings(Section):
    backend: Literal["none", "mlflow", "tensorboard"] = "none"
    uri: str | None = None
    experiment: str | None = None
    log_items: bool = False


class RunConfig(Section):
    """A validated config (schemas/config.schema.json) as typed sections."""

    device: str = "auto"
    dry_run: bool = False
    describe: bool | Literal["json"] = False
    reuse: bool = False
    max_items: int = 1_000_000_000
    output: OutputSettings
    builder: dict[str, Any]
    generation: dict[str, Any]
    sweep: SweepSettings
    stages: StagesSettings | None = None
    optimization: dict[str, Any]
    allowed_modules: tuple[str, ...] = ("diffusers", "diffsweep")
    previews: PreviewSettings = Field(default_factory=PreviewSettings)
    score: ScoreConfig = Field(default_factory=ScoreConfig)
    distribute: DistributeSettings = Field(default_factory=DistributeSettings)
    tracking: TrackingSettings = Field(default_factory=TrackingSettings)

    @classmethod
    def from_doc(cls, doc: Mapping[str, Any]) -> RunConfig:
        """From a resolved config that passed validation (`diffsweep.config.schema.validate_config`)."""
        return cls.model_validate(dict(doc))

    @classmethod
    def read(cls, doc: Mapping[str, Any], source_of: SourceOf) -> RunConfig:
        """From a config only some sections of which were validated (a run folder read as data): a value of another
        type is a ConfigError naming its key."""
        try:
            return cls.model_validate(dict(doc))
        except ValidationError as error:
            problem = error.errors(include_url=False)[0]
            where = ".".join(str(part) for part in problem["loc"])
            raise ConfigError(ConfigIssue(where, problem["msg"], source_of(where))) from None

    def to_doc(self) -> dict[str, Any]:
        """The plain mapping config.yaml records (and validation takes): the keys it was built from, as given."""
        return self.model_dump(mode="json", exclude_unset=True)

    def replace(self, **sections: Any) -> RunConfig:
        """A copy with some top-level keys replaced."""
        return self.model_copy(update=sections)

    @property
    def chained(self) -> bool:
        """Whether the sweep is a chain of stages (a `stages.chain` with at least one later stage)."""
        return self.stages is not None and bool(self.stages.chain)

    def score_settings(self) -> ScoreSettings:
        return ScoreSettings(metrics=tuple(self.score.metrics), clip_model=self.score.clip.model,
                             clip_revision=self.score.clip.revision, batch_size=self.score.batch_size,
                             video_frames=self.score.video_frames, allowed_modules=tuple(self.allowed_modules))
