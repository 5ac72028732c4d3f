"""Tiny Stable Diffusion 1.x, 2.x, XL and 3 components."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from diffsweep.tiny.common import (
    Components,
    clip_text_config,
    isolated_rng,
    one_level_vae,
    reseed,
    sd_ddim_scheduler,
    t5_kwargs,
)
from diffsweep.tiny.tokenizers import clip_tokenizer, t5_tokenizer

if TYPE_CHECKING:
    from diffusers import AutoencoderKL, UNet2DConditionModel

_NO_IMAGE_EXTRAS: Components = {"image_encoder": None, "feature_extractor": None}
"""Optional IP-Adapter components, left empty; named so the dict spells out every constructor argument."""


def _unet(**extra: Any) -> UNet2DConditionModel:
    """The SD 1.x UNet; other versions add keyword arguments on top."""
    from diffusers import UNet2DConditionModel

    kwargs: dict[str, Any] = {
        "block_out_channels": (4, 8),
        "layers_per_block": 1,
        "sample_size": 32,
        "down_block_types": ("DownBlock2D", "CrossAttnDownBlock2D"),
        "up_block_types": ("CrossAttnUpBlock2D", "UpBlock2D"),
        "cross_attention_dim": 8,
        "norm_num_groups": 2,
    }
    return UNet2DConditionModel(**(kwargs | extra))


def _vae() -> AutoencoderKL:
    """Two-level VAE: scale factor 2, so 64x64 images use 32x32 latents."""
    from diffusers import AutoencoderKL

    return AutoencoderKL(
        block_out_channels=[4, 8],
        down_block_types=["DownEncoderBlock2D", "DownEncoderBlock2D"],
        up_block_types=["UpDecoderBlock2D", "UpDecoderBlock2D"],
        latent_channels=4,
        norm_num_groups=2,
    )


def _sd(unet_extra: dict[str, Any], scheduler_extra: dict[str, Any]) -> Components:
    """SD 1.x/2.x components; the versions differ only in UNet attention layout and prediction type."""
    from transformers import CLIPTextModel

    reseed()
    unet = _unet(**unet_extra)
    reseed()
    vae = _vae()
    tokenizer = clip_tokenizer()
    reseed()
    text_encoder = CLIPTextModel(clip_text_config(tokenizer, 8))
    return {
        "unet": unet,
        "scheduler": sd_ddim_scheduler(**scheduler_extra),
        "vae": vae,
        "text_encoder": text_encoder,
        "tokenizer": tokenizer,
        "safety_checker": None,
        "requires_safety_checker": False,
        **_NO_IMAGE_EXTRAS,
    }


@isolated_rng
def sd() -> Components:
    """Stable Diffusion 1.x."""
    return _sd({}, {})


@isolated_rng
def sd_v2() -> Components:
    """Stable Diffusion 2.x: linear projections, per-block head dims and v-prediction."""
    return _sd({"attention_head_dim": (2, 4), "use_linear_projection": True}, {"prediction_type": "v_prediction"})


@isolated_rng
def sdxl() -> Components:
    """Stable Diffusion XL; the UNet's added-embedding input is 6 time ids x 8 plus the pooled text projection."""
    from diffusers import EulerDiscreteScheduler
    from transformers import CLIPTextModel, CLIPTextModelWithProjection

    tokenizer = clip_tokenizer()
    text_config = clip_text_config(tokenizer, 16, projection_dim=16)
    time_embed_dim = 8
    reseed()
    unet = _unet(
        attention_head_dim=(2, 4),
        use_linear_projection=True,
        addition_embed_type="text_time",
        addition_time_embed_dim=time_embed_dim,
        transformer_layers_per_block=(1, 1),
        projection_class_embeddings_input_dim=6 * time_embed_dim + text_config.projection_dim,
        cross_attention_dim=2 * text_config.hidden_size,
    )
    reseed()
    vae = _vae()
    reseed()
    text_encoder = CLIPTextModel(text_config)
    reseed()
    text_encoder_2 = CLIPTextModelWithProjection(text_config)
    return {
        "unet": unet,
        "scheduler": EulerDiscreteScheduler(
            beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", steps_offset=1
        ),
        "vae": vae,
        "text_encoder": text_encoder,
        "tokenizer": tokenizer,
        "text_encoder_2": text_encoder_2,
        "tokenizer_2": clip_tokenizer(),
        **_NO_IMAGE_EXTRAS,
    }


@isolated_rng
def sd3() -> Components:
    """Stable Diffusion 3 with a one-level VAE (scale factor 1): use 32x32 and max_sequence_length=32."""
    from diffusers import FlowMatchEulerDiscreteScheduler, SD3Transformer2DModel
    from transformers import CLIPTextModelWithProjection, T5Config, T5EncoderModel

    reseed()
    transformer = SD3Transformer2DModel(
        sample_size=32,
        patch_size=1,
        in_channels=4,
        num_layers=1,
        attention_head_dim=8,
        num_attention_heads=4,
        caption_projection_dim=32,
        joint_attention_dim=32,
        pooled_projection_dim=64,
        out_channels=4,
    )
    reseed()
    vae = one_level_vae(latent_channels=4)
    tokenizer = clip_tokenizer()
    tokenizer_3 = t5_tokenizer()
    reseed()
    text_encoder = CLIPTextModelWithProjection(clip_text_config(tokenizer, 32))
    reseed()
    text_encoder_2 = CLIPTextModelWithProjection(clip_text_config(tokenizer, 32))
    reseed()
    text_encoder_3 = T5EncoderModel(T5Config(**t5_kwargs(tokenizer_3, 32))).eval()
    return {
        "transformer": transformer,
        "scheduler": FlowMatchEulerDiscreteScheduler(),
        "vae": vae,
        "text_encoder": text_encoder,
        "tokenizer": tokenizer,
        "text_encoder_2": text_encoder_2,
        "tokenizer_2": clip_tokenizer(),
        "text_encoder_3": text_encoder_3,
        "tokenizer_3": tokenizer_3,
        **_NO_IMAGE_EXTRAS,
    }
