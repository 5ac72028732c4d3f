"""Settings that need an optional extra installed: checked with the config, before anything is written, so a
missing package is a config error that names what to install."""

from __future__ import annotations

import importlib.util

from diffsweep.config.model import RunConfig
from diffsweep.errors import ConfigError, ConfigIssue, SourceOf

# what each tracking backend imports
TRACKING_MODULES = {"mlflow": ("mlflow", "sqlalchemy", "alembic"), "tensorboard": ("tensorboard",)}


def check_extras(config: RunConfig, source_of: SourceOf) -> None:
    backend = config.tracking.backend
    missing = [m for m in TRACKING_MODULES.get(backend, ()) if importlib.util.find_spec(m) is None]
    if missing:
        raise ConfigError(ConfigIssue("tracking.backend", f"{backend} needs {', '.join(missing)}, which is not "
                                      f"installed: pip install 'diffsweep[{backend}]'", source_of("tracking.backend")))
