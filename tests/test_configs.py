"""Every shipped YAML composes, validates and plans (a dry run) with the real conf/ tree."""

from __future__ import annotations

import io
from pathlib import Path

import pytest

from conftest import compose_config
from diffsweep import quantize
from diffsweep.config.schema import validate_config
from diffsweep.devices import resolve_device
from diffsweep.errors import ConfigError
from diffsweep.paths import conf_dir
from diffsweep.run.local import run_sweep

pytestmark = pytest.mark.quick  # unit tests: part of make test-fast

PROVIDERS = sorted(p.stem for p in (conf_dir() / "provider").glob("*.yaml"))
SWEEPS = sorted(p.stem for p in (conf_dir() / "sweep").glob("*.yaml"))
OPTIMIZATIONS = sorted(p.stem for p in (conf_dir() / "optimization").glob("*.yaml"))
EXPERIMENTS = sorted(p.stem for p in (conf_dir() / "experiment").glob("*.yaml"))


def _dry_run(overrides: list[str], tmp_path: Path) -> str:
    doc = compose_config([*overrides, "dry_run=true"], tmp_path / "runs")
    validate_config(doc)
    out = io.StringIO()
    result = run_sweep(doc, out=out)
    assert result.status == "dry_run"
    assert not (tmp_path / "runs").exists(), "a dry run must write nothing"
    return out.getvalue()


@pytest.mark.parametrize("provider", PROVIDERS)
def test_provider_preset_composes_validates_and_plans(provider: str, tmp_path: Path) -> None:
    text = _dry_run([f"provider={provider}"], tmp_path)
    doc = compose_config([f"provider={provider}"])
    assert doc["builder"]["model"] in text
    assert f"{doc['builder']['provider']}/{doc['builder']['pipeline']}" in text


@pytest.mark.parametrize("sweep", SWEEPS)
def test_sweep_preset_composes_validates_and_plans(sweep: str, tmp_path: Path) -> None:
    assert "dry run:" in _dry_run([f"sweep={sweep}"], tmp_path)


@pytest.mark.parametrize("optimization", OPTIMIZATIONS)
def test_optimization_preset_composes_validates_and_plans(optimization: str, tmp_path: Path) -> None:
    assert "dry run:" in _dry_run([f"optimization={optimization}"], tmp_path)


@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_experiment_overlay_composes_validates_and_plans(experiment: str, tmp_path: Path) -> None:
    assert "dry run:" in _dry_run([f"+experiment={experiment}"], tmp_path)


def test_default_config_is_the_embedded_tiny_sd() -> None:
    doc = compose_config()
    assert doc["builder"]["model"] == "tiny:sd"
    assert doc["output"]["root"] == "runs"
    assert doc["sweep"]["name"] == "default"
    assert doc["device"] == "auto" and doc["dry_run"] is False


REAL_PRESETS = [p for p in PROVIDERS if not p.startswith("tiny_")]


@pytest.mark.parametrize("provider", REAL_PRESETS)
def test_real_preset_offline_fails_with_one_clear_message_and_writes_nothing(provider: str, tmp_path: Path) -> None:
    from diffsweep.errors import ModelUnavailableError

    doc = compose_config([f"provider={provider}"], tmp_path / "runs")
    setting = quantize.resolve(doc["builder"].get("quantization"))
    if quantize.environment_problems(setting, resolve_device("auto")):  # bitsandbytes without CUDA: refused first
        with pytest.raises(ConfigError, match=r"builder\.quantization\.backend: quantization=bnb_nf4: bitsandbytes"):
            run_sweep(doc, out=io.StringIO())
        assert not (tmp_path / "runs").exists()
        return
    with pytest.raises(ModelUnavailableError) as error:
        run_sweep(doc, out=io.StringIO())
    message = str(error.value)
    assert f"model '{doc['builder']['model']}' is not available offline" in message
    assert "hf download" in message and "\n" not in message
    assert not (tmp_path / "runs").exists()
