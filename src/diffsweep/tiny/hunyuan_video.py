"""Tiny HunyuanVideo components."""

from __future__ import annotations

from typing import TYPE_CHECKING

from diffsweep.tiny.common import Components, clip_text_config, isolated_rng, reseed
from diffsweep.tiny.tokenizers import clip_tokenizer

if TYPE_CHECKING:
    from transformers import LlamaTokenizer


def llama_tokenizer() -> LlamaTokenizer:
    """Llama's BPE with no merges over "▁" and visible ASCII: one token per character, `<unk>` for the rest."""
    from transformers import LlamaTokenizer

    pieces = ["<unk>", "<s>", "</s>", "▁", *(chr(code) for code in range(33, 127))]
    tokenizer = LlamaTokenizer(vocab={p: i for i, p in enumerate(pieces)}, merges=[], model_max_length=4096)
    tokenizer.pad_token = "</s>"
    return tokenizer


@isolated_rng
def hunyuan_video() -> Components:
    """HunyuanVideo: a dual/single-stream DiT with embedded guidance, a causal 3D VAE (8x spatial, 4x temporal),
    Llama (hidden 16, its hidden states condition the DiT) and CLIP (hidden 8, its pooled output)."""
    from diffusers import AutoencoderKLHunyuanVideo, FlowMatchEulerDiscreteScheduler, HunyuanVideoTransformer3DModel
    from transformers import CLIPTextModel, LlamaConfig, LlamaModel

    reseed()
    transformer = HunyuanVideoTransformer3DModel(
        in_channels=4, out_channels=4, num_attention_heads=2, attention_head_dim=10, num_layers=1,
        num_single_layers=1, num_refiner_layers=1, patch_size=1, patch_size_t=1, guidance_embeds=True,
        text_embed_dim=16, pooled_projection_dim=8, rope_axes_dim=(2, 4, 4),
    )
    reseed()
    vae = AutoencoderKLHunyuanVideo(
        latent_channels=4, down_block_types=("HunyuanVideoDownBlock3D",) * 4,
        up_block_types=("HunyuanVideoUpBlock3D",) * 4, block_out_channels=(8, 8, 8, 8), layers_per_block=1,
        norm_num_groups=4, scaling_factor=0.476986, spatial_compression_ratio=8, temporal_compression_ratio=4,
        mid_block_add_attention=True,
    )
    tokenizer = llama_tokenizer()
    tokenizer_2 = clip_tokenizer()
    reseed()
    text_encoder = LlamaModel(LlamaConfig(
        hidden_size=16, intermediate_size=37, num_attention_heads=4, num_hidden_layers=2, vocab_size=len(tokenizer),
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
        max_position_embeddings=4096,
    ))
    reseed()
    text_encoder_2 = CLIPTextModel(clip_text_config(tokenizer_2, 8, num_attention_heads=4))
    return {"transformer": transformer, "vae": vae, "scheduler": FlowMatchEulerDiscreteScheduler(shift=7.0),
            "text_encoder": text_encoder, "text_encoder_2": text_encoder_2, "tokenizer": tokenizer,
            "tokenizer_2": tokenizer_2}
