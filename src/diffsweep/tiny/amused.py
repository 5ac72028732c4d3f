"""Tiny aMUSEd components (deprecated pipeline)."""

from __future__ import annotations

from diffsweep.tiny.common import Components, clip_text_config, isolated_rng, reseed
from diffsweep.tiny.tokenizers import clip_tokenizer

_VOCAB_SIZE = 32


@isolated_rng
def amused() -> Components:
    """aMUSEd with the upstream test's transformer and a three-level VQ-VAE (scale factor 4, so 32x32 works).

    The scheduler's mask token is the transformer's last vocabulary entry.
    """
    from diffusers import AmusedScheduler, UVit2DModel, VQModel
    from transformers import CLIPTextModelWithProjection

    reseed()
    transformer = UVit2DModel(
        hidden_size=8,
        use_bias=False,
        hidden_dropout=0.0,
        cond_embed_dim=8,
        micro_cond_encode_dim=2,
        micro_cond_embed_dim=10,
        encoder_hidden_size=8,
        vocab_size=_VOCAB_SIZE,
        codebook_size=8,
        in_channels=8,
        block_out_channels=8,
        num_res_blocks=1,
        downsample=True,
        upsample=True,
        block_num_heads=1,
        num_hidden_layers=1,
        num_attention_heads=1,
        attention_dropout=0.0,
        intermediate_size=8,
        layer_norm_eps=1e-06,
        ln_elementwise_affine=True,
    )
    reseed()
    vqvae = VQModel(
        act_fn="silu",
        block_out_channels=[8, 8, 8],
        down_block_types=["DownEncoderBlock2D"] * 3,
        up_block_types=["UpDecoderBlock2D"] * 3,
        in_channels=3,
        out_channels=3,
        latent_channels=8,
        layers_per_block=1,
        norm_num_groups=8,
        num_vq_embeddings=8,
        sample_size=8,
        mid_block_add_attention=False,
        lookup_from_codebook=True,
    )
    tokenizer = clip_tokenizer()
    reseed()
    text_encoder = CLIPTextModelWithProjection(
        clip_text_config(tokenizer, 8, intermediate_size=8, num_attention_heads=1, num_hidden_layers=1)
    )
    return {
        "transformer": transformer,
        "scheduler": AmusedScheduler(mask_token_id=_VOCAB_SIZE - 1),
        "vqvae": vqvae,
        "text_encoder": text_encoder,
        "tokenizer": tokenizer,
    }
