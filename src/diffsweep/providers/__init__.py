"""Provider registry: one self-contained module per model family."""

from __future__ import annotations

import importlib

from diffsweep.providers.base import Provider

_MODULES = {name: f"diffsweep.providers.{name}" for name in (
    "stable_diffusion", "chroma", "cogvideox", "flux", "flux2", "qwen_image", "allegro", "amused", "audioldm", "wan", "wuerstchen", "z_image", "custom")}


def names() -> list[str]:
    return sorted(_MODULES)


def get(name: str) -> Provider:
    """The provider object of a family, importing its module on first use."""
    return importlib.import_module(_MODULES[name]).PROVIDER
