"""Provider registry: one self-contained module per model family."""

from __future__ import annotations

import importlib

from diffsweep.providers.base import Provider

_MODULES = {name: f"diffsweep.providers.{name}" for name in (
    "stable_diffusion", "flux", "qwen_image", "allegro", "amused", "audioldm", "wan", "wuerstchen", "custom",
    "chroma", "cogvideox", "flux2", "sana", "z_image")}


def names() -> list[str]:
    return sorted(_MODULES)


def get(name: str) -> Provider:
    """The provider object of a family, importing its module on first use."""
    return importlib.import_module(_MODULES[name]).PROVIDER
