"""Tiny Lumina-Image 2.0 components."""

from __future__ import annotations

from diffsweep.tiny.common import Components, isolated_rng, reseed
from diffsweep.tiny.sana import gemma_tokenizer


@isolated_rng
def lumina2() -> Components:
    """Lumina 2: a unified next-DiT (hidden 8) over 4-channel latents, Gemma2 (hidden 8) as the text encoder.

    Lumina2Pipeline hard-codes a VAE factor of 8, so the VAE has four levels (the upstream test's one-level VAE decodes
    an eighth of the asked size): H and W are multiples of 16, as on the real model.
    """
    from diffusers import AutoencoderKL, FlowMatchEulerDiscreteScheduler, Lumina2Transformer2DModel
    from transformers import Gemma2Config, Gemma2Model

    reseed()
    transformer = Lumina2Transformer2DModel(
        sample_size=4, patch_size=2, in_channels=4, hidden_size=8, num_layers=2, num_attention_heads=1, num_kv_heads=1,
        multiple_of=16, ffn_dim_multiplier=None, norm_eps=1e-5, scaling_factor=1.0, axes_dim_rope=[4, 2, 2],
        cap_feat_dim=8,
    )
    reseed()
    vae = AutoencoderKL(
        down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
        block_out_channels=(4, 4, 4, 4), layers_per_block=1, latent_channels=4, norm_num_groups=2,
        use_quant_conv=False, use_post_quant_conv=False, shift_factor=0.0609, scaling_factor=1.5035,
    ).eval()
    tokenizer = gemma_tokenizer()
    reseed()
    text_encoder = Gemma2Model(Gemma2Config(
        head_dim=4, hidden_size=8, intermediate_size=8, num_attention_heads=2, num_hidden_layers=2,
        num_key_value_heads=2, sliding_window=2, vocab_size=len(tokenizer), pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
    ))
    return {"transformer": transformer, "vae": vae, "scheduler": FlowMatchEulerDiscreteScheduler(),
            "text_encoder": text_encoder, "tokenizer": tokenizer}
