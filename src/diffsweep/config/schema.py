"""Validation of the resolved config against schemas/config.schema.json.

Every problem is reported at once, each with the file it most likely came from, its key path
(`sweep.grid.seed[2]`) and what was expected; unknown keys get a did-you-mean.
"""

from __future__ import annotations

import copy
import functools
import json
import math
import re
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any

from jsonschema import Draft202012Validator, validators
from jsonschema.exceptions import ValidationError, best_match

from diffsweep import providers
from diffsweep.errors import ConfigError, ConfigIssue, SourceOf, did_you_mean
from diffsweep.paths import schemas_dir


@functools.cache
def load_schema(name: str) -> dict[str, Any]:
    """A shipped JSON Schema by file stem (`config`, `item`, `run`).

    The config schema is completed from the providers found (diffsweep.providers): the provider
    names, and each provider's own generation parameters next to the shared ones, so a family is
    declared in its provider module alone."""
    schema = json.loads((schemas_dir() / f"{name}.schema.json").read_text(encoding="utf-8"))
    if name == "config":
        schema["$defs"]["builder"]["properties"]["provider"]["enum"] = providers.names()
        params = schema["$defs"]["params"]
        params["properties"] = providers.parameter_schemas(params["properties"])
    return schema


def _whole_pattern(validator: Any, pattern: str, instance: Any, schema: Mapping[str, Any]) -> Iterator[ValidationError]:
    """JSON Schema's `pattern`, where a `$` does not let a trailing newline through as Python's re.search does: a
    name that ends in a newline (a folder name, an axis) is not the name the pattern allows."""
    if not isinstance(instance, str):
        return
    if re.search(pattern, instance) is None or (pattern.endswith("$") and instance.endswith("\n")):
        yield ValidationError(f"{instance!r} does not match {pattern!r}")


# Draft 2020-12 with the `pattern` above
Validator = validators.extend(Draft202012Validator, {"pattern": _whole_pattern})


@functools.cache
def _validator(name: str) -> Any:
    return Validator(load_schema(name))  # no check of the schema itself: see providers.parameter_schemas


def key_path(parts: Iterable[Any]) -> str:
    """`["sweep", "grid", "seed", 2]` -> `sweep.grid.seed[2]`."""
    text = ""
    for part in parts:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text


def _show(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False) if not isinstance(value, str) else json.dumps(value)


_TYPE_NAMES = {"integer": "an integer", "number": "a number", "string": "a string", "boolean": "true or false",
               "null": "null", "object": "a mapping", "array": "a list"}


def _describe(schema: Mapping[str, Any]) -> str:
    """A short human phrase for what a (sub)schema accepts."""
    if "x-expected" in schema:
        return schema["x-expected"]
    if "const" in schema:
        return _show(schema["const"])
    if "enum" in schema:
        return "one of " + ", ".join(_show(v) for v in schema["enum"])
    alternatives = schema.get("oneOf") or schema.get("anyOf")
    if alternatives:
        return " or ".join(_describe(alt) for alt in alternatives)
    if "$ref" in schema:
        return _describe(_resolve_ref(schema["$ref"]))
    kind = schema.get("type")
    if isinstance(kind, list):
        return " or ".join(_TYPE_NAMES.get(k, str(k)) for k in kind)
    phrase = _TYPE_NAMES.get(kind, "a value") if kind else "a value"
    bounds = [f"≥ {schema['minimum']}" if "minimum" in schema else "",
              f"≤ {schema['maximum']}" if "maximum" in schema else ""]
    bounds = [b for b in bounds if b]
    return phrase + (f" ({', '.join(bounds)})" if bounds else "")


def _resolve_ref(ref: str) -> Mapping[str, Any]:
    node: Any = load_schema("config")
    for part in ref.removeprefix("#/").split("/"):
        node = node[part]
    return node


def _allowed_keys(schema: Mapping[str, Any]) -> list[str]:
    if "$ref" in schema:
        schema = _resolve_ref(schema["$ref"])
    keys = list(schema.get("properties", {}))
    if any(p.startswith("^lora") for p in schema.get("patternProperties", {})):
        keys.append("lora.<adapter>")
    return keys


def _issues_for(error: ValidationError) -> list[tuple[str, str]]:
    path = key_path(error.absolute_path)
    if error.validator == "additionalProperties":
        allowed = _allowed_keys(error.schema)
        patterns = error.schema.get("patternProperties", {})
        extras = [k for k in error.instance if k not in error.schema.get("properties", {})
                  and not any(re.search(p, k) for p in patterns)]
        return [(key_path([*error.absolute_path, k]),
                 f"unknown key{did_you_mean(k, allowed)}; allowed keys: {', '.join(sorted(allowed))}")
                for k in extras]
    if error.validator == "required":
        missing = error.message.split("'")[1] if "'" in error.message else error.message
        return [(key_path([*error.absolute_path, missing]), "missing required key")]
    if error.validator == "propertyNames" or (error.validator == "pattern" and path.startswith("sweep.grid")):
        # jsonschema reports propertyNames failures on the parent; name the offending key itself.
        return [(key_path([*error.absolute_path, error.instance]) if error.validator == "pattern" else path,
                 "not a valid axis name: use a generation parameter (e.g. seed), lora.<adapter> or builder.<key>")]
    if error.validator in ("oneOf", "anyOf") and error.context:
        chosen = _chosen_alternative(error)
        if chosen:
            return [issue for inner in chosen for issue in _issues_for(inner)]
        deepest = best_match(error.context)
        if deepest is not None and deepest.validator != "type" and len(deepest.absolute_path) > len(error.absolute_path):
            return _issues_for(deepest)  # the value had the right shape; report what is wrong inside it
    if error.validator in ("type", "oneOf", "anyOf", "const", "enum"):
        return [(path, f"expected {_describe(error.schema)}, got {_show(error.instance)}"
                       f"{_yaml_hint(error.schema, error.instance)}")]
    if error.validator == "pattern":
        expected = error.schema.get("x-expected", f"a string matching {error.schema['pattern']}")
        return [(path, f"expected {expected}, got {_show(error.instance)}")]
    if error.validator == "not" and "const" in error.validator_value:
        return [(path, f"must not be {_show(error.validator_value['const'])}")]
    return [(path, f"{error.message}")]


def _chosen_alternative(error: ValidationError) -> list[ValidationError]:
    """A mapping that plainly means one alternative of a oneOf (it has that alternative's required
    keys, e.g. `start` for a range, `file` for a file axis): that alternative's own errors, so a typo
    inside it is named rather than the whole value called wrong."""
    if not isinstance(error.instance, Mapping):
        return []
    fitting = []
    for position, alternative in enumerate(error.validator_value):
        alternative = _resolve_ref(alternative["$ref"]) if "$ref" in alternative else alternative
        if alternative.get("type") == "object" and set(alternative.get("required", ())) & error.instance.keys():
            fitting.append(position)
    if len(fitting) != 1:
        return []
    return [inner for inner in error.context if inner.relative_schema_path and inner.relative_schema_path[0] == fitting[0]]


def _accepts_text(schema: Mapping[str, Any]) -> bool:
    if "$ref" in schema:
        return _accepts_text(_resolve_ref(schema["$ref"]))
    kind = schema.get("type")
    if kind == "string" or (isinstance(kind, list) and "string" in kind):
        return True  # free text; a fixed word ("random", "auto") is no sign the value was meant as text
    return any(_accepts_text(alt) for alt in schema.get("oneOf", ()) or schema.get("anyOf", ()))


def _yaml_hint(schema: Mapping[str, Any], value: Any) -> str:
    """YAML 1.1, which Hydra reads, turns some unquoted words and digits into booleans and numbers;
    where text was expected, say so and how to keep the text."""
    if not _accepts_text(schema):
        return ""
    if isinstance(value, bool):
        return ("; YAML reads unquoted yes/no/on/off/true/false as true or false: quote the value to keep it as "
                "text, e.g. 'no'")
    if isinstance(value, (int, float)):
        return ("; YAML reads unquoted digits as a number (017 as octal 15, 12:30 as 750, 0x1F as 31, 1_000 as "
                "1000): quote the value to keep it as text, e.g. '017'")
    return ""


def schema_issues(doc: Any, schema_name: str = "config",
                  source_of: SourceOf | None = None) -> list[ConfigIssue]:
    """All schema violations of `doc`, as ConfigIssues with key paths."""
    issues = []
    validator = _validator(schema_name)
    for error in sorted(validator.iter_errors(doc), key=lambda e: list(map(str, e.absolute_path))):
        for path, message in _issues_for(error):
            issues.append(ConfigIssue(path, message, source_of(path) if source_of else None))
    return issues


def subschema_checker(subschema: Mapping[str, Any],
                      source_of: SourceOf | None = None) -> Callable[[Any, str], list[ConfigIssue]]:
    """`check(value, path)`: violations of a value against a fragment of the config schema (e.g. one
    grid element). The validator is made once, for every element of an axis of a million values."""
    validator = Validator({"$defs": load_schema("config")["$defs"], **subschema})

    def check(value: Any, path: str) -> list[ConfigIssue]:
        issues = []
        for error in validator.iter_errors(value):
            for sub_path, message in _issues_for(error):
                full = path + ("." + sub_path if sub_path and not sub_path.startswith("[") else sub_path)
                issues.append(ConfigIssue(full, message, source_of(full) if source_of else None))
        return issues

    return check


_BOUNDS = frozenset({"type", "minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum", "description",
                     "x-expected", "default"})


def _number_branches(schema: Mapping[str, Any]) -> list[Mapping[str, Any]] | None:
    """The alternatives of `schema` that take numbers, or None when numbers are held to more than a
    type and bounds (a multipleOf, an enum of numbers, ...)."""
    if "$ref" in schema:
        schema = _resolve_ref(schema["$ref"])
    alternatives = schema.get("oneOf") or schema.get("anyOf")
    if alternatives:
        if set(schema) - {"oneOf", "anyOf", "description", "x-expected", "default"}:
            return None
        found: list[Mapping[str, Any]] = []
        for alternative in alternatives:
            branches = _number_branches(alternative)
            if branches is None:
                return None
            found += branches
        return found
    if "const" in schema or "enum" in schema:
        values = [schema["const"]] if "const" in schema else list(schema["enum"])
        numbers = any(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values)
        return None if numbers or set(schema) - _BOUNDS - {"const", "enum"} else []
    if set(schema) - _BOUNDS:
        return None
    types = schema.get("type", ["integer", "number"])  # no type: numbers pass it
    return [schema] if {"integer", "number"} & set([types] if isinstance(types, str) else types) else []


def range_checked_by_ends(schema: Mapping[str, Any]) -> bool:
    """Whether a numeric range meets `schema` when its first and last values do: the values of a
    range share a type and lie between its ends, so a type and bounds are met by all or shown
    broken at an end. Saves a million schema checks for `seed: {start: 0, stop: 1000000}`."""
    branches = _number_branches(schema)
    return branches is not None and len(branches) <= 1


NESTED_PREFIXES = ("builder", "lora")


def normalise(doc: Mapping[str, Any]) -> dict[str, Any]:
    """Flatten nested `builder:`/`lora:` mappings in grids and params into dotted keys.

    Hydra turns `sweep.grid.builder.model=[a,b]` into `{builder: {model: [a, b]}}`; YAML users
    may write `"builder.model": [a, b]` instead. Both mean the axis `builder.model`.
    """
    doc = dict(doc)
    doc.setdefault("distribute", {"backend": "none"})  # run folders from before distribution existed
    sweep = doc.get("sweep")
    if isinstance(sweep, Mapping):
        sweep = doc["sweep"] = {**_defaults("sweep"), **sweep}
        for key in ("grid", "params"):
            if isinstance(sweep.get(key), Mapping):
                sweep[key] = _flatten(sweep[key], NESTED_PREFIXES if key == "grid" else ("lora",))
    if isinstance(doc.get("generation"), Mapping):
        doc["generation"] = _flatten(doc["generation"], ("lora",))
    stages = doc.get("stages")
    if isinstance(stages, Mapping) and isinstance(stages.get("chain"), Mapping):
        doc["stages"] = {**stages, "chain": {name: _flat_stage(stage) for name, stage in stages["chain"].items()}}
    tracking = doc.get("tracking", {})  # run folders saved before tracking existed have none
    if isinstance(tracking, Mapping):
        doc["tracking"] = {**_defaults("tracking"), **tracking}
    return doc


def _flat_stage(stage: Any) -> Any:
    """A later stage of a chain, its grid, params and generation flattened as the sweep's are."""
    if not isinstance(stage, Mapping):
        return stage
    stage = dict(stage)
    for key in ("grid", "params", "generation"):
        if isinstance(stage.get(key), Mapping):
            stage[key] = _flatten(stage[key], NESTED_PREFIXES if key == "grid" else ("lora",))
    return stage


def _defaults(section: str) -> dict[str, Any]:
    """What a file of a group may leave out (a sweep's mode, params, batch_size; tracking's uri, ...),
    from the schema's `default`s."""
    keys = load_schema("config")["properties"][section]["properties"]
    return {key: copy.deepcopy(rule["default"]) for key, rule in keys.items() if "default" in rule}


def _flatten(mapping: Mapping[str, Any], prefixes: tuple[str, ...]) -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in mapping.items():
        if key in prefixes and isinstance(value, Mapping) and not ({"file"} & value.keys() or {"start"} & value.keys()):
            flat.update({f"{key}.{sub}": v for sub, v in value.items()})
        else:
            flat[key] = value
    return flat


def validate_sections(doc: Mapping[str, Any], keys: Iterable[str], source_of: SourceOf | None = None) -> None:
    """Some top-level sections of a config against the shipped schema alone: what a command reading a run folder as
    data needs of it (score settings, say), without the providers that complete the rest of the schema."""
    shipped = json.loads((schemas_dir() / "config.schema.json").read_text(encoding="utf-8"))
    issues = []
    for key in keys:
        if key not in doc:
            continue
        validator = Validator({"$defs": shipped["$defs"], **shipped["properties"][key]})
        for error in validator.iter_errors(doc[key]):
            for path, message in _issues_for(error):
                full = key + ("." + path if path and not path.startswith("[") else path)
                issues.append(ConfigIssue(full, message, source_of(full) if source_of else None))
    if issues:
        raise ConfigError(issues)


def value_issues(node: Any, path: str = "", source_of: SourceOf | None = None) -> list[ConfigIssue]:
    """Values no key may hold, wherever they are: numbers that are not finite (NaN and infinities, which YAML
    writes .nan and .inf) and text holding a NUL character."""
    found = []
    if isinstance(node, float) and not math.isfinite(node):
        found.append(ConfigIssue(path, f"expected a finite number, got {node}", source_of(path) if source_of else None))
    elif isinstance(node, str) and "\0" in node:
        found.append(ConfigIssue(path, "holds a NUL character", source_of(path) if source_of else None))
    elif isinstance(node, Mapping):
        for key, value in node.items():
            found += value_issues(value, f"{path}.{key}" if path else str(key), source_of)
    elif isinstance(node, list):
        for position, value in enumerate(node):
            found += value_issues(value, f"{path}[{position}]", source_of)
    return found


def validate_config(doc: Mapping[str, Any], source_of: SourceOf | None = None) -> None:
    """Raise ConfigError listing every schema violation of a resolved config."""
    issues = value_issues(doc, source_of=source_of) or schema_issues(doc, "config", source_of=source_of)
    if issues:
        raise ConfigError(issues)
