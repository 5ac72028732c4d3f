"""Shared fixtures: the real conf/ tree composed with Hydra, offline tiny models, CLI runners."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from diffsweep.paths import conf_dir

os.environ.setdefault("DIFFUSERS_VERBOSITY", "error")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
os.environ["HF_HUB_OFFLINE"] = "1"  # tests never reach the hub; real presets must fail clearly
# diffusers copies a local folder's pipeline.py into this cache (read when diffusers is imported):
# keep test copies out of the user's cache
os.environ["HF_MODULES_CACHE"] = tempfile.mkdtemp(prefix="diffsweep-test-modules-")


@pytest.fixture(scope="session", autouse=True)
def tiny_cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """One tiny-model cache for the session (subprocesses inherit it through the environment)."""
    path = tmp_path_factory.mktemp("diffsweep-cache")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("DIFFSWEEP_CACHE", str(path))
        yield path


def compose_config(overrides: list[str] | None = None, root: Path | None = None) -> dict[str, Any]:
    """The resolved config the CLI would see for these overrides (real conf/ tree)."""
    extra = [f"output.root={root}"] if root is not None else []
    with initialize_config_dir(config_dir=str(conf_dir()), version_base="1.3"):
        cfg = compose(config_name="config", overrides=[*(overrides or []), *extra])
    doc = OmegaConf.to_container(cfg, resolve=True)
    assert isinstance(doc, dict)
    return doc


@pytest.fixture
def compose_cfg(tmp_path: Path) -> Callable[..., dict[str, Any]]:
    """compose_cfg(*overrides) -> resolved config writing under tmp_path/runs."""
    return lambda *overrides: compose_config(list(overrides), tmp_path / "runs")


def run_cli(args: list[str], cwd: Path, module: str = "diffsweep", timeout: int = 300,
            env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """Run a diffsweep console command in a real subprocess."""
    return subprocess.run([sys.executable, "-m", module, *args], cwd=cwd, capture_output=True, text=True,
                          timeout=timeout, env={**os.environ, **(env or {})})


def read_manifest(run_dir: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (run_dir / "manifest.jsonl").read_text().splitlines()]


def read_run_json(run_dir: Path) -> dict[str, Any]:
    return json.loads((run_dir / "run.json").read_text())


def assert_batch_equivalent(a: Any, b: Any) -> None:
    """Images of one item made in differently composed batches: the same noise and model, so equal up
    to float rounding in batched kernels (a few pixels one level apart), never visibly different."""
    import numpy as np

    diff = np.abs(np.asarray(a, dtype=np.int16) - np.asarray(b, dtype=np.int16))
    assert diff.max() <= 1 and (diff > 0).mean() <= 0.01, (diff.max(), (diff > 0).mean())


def run_json(status: str, counts: dict[str, int], builders: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    """A complete run.json for a hand-made run folder, as diffsweep writes one (readers refuse a partial one)."""
    from diffsweep.store.records import RunInfo

    versions = {"python": "3.11", "torch": "2", "diffusers": "0.42", "transformers": "5", "diffsweep": "0.1.0",
                "cuda": None, "gpu": None}
    builders = [{"provider": "stable_diffusion", "pipeline": "StableDiffusionPipeline", "model": "tiny:sd",
                 "model_path": None, "revision": None, "load_seconds": None, **b} for b in builders or []]
    attempt = {"kind": "run", "command": ["diffsweep"], "started": "2026-01-01T00:00:00+00:00",
               "finished": "2026-01-01T00:01:00+00:00", "status": status, "host": "h", "pid": 1, "counts": {},
               "cache": {}, "timings": {}}
    return RunInfo.from_json({"status": status, "name": "demo", "version": "v0001", "started": attempt["started"],
                              "finished": attempt["finished"], "counts": counts, "builders": builders,
                              "versions": versions, "command": ["diffsweep"], "attempts": [attempt]}).to_json()
