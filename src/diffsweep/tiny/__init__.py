"""Tiny random-weight diffusers pipeline components, built offline and deterministically.

Each recipe (a function in this package's modules, e.g. `diffsweep.tiny.flux.flux`) returns the keyword arguments of
its pipeline's constructor, for fixtures and smoke tests that must not touch the Hugging Face hub (configs adapted from
diffusers' own get_dummy_components tests). A provider declares which recipes are its tiny models
(`Provider.tiny_models`); `diffsweep.providers.tiny_factories()` gathers them. Recipes import torch, diffusers and transformers only when
called, so importing this package is cheap.
"""

from __future__ import annotations


from diffsweep.tiny.common import Components

FACTORY_VERSION = 1
"""Bump when any factory's output changes; it is part of the cache folder names of built fixtures."""


__all__ = ["FACTORY_VERSION", "Components"]
