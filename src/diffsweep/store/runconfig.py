"""A run folder's config files, their one writer and one reader: config.yaml (the resolved config, which is also a
Hydra primary config) and overrides.yaml (the command-line overrides that composed it).

`diffsweep --config-path <run dir> --config-name config` composes config.yaml as is, so a run can be repeated from
its folder alone; interpolation markers in values (`${...}` in a prompt) are escaped so Hydra reads them back
literally. diffsweep itself reads both files as data (YAML without tags, never composed), undoing that escape.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from diffsweep.errors import ConfigError, ConfigIssue
from diffsweep.paths import conf_dir
from diffsweep.store.atomic import write_atomic

CONFIG = "config.yaml"
OVERRIDES = "overrides.yaml"

HEADER = """\
# diffsweep run config, fully resolved (random seeds drawn, prompt files inlined).
# Rerun it into a new version: diffsweep --config-path {folder} --config-name config
"""


def _hydra_part() -> tuple[list[Any], dict[str, Any]]:
    """conf/config.yaml's Hydra settings and `override hydra/...` defaults, unresolved, so a run
    folder reruns under the same Hydra behaviour without the conf/ tree. Options that diffsweep
    ships itself (conf/hydra/<group>/<option>.yaml) are inlined: a run folder has no conf/ tree."""
    primary = yaml.safe_load((conf_dir() / "config.yaml").read_text(encoding="utf-8"))
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
                hydra[group] = yaml.safe_load(shipped.read_text(encoding="utf-8"))
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
    return HEADER.format(folder=folder) + yaml.safe_dump(body, sort_keys=False, allow_unicode=True, width=120)


def write_run_config(folder: Path, doc: Mapping[str, Any]) -> None:
    write_atomic(folder / CONFIG, dump_run_config(doc, folder))


def read_run_config(folder: Path) -> dict[str, Any]:
    """The resolved config saved in a run folder, as data, without its Hydra keys; ConfigError (naming the file)
    when it is missing, is not YAML, holds YAML tags, or is not a mapping."""
    path = Path(folder) / CONFIG
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(ConfigIssue("", f"{path} not found: not a diffsweep run folder")) from None
    except (OSError, UnicodeDecodeError) as error:
        raise ConfigError(ConfigIssue("", f"cannot read it: {error}", str(path))) from error
    try:
        doc = yaml.safe_load(text)
    except yaml.YAMLError as error:
        raise ConfigError(ConfigIssue("", f"not valid YAML data: {str(error).splitlines()[0]}", str(path))) from error
    if not isinstance(doc, dict):
        raise ConfigError(ConfigIssue("", f"expected a mapping of config keys, got {type(doc).__name__}", str(path)))
    return _unescape({key: value for key, value in doc.items() if key not in ("defaults", "hydra")})


def write_overrides(folder: Path, overrides: list[str]) -> None:
    write_atomic(Path(folder) / OVERRIDES, yaml.safe_dump(list(overrides), allow_unicode=True, width=1000))


def read_overrides(folder: Path) -> list[str]:
    """The overrides a run was composed with; none when the file is missing or not a list of strings."""
    try:
        overrides = yaml.safe_load((Path(folder) / OVERRIDES).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError):
        return []
    return [o for o in overrides if isinstance(o, str)] if isinstance(overrides, list) else []


def read_config_data(folder: Path) -> dict[str, Any]:
    """config.yaml for a report that makes do without it: the mapping, or an empty one when it is missing or
    unreadable (the report then lays items out by what the manifest says)."""
    try:
        return read_run_config(folder)
    except ConfigError:
        return {}
