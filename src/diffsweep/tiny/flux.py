"""Tiny Flux.1 components."""

from __future__ import annotations

from typing import Any

from diffsweep.tiny.common import (
    Components,
    clip_text_config,
    isolated_rng,
    one_level_vae,
    reseed,
    t5_kwargs,
    wake_zero_convolutions,
)
from diffsweep.tiny.tokenizers import clip_tokenizer, t5_tokenizer


@isolated_rng
def flux() -> Components:
    """Flux.1 with a one-channel latent (2x2 packing gives the transformer's 4 channels).

    Call with max_sequence_length=32 and H, W multiples of 2.
    """
    from diffusers import FlowMatchEulerDiscreteScheduler, FluxTransformer2DModel
    from transformers import CLIPTextModel, T5Config, T5EncoderModel

    reseed()
    transformer = FluxTransformer2DModel(
        patch_size=1,
        in_channels=4,
        num_layers=1,
        num_single_layers=1,
        attention_head_dim=16,
        num_attention_heads=2,
        joint_attention_dim=32,
        pooled_projection_dim=32,
        axes_dims_rope=[4, 4, 8],
    )
    reseed()
    vae = one_level_vae(latent_channels=1)  # 2x2 packing makes the transformer's 4 input channels
    tokenizer = clip_tokenizer()
    tokenizer_2 = t5_tokenizer()
    reseed()
    text_encoder = CLIPTextModel(clip_text_config(tokenizer, 32))
    reseed()
    text_encoder_2 = T5EncoderModel(T5Config(**t5_kwargs(tokenizer_2, 32))).eval()
    return {
        "transformer": transformer,
        "scheduler": FlowMatchEulerDiscreteScheduler(),
        "vae": vae,
        "text_encoder": text_encoder,
        "tokenizer": tokenizer,
        "text_encoder_2": text_encoder_2,
        "tokenizer_2": tokenizer_2,
    }


@isolated_rng
def flux_controlnet() -> Any:
    """A Flux ControlNet for the tiny Flux transformer, without control modes (as Union-Pro 2.0): the control image
    goes through the VAE and 2x2 packing like the latents; output layers random, not zero."""
    from diffusers import FluxControlNetModel

    reseed()
    net = FluxControlNetModel(patch_size=1, in_channels=4, num_layers=1, num_single_layers=1, attention_head_dim=16,
                              num_attention_heads=2, joint_attention_dim=32, pooled_projection_dim=32,
                              axes_dims_rope=[4, 4, 8])
    return wake_zero_convolutions(net, ("controlnet_blocks", "controlnet_single_blocks", "controlnet_x_embedder"))
