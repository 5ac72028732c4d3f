"""Provider discovery: every model family is one `Provider`, found rather than listed.

Built-in providers are the modules of this package that define `PROVIDER`; other installed
packages add theirs through the entry-point group `diffsweep.providers` (`name = "module:OBJECT"`,
where the object is a Provider instance or a module defining `PROVIDER`). Everything shared is
derived from what is found here: the config schema's provider names and generation parameters
(`diffsweep.config.schema.load_schema`), the tiny model table (`tiny_factories`) and the
factory test's cases. Discovery checks the declarations and fails loudly on a contradiction.
"""

from __future__ import annotations

import functools
import importlib
import json
import pkgutil
import re
from collections.abc import Callable, Mapping
from importlib.metadata import entry_points
from types import ModuleType
from typing import Any

from jsonschema import Draft202012Validator, SchemaError

from diffsweep.errors import DiffsweepError
from diffsweep.paths import schemas_dir
from diffsweep.providers.base import OUTPUT_PARAMS, Provider, TinyModel
from diffsweep.tiny import Components

ENTRY_POINT_GROUP = "diffsweep.providers"
NAME_PATTERN = re.compile(r"^[a-z][a-z0-9_]*$")
_NOT_PROVIDERS = frozenset({"base"})


class ProviderError(DiffsweepError):
    """A provider's declarations are broken or contradict another provider's."""


def _as_provider(loaded: Any, origin: str) -> Provider:
    if isinstance(loaded, ModuleType):
        loaded = getattr(loaded, "PROVIDER", None)
    if isinstance(loaded, type) and issubclass(loaded, Provider):
        loaded = loaded()
    if not isinstance(loaded, Provider):
        raise ProviderError(f"{origin} is not a diffsweep Provider (got {type(loaded).__name__}); point it at a "
                            f"Provider instance or a module defining PROVIDER")
    return loaded


def _builtin() -> list[tuple[Provider, str]]:
    found = []
    for module in pkgutil.iter_modules(__path__):
        if module.name in _NOT_PROVIDERS:
            continue
        loaded = importlib.import_module(f"{__name__}.{module.name}")
        if hasattr(loaded, "PROVIDER"):
            found.append((_as_provider(loaded, loaded.__name__), f"module {loaded.__name__}"))
    return found


def _installed() -> list[tuple[Provider, str]]:
    found = []
    for entry in entry_points(group=ENTRY_POINT_GROUP):
        origin = f"entry point '{entry.name} = {entry.value}' ({ENTRY_POINT_GROUP}" + (
            f", package {entry.dist.name})" if entry.dist is not None else ")")
        try:
            loaded = entry.load()
        except Exception as error:
            raise ProviderError(f"{origin} failed to load: {type(error).__name__}: {error}") from error
        provider = _as_provider(loaded, origin)
        if provider.name != entry.name:
            raise ProviderError(f"{origin} names provider '{provider.name}'; the entry point's name must be the same")
        found.append((provider, origin))
    return found


@functools.cache
def registry() -> Mapping[str, Provider]:
    """Every provider by name: the built-in ones, then those of installed packages."""
    providers: dict[str, Provider] = {}
    origins: dict[str, str] = {}
    tiny_owner: dict[str, str] = {}
    for provider, origin in _builtin() + _installed():
        if not NAME_PATTERN.match(provider.name):
            raise ProviderError(f"{origin}: provider name {provider.name!r} must be lowercase letters, digits and _")
        if provider.name in providers:
            raise ProviderError(f"provider '{provider.name}' is declared twice: by {origins[provider.name]} and {origin}")
        for tiny_name, tiny in provider.tiny_models.items():
            if not isinstance(tiny, TinyModel):
                raise ProviderError(f"{origin}: tiny model {tiny_name!r} must be a TinyModel, got {type(tiny).__name__}")
            if tiny_name in tiny_owner:
                raise ProviderError(f"tiny model '{tiny_name}' is declared by providers '{tiny_owner[tiny_name]}' and "
                                    f"'{provider.name}'; tiny names share one cache folder and must be unique")
            tiny_owner[tiny_name] = provider.name
        providers[provider.name] = provider
        origins[provider.name] = origin
    return providers


def tiny_factories() -> dict[str, Callable[[], Components]]:
    """Tiny model name -> components factory, as the discovered providers declare them."""
    return {name: tiny.factory for provider in registry().values() for name, tiny in provider.tiny_models.items()}


def names() -> list[str]:
    return sorted(registry())


def get(name: str) -> Provider:
    """The provider of a family; KeyError when no installed provider has that name."""
    return registry()[name]


def generation_parameters() -> dict[str, Any]:
    """Every generation parameter's schema: schemas/config.schema.json's shared ones and every provider's own."""
    shipped = json.loads((schemas_dir() / "config.schema.json").read_text(encoding="utf-8"))
    return parameter_schemas(shipped["$defs"]["params"]["properties"])


def parameter_schemas(shared: Mapping[str, Any]) -> dict[str, Any]:
    """The shared vocabulary (`shared`: schemas/config.schema.json's parameters) merged with every provider's own
    parameters. A provider may not redefine a parameter differently, and every parameter a spec declares must end
    up defined here: the config schema is the one place a parameter's type lives."""
    merged = dict(shared)
    owner = {name: "schemas/config.schema.json" for name in merged}
    for provider in registry().values():
        for name, schema in provider.parameters.items():
            if name in merged and merged[name] != dict(schema):
                raise ProviderError(f"provider '{provider.name}' defines generation parameter '{name}' as "
                                    f"{dict(schema)}, but {owner[name]} defines it as {merged[name]}")
            try:  # the shipped schema file is checked by the tests; a provider's additions are checked here
                Draft202012Validator.check_schema(dict(schema))
            except SchemaError as error:
                raise ProviderError(f"provider '{provider.name}': generation parameter '{name}' has an invalid "
                                    f"JSON Schema: {error.message}") from None
            merged[name], owner[name] = dict(schema), f"provider '{provider.name}'"
    for provider in registry().values():
        for spec in provider.declared_specs():
            unknown = sorted(set(spec.params) - merged.keys() - set(OUTPUT_PARAMS))
            if unknown:
                raise ProviderError(f"provider '{provider.name}': {spec.name} declares parameter(s) "
                                    f"{', '.join(unknown)} with no schema; add them to the provider's `parameters`")
    return merged
