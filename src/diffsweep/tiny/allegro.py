"""Tiny Allegro components (decoding needs the one-tile VAE setting the allegro provider applies)."""

from __future__ import annotations

from diffsweep.tiny.common import Components, isolated_rng, reseed, t5_kwargs
from diffsweep.tiny.tokenizers import t5_tokenizer

_TEXT_DIM = 24


@isolated_rng
def allegro() -> Components:
    """Allegro; the T5 width equals the transformer's caption channels and cross-attention dim.

    The VAE decodes only tiled: after loading call `vae.enable_tiling()` and set `vae.kernel`/`vae.stride` to one tile
    covering the whole video, then generate exactly 24 frames.
    """
    from diffusers import AllegroTransformer3DModel, AutoencoderKLAllegro, DDIMScheduler
    from transformers import T5Config, T5EncoderModel

    reseed()
    transformer = AllegroTransformer3DModel(
        num_attention_heads=2,
        attention_head_dim=12,
        in_channels=4,
        out_channels=4,
        num_layers=1,
        cross_attention_dim=_TEXT_DIM,
        sample_width=8,
        sample_height=8,
        sample_frames=8,
        caption_channels=_TEXT_DIM,
    )
    reseed()
    vae = AutoencoderKLAllegro(
        down_block_types=("AllegroDownBlock3D",) * 4,
        up_block_types=("AllegroUpBlock3D",) * 4,
        block_out_channels=(8, 8, 8, 8),
        latent_channels=4,
        layers_per_block=1,
        norm_num_groups=2,
        temporal_compression_ratio=4,
    )
    tokenizer = t5_tokenizer()
    reseed()
    text_encoder = T5EncoderModel(T5Config(**t5_kwargs(tokenizer, _TEXT_DIM))).eval()
    return {
        "transformer": transformer,
        "vae": vae,
        "scheduler": DDIMScheduler(),
        "text_encoder": text_encoder,
        "tokenizer": tokenizer,
    }
