"""Tiny Chroma components."""

from __future__ import annotations

from diffsweep.tiny.common import Components, isolated_rng, one_level_vae, reseed, t5_kwargs
from diffsweep.tiny.tokenizers import t5_tokenizer


@isolated_rng
def chroma() -> Components:
    """Chroma: the Flux.1 layout without CLIP (T5 only, d_model 32) and with a distilled guidance approximator in
    place of the per-block modulation; one-channel latents (2x2 packing gives the transformer's 4)."""
    from diffusers import ChromaTransformer2DModel, FlowMatchEulerDiscreteScheduler
    from transformers import T5Config, T5EncoderModel

    reseed()
    transformer = ChromaTransformer2DModel(
        patch_size=1, in_channels=4, num_layers=1, num_single_layers=1, attention_head_dim=16, num_attention_heads=2,
        joint_attention_dim=32, axes_dims_rope=[4, 4, 8], approximator_hidden_dim=32, approximator_layers=1,
        approximator_num_channels=16,
    )
    reseed()
    vae = one_level_vae(latent_channels=1)
    tokenizer = t5_tokenizer()
    reseed()
    text_encoder = T5EncoderModel(T5Config(**t5_kwargs(tokenizer, 32))).eval()
    return {
        "scheduler": FlowMatchEulerDiscreteScheduler(),
        "text_encoder": text_encoder,
        "tokenizer": tokenizer,
        "transformer": transformer,
        "vae": vae,
        "image_encoder": None,
        "feature_extractor": None,
    }
