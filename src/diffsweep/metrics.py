"""Metrics that score a run's outputs, and the registry that names them.

A metric scores a batch of `Sample`s (an image or one sampled video frame with its prompt, or an audio
clip) and returns one number per sample. Shipped:

| name            | what it measures                                                         | model             |
| --------------- | ------------------------------------------------------------------------ | ----------------- |
| `clip_score`    | text–image alignment: torchmetrics' CLIPScore, 100 · max(cos(image, text), 0) | `score.clip.model` |
| `sharpness`     | variance of the Laplacian of the luminance (higher is sharper)           | none              |
| `colourfulness` | Hasler & Süsstrunk (2003): σ_rgyb + 0.3 · μ_rgyb over opponent channels  | none              |

A user metric is a `Metric` subclass named by its dotted path (`mypkg.metrics.Brightness`), imported only
from the `allowed_modules` prefixes, the same rule as custom pipeline classes.
"""

from __future__ import annotations

import importlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from diffsweep.errors import ConfigError, ConfigIssue, ModelUnavailableError, did_you_mean
from diffsweep.hub import TINY_PREFIX, hub_endpoint, hub_offline, hub_reachable, in_hub_cache
from diffsweep.paths import build_folder_once, cache_dir
from diffsweep.providers.base import without_progress_bars
from diffsweep.tiny.clip import clip_model, clip_processor

DEFAULT_CLIP = "openai/clip-vit-base-patch16"


@dataclass(frozen=True)
class ScoreSettings:
    """The `score:` block of a config."""

    metrics: tuple[str, ...] = ()
    clip_model: str = DEFAULT_CLIP
    clip_revision: str | None = None
    batch_size: int = 64
    video_frames: int = 4
    allowed_modules: tuple[str, ...] = ("diffusers", "diffsweep")
    clip_model_option: str = "score.clip.model"  # where the user names clip_model (a flag of a command), for messages


@dataclass(frozen=True)
class Sample:
    """What a metric sees of one output: an image or one video frame with its prompt, or an audio clip."""

    item_id: str
    prompt: str
    pixels: np.ndarray | None = None  # (H, W, 3) uint8
    audio: np.ndarray | None = None  # (samples,) or (samples, channels), float in [-1, 1]
    sample_rate: int | None = None

    def image(self) -> np.ndarray:
        """The pixels of an image sample (metrics that take images are given only those)."""
        if self.pixels is None:
            raise ValueError(f"sample of item {self.item_id} has no pixels")
        return self.pixels


class Metric:
    """Base class of every metric. Subclasses set the class attributes and implement `score`.

    `takes_images`/`takes_audio` say which outputs it scores (video counts as images: its sampled frames
    are scored one by one and averaged); other outputs get a line with the reason they were skipped.
    `model` and `revision` name the weights it scores with (recorded with every score)."""

    takes_images: ClassVar[bool] = True
    takes_audio: ClassVar[bool] = False

    def __init__(self, settings: ScoreSettings, device: Any) -> None:
        self.settings = settings
        self.device = device
        self.model: str | None = None
        self.revision: str | None = None

    @classmethod
    def weights(cls, settings: ScoreSettings) -> tuple[str | None, str | None]:
        """The (model, revision) it would score with under `settings`, known before it loads; a revision of None
        means whichever the model resolves to. Scores made with other weights are out of date and made again."""
        return None, None

    def score(self, samples: Sequence[Sample]) -> list[float]:
        raise NotImplementedError


def luminance(pixels: np.ndarray) -> np.ndarray:
    """ITU-R BT.601 luma of uint8 RGB, as float64 in [0, 255]."""
    rgb = pixels.astype(np.float64)
    return 0.299 * rgb[..., 0] + 0.587 * rgb[..., 1] + 0.114 * rgb[..., 2]


def laplacian_variance(pixels: np.ndarray) -> float:
    """Variance of the 4-neighbour Laplacian over interior pixels (OpenCV's `Laplacian(ksize=1)`)."""
    y = luminance(pixels)
    laplacian = y[:-2, 1:-1] + y[2:, 1:-1] + y[1:-1, :-2] + y[1:-1, 2:] - 4 * y[1:-1, 1:-1]
    return float(laplacian.var())


def colourfulness(pixels: np.ndarray) -> float:
    """Hasler & Süsstrunk (2003), 'Measuring colourfulness in natural images', eq. (3)."""
    rgb = pixels.astype(np.float64)
    rg = rgb[..., 0] - rgb[..., 1]
    yb = 0.5 * (rgb[..., 0] + rgb[..., 1]) - rgb[..., 2]
    return float(np.hypot(rg.std(), yb.std()) + 0.3 * np.hypot(rg.mean(), yb.mean()))


class Sharpness(Metric):
    def score(self, samples: Sequence[Sample]) -> list[float]:
        return [laplacian_variance(s.image()) for s in samples]


class Colourfulness(Metric):
    def score(self, samples: Sequence[Sample]) -> list[float]:
        return [colourfulness(s.image()) for s in samples]


class ClipScore(Metric):
    """torchmetrics' CLIPScore per sample, batched, on the run's device.

    The model is `score.clip.model`: a hub id (with `score.clip.revision`), a local folder holding
    CLIPModel weights and a CLIPProcessor (PickScore-style fine-tunes included), or `tiny:clip`."""

    def __init__(self, settings: ScoreSettings, device: Any) -> None:
        super().__init__(settings, device)
        from torchmetrics.multimodal.clip_score import CLIPScore  # noqa: PLC0415 - optional extra (scores): loaded only to score or plot

        model, processor, revision = load_clip(settings.clip_model, settings.clip_revision,
                                               settings.clip_model_option)
        self.metric = CLIPScore(model_name_or_path=lambda: (FeatureTensors(model), processor))
        self.model, self.revision = settings.clip_model, revision

    @classmethod
    def weights(cls, settings: ScoreSettings) -> tuple[str | None, str | None]:
        return settings.clip_model, settings.clip_revision

    def score(self, samples: Sequence[Sample]) -> list[float]:
        import torch  # noqa: PLC0415 - start-up time: torch and diffusers load only with a pipeline
        from torchmetrics.functional.multimodal.clip_score import _clip_score_update  # noqa: PLC0415 - optional extra (scores): loaded only to score or plot

        # CLIPScore.update only keeps a running sum; its per-sample step gives one score per pair
        images = [torch.from_numpy(np.array(s.pixels)).permute(2, 0, 1).to(self.device) for s in samples]
        with torch.inference_mode():
            scores, _ = _clip_score_update(images, [s.prompt for s in samples], self.metric.model,
                                           self.metric.processor)
        return scores.clamp(min=0).tolist()  # CLIPScore.compute clamps at 0


class FeatureTensors:
    """A CLIPModel whose feature methods return tensors. transformers 5 returns output objects, which
    torchmetrics 1.9 does not unwrap (Lightning-AI/torchmetrics#3407)."""

    def __init__(self, model: Any) -> None:
        self.model = model
        self.config = model.config

    def to(self, device: Any) -> FeatureTensors:
        self.model.to(device)
        return self

    def get_image_features(self, *args: Any, **kwargs: Any) -> Any:
        return _tensor(self.model.get_image_features(*args, **kwargs))

    def get_text_features(self, *args: Any, **kwargs: Any) -> Any:
        return _tensor(self.model.get_text_features(*args, **kwargs))


def _tensor(output: Any) -> Any:
    return getattr(output, "pooler_output", output)


def load_clip(source: str, revision: str | None,
              option: str = "score.clip.model") -> tuple[Any, Any, str | None]:
    """(CLIPModel, CLIPProcessor, revision actually loaded) from a hub id, a local folder or `tiny:clip`. A hub id
    already in the local cache loads from it without asking the hub (whose retries take a minute when it cannot
    be reached); one that is not is fetched, after `clip_problem` found the hub reachable."""
    from transformers import CLIPModel, CLIPProcessor  # noqa: PLC0415 - start-up time: torch and diffusers load only with a pipeline

    where: str | Path = source
    cached = False
    if source == TINY_PREFIX + "clip":
        where, revision = ensure_tiny_clip(), f"diffsweep-tiny-v{TINY_CLIP_VERSION}"
    elif Path(source).expanduser().is_dir():
        where = Path(source).expanduser()
    else:
        problem = clip_problem(source, revision)
        if problem:
            raise ModelUnavailableError(f"{problem}; {clip_advice(source, option)}")
        cached = in_hub_cache(source, revision)
    try:
        model = CLIPModel.from_pretrained(str(where), revision=revision, local_files_only=cached).eval()
        processor = CLIPProcessor.from_pretrained(str(where), revision=revision, local_files_only=cached)
    except OSError as error:
        raise ModelUnavailableError(f"CLIP model '{source}' could not be loaded for clip_score: {error}; "
                                    f"{clip_advice(source, option)}") from error
    return model, processor, revision or getattr(model.config, "_commit_hash", None)


def clip_problem(source: str, revision: str | None) -> str | None:
    """Why clip_score's model cannot be had, found at once: a hub id that is neither cached nor reachable."""
    if source == TINY_PREFIX + "clip" or Path(source).expanduser().is_dir() or in_hub_cache(source, revision):
        return None
    if hub_offline():
        return (f"CLIP model '{source}' for clip_score is not in the local Hugging Face cache and HF_HUB_OFFLINE is "
                f"set")
    if not hub_reachable():
        return (f"CLIP model '{source}' for clip_score is not in the local Hugging Face cache and {hub_endpoint()} "
                f"cannot be reached")
    return None


def clip_advice(source: str, option: str) -> str:
    """What to do about a CLIP model that cannot be had, in the words of where it is set."""
    setting = f"{option} tiny:clip" if option.startswith("--") else f"{option}=tiny:clip"
    return (f"score with `{setting}` (random weights, offline) or a local folder, or download it first with "
            f"`hf download {source}`")


def check_scoring_models(settings: ScoreSettings) -> None:
    """Before a run writes anything (a dry run too): the scoring models its score.metrics need can be had."""
    if "clip_score" in settings.metrics:
        problem = clip_problem(settings.clip_model, settings.clip_revision)
        if problem:
            raise ModelUnavailableError(f"{problem}; {clip_advice(settings.clip_model, settings.clip_model_option)}")


TINY_CLIP_VERSION = 1


def ensure_tiny_clip() -> Path:
    """Build the tiny CLIP into diffsweep's cache once; later calls reuse the folder."""
    def save(folder: Path) -> None:
        processor = clip_processor()
        with without_progress_bars():
            clip_model(len(processor.tokenizer)).save_pretrained(folder)
        processor.save_pretrained(folder)

    target = cache_dir() / "tiny" / f"clip-v{TINY_CLIP_VERSION}"
    build_folder_once(target, "config.json", save)
    return target


BUILTIN: dict[str, type[Metric]] = {"clip_score": ClipScore, "sharpness": Sharpness, "colourfulness": Colourfulness}


def metric_class(name: str, allowed_modules: Sequence[str], where: str) -> type[Metric]:
    """The Metric class a name stands for; ConfigError (naming `where`) when there is none or it is not trusted."""
    if name in BUILTIN:
        return BUILTIN[name]
    module, _, attr = name.rpartition(".")
    if not module:

        raise ConfigError(ConfigIssue(where, f"unknown metric '{name}'{did_you_mean(name, BUILTIN)}; shipped: "
                                             f"{', '.join(BUILTIN)}, or a dotted path to a Metric subclass"))
    if not any(module == prefix or module.startswith(prefix + ".") for prefix in allowed_modules):
        raise ConfigError(ConfigIssue(where, f"module '{module}' is not in allowed_modules "
                                             f"({', '.join(allowed_modules)}); add its prefix there to trust it"))
    try:
        found = getattr(importlib.import_module(module), attr)
    except (ImportError, AttributeError) as error:
        raise ConfigError(ConfigIssue(where, f"cannot import metric '{name}': {error}")) from None
    if not (isinstance(found, type) and issubclass(found, Metric)):
        raise ConfigError(ConfigIssue(where, f"'{name}' is not a subclass of diffsweep.metrics.Metric"))
    return found


def check_metrics(names: Sequence[str], allowed_modules: Sequence[str], where: str = "score.metrics") -> None:
    """Every name resolves; all problems at once, each with its position."""
    issues = []
    for position, name in enumerate(names):
        try:
            metric_class(name, allowed_modules, f"{where}[{position}]")
        except ConfigError as error:
            issues += error.issues
    if len(set(names)) < len(names):
        issues.append(ConfigIssue(where, f"a metric is named twice: {list(names)}"))
    if issues:
        raise ConfigError(issues)
