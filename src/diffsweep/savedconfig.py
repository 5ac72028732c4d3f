"""The run folder's config.yaml: a resolved config that is also a Hydra primary config.

`diffsweep --config-path <run dir> --config-name config` composes it as is, so a run can be
repeated from its folder alone. Interpolation markers in values (`${...}` in a prompt) are
escaped so Hydra reads them back literally.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml
from omegaconf import OmegaConf

from diffsweep.errors import ConfigError, ConfigIssue
from diffsweep.paths import conf_dir

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


def _escape(value: Any) -> Any:
    if isinstance(value, str):
        return value.replace("${", "\\${")
    if isinstance(value, Mapping):
        return {k: _escape(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_escape(v) for v in value]
    return value


def dump_run_config(doc: Mapping[str, Any], folder: Path | str = "<this folder>") -> str:
    """YAML text of a resolved config, loadable by Hydra as a primary config."""
    defaults, hydra = _hydra_part()
    body = {"defaults": defaults, **_escape(dict(doc)), "hydra": hydra}
    return HEADER.format(folder=folder) + yaml.safe_dump(body, sort_keys=False, allow_unicode=True, width=120)


def load_run_config(folder: Path) -> dict[str, Any]:
    """The resolved config saved in a run folder, without its Hydra keys."""
    path = folder / "config.yaml"
    try:
        conf = OmegaConf.load(path)
    except FileNotFoundError:
        raise ConfigError(ConfigIssue("", f"{path} not found: not a diffsweep run folder")) from None
    except Exception as error:  # noqa: BLE001 - YAML errors of any kind become one config error
        raise ConfigError(ConfigIssue("", f"cannot read it: {error}", str(path))) from error
    for key in ("defaults", "hydra"):
        conf.pop(key, None)
    doc = OmegaConf.to_container(conf, resolve=True)
    assert isinstance(doc, dict)
    return doc
