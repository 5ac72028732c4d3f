"""A run folder's config files, their one writer and one reader: config.yaml (the resolved config, which is also a
Hydra primary config) and overrides.yaml (the command-line overrides that composed it).

`diffsweep --config-path <run dir> --config-name config` composes config.yaml as is, so a run can be repeated from
its folder alone; interpolation markers in values (`${...}` in a prompt) are escaped so Hydra reads them back
literally. diffsweep itself reads both files as data (YAML without tags, never composed), undoing that escape.
"""

from __future__ import annotations

import copy
import functools
import hashlib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from diffsweep import hashing
from diffsweep.errors import ConfigError, ConfigIssue
from diffsweep.hashing import file_digest
from diffsweep.paths import conf_dir
from diffsweep.store.atomic import write_atomic

CONFIG = "config.yaml"
OVERRIDES = "overrides.yaml"

# libyaml's loader and dumper where PyYAML has them (the same YAML, several times faster), else PyYAML's own
_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
_DUMPER = getattr(yaml, "CSafeDumper", yaml.SafeDumper)


def _load(text: str) -> Any:
    return yaml.load(text, Loader=_LOADER)  # a safe loader: plain YAML data, no tags or objects


def _dump(data: Any, width: int) -> str:
    return yaml.dump(data, Dumper=_DUMPER, sort_keys=False, allow_unicode=True, width=width)


HEADER = """\
# diffsweep run config, fully resolved (random seeds drawn, prompt files inlined).
# Rerun it into a new version: diffsweep --config-path {folder} --config-name config
"""


def _hydra_part() -> tuple[list[Any], dict[str, Any]]:
    """conf/config.yaml's Hydra settings and `override hydra/...` defaults, unresolved, so a run
    folder reruns under the same Hydra behaviour without the conf/ tree. Options that diffsweep
    ships itself (conf/hydra/<group>/<option>.yaml) are inlined: a run folder has no conf/ tree."""
    return copy.deepcopy(_shipped_hydra_part())


@functools.cache
def _shipped_hydra_part() -> tuple[list[Any], dict[str, Any]]:
    primary = _load((conf_dir() / "config.yaml").read_text(encoding="utf-8"))
    hydra = dict(primary["hydra"])
    overrides = []
    for entry in primary["defaults"]:
        if not isinstance(entry, dict):
            continue
        for key, option in entry.items():
            if not key.startswith("override hydra/"):
                continue
            group = key.removeprefix("override hydra/")
            shipped = conf_dir() / "hydra" / group / f"{option}.yaml"
            if shipped.is_file():
                hydra[group] = _load(shipped.read_text(encoding="utf-8"))
            else:
                overrides.append(entry)
    return [*overrides, "_self_"], hydra


def _escaped(value: Any, text: Any) -> Any:
    if isinstance(value, str):
        return text(value)
    if isinstance(value, Mapping):
        return {k: _escaped(v, text) for k, v in value.items()}
    if isinstance(value, list):
        return [_escaped(v, text) for v in value]
    return value


def _escape(value: Any) -> Any:
    return _escaped(value, lambda s: s.replace("${", "\\${"))


def _unescape(value: Any) -> Any:
    return _escaped(value, lambda s: s.replace("\\${", "${"))


def dump_run_config(doc: Mapping[str, Any], folder: Path | str = "<this folder>") -> str:
    """YAML text of a resolved config, loadable by Hydra as a primary config."""
    defaults, hydra = _hydra_part()
    body = {"defaults": defaults, **_escape(dict(doc)), "hydra": hydra}
    return HEADER.format(folder=folder) + _dump(body, width=120)


def write_run_config(folder: Path, doc: Mapping[str, Any]) -> tuple[str, dict[str, str]]:
    """Write config.yaml; returns what run.json keeps to check it later: the SHA-256 of the file and the digests of
    its values as they read back (`config_keys`)."""
    text = dump_run_config(doc, folder).encode("utf-8")
    write_atomic(folder / CONFIG, text)
    return hashlib.sha256(text).hexdigest(), config_keys(read_run_config(folder, trust=True))


def read_run_config(folder: Path, *, trust: bool = False) -> dict[str, Any]:
    """The resolved config saved in a run folder, as data, without its Hydra keys. ConfigError (naming the file) when
    it is missing, is not YAML, holds YAML tags or is not a mapping, and, unless the user trusts the folder, when it
    names code to run (`code_in`)."""
    raw = read_raw_run_config(folder)
    refuse_code(folder, raw, trust)
    return _unescape({key: value for key, value in raw.items() if key not in ("defaults", "hydra")})


def write_overrides(folder: Path, overrides: list[str]) -> None:
    write_atomic(Path(folder) / OVERRIDES, _dump(list(overrides), width=1000))


def read_overrides(folder: Path) -> list[str]:
    """The overrides a run was composed with; none when the file is missing or not a list of strings."""
    try:
        overrides = _load((Path(folder) / OVERRIDES).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError):
        return []
    return [o for o in overrides if isinstance(o, str)] if isinstance(overrides, list) else []


def read_config_data(folder: Path) -> dict[str, Any]:
    """config.yaml for a report that makes do without it: the mapping, or an empty one when it is missing or
    unreadable (the report then lays items out by what the manifest says)."""
    try:  # a report only reads it: names of code in it are text here, never run
        return read_run_config(folder, trust=True)
    except ConfigError:
        return {}


def config_keys(doc: Mapping[str, Any], prefix: str = "") -> dict[str, str]:
    """A short digest of every leaf of a config by key path (a list is one leaf): kept in run.json so that a
    config.yaml edited since the run started is refused naming what changed."""
    keys: dict[str, str] = {}
    for key, value in doc.items():
        path = f"{prefix}{key}"
        if isinstance(value, Mapping) and value:
            keys.update(config_keys(value, f"{path}."))
        else:
            keys[path] = hashing.short(hashlib.sha256(hashing.canonical_json(value).encode()).hexdigest())
    return keys


def check_unchanged(folder: Path, config_hash: str | None, recorded: Mapping[str, str] | None) -> bool:
    """Whether config.yaml is still the config the run started with; ConfigError naming the changed keys when it
    is not. False (nothing to check against) for runs made before run.json kept the config's hash."""
    if config_hash is None:
        return False
    if file_digest(Path(folder) / CONFIG) == config_hash:
        return True
    now_keys = config_keys(read_run_config(folder, trust=True))
    changed = sorted(key for key in {*now_keys, *(recorded or {})} if now_keys.get(key) != (recorded or {}).get(key))
    named = ", ".join(changed[:10]) + (f" and {len(changed) - 10} more" if len(changed) > 10 else "")
    what = f"changed: {named}" if changed else "its text changed (comments or layout: the values are the same)"
    raise ConfigError(ConfigIssue("", f"is not the config this run started with ({what}); a run resumes, verifies "
                                      f"and reruns items only of its own config: restore the file, or start a new "
                                      f"run from it with `diffsweep-runs rerun`", str(Path(folder) / CONFIG)))


# --- a run folder is data: what in its config.yaml would run code --------------------------------------

DEFAULT_MODULES = ("diffusers", "diffsweep")  # conf/config.yaml's allowed_modules: shipped code only
# the Hydra callbacks diffsweep itself writes into config.yaml, under their current and earlier names
SHIPPED_TARGETS = frozenset({"diffsweep.cli.multirun.ValidateJobs", "diffsweep.cli.multirun.TrackJobs",
                             "diffsweep.multirun.ValidateJobs", "diffsweep.multirun.TrackJobs"})
TRUST_HINT = ("diffsweep runs no code that a run folder names; if you trust this folder and the code it names, "
              "say so with --trust")


def read_raw_run_config(folder: Path) -> dict[str, Any]:
    """config.yaml as YAML data, Hydra keys included; ConfigError naming the file when it cannot be read."""
    path = Path(folder) / CONFIG
    try:
        doc = _load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(ConfigIssue("", f"{path} not found: not a diffsweep run folder")) from None
    except (OSError, UnicodeDecodeError) as error:
        raise ConfigError(ConfigIssue("", f"cannot read it: {error}", str(path))) from error
    except yaml.YAMLError as error:
        raise ConfigError(ConfigIssue("", f"not valid YAML data: {str(error).splitlines()[0]}", str(path))) from error
    if not isinstance(doc, dict):
        raise ConfigError(ConfigIssue("", f"expected a mapping of config keys, got {type(doc).__name__}", str(path)))
    return doc


def code_in(raw: Mapping[str, Any]) -> list[tuple[str, str]]:
    """(key path, what it would run) for everything in a run folder's config that would run or import code, or
    widen what may: `_target_`s (Hydra callbacks, launchers) other than diffsweep's own, defaults that pull in
    other Hydra options, trust_remote_code, and module prefixes beyond the shipped ones."""
    found = [(path, f"instantiates {target!r}") for path, target in _targets(raw, "")
             if not (path.startswith("hydra.callbacks.") and target in SHIPPED_TARGETS)]
    written = _hydra_part()[0]
    for position, entry in enumerate(raw.get("defaults") or []):
        if entry not in written:
            found.append((f"defaults[{position}]", f"composes {entry!r} into the run (a Hydra option may run code)"))
    builder = raw.get("builder")
    if isinstance(builder, Mapping) and builder.get("trust_remote_code") is True:
        found.append(("builder.trust_remote_code", "runs a model folder's pipeline.py"))
    sweep = raw.get("sweep")
    grid = sweep.get("grid") if isinstance(sweep, Mapping) else None
    if isinstance(grid, Mapping):
        nested = grid.get("builder")
        axis = grid.get("builder.trust_remote_code", nested.get("trust_remote_code") if isinstance(nested, Mapping)
                        else None)
        if isinstance(axis, list) and True in axis:
            found.append(("sweep.grid.builder.trust_remote_code", "runs a model folder's pipeline.py"))
    modules = raw.get("allowed_modules")
    wider = [m for m in modules if m not in DEFAULT_MODULES] if isinstance(modules, list) else []
    if wider:
        found.append(("allowed_modules", f"lets pipelines and metrics be imported from {', '.join(map(str, wider))}"))
    return found


def _targets(node: Any, path: str) -> list[tuple[str, str]]:
    if isinstance(node, Mapping):
        found = [(f"{path}._target_".lstrip("."), str(node["_target_"]))] if "_target_" in node else []
        for key, value in node.items():
            found += _targets(value, f"{path}.{key}".lstrip("."))
        return found
    if isinstance(node, list):
        return [hit for position, value in enumerate(node) for hit in _targets(value, f"{path}[{position}]")]
    return []


def refuse_code(folder: Path, raw: Mapping[str, Any], trust: bool) -> list[str]:
    """The key paths of code the folder's config names, once the user trusts it; ConfigError (exit 2, nothing
    written) listing them when the user has not."""
    found = code_in(raw)
    if found and not trust:
        source = str(Path(folder) / CONFIG)
        raise ConfigError([ConfigIssue(path, f"{what}; {TRUST_HINT}", source) for path, what in found])
    return [path for path, _ in found]
