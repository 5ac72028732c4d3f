"""Tiny Sana and Sana Sprint components."""

from __future__ import annotations

from typing import TYPE_CHECKING

from diffsweep.tiny.common import Components, isolated_rng, reseed

if TYPE_CHECKING:
    from transformers import GemmaTokenizer


def gemma_tokenizer() -> GemmaTokenizer:
    """Gemma's BPE with no merges over "▁" and visible ASCII: one token per character, `<unk>` for the rest."""
    from transformers import GemmaTokenizer

    pieces = ["<pad>", "<eos>", "<bos>", "<unk>", "<mask>", "▁", *(chr(code) for code in range(33, 127))]
    return GemmaTokenizer(vocab={p: i for i, p in enumerate(pieces)}, merges=[], model_max_length=8192)


def _parts(guidance_embeds: bool) -> Components:
    """A one-layer linear-attention DiT, a two-level deep-compression VAE (factor 2 here, 32 on the real one) and
    Gemma2 (hidden 8) as the text encoder."""
    from diffusers import AutoencoderDC, SanaTransformer2DModel
    from transformers import Gemma2Config, Gemma2Model

    reseed()
    transformer = SanaTransformer2DModel(
        patch_size=1, in_channels=4, out_channels=4, num_layers=1, num_attention_heads=2, attention_head_dim=4,
        num_cross_attention_heads=2, cross_attention_head_dim=4, cross_attention_dim=8, caption_channels=8,
        sample_size=32, **({"qk_norm": "rms_norm_across_heads", "guidance_embeds": True} if guidance_embeds else {}),
    )
    reseed()
    vae = AutoencoderDC(
        in_channels=3, latent_channels=4, attention_head_dim=2, encoder_block_types=("ResBlock", "EfficientViTBlock"),
        decoder_block_types=("ResBlock", "EfficientViTBlock"), encoder_block_out_channels=(8, 8),
        decoder_block_out_channels=(8, 8), encoder_qkv_multiscales=((), (5,)), decoder_qkv_multiscales=((), (5,)),
        encoder_layers_per_block=(1, 1), decoder_layers_per_block=[1, 1], downsample_block_type="conv",
        upsample_block_type="interpolate", decoder_norm_types="rms_norm", decoder_act_fns="silu",
        scaling_factor=0.41407,
    )
    tokenizer = gemma_tokenizer()
    reseed()
    text_encoder = Gemma2Model(Gemma2Config(
        head_dim=16, hidden_size=8, intermediate_size=64, max_position_embeddings=8192, num_attention_heads=2,
        num_hidden_layers=1, num_key_value_heads=2, vocab_size=len(tokenizer), attn_implementation="eager",
        pad_token_id=tokenizer.pad_token_id, bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
    ))
    return {"transformer": transformer, "vae": vae, "text_encoder": text_encoder, "tokenizer": tokenizer}


@isolated_rng
def sana() -> Components:
    """Sana: flow matching with CFG. Call with use_resolution_binning=False (the bins are 1024-px class sizes)."""
    from diffusers import FlowMatchEulerDiscreteScheduler

    return {**_parts(guidance_embeds=False), "scheduler": FlowMatchEulerDiscreteScheduler(shift=7.0)}


@isolated_rng
def sana_sprint() -> Components:
    """Sana Sprint: the guidance-embedded, sCM-distilled transformer with its SCM scheduler (1-4 steps)."""
    from diffusers import SCMScheduler

    return {**_parts(guidance_embeds=True), "scheduler": SCMScheduler()}
