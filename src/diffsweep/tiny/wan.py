"""Tiny Wan 2.1, Wan 2.2 A14B and Wan 2.2 TI2V-5B components."""

from __future__ import annotations

from typing import TYPE_CHECKING

from diffsweep.tiny.common import Components, isolated_rng, reseed, t5_kwargs
from diffsweep.tiny.tokenizers import t5_tokenizer

if TYPE_CHECKING:
    from diffusers import WanTransformer3DModel


def _transformer(channels: int = 16) -> WanTransformer3DModel:
    """Transformer over `channels` latent channels with UMT5 (d_model 32) text conditioning."""
    from diffusers import WanTransformer3DModel

    return WanTransformer3DModel(
        patch_size=(1, 2, 2),
        num_attention_heads=2,
        attention_head_dim=12,
        in_channels=channels,
        out_channels=channels,
        text_dim=32,
        freq_dim=256,
        ffn_dim=32,
        num_layers=2,
        cross_attn_norm=True,
        qk_norm="rms_norm_across_heads",
        rope_max_seq_len=32,
    )


def _text() -> Components:
    """UMT5 text encoder and tokenizer; every Wan layout uses the same ones."""
    from transformers import UMT5Config, UMT5EncoderModel

    tokenizer = t5_tokenizer()
    reseed()
    text_encoder = UMT5EncoderModel(UMT5Config(**t5_kwargs(tokenizer, 32))).eval()
    return {"text_encoder": text_encoder, "tokenizer": tokenizer}


def _shared() -> Components:
    """The Wan 2.1 VAE (16 latent channels, 8x spatial) and the text encoder: Wan 2.1 and Wan 2.2 A14B."""
    from diffusers import AutoencoderKLWan

    reseed()
    vae = AutoencoderKLWan(
        base_dim=3, z_dim=16, dim_mult=[1, 1, 1, 1], num_res_blocks=1, temperal_downsample=[False, True, True]
    )
    return {"vae": vae, **_text()}


@isolated_rng
def wan() -> Components:
    """Wan 2.1: one transformer. `num_frames` must be 4k+1."""
    from diffusers import FlowMatchEulerDiscreteScheduler

    reseed()
    transformer = _transformer()
    return {"transformer": transformer, "scheduler": FlowMatchEulerDiscreteScheduler(shift=7.0), **_shared()}


@isolated_rng
def wan22() -> Components:
    """Wan 2.2 A14B: a second transformer takes over below `boundary_ratio`, with a flow UniPC scheduler."""
    from diffusers import UniPCMultistepScheduler

    reseed()
    transformer = _transformer()
    reseed()
    transformer_2 = _transformer()
    return {
        "transformer": transformer,
        "transformer_2": transformer_2,
        "boundary_ratio": 0.875,
        "scheduler": UniPCMultistepScheduler(prediction_type="flow_prediction", use_flow_sigmas=True, flow_shift=3.0),
        **_shared(),
    }


@isolated_rng
def wan22_ti2v() -> Components:
    """Wan 2.2 TI2V-5B: one transformer over the Wan 2.2 VAE's 48 channels (2x2 pixel patches in, 16x spatial),
    and `expand_timesteps` (a per-token timestep, so the first latent frame can stay the clean input image). The
    same folder loads as WanPipeline (text-to-video) and WanImageToVideoPipeline (image-to-video)."""
    from diffusers import AutoencoderKLWan, UniPCMultistepScheduler

    reseed()
    vae = AutoencoderKLWan(
        base_dim=3, z_dim=48, in_channels=12, out_channels=12, is_residual=True, patch_size=2,
        latents_mean=[0.0] * 48, latents_std=[1.0] * 48, dim_mult=[1, 1, 1, 1], num_res_blocks=1,
        scale_factor_spatial=16, scale_factor_temporal=4, temperal_downsample=[False, True, True],
    )
    reseed()
    transformer = _transformer(48)
    return {
        "transformer": transformer,
        "transformer_2": None,
        "boundary_ratio": None,
        "expand_timesteps": True,
        "vae": vae,
        "scheduler": UniPCMultistepScheduler(prediction_type="flow_prediction", use_flow_sigmas=True, flow_shift=3.0),
        **_text(),
    }
