"""Tiny random-weight diffusers pipeline components, built offline and deterministically.

Each recipe (a function in this package's modules, e.g. `diffsweep.tiny.flux.flux`) returns the keyword arguments of
its pipeline's constructor, for fixtures and smoke tests that must not touch the Hugging Face hub (configs adapted from
diffusers' own get_dummy_components tests). A provider declares which recipes are its tiny models
(`Provider.tiny_models`); `factories()` gathers them. Recipes import torch, diffusers and transformers only when
called, so importing this package is cheap.
"""

from __future__ import annotations

from collections.abc import Callable

from diffsweep.tiny.common import Components

FACTORY_VERSION = 1
"""Bump when any factory's output changes; it is part of the cache folder names of built fixtures."""


def factories() -> dict[str, Callable[[], Components]]:
    """Tiny model name -> components factory, as the discovered providers declare them."""
    from diffsweep import providers

    return {name: tiny.factory for provider in providers.registry().values()
            for name, tiny in provider.tiny_models.items()}


def __getattr__(name: str) -> object:
    """`FACTORIES`: the table `factories()` returns, computed on access (providers are found lazily)."""
    if name == "FACTORIES":
        return factories()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["FACTORY_VERSION", "Components", "factories"]
