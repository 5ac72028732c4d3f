"""Tiny LTX-Video components (one folder serves text-to-video and image-to-video)."""

from __future__ import annotations

from diffsweep.tiny.common import Components, isolated_rng, reseed, t5_kwargs
from diffsweep.tiny.tokenizers import t5_tokenizer


@isolated_rng
def ltx() -> Components:
    """LTX-Video: a DiT over 8 latent channels (patch 1), a causal video VAE with two space-time downsamplings (4x
    spatial and 4x temporal here; 32x and 8x on the real one) and T5 (d_model 32)."""
    from diffusers import AutoencoderKLLTXVideo, FlowMatchEulerDiscreteScheduler, LTXVideoTransformer3DModel
    from transformers import T5Config, T5EncoderModel

    reseed()
    transformer = LTXVideoTransformer3DModel(
        in_channels=8, out_channels=8, patch_size=1, patch_size_t=1, num_attention_heads=4, attention_head_dim=8,
        cross_attention_dim=32, num_layers=1, caption_channels=32,
    )
    reseed()
    vae = AutoencoderKLLTXVideo(
        latent_channels=8, block_out_channels=(8, 8, 8, 8), decoder_block_out_channels=(8, 8, 8, 8),
        layers_per_block=(1, 1, 1, 1, 1), decoder_layers_per_block=(1, 1, 1, 1, 1),
        spatio_temporal_scaling=(True, True, False, False), decoder_spatio_temporal_scaling=(True, True, False, False),
        decoder_inject_noise=(False, False, False, False, False), upsample_residual=(False, False, False, False),
        upsample_factor=(1, 1, 1, 1), timestep_conditioning=False, patch_size=1, patch_size_t=1, encoder_causal=True,
        decoder_causal=False,
    )
    tokenizer = t5_tokenizer(128)
    reseed()
    text_encoder = T5EncoderModel(T5Config(**t5_kwargs(tokenizer, 32))).eval()
    return {"transformer": transformer, "vae": vae, "scheduler": FlowMatchEulerDiscreteScheduler(),
            "text_encoder": text_encoder, "tokenizer": tokenizer}
