"""Scheduler choice: validated against what diffusers exports and what the pipeline accepts, and
swapped on a loaded pipeline with `from_config`, so a scheduler axis never reloads weights."""

from __future__ import annotations

import enum
import functools
import inspect
from collections.abc import Mapping
from typing import Any

from diffsweep.errors import did_you_mean


@functools.cache
def scheduler_classes() -> dict[str, type[Any]]:
    """Every scheduler class diffusers exports, by name."""
    import diffusers  # noqa: PLC0415 - start-up time: torch and diffusers load only with a pipeline
    from diffusers import SchedulerMixin  # noqa: PLC0415 - start-up time: torch and diffusers load only with a pipeline

    classes = {}
    for name in dir(diffusers):
        if name.endswith("Scheduler"):
            try:
                value = getattr(diffusers, name)
            except (ImportError, AttributeError):  # optional backends (flax, torchsde) may be missing
                continue
            if isinstance(value, type) and issubclass(value, SchedulerMixin):
                classes[name] = value
    return classes


def _flow_capable(cls: type[Any]) -> bool:
    params = inspect.signature(cls.__init__).parameters
    return cls.__name__.startswith("FlowMatch") or "use_flow_sigmas" in params


def accepted_by(pipeline_class: type[Any]) -> set[str] | None:
    """Scheduler names a pipeline class can run with, or None when it does not say."""
    parameter = inspect.signature(pipeline_class.__init__).parameters.get("scheduler")
    annotation = None if parameter is None else parameter.annotation
    if isinstance(annotation, type) and issubclass(annotation, enum.Enum):
        return {member.name for member in annotation}  # KarrasDiffusionSchedulers
    if isinstance(annotation, type) and annotation.__name__.endswith("Scheduler"):
        compatible = {annotation.__name__, *(c.__name__ for c in getattr(annotation, "_compatibles", []))}
        if _flow_capable(annotation):  # flow-matching models also run flow-configured UniPC/DPM++ (Wan 2.2)
            compatible |= {name for name, cls in scheduler_classes().items() if _flow_capable(cls)}
        return compatible
    return None


def problems(pipeline_class: type[Any], scheduler: Mapping[str, Any] | None) -> list[tuple[str, str]]:
    """(key, message) for an unknown scheduler, one the pipeline cannot use, or unknown config keys."""
    if not scheduler:
        return []
    name = scheduler["name"]
    classes = scheduler_classes()
    if name not in classes:
        return [("builder.scheduler.name", f"diffusers has no scheduler {name!r}{did_you_mean(name, classes)}")]
    accepted = accepted_by(pipeline_class)
    if accepted is not None and name not in accepted:
        return [("builder.scheduler.name", f"{pipeline_class.__name__} cannot use {name}; it accepts: "
                                           f"{', '.join(sorted(accepted))}")]
    known = set(inspect.signature(classes[name].__init__).parameters) - {"self", "kwargs"}
    return [(f"builder.scheduler.config.{key}", f"not an option of {name}{did_you_mean(key, known)}")
            for key in (scheduler.get("config") or {}) if key not in known]


def build(scheduler: Mapping[str, Any], base_config: Mapping[str, Any]) -> Any:
    """A scheduler of the chosen class, carrying over the model's own settings (betas, shift, ...)."""
    return scheduler_classes()[scheduler["name"]].from_config(dict(base_config), **(scheduler.get("config") or {}))


def restore(base_config: Mapping[str, Any]) -> Any:
    """The model's own scheduler again, from the config it was loaded with."""
    return scheduler_classes()[base_config["_class_name"]].from_config(dict(base_config))
