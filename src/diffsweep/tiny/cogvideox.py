"""Tiny CogVideoX components."""

from __future__ import annotations

from typing import TYPE_CHECKING

from diffsweep.tiny.common import Components, isolated_rng, reseed, t5_kwargs
from diffsweep.tiny.tokenizers import t5_tokenizer

if TYPE_CHECKING:
    from diffusers import CogVideoXTransformer3DModel


def transformer(in_channels: int = 4, **options: object) -> CogVideoXTransformer3DModel:
    """The tiny CogVideoX DiT (inner dim 32 = T5 width; head dim 16 leaves room for 3D rotary embeddings);
    image-to-video widens `in_channels` to 8 (noise + image latents)."""
    from diffusers import CogVideoXTransformer3DModel

    return CogVideoXTransformer3DModel(
        num_attention_heads=2, attention_head_dim=16, in_channels=in_channels, out_channels=4, time_embed_dim=2,
        text_embed_dim=32, num_layers=1, sample_width=4, sample_height=4, sample_frames=9, patch_size=2,
        temporal_compression_ratio=4, max_text_seq_length=16, **options,
    )


@isolated_rng
def cogvideox() -> Components:
    """CogVideoX text-to-video: a 3D VAE (8x spatial, 4x temporal, 4 latent channels) and T5 (d_model 32).

    Call with max_sequence_length=16 (the transformer's text length), num_frames 4k+1, H and W multiples of 16.
    """
    from diffusers import AutoencoderKLCogVideoX, DDIMScheduler
    from transformers import T5Config, T5EncoderModel

    reseed()
    denoiser = transformer()
    reseed()
    vae = AutoencoderKLCogVideoX(
        down_block_types=("CogVideoXDownBlock3D",) * 4, up_block_types=("CogVideoXUpBlock3D",) * 4,
        block_out_channels=(8, 8, 8, 8), latent_channels=4, layers_per_block=1, norm_num_groups=2,
        temporal_compression_ratio=4,
    )
    tokenizer = t5_tokenizer(16)
    reseed()
    text_encoder = T5EncoderModel(T5Config(**t5_kwargs(tokenizer, 32))).eval()
    return {"transformer": denoiser, "vae": vae, "scheduler": DDIMScheduler(), "text_encoder": text_encoder,
            "tokenizer": tokenizer}
