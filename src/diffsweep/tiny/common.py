"""Pieces shared by the tiny factories: RNG handling, text-encoder configs and the SD-style DDIM scheduler.

Heavy libraries are imported inside the functions so that importing `diffsweep.tiny` stays cheap.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

if TYPE_CHECKING:
    from diffusers import DDIMScheduler
    from transformers import CLIPTextConfig, PreTrainedTokenizerBase

Components = dict[str, Any]
"""Keyword arguments for a pipeline constructor."""
_Made = TypeVar("_Made")  # what a tiny recipe builds: components, or a part such as an adapter's weights


def isolated_rng(factory: Callable[[], _Made]) -> Callable[[], _Made]:
    """Run a factory under a forked torch RNG so that building fixtures never moves the caller's seed."""

    @functools.wraps(factory)
    def wrapper() -> _Made:
        import torch

        with torch.random.fork_rng(devices=[]):
            return factory()

    return wrapper


def reseed() -> None:
    """Reset torch's RNG before each component so its weights do not depend on what was built before it."""
    import torch

    torch.manual_seed(0)


def clip_text_config(
    tokenizer: PreTrainedTokenizerBase,
    hidden_size: int,
    *,
    projection_dim: int | None = None,
    intermediate_size: int | None = None,
    num_attention_heads: int = 2,
    num_hidden_layers: int = 2,
) -> CLIPTextConfig:
    """CLIP text config sized to the in-memory tokenizer; its special-token ids are the real ones."""
    from transformers import CLIPTextConfig

    return CLIPTextConfig(
        hidden_size=hidden_size,
        intermediate_size=intermediate_size or 2 * hidden_size,
        projection_dim=projection_dim or hidden_size,
        num_attention_heads=num_attention_heads,
        num_hidden_layers=num_hidden_layers,
        vocab_size=len(tokenizer),
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        max_position_embeddings=tokenizer.model_max_length,
    )


def t5_kwargs(tokenizer: PreTrainedTokenizerBase, d_model: int, **overrides: Any) -> dict[str, Any]:
    """Keyword arguments for a tiny `T5Config`/`UMT5Config` whose vocabulary matches the in-memory T5 tokenizer."""
    kwargs: dict[str, Any] = {
        "d_model": d_model,
        "d_ff": 37,
        "d_kv": 8,
        "num_heads": 4,
        "num_layers": 2,
        "relative_attention_num_buckets": 8,
        "vocab_size": len(tokenizer),
        "pad_token_id": tokenizer.pad_token_id,
        "eos_token_id": tokenizer.eos_token_id,
        "decoder_start_token_id": tokenizer.pad_token_id,
    }
    return kwargs | overrides


def sd_ddim_scheduler(**overrides: Any) -> DDIMScheduler:
    """The scheduler of diffusers' SD tests; `steps_offset=1` avoids a FutureWarning."""
    from diffusers import DDIMScheduler

    return DDIMScheduler(
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        clip_sample=False,
        set_alpha_to_one=False,
        steps_offset=1,
        **overrides,
    )


def one_level_vae(latent_channels: int) -> Any:
    """The flow-matching pipelines' VAE (SD3/Flux shift and scale) with one level: scale factor 1."""
    from diffusers import AutoencoderKL

    return AutoencoderKL(block_out_channels=(4,), latent_channels=latent_channels, norm_num_groups=1,
                         use_quant_conv=False, use_post_quant_conv=False, shift_factor=0.0609, scaling_factor=1.5035)


def wake_zero_convolutions(model: Any, names: tuple[str, ...]) -> Any:
    """Random weights for a ControlNet's zero-initialised output layers (`names` are their module prefixes), which
    make conditioning scale and weights matter only after training; seeded, so the net is the same every build."""
    import torch

    reseed()
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if name.startswith(names):
                parameter.copy_(torch.randn_like(parameter) * 0.5)
    return model

