"""Every tiny factory must survive save_pretrained -> from_pretrained and run a 2-step call."""

from __future__ import annotations

import os

os.environ["DIFFUSERS_VERBOSITY"] = "error"

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import diffusers
import numpy as np
import PIL.Image
import pytest
import torch
from diffusers import DiffusionPipeline

from diffsweep.tiny import FACTORIES


def _images(width: int, height: int) -> Callable[[Any], None]:
    """Image pipelines return one PIL image per prompt by default."""

    def check(output: Any) -> None:
        assert len(output.images) == 1
        assert isinstance(output.images[0], PIL.Image.Image)
        assert output.images[0].size == (width, height)

    return check


def _frames(shape: tuple[int, ...]) -> Callable[[Any], None]:
    """Video pipelines asked for `np` return (B, F, H, W, 3) floats; a constant video means nothing was decoded."""

    def check(output: Any) -> None:
        assert isinstance(output.frames, np.ndarray)
        assert output.frames.shape == shape
        assert output.frames.std() > 0

    return check


def _audios(samples: int) -> Callable[[Any], None]:
    """Audio pipelines return an np (B, samples) waveform array."""

    def check(output: Any) -> None:
        assert isinstance(output.audios, np.ndarray)
        assert output.audios.shape == (1, samples)

    return check


def _fix_allegro_vae(pipe: Any) -> None:
    """Tiling is not saved, and one tile must cover the whole 32x32 video or nothing is decoded."""
    pipe.vae.enable_tiling()
    pipe.vae.kernel = (24, 32, 32)
    pipe.vae.stride = (16, 32, 32)


@dataclass(frozen=True)
class Case:
    """How to exercise one factory: the pipeline class, a tiny call and what its output must look like."""

    pipeline: str
    call: dict[str, Any]
    check: Callable[[Any], None]
    after_load: Callable[[Any], None] | None = None


_SD = Case("StableDiffusionPipeline", {"height": 64, "width": 64}, _images(64, 64))
_WAN = Case(
    "WanPipeline", {"height": 32, "width": 32, "num_frames": 5, "output_type": "np"}, _frames((1, 5, 32, 32, 3))
)

CASES: dict[str, Case] = {
    "sd": _SD,
    "sd_v2": _SD,
    "custom": _SD,
    "sdxl": Case("StableDiffusionXLPipeline", {"height": 64, "width": 64}, _images(64, 64)),
    "sd3": Case("StableDiffusion3Pipeline", {"height": 32, "width": 32, "max_sequence_length": 32}, _images(32, 32)),
    "flux": Case(
        "FluxPipeline",
        {"height": 32, "width": 32, "max_sequence_length": 32, "guidance_scale": 3.5},
        _images(32, 32),
    ),
    "flux2_klein": Case("Flux2KleinPipeline", {"height": 32, "width": 32, "max_sequence_length": 32}, _images(32, 32)),
    "chroma": Case("ChromaPipeline", {"height": 32, "width": 32, "max_sequence_length": 32}, _images(32, 32)),
    "sana": Case("SanaPipeline", {"height": 32, "width": 64, "use_resolution_binning": False}, _images(64, 32)),
    "sana_sprint": Case("SanaSprintPipeline", {"height": 32, "width": 64, "use_resolution_binning": False},
                        _images(64, 32)),
    "qwen_image": Case(
        "QwenImagePipeline",
        {"height": 32, "width": 32, "max_sequence_length": 64, "true_cfg_scale": 1.0},
        _images(32, 32),
    ),
    "wan": _WAN,
    "wan22": _WAN,
    "wan22_ti2v": _WAN,
    "cogvideox": Case(
        "CogVideoXPipeline",
        {"height": 32, "width": 32, "num_frames": 9, "max_sequence_length": 16, "output_type": "np"},
        _frames((1, 9, 32, 32, 3)),
    ),
    "allegro": Case(
        "AllegroPipeline",
        {"height": 32, "width": 32, "num_frames": 24, "output_type": "np"},
        _frames((1, 24, 32, 32, 3)),
        _fix_allegro_vae,
    ),
    "amused": Case("AmusedPipeline", {"height": 32, "width": 32}, _images(32, 32)),
    "audioldm": Case("AudioLDMPipeline", {}, _audios(256)),
    "audioldm2": Case("AudioLDM2Pipeline", {}, _audios(256)),
    "z_image": Case("ZImagePipeline", {"height": 32, "width": 32, "max_sequence_length": 32}, _images(32, 32)),
    "wuerstchen": Case(
        "WuerstchenCombinedPipeline",
        {"height": 128, "width": 128, "prior_num_inference_steps": 2},
        _images(128, 128),
    ),
}


def _pipeline_class(name: str) -> type[DiffusionPipeline]:
    """Top-level diffusers class, or the deprecated Wuerstchen one that is no longer exported there."""
    if name == "WuerstchenCombinedPipeline":
        from diffusers.pipelines.deprecated.wuerstchen import WuerstchenCombinedPipeline

        return WuerstchenCombinedPipeline
    return getattr(diffusers, name)


def _expose_wuerstchen_models(monkeypatch: pytest.MonkeyPatch) -> None:
    """model_index.json names the Wuerstchen models `diffusers.<class>`, but diffusers no longer exports them."""
    from diffusers.pipelines.deprecated.wuerstchen import PaellaVQModel, WuerstchenDiffNeXt, WuerstchenPrior

    for cls in (PaellaVQModel, WuerstchenDiffNeXt, WuerstchenPrior):
        monkeypatch.setattr(diffusers, cls.__name__, cls, raising=False)


def test_every_factory_has_a_case() -> None:
    """A new factory must come with a pipeline and a call that exercise it."""
    assert set(FACTORIES) == set(CASES)


@pytest.mark.parametrize("name", list(CASES))
def test_factory_roundtrip_and_call(name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Build -> save -> reload through the generic loader -> 2-step call, as real models are used."""
    case = CASES[name]
    cls = _pipeline_class(case.pipeline)
    cls(**FACTORIES[name]()).save_pretrained(tmp_path)
    if name == "wuerstchen":
        _expose_wuerstchen_models(monkeypatch)

    pipe = DiffusionPipeline.from_pretrained(tmp_path)
    assert type(pipe) is cls
    if case.after_load is not None:
        case.after_load(pipe)
    pipe.set_progress_bar_config(disable=True)
    output = pipe(prompt="a red cube", num_inference_steps=2, generator=torch.Generator().manual_seed(0), **case.call)
    case.check(output)


def test_factory_is_deterministic() -> None:
    """Fixture caches key on FACTORY_VERSION only, so the same factory must always produce the same weights."""
    first, second = FACTORIES["sd"](), FACTORIES["sd"]()
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
    FACTORIES["sd"]()
    assert torch.equal(torch.rand(4), expected)
