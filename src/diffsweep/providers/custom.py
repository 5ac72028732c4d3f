"""Custom: any `DiffusionPipeline` class, described by its own `__call__` signature.

| builder.pipeline                                   | class                                                   |
| -------------------------------------------------- | ------------------------------------------------------- |
| a diffusers class name (`StableDiffusionPipeline`) | `diffusers.<name>`                                      |
| a dotted path (`mypkg.pipes.MyPipe`)               | imported; plan allows only `allowed_modules` prefixes   |
| a dotted path that cannot be had                   | PipelineClassError, saying why (plan: a config error)   |
| anything else                                      | KeyError, which plan reports as a configuration error   |

| spec field | derived from the class                                                                     |
| ---------- | ------------------------------------------------------------------------------------------ |
| params     | `__call__` keyword names that are diffsweep generation parameters (numeric defaults kept)  |
| output     | video if it takes `num_frames` (with sound if it also takes `audio_latents`, as LTX-2     |
|            | does), audio if it takes `audio_length_in_s`, else image                                   |
| fps        | for a video pipeline taking `frame_rate` (LTX): fps, defaulting to that parameter's default, |
|            | is passed as `frame_rate` too, so the MP4 plays at the rate the pipeline made it for         |
| multiplier | `num_images_per_prompt`, `num_videos_per_prompt` or `num_waveforms_per_prompt`, if taken   |
| batchable  | takes a `generator` and a multiplier                                                       |
| lora       | the class has `load_lora_weights`                                                          |

- **Load.** `cls.from_pretrained(model)`. A local model folder with a `pipeline.py` is loaded from that code instead
  (`DiffusionPipeline.from_pretrained(folder, custom_pipeline=folder, trust_remote_code=True)`), which runs the
  folder's code and so needs `builder.trust_remote_code: true`; `builder.pipeline` then names the class whose call
  signature the folder's pipeline follows (it is what plans and checks the sweep before anything loads).
- **Guardrails are off**: no family rules (sizes beyond multiples of 8, frame counts, batching exceptions, load
  fixes). A pipeline that a family provider knows (Allegro, aMUSEd, Wuerstchen, ...) is better run through it.
- **Tiny model.** `tiny:custom` is `diffsweep.examples.custom_pipeline.TinyCustomPipeline` on tiny SD components.
"""

from __future__ import annotations

import functools
import importlib
import inspect
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from diffsweep.errors import ConfigError, ConfigIssue, did_you_mean
from diffsweep.hub import hub_kwargs
from diffsweep.providers import generation_parameters
from diffsweep.providers.base import (
    OUTPUT_PARAMS,
    PipelineClassError,
    PipelineSpec,
    Provider,
    TinyModel,
    load_components,
)
from diffsweep.tiny import stable_diffusion as tiny_sd

EXAMPLE = "diffsweep.examples.custom_pipeline.TinyCustomPipeline"
MULTIPLIERS = ("num_images_per_prompt", "num_videos_per_prompt", "num_waveforms_per_prompt")
CODE_FILE = "pipeline.py"


@dataclass(frozen=True)
class ClassSpec(PipelineSpec):
    """A spec named as the config names it: a diffusers class name, or a full dotted path (run.json shows it)."""

    def load_class(self) -> type[Any]:
        return pipeline_class(self.name)


@functools.cache
def generation_params() -> frozenset[str]:
    """Generation parameters a signature may contribute; prompt and seed are always taken, fps is diffsweep's."""
    return frozenset(generation_parameters()) - {"prompt", *OUTPUT_PARAMS}


def pipeline_class(name: str) -> type[Any]:
    """The DiffusionPipeline subclass a config names; KeyError when a diffusers name names none, PipelineClassError
    (saying why) when a dotted path does not."""
    from diffusers import DiffusionPipeline  # noqa: PLC0415 - start-up time: torch and diffusers load only with a pipeline

    module, _, attr = name.rpartition(".")
    if not module:
        found = getattr(importlib.import_module("diffusers"), attr, None)
        if not (isinstance(found, type) and issubclass(found, DiffusionPipeline) and found is not DiffusionPipeline):
            raise KeyError(name)
        return found
    try:
        imported = importlib.import_module(module)
    except ImportError as error:
        raise PipelineClassError(_not_importable(module, error)) from None
    found = getattr(imported, attr, None)
    if found is None:
        classes = [n for n, v in vars(imported).items() if isinstance(v, type) and issubclass(v, DiffusionPipeline)
                   and v is not DiffusionPipeline]
        raise PipelineClassError(f"module '{module}' ({imported.__file__}) has no '{attr}'{did_you_mean(attr, classes)}"
                                 f"; its pipeline classes: {', '.join(classes) or 'none'}")
    if not (isinstance(found, type) and issubclass(found, DiffusionPipeline) and found is not DiffusionPipeline):
        raise PipelineClassError(f"'{name}' is not a subclass of diffusers.DiffusionPipeline")
    return found


def _not_importable(module: str, error: ImportError) -> str:
    """Why a pipeline's module cannot be imported. The usual case is a module in the working directory: the
    `diffsweep` command (unlike `python -m diffsweep`) does not put that folder on Python's path."""
    if isinstance(error, ModuleNotFoundError) and error.name and (module + ".").startswith(error.name + "."):
        return (f"module '{module}' cannot be imported: no '{error.name}' on Python's path; for a module in "
                f"the working directory run `PYTHONPATH=. diffsweep ...` (or `python -m diffsweep ...`), else "
                f"install the package that holds it (`pip install -e .` in its project)")
    return f"module '{module}' cannot be imported: {type(error).__name__}: {error}"


@functools.cache
def describe(name: str) -> PipelineSpec:
    """A spec synthesised from the class's `__call__` signature."""
    cls = pipeline_class(name)
    signature = inspect.signature(cls.__call__)
    keywords = {k for k, p in signature.parameters.items()
                if p.kind in (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)}
    params = frozenset(keywords & generation_params())
    defaults = {k: signature.parameters[k].default for k in params
                if type(signature.parameters[k].default) in (int, float)}
    multiplier = next((m for m in MULTIPLIERS if m in keywords), None)
    output = ("video_audio" if {"num_frames", "audio_latents"} <= keywords else "video" if "num_frames" in keywords
              else "audio" if "audio_length_in_s" in keywords else "image")
    frame_rate = "frame_rate" if output.startswith("video") and "frame_rate" in keywords else None
    if frame_rate:  # fps is then the pipeline's frame rate too, from the same default (LTX: 25, LTX-2: 24)
        params |= {"fps"}
        default = signature.parameters[frame_rate].default
        if type(default) in (int, float) and float(default).is_integer():
            defaults["fps"] = int(default)
    return ClassSpec(name, output, params, defaults, multiplier=multiplier,
                     batchable="generator" in keywords and multiplier is not None,
                     lora=hasattr(cls, "load_lora_weights"), module=name.rpartition(".")[0] or "diffusers",
                     frame_rate_param=frame_rate)


class DiffusersPipelines(Mapping[str, PipelineSpec]):
    """Every pipeline class diffusers exports, by name, described on first use (for did-you-mean suggestions)."""

    @staticmethod
    def _names() -> list[str]:
        import diffusers  # noqa: PLC0415 - start-up time: torch and diffusers load only with a pipeline

        return sorted(n for n in dir(diffusers) if n.endswith("Pipeline") and n != "DiffusionPipeline")

    def __getitem__(self, name: str) -> PipelineSpec:
        return describe(name)

    def __iter__(self) -> Iterator[str]:
        return iter(self._names())

    def __len__(self) -> int:
        return len(self._names())


def has_code(source: Path | str) -> bool:
    return isinstance(source, Path) and (source / CODE_FILE).is_file()


class Custom(Provider):
    name = "custom"
    pipelines = DiffusersPipelines()
    tiny_models = {"custom": TinyModel(EXAMPLE, tiny_sd.sd, {"height": 32, "width": 32}, (32, 32, 3))}

    def spec(self, pipeline: str) -> PipelineSpec:
        return describe(pipeline)

    def declared_specs(self) -> list[PipelineSpec]:
        """None: specs are derived from the class signatures on demand."""
        return []

    def check_builder(self, builder: Mapping[str, Any]) -> list[tuple[str, str]]:
        """A folder with its own pipeline code is loaded only when the config trusts it."""
        source = self.locate(builder, build=False)
        if has_code(source) and not builder.get("trust_remote_code"):
            return [("builder.trust_remote_code", f"model folder {source} contains custom code in {CODE_FILE}, "
                                                  f"which loading would run; set builder.trust_remote_code: true "
                                                  f"if you trust it")]
        return super().check_builder(builder)

    def resolve_source(self, builder: Mapping[str, Any]) -> Path | str:
        problems = self.check_builder(builder)
        if problems:
            raise ConfigError([ConfigIssue(key, message) for key, message in problems])
        return self.locate(builder)

    def from_source(self, spec: PipelineSpec, source: Path | str, builder: Mapping[str, Any], torch_dtype: Any) -> Any:
        if not has_code(source):
            return super().from_source(spec, source, builder, torch_dtype)
        from diffusers import DiffusionPipeline  # noqa: PLC0415 - start-up time: torch and diffusers load only with a pipeline

        return DiffusionPipeline.from_pretrained(str(source), custom_pipeline=str(source), trust_remote_code=True,
                                                 dtype=torch_dtype, **hub_kwargs(builder, source),
                                                 **load_components(builder, source, torch_dtype))


PROVIDER = Custom()
