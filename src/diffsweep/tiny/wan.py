"""Tiny Wan 2.1 and Wan 2.2 (A14B layout) components."""

from __future__ import annotations

from typing import TYPE_CHECKING

from diffsweep.tiny.common import Components, isolated_rng, reseed, t5_kwargs
from diffsweep.tiny.tokenizers import t5_tokenizer

if TYPE_CHECKING:
    from diffusers import WanTransformer3DModel


def _transformer() -> WanTransformer3DModel:
    """Transformer over 16 latent channels with UMT5 (d_model 32) text conditioning."""
    from diffusers import WanTransformer3DModel

    return WanTransformer3DModel(
        patch_size=(1, 2, 2),
        num_attention_heads=2,
        attention_head_dim=12,
        in_channels=16,
        out_channels=16,
        text_dim=32,
        freq_dim=256,
        ffn_dim=32,
        num_layers=2,
        cross_attn_norm=True,
        qk_norm="rms_norm_across_heads",
        rope_max_seq_len=32,
    )


def _shared() -> Components:
    """VAE and text encoder; both Wan versions use the same ones."""
    from diffusers import AutoencoderKLWan
    from transformers import UMT5Config, UMT5EncoderModel

    reseed()
    vae = AutoencoderKLWan(
        base_dim=3, z_dim=16, dim_mult=[1, 1, 1, 1], num_res_blocks=1, temperal_downsample=[False, True, True]
    )
    tokenizer = t5_tokenizer()
    reseed()
    text_encoder = UMT5EncoderModel(UMT5Config(**t5_kwargs(tokenizer, 32))).eval()
    return {"vae": vae, "text_encoder": text_encoder, "tokenizer": tokenizer}


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
