"""Tiny Flux.2 [klein] components."""

from __future__ import annotations

from diffsweep.tiny.common import Components, isolated_rng, reseed
from diffsweep.tiny.tokenizers import qwen2_tokenizer
from diffsweep.tiny.z_image import QWEN_CHAT_TEMPLATE

KLEIN_TEXT_LAYERS = 27
"""Flux2KleinPipeline stacks the Qwen3 hidden states of layers 9, 18 and 27 by default: the tiny encoder has 27 layers
(of width 16), so the default call works and `text_encoder_out_layers` need not be a parameter."""


@isolated_rng
def flux2_klein() -> Components:
    """Flux.2 [klein]: the Flux.2 DiT (guidance embedding off) over a one-level Flux.2 VAE (one latent channel,
    2x2 patchified to the transformer's 4), Qwen3 as the text encoder (3 stacked layers x 16 = joint dim 48)."""
    from diffusers import AutoencoderKLFlux2, FlowMatchEulerDiscreteScheduler, Flux2Transformer2DModel
    from transformers import Qwen3Config, Qwen3ForCausalLM

    reseed()
    transformer = Flux2Transformer2DModel(
        patch_size=1, in_channels=4, num_layers=1, num_single_layers=1, attention_head_dim=16, num_attention_heads=2,
        joint_attention_dim=48, timestep_guidance_channels=256, axes_dims_rope=[4, 4, 4, 4], guidance_embeds=False,
    )
    reseed()
    vae = AutoencoderKLFlux2(
        sample_size=32, down_block_types=("DownEncoderBlock2D",), up_block_types=("UpDecoderBlock2D",),
        block_out_channels=(4,), layers_per_block=1, latent_channels=1, norm_num_groups=1, use_quant_conv=False,
        use_post_quant_conv=False,
    )
    tokenizer = qwen2_tokenizer(512)
    tokenizer.chat_template = QWEN_CHAT_TEMPLATE
    reseed()
    text_encoder = Qwen3ForCausalLM(Qwen3Config(
        hidden_size=16, intermediate_size=16, num_hidden_layers=KLEIN_TEXT_LAYERS, num_attention_heads=2,
        num_key_value_heads=2, head_dim=8, vocab_size=len(tokenizer), max_position_embeddings=512,
        bos_token_id=tokenizer.eos_token_id, eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
    ))
    return {
        "scheduler": FlowMatchEulerDiscreteScheduler(),
        "vae": vae,
        "text_encoder": text_encoder,
        "tokenizer": tokenizer,
        "transformer": transformer,
        "is_distilled": False,
    }
