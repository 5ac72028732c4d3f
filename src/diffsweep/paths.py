"""Where diffsweep finds its shipped files (conf/, schemas/) and keeps its cache."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path

_PACKAGE_DIR = Path(__file__).resolve().parent


def _shipped_dir(name: str, marker: str) -> Path:
    # An installed wheel carries conf/ and schemas/ inside the package; a source checkout
    # (editable install, tests) keeps them at the repository top level.
    for candidate in (_PACKAGE_DIR / name, _PACKAGE_DIR.parents[1] / name):
        if (candidate / marker).is_file():
            return candidate
    raise FileNotFoundError(f"diffsweep installation is incomplete: no {name}/{marker} found")


def conf_dir() -> Path:
    """The Hydra config tree shipped with diffsweep."""
    return _shipped_dir("conf", "config.yaml")


def schemas_dir() -> Path:
    """The JSON Schemas shipped with diffsweep."""
    return _shipped_dir("schemas", "config.schema.json")


def find_file(name: str, base_dirs: Sequence[Path]) -> Path:
    """An absolute path as is; a relative one in the first base folder that has it."""
    path = Path(name).expanduser()
    if path.is_absolute():
        return path
    return next((base / path for base in base_dirs if (base / path).exists()), base_dirs[0] / path)


def cache_dir() -> Path:
    """diffsweep's own cache (tiny models): $DIFFSWEEP_CACHE, else $XDG_CACHE_HOME/diffsweep."""
    explicit = os.environ.get("DIFFSWEEP_CACHE")
    if explicit:
        return Path(explicit).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(xdg).expanduser() / "diffsweep"


def build_folder_once(target: Path, marker: str, save: Callable[[Path], None]) -> bool:
    """Make `target` by `save(staging)` and an atomic rename, unless `target/marker` exists already;
    True if this call built it. A concurrent builder either wins the rename or finds ours."""
    if (target / marker).is_file():
        return False
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=target.parent))
    try:
        save(staging)
        try:
            os.replace(staging, target)
        except OSError:
            if not (target / marker).is_file():
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return True
