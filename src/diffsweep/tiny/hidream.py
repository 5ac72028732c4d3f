"""Tiny HiDream-I1 components."""

from __future__ import annotations

from diffsweep.tiny.common import Components, clip_text_config, isolated_rng, reseed, t5_kwargs
from diffsweep.tiny.tokenizers import clip_tokenizer, llama_tokenizer, t5_tokenizer

PROMPT_TOKENS = 128
"""HiDreamImagePipeline pads every prompt to max_sequence_length (128 by default), the CLIP ones included: past the
CLIP tokenizers' own model_max_length (77)."""


@isolated_rng
def hidream() -> Components:
    """HiDream-I1: a sparse MoE DiT (one dual- and one single-stream block, two experts, hidden 8) fed by two CLIPs
    (pooled), T5 and two hidden layers of a Llama (hidden 8), over 4-channel latents.

    The pipeline hard-codes a 128x128-latent area (`default_sample_size`), so the VAE has one level (factor 1: images
    have the area of 128x128 px) and no mid-block attention: with it, attention over the 16384 latent pixels took most
    of a call (a 2-step call without CFG about 4 s on two CPU cores); without it such a call takes about 2 s, 3 s with
    CFG (the rest is mostly the MoE feed-forwards over 4096 image tokens, whose hidden width diffusers rounds up to 256).
    """
    from diffusers import AutoencoderKL, FlowMatchEulerDiscreteScheduler, HiDreamImageTransformer2DModel
    from transformers import CLIPTextModelWithProjection, LlamaConfig, LlamaForCausalLM, T5Config, T5EncoderModel

    clip, t5, llama = clip_tokenizer(), t5_tokenizer(), llama_tokenizer(PROMPT_TOKENS)
    reseed()
    transformer = HiDreamImageTransformer2DModel(
        patch_size=2, in_channels=4, out_channels=4, num_layers=1, num_single_layers=1, attention_head_dim=8,
        num_attention_heads=1, caption_channels=[8, 8], text_emb_dim=16, num_routed_experts=2, num_activated_experts=1,
        axes_dims_rope=(4, 2, 2), max_resolution=(128, 128), llama_layers=(0, 1),
    ).eval()
    reseed()
    vae = AutoencoderKL(block_out_channels=(4,), latent_channels=4, norm_num_groups=1, use_quant_conv=False,
                        use_post_quant_conv=False, mid_block_add_attention=False, shift_factor=0.1159,
                        scaling_factor=0.3611).eval()
    clip_config = clip_text_config(clip, 8)
    clip_config.max_position_embeddings = PROMPT_TOKENS  # longer than the tokenizer's 77, as HiDream's Long-CLIPs
    encoders = {}
    for slot in ("text_encoder", "text_encoder_2"):
        reseed()
        encoders[slot] = CLIPTextModelWithProjection(clip_config)
    reseed()
    encoders["text_encoder_3"] = T5EncoderModel(T5Config(**t5_kwargs(t5, 8))).eval()
    reseed()
    encoders["text_encoder_4"] = LlamaForCausalLM(LlamaConfig(
        hidden_size=8, intermediate_size=16, num_attention_heads=2, num_key_value_heads=1, head_dim=4,
        num_hidden_layers=2, vocab_size=len(llama), max_position_embeddings=PROMPT_TOKENS,
        bos_token_id=llama.bos_token_id, eos_token_id=llama.eos_token_id, pad_token_id=llama.eos_token_id,
    )).eval()
    return {"transformer": transformer, "vae": vae, "scheduler": FlowMatchEulerDiscreteScheduler(), **encoders,
            "tokenizer": clip, "tokenizer_2": clip, "tokenizer_3": t5, "tokenizer_4": llama}
