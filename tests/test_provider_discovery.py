"""Providers are found, not listed: built-in modules by package scan, other packages' through the
`diffsweep.providers` entry-point group; the config schema and the tiny table are derived from them."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import yaml
from jsonschema import Draft202012Validator

from conftest import read_manifest, run_cli
from diffsweep import providers
from diffsweep.config.schema import load_schema
from diffsweep.errors import EXIT_CONFIG
from diffsweep.providers.base import PipelineSpec, Provider, TinyModel
from diffsweep.tiny import stable_diffusion as tiny_sd

pytestmark = pytest.mark.quick  # unit tests: part of make test-fast

PLUGIN_SITE = Path(__file__).parent / "data" / "entry_point_provider"
"""An installed distribution (package + .dist-info with entry_points.txt), as pip lays it out in site-packages."""

LAB_SWEEP = ["builder.provider=lab_sd", "builder.model=tiny:lab_sd", "+sweep.params.eta=0.5", "sweep.name=lab",
             "sweep.params.num_inference_steps=2", "sweep.grid.prompt=[a fox]", "sweep.grid.seed=[0]"]


def _with_plugin() -> dict[str, str]:
    return {"PYTHONPATH": os.pathsep.join([str(PLUGIN_SITE), os.environ.get("PYTHONPATH", "")])}


def test_every_builtin_provider_module_is_found_and_the_schema_names_them() -> None:
    modules = {p.stem for p in Path(providers.__file__).parent.glob("*.py")} - {"__init__", "base"}
    assert set(providers.names()) == modules  # a module's provider is named after it
    schema = load_schema("config")
    Draft202012Validator.check_schema(schema)
    assert schema["$defs"]["builder"]["properties"]["provider"]["enum"] == providers.names()
    params = schema["$defs"]["params"]["properties"]
    for provider in providers.registry().values():  # a family's own parameters join the shared vocabulary
        assert provider.parameters.keys() <= params.keys()
        for spec in provider.declared_specs():
            assert spec.params - {"fps"} <= params.keys(), spec.name
    assert params["audio_length_in_s"] == dict(providers.get("audioldm").parameters["audio_length_in_s"])


def test_an_entry_point_provider_from_an_installed_package_runs_a_sweep(tmp_path: Path) -> None:
    result = run_cli([*LAB_SWEEP, f"output.root={tmp_path / 'runs'}"], tmp_path, env=_with_plugin())
    assert result.returncode == 0, result.stderr
    run_dir = Path(result.stdout.strip().splitlines()[-1])
    (record,) = read_manifest(run_dir)
    assert record["status"] == "ok" and record["params"]["eta"] == 0.5
    run = json.loads((run_dir / "run.json").read_text())
    assert [(b["provider"], b["model"]) for b in run["builders"]] == [("lab_sd", "tiny:lab_sd")]
    assert (run_dir / record["outputs"][0]).stat().st_size > 0

    # A third-party reader validates the run's config.yaml with the schema diffsweep-runs exports.
    exported = run_cli(["schema", "config"], tmp_path, module="diffsweep.cli.runs", env=_with_plugin())
    assert exported.returncode == 0, exported.stderr
    schema = json.loads(exported.stdout)
    assert schema["$defs"]["builder"]["properties"]["provider"]["enum"] == sorted([*providers.names(), "lab_sd"])
    saved = yaml.safe_load((run_dir / "config.yaml").read_text())
    for hydra_part in ("defaults", "hydra"):  # kept so the folder reruns; the schema is of the resolved config
        saved.pop(hydra_part)
    Draft202012Validator(schema).validate(saved)
    plain = json.loads(run_cli(["schema", "config"], tmp_path, module="diffsweep.cli.runs").stdout)
    assert "lab_sd" not in plain["$defs"]["builder"]["properties"]["provider"]["enum"]

    without = run_cli([*LAB_SWEEP, f"output.root={tmp_path / 'plain'}"], tmp_path)
    assert without.returncode == EXIT_CONFIG
    assert "builder.provider: expected one of" in without.stderr and 'got "lab_sd"' in without.stderr
    assert "sweep.params.eta: unknown key" in without.stderr
    assert not (tmp_path / "plain").exists()


class _Broken(Provider):
    name = "broken"
    pipelines = {"StableDiffusionPipeline": PipelineSpec("StableDiffusionPipeline", "image",
                                                         frozenset({"height", "clip_skip"}))}


class _BadSchema(Provider):
    name = "bad_schema"
    parameters = {"shade": {"type": "colour"}}  # not a JSON Schema type


class _SameTiny(Provider):
    name = "same_tiny"
    tiny_models = {"sd": TinyModel("StableDiffusionPipeline", tiny_sd.sd)}


@pytest.fixture
def rediscover(monkeypatch: pytest.MonkeyPatch):
    """Discovery with extra 'installed' providers; caches are cleared before and after."""
    def install(*extra: Provider) -> None:
        monkeypatch.setattr(providers, "_installed", lambda: [(p, f"test provider {p.name}") for p in extra])
        providers.registry.cache_clear()
        load_schema.cache_clear()

    yield install
    monkeypatch.undo()
    providers.registry.cache_clear()
    load_schema.cache_clear()


def test_contradictory_declarations_fail_loudly(rediscover) -> None:
    rediscover(_Broken())
    with pytest.raises(providers.ProviderError, match="StableDiffusionPipeline declares parameter.*clip_skip.*no schema"):
        load_schema("config")
    rediscover(_BadSchema())
    with pytest.raises(providers.ProviderError, match="provider 'bad_schema': generation parameter 'shade' has an "
                                                      "invalid JSON Schema: 'colour' is not valid"):
        load_schema("config")
    rediscover(_SameTiny())
    with pytest.raises(providers.ProviderError, match="tiny model 'sd' is declared by providers 'stable_diffusion' "
                                                      "and 'same_tiny'"):
        providers.registry()
