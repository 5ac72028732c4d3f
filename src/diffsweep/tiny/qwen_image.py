"""Tiny Qwen-Image components."""

from __future__ import annotations

from typing import Any

from diffsweep.tiny.common import Components, isolated_rng, reseed, wake_zero_convolutions
from diffsweep.tiny.tokenizers import qwen2_tokenizer

_HIDDEN = 16


@isolated_rng
def qwen_image() -> Components:
    """Qwen-Image with a 16-wide Qwen2.5-VL text encoder. Call with max_sequence_length=64, true_cfg_scale=1.0."""
    from diffusers import AutoencoderKLQwenImage, FlowMatchEulerDiscreteScheduler, QwenImageTransformer2DModel
    from transformers import Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration

    reseed()
    transformer = QwenImageTransformer2DModel(
        patch_size=2,
        in_channels=16,
        out_channels=4,
        num_layers=2,
        attention_head_dim=16,
        num_attention_heads=3,
        joint_attention_dim=_HIDDEN,
        guidance_embeds=False,
        axes_dims_rope=(8, 4, 4),
    )
    reseed()
    vae = AutoencoderKLQwenImage(
        base_dim=8,
        z_dim=4,
        dim_mult=[1, 2, 4],
        num_res_blocks=1,
        temperal_downsample=[False, True],
        latents_mean=[0.0] * 4,
        latents_std=[1.0] * 4,
    )
    tokenizer = qwen2_tokenizer()
    token_ids = {
        "bos_token_id": tokenizer.convert_tokens_to_ids("<|endoftext|>"),
        "eos_token_id": tokenizer.convert_tokens_to_ids("<|im_end|>"),
        "pad_token_id": tokenizer.pad_token_id,
    }
    config = Qwen2_5_VLConfig(
        text_config={
            "hidden_size": _HIDDEN,
            "intermediate_size": 16,
            "num_hidden_layers": 2,
            "num_attention_heads": 2,
            "num_key_value_heads": 2,
            "rope_scaling": {"mrope_section": [1, 1, 2], "rope_type": "default", "type": "default"},
            "vocab_size": len(tokenizer),
            **token_ids,
        },
        vision_config={
            "depth": 2,
            "hidden_size": 16,
            "intermediate_size": 16,
            "num_heads": 2,
            "out_hidden_size": _HIDDEN,
        },
        hidden_size=_HIDDEN,
        vocab_size=len(tokenizer),
        vision_start_token_id=tokenizer.convert_tokens_to_ids("<|vision_start|>"),
        vision_end_token_id=tokenizer.convert_tokens_to_ids("<|vision_end|>"),
        image_token_id=tokenizer.convert_tokens_to_ids("<|image_pad|>"),
        video_token_id=tokenizer.convert_tokens_to_ids("<|video_pad|>"),
        **token_ids,
    )
    reseed()
    text_encoder = Qwen2_5_VLForConditionalGeneration(config)
    return {
        "transformer": transformer,
        "scheduler": FlowMatchEulerDiscreteScheduler(),
        "vae": vae,
        "text_encoder": text_encoder,
        "tokenizer": tokenizer,
    }


@isolated_rng
def qwen_image_controlnet() -> Any:
    """A Qwen-Image ControlNet (as InstantX's Union: no control modes) for the tiny transformer, with its widths; the
    control image goes through the VAE and 2x2 packing like the latents. Output layers random, not zero."""
    from diffusers import QwenImageControlNetModel

    reseed()
    net = QwenImageControlNetModel(patch_size=2, in_channels=16, out_channels=4, num_layers=2, attention_head_dim=16,
                                   num_attention_heads=3, joint_attention_dim=_HIDDEN, axes_dims_rope=(8, 4, 4))
    return wake_zero_convolutions(net, ("controlnet_blocks", "controlnet_x_embedder"))
