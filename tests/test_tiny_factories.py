"""Every tiny factory must survive save_pretrained -> from_pretrained and run a 2-step call."""

from __future__ import annotations

import os

os.environ["DIFFUSERS_VERBOSITY"] = "error"

from pathlib import Path

import numpy as np
import pytest
import torch

from diffsweep import providers
from diffsweep.providers import tiny_factories
from diffsweep.providers.base import Provider, TinyModel

CASES: dict[str, tuple[Provider, TinyModel]] = {
    name: (provider, tiny) for provider in providers.registry().values() for name, tiny in provider.tiny_models.items()}
"""Every tiny model any discovered provider declares: a new one is tested the moment it is declared."""


def test_the_factory_table_is_what_the_providers_declare() -> None:
    assert set(tiny_factories()) == set(CASES)
    assert {"sd", "flux", "wan", "audioldm", "custom"} <= set(CASES)  # the built-in families are found


@pytest.mark.parametrize("name", list(CASES))
def test_factory_roundtrip_and_call(name: str, tmp_path: Path) -> None:
    """Build -> save -> reload through the provider's own loader -> 2-step call, as real models are used."""
    provider, tiny = CASES[name]
    spec = provider.spec(tiny.pipeline)
    cls = spec.load_class()
    cls(**tiny.factory()).save_pretrained(tmp_path)

    pipe = provider.load({"provider": provider.name, "pipeline": tiny.pipeline, "model": str(tmp_path)},
                         torch.float32)
    assert type(pipe) is cls
    provider.prepare_call(pipe, spec, tiny.call)
    pipe.set_progress_bar_config(disable=True)
    result = pipe(prompt="a red cube", num_inference_steps=2, generator=torch.Generator().manual_seed(0),
                  output_type="np", **tiny.call)
    (generated,) = provider.outputs(spec, result, pipe)
    assert generated.kind == spec.output
    assert np.shape(generated.array) == tiny.shape
    assert np.std(generated.array) > 0  # a constant output means nothing was decoded


def test_factory_is_deterministic() -> None:
    """Fixture caches key on FACTORY_VERSION only, so the same factory must always produce the same weights."""
    first, second = tiny_factories()["sd"](), tiny_factories()["sd"]()
    for key, component in first.items():
        if isinstance(component, torch.nn.Module):
            a, b = component.state_dict(), second[key].state_dict()
            assert a.keys() == b.keys()
            assert all(torch.equal(a[k], b[k]) for k in a), key


def test_factory_leaves_global_rng_alone() -> None:
    """Factories reseed per component; the caller's torch RNG must not notice."""
    torch.manual_seed(1234)
    expected = torch.rand(4)
    torch.manual_seed(1234)
    tiny_factories()["sd"]()
    assert torch.equal(torch.rand(4), expected)
