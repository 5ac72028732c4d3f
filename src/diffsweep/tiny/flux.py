"""Tiny Flux.1 components."""

from __future__ import annotations

from typing import Any

from diffsweep.tiny.common import (
    Components,
    clip_text_config,
    isolated_rng,
    one_level_vae,
    reseed,
    t5_kwargs,
    wake_zero_convolutions,
)
from diffsweep.tiny.tokenizers import clip_tokenizer, t5_tokenizer


@isolated_rng
def flux() -> Components:
    """Flux.1 with a one-channel latent (2x2 packing gives the transformer's 4 channels).

    Call with max_sequence_length=32 and H, W multiples of 2.
    """
    from diffusers import FlowMatchEulerDiscreteScheduler, FluxTransformer2DModel
    from transformers import CLIPTextModel, T5Config, T5EncoderModel

    reseed()
    transformer = FluxTransformer2DModel(
        patch_size=1,
        in_channels=4,
        num_layers=1,
        num_single_layers=1,
        attention_head_dim=16,
        num_attention_heads=2,
        joint_attention_dim=32,
        pooled_projection_dim=32,
        axes_dims_rope=[4, 4, 8],
    )
    reseed()
    vae = one_level_vae(latent_channels=1)  # 2x2 packing makes the transformer's 4 input channels
    tokenizer = clip_tokenizer()
    tokenizer_2 = t5_tokenizer()
    reseed()
    text_encoder = CLIPTextModel(clip_text_config(tokenizer, 32))
    reseed()
    text_encoder_2 = T5EncoderModel(T5Config(**t5_kwargs(tokenizer_2, 32))).eval()
    return {
        "transformer": transformer,
        "scheduler": FlowMatchEulerDiscreteScheduler(),
        "vae": vae,
        "text_encoder": text_encoder,
        "tokenizer": tokenizer,
        "text_encoder_2": text_encoder_2,
        "tokenizer_2": tokenizer_2,
    }


@isolated_rng
def flux_controlnet() -> Any:
    """A Flux ControlNet for the tiny Flux transformer, without control modes (as Union-Pro 2.0): the control image
    goes through the VAE and 2x2 packing like the latents; output layers random, not zero."""
    from diffusers import FluxControlNetModel

    reseed()
    net = FluxControlNetModel(patch_size=1, in_channels=4, num_layers=1, num_single_layers=1, attention_head_dim=16,
                              num_attention_heads=2, joint_attention_dim=32, pooled_projection_dim=32,
                              axes_dims_rope=[4, 4, 8])
    return wake_zero_convolutions(net, ("controlnet_blocks", "controlnet_single_blocks", "controlnet_x_embedder"))


@isolated_rng
def flux_ip_adapter() -> tuple[dict[str, dict[str, Any]], Any]:
    """An IP-Adapter for the tiny Flux transformer in the layout diffusers reads for Flux (`image_proj.*`: the image
    projection to 4 tokens; `ip_adapter.<n>.to_k_ip/to_v_ip`: key/value projections of double block n, with biases),
    and the CLIP image encoder whose projection it takes."""
    import torch
    from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

    embed, cross, inner, blocks = 8, 32, 2 * 16, 1  # the tiny transformer's joint width, heads x head dim, blocks
    reseed()
    image_encoder = CLIPVisionModelWithProjection(CLIPVisionConfig(
        hidden_size=8, intermediate_size=16, projection_dim=embed, num_hidden_layers=2, num_attention_heads=2,
        image_size=32, patch_size=8))
    reseed()
    adapter: dict[str, Any] = {}
    for block in range(blocks):
        for name in ("to_k_ip", "to_v_ip"):
            adapter[f"{block}.{name}.weight"] = torch.randn(inner, cross) * 0.5
            adapter[f"{block}.{name}.bias"] = torch.zeros(inner)
    projection = {"proj.weight": torch.randn(4 * cross, embed) * 0.5, "proj.bias": torch.zeros(4 * cross),
                  "norm.weight": torch.ones(cross), "norm.bias": torch.zeros(cross)}
    return {"image_proj": projection, "ip_adapter": adapter}, image_encoder
