"""Cheap latent previews: factor tables, the projection and its fallback, and real tiny pipelines with the callback."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch

from diffsweep import providers
from diffsweep.previews import FACTORS, LATENT_SPACES, latents_to_rgb, make_callback
from diffsweep.providers import tiny_factories

pytestmark = pytest.mark.quick  # unit tests: part of make test-fast

SD15_PUBLISHED = [  # ComfyUI comfy/latent_formats.py, class SD15: one (R, G, B) row per latent channel, no bias
    [0.3512, 0.2297, 0.3227],
    [0.3250, 0.4974, 0.2350],
    [-0.2829, 0.1762, 0.2721],
    [-0.2120, -0.2616, -0.7177],
]


def comfy_uint8(rgb: np.ndarray) -> np.ndarray:
    """[-1, 1] RGB to bytes as ComfyUI's latent2rgb preview maps it."""
    return (np.clip((rgb + 1) / 2, 0, 1) * 255).round().astype(np.uint8)


def test_every_space_has_a_table_of_channels_by_rgb() -> None:
    channels = {"sd": 4, "sdxl": 4, "sd3": 16, "flux": 16, "wan": 16, "qwen_image": 16}
    assert set(channels) == LATENT_SPACES
    for space, count in channels.items():
        weights = np.asarray(FACTORS[space].weights, dtype=np.float64)
        bias = np.asarray(FACTORS[space].bias, dtype=np.float64)
        assert weights.shape == (count, 3), space
        assert bias.shape == (3,), space
        assert np.isfinite(weights).all() and np.abs(weights).max() < 1, space
    assert np.array_equal(np.asarray(FACTORS["sd"].weights), SD15_PUBLISHED)
    assert FACTORS["qwen_image"] == FACTORS["wan"]  # one VAE latent space (ComfyUI maps Qwen-Image to Wan21)


@pytest.mark.parametrize("channel", range(4))
@pytest.mark.parametrize("value", [1.0, -1.5])
def test_sd_factors_give_the_rgb_of_a_channel_basis_latent(channel: int, value: float) -> None:
    latents = torch.zeros(2, 4, 64, 64)
    latents[:, channel] = value
    expected = comfy_uint8(value * np.asarray(SD15_PUBLISHED[channel]))
    images = latents_to_rgb(latents, "sd")
    assert len(images) == 2
    for image in images:
        assert image.dtype == np.uint8 and image.shape == (64, 64, 3)
        assert (image == expected).all()


def test_table_bias_is_added_and_mixed_channels_sum() -> None:
    mix = torch.tensor([0.5, -0.25, 1.0, 0.0, *([0.0] * 12)])
    latents = mix.view(1, 16, 1, 1).expand(1, 16, 64, 80)
    table = FACTORS["sd3"]
    expected = comfy_uint8(mix.numpy().astype(np.float64) @ np.asarray(table.weights) + np.asarray(table.bias))
    (image,) = latents_to_rgb(latents, "sd3")
    assert image.shape == (64, 80, 3)
    assert (np.abs(image.astype(int) - expected) <= 1).all()  # float32 projection vs float64 reference


@pytest.mark.parametrize(("shape", "side"), [((1, 4, 32, 32), 64), ((1, 4, 5, 3), 65), ((1, 4, 100, 70), 100)])
def test_preview_is_latent_sized_and_tiny_latents_grow_by_nearest_neighbour(shape: tuple[int, ...], side: int) -> None:
    latents = torch.randn(shape)
    (image,) = latents_to_rgb(latents, "sd")
    assert max(image.shape[:2]) == side
    scale = image.shape[0] // shape[2]
    assert image.shape[:2] == (shape[2] * scale, shape[3] * scale)
    expected = comfy_uint8(np.einsum("chw,cr->hwr", latents[0].numpy().astype(np.float64), SD15_PUBLISHED))
    assert (np.abs(image[::scale, ::scale].astype(int) - expected) <= 1).all()
    blocks = image.reshape(shape[2], scale, shape[3], scale, 3)
    assert (blocks == blocks[:, :1, :, :1]).all()  # every latent pixel became a flat scale x scale block


@pytest.mark.parametrize(("channels", "space"), [(1, None), (2, "nope"), (4, None), (16, "sd"), (4, "flux")])
def test_fallback_stretches_channels_zero_to_two(channels: int, space: str | None) -> None:
    ramp = torch.linspace(-3, 7, 64 * 64).view(64, 64)
    latents = torch.stack([ramp * (c + 1) + c for c in range(channels)]).unsqueeze(0)
    (image,) = latents_to_rgb(latents, space)
    assert image.shape == (64, 64, 3)
    for rgb in range(3):
        plane = image[..., rgb]
        assert plane.min() == 0 and plane.max() == 255  # each channel stretched over its own range
        same_ramp = image[..., min(rgb, channels - 1)].astype(int)
        assert (np.abs(plane.astype(int) - same_ramp) <= 1).all()  # scaled, shifted ramps stretch alike
    assert np.all(np.diff(image[..., 0].astype(int).ravel()) >= 0)  # monotone ramp stays monotone


def test_fallback_flat_channel_is_black_and_two_channels_repeat_the_last() -> None:
    latents = torch.zeros(1, 2, 64, 64)
    latents[0, 1, :, 32:] = 1.0
    (image,) = latents_to_rgb(latents, None)
    assert (image[..., 0] == 0).all()
    assert np.array_equal(image[..., 1], image[..., 2])
    assert (image[:, :32, 1] == 0).all() and (image[:, 32:, 1] == 255).all()


@pytest.mark.parametrize("space", ["wan", None])
def test_video_latents_preview_their_middle_frame(space: str | None) -> None:
    latents = torch.randn(2, 16, 5, 8, 8)
    images = latents_to_rgb(latents, space)
    expected = latents_to_rgb(latents[:, :, 2], space)
    assert len(images) == 2 and images[0].shape == (64, 64, 3)
    assert all(np.array_equal(a, b) for a, b in zip(images, expected, strict=True))


def test_projection_never_modifies_the_latents() -> None:
    for space in ("sd", None):
        latents = torch.randn(1, 4, 16, 16)
        before = latents.clone()
        latents_to_rgb(latents, space)
        assert torch.equal(latents, before)


class WatchedKwargs(dict[str, Any]):
    """callback_kwargs that records which steps read the latents."""

    def __init__(self, latents: torch.Tensor) -> None:
        super().__init__(latents=latents)
        self.reads = 0

    def __getitem__(self, key: str) -> Any:
        self.reads += 1
        return super().__getitem__(key)


def test_callback_fires_every_nth_step_and_touches_nothing_in_between() -> None:
    seen: list[tuple[int, int]] = []
    modes: list[bool] = []

    def unpack(latents: torch.Tensor) -> torch.Tensor:
        modes.append(torch.is_inference_mode_enabled())
        return latents

    callback = make_callback(3, "sd", lambda step, images: seen.append((step, len(images))), unpack)
    kwargs = WatchedKwargs(torch.randn(2, 4, 8, 8))
    for step in range(7):
        reads = kwargs.reads
        assert callback(None, step, 0, kwargs) is kwargs
        assert kwargs.reads == reads + ((step + 1) % 3 == 0)
    assert seen == [(3, 2), (6, 2)]
    assert modes == [True, True]
    with pytest.raises(ValueError, match="at least 1"):
        make_callback(0, "sd", lambda step, images: None)


def test_packed_families_unpack_through_their_provider_and_qwen_unpacks_to_video_layout() -> None:
    from diffusers import QwenImagePipeline

    class Pipe:
        vae_scale_factor = 8
        _unpack_latents = staticmethod(QwenImagePipeline._unpack_latents)

    sd, qwen = providers.get("stable_diffusion"), providers.get("qwen_image")
    size = {"height": 128, "width": 64}
    assert sd.preview_unpacker(Pipe(), sd.spec("StableDiffusionPipeline"), size) is None
    unpack = qwen.preview_unpacker(Pipe(), qwen.spec("QwenImagePipeline"), size)
    assert unpack is not None
    latents = torch.randn(1, 16, 1, 16, 8)
    packed = QwenImagePipeline._pack_latents(latents, 1, 16, 16, 8)
    assert torch.equal(unpack(packed), latents)
    (image,) = latents_to_rgb(unpack(packed), "qwen_image")
    assert np.array_equal(image, latents_to_rgb(latents[:, :, 0], "qwen_image")[0])


def test_packed_latents_without_an_unpacker_turn_previews_off_instead_of_failing() -> None:
    seen: list[int] = []
    callback = make_callback(1, "flux", lambda step, images: seen.append(step))
    packed = {"latents": torch.randn(1, 16, 64)}
    for step in range(3):
        assert callback(None, step, 0, packed) is packed
    assert seen == []


Preview = tuple[int, int, tuple[int, ...]]
"""(step, batch items, shape of the first image) of one on_preview call."""


def run_with_and_without_previews(pipe: Any, provider: str, pipeline: str,
                                  **call: Any) -> tuple[list[Preview], np.ndarray, np.ndarray]:
    """Previews every 2 steps, the images of that call, and the images of the same call without the callback."""
    previews: list[Preview] = []

    def collect(step: int, images: list[np.ndarray]) -> None:
        assert all(image.dtype == np.uint8 for image in images)
        previews.append((step, len(images), images[0].shape))

    family = providers.get(provider)
    spec = family.spec(pipeline)
    callback = make_callback(2, spec.latent_space, collect, family.preview_unpacker(pipe, spec, call))
    with_previews = pipe(**call, generator=torch.Generator().manual_seed(7), output_type="np",
                         callback_on_step_end=callback, callback_on_step_end_tensor_inputs=["latents"]).images
    plain = pipe(**call, generator=torch.Generator().manual_seed(7), output_type="np").images
    return previews, with_previews, plain


def test_tiny_sd_pipeline_previews_without_perturbing_the_result() -> None:
    from diffusers import StableDiffusionPipeline

    pipe = StableDiffusionPipeline(**tiny_factories()["sd"]())
    pipe.set_progress_bar_config(disable=True)
    previews, with_previews, plain = run_with_and_without_previews(
        pipe, "stable_diffusion", "StableDiffusionPipeline", prompt="a cat", num_inference_steps=4, height=64, width=64, num_images_per_prompt=2)
    assert previews == [(2, 2, (64, 64, 3)), (4, 2, (64, 64, 3))]  # 32x32 latents, enlarged to 64
    assert np.array_equal(with_previews, plain)


def test_tiny_flux_pipeline_unpacks_and_previews_without_perturbing_the_result() -> None:
    from diffusers import FluxPipeline

    pipe = FluxPipeline(**tiny_factories()["flux"]())
    pipe.set_progress_bar_config(disable=True)
    previews, with_previews, plain = run_with_and_without_previews(
        pipe, "flux", "FluxPipeline", prompt="a cat", num_inference_steps=4, height=32, width=32, max_sequence_length=32,
        num_images_per_prompt=2)
    assert previews == [(2, 2, (64, 64, 3)), (4, 2, (64, 64, 3))]  # unpacked 1x32x32 latents, enlarged to 64
    assert np.array_equal(with_previews, plain)


def test_a_family_brings_the_factors_of_its_own_latent_space() -> None:
    """A new latent space is declared by its provider, not added to diffsweep.previews."""
    from diffsweep.providers.base import PipelineSpec, Provider, RGBFactors

    red = RGBFactors(weights=((1.0, -1.0, -1.0), (0.0, 0.0, 0.0)))

    class TwoChannel(Provider):
        name = "two_channel"
        latent_factors = {"two": red}

    provider, spec = TwoChannel(), PipelineSpec("P", "image", frozenset(), latent_space="two")
    assert provider.preview_space(spec) is red
    assert providers.get("flux").preview_space(providers.get("flux").spec("FluxPipeline")) == "flux"
    (image,) = latents_to_rgb(torch.ones(1, 2, 64, 64), provider.preview_space(spec))
    assert image[0, 0].tolist() == [255, 0, 0]
