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
    wake_zero_convolutions,
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


_SD_ZERO_CONVS = ("controlnet_down_blocks", "controlnet_mid_block", "controlnet_cond_embedding.conv_out")


@isolated_rng
def sd_controlnet() -> Any:
    """A ControlNet for the tiny SD 1.x UNet, copied from its encoder as diffusers' `from_unet` does; the
    conditioning embedding downsamples by 2, the tiny VAE's factor, so 64x64 control images meet 32x32 latents."""
    from diffusers import ControlNetModel

    net = ControlNetModel.from_unet(sd()["unet"], conditioning_embedding_out_channels=(4, 8))
    return wake_zero_convolutions(net, _SD_ZERO_CONVS)


@isolated_rng
def sdxl_controlnet_union() -> Any:
    """A ControlNet Union (6 control modes, as xinsir's) for the tiny SDXL UNet; its control-type transformer is
    as wide as the UNet's first block (the published model's 320)."""
    import inspect

    from diffusers import ControlNetUnionModel

    unet = sdxl()["unet"]
    accepted = inspect.signature(ControlNetUnionModel.__init__).parameters
    config = {key: value for key, value in unet.config.items() if key in accepted}
    width = unet.config.block_out_channels[0]
    reseed()
    net = ControlNetUnionModel(**config, conditioning_embedding_out_channels=(4, 8), num_trans_channel=width,
                               num_trans_head=2, num_proj_channel=width, num_control_type=6)
    return wake_zero_convolutions(net, (*_SD_ZERO_CONVS, "spatial_ch_projs"))


@isolated_rng
def sd_ip_adapter() -> tuple[dict[str, dict[str, Any]], Any]:
    """An IP-Adapter for the tiny SD 1.x UNet in the original layout (`image_proj.*`: the image projection to 4
    tokens; `ip_adapter.<n>.to_k_ip/to_v_ip`: key/value projections of every cross-attention, numbered 1, 3, 5, ...
    as diffusers reads them) and the CLIP image encoder whose projection it takes."""
    import torch
    from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

    unet = sd()["unet"]
    embed = 8
    reseed()
    image_encoder = CLIPVisionModelWithProjection(CLIPVisionConfig(
        hidden_size=8, intermediate_size=16, projection_dim=embed, num_hidden_layers=2, num_attention_heads=2,
        image_size=32, patch_size=8))
    cross = unet.config.cross_attention_dim
    widths = {"down_blocks": list(unet.config.block_out_channels), "up_blocks": list(reversed(
        unet.config.block_out_channels)), "mid_block": [unet.config.block_out_channels[-1]]}
    reseed()
    adapter: dict[str, Any] = {}
    key_id = 1
    for name in unet.attn_processors:
        if name.endswith("attn1.processor"):
            continue
        block = name.split(".")[0]
        hidden = widths[block][0 if block == "mid_block" else int(name.split(".")[1])]
        adapter[f"{key_id}.to_k_ip.weight"] = torch.randn(hidden, cross) * 0.5
        adapter[f"{key_id}.to_v_ip.weight"] = torch.randn(hidden, cross) * 0.5
        key_id += 2
    projection = {"proj.weight": torch.randn(4 * cross, embed) * 0.5, "proj.bias": torch.zeros(4 * cross),
                  "norm.weight": torch.ones(cross), "norm.bias": torch.zeros(cross)}
    return {"image_proj": projection, "ip_adapter": adapter}, image_encoder


@isolated_rng
def sd3_controlnet() -> Any:
    """An SD3 ControlNet for the tiny SD3 transformer (same widths; its block is a full joint block, where the base's
    one block is context-only): the control image goes through the VAE like the latents; output layers random."""
    from diffusers import SD3ControlNetModel

    reseed()
    net = SD3ControlNetModel(sample_size=32, patch_size=1, in_channels=4, num_layers=1, attention_head_dim=8,
                             num_attention_heads=4, joint_attention_dim=32, caption_projection_dim=32,
                             pooled_projection_dim=64, out_channels=4)
    return wake_zero_convolutions(net, ("controlnet_blocks", "pos_embed_input"))
