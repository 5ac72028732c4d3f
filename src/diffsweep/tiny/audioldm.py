"""Tiny AudioLDM (deprecated pipeline) and AudioLDM2 components.

CLAP and GPT-2 default to dropout 0.1, so those encoders are put in eval mode like T5.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from diffsweep.tiny.common import Components, isolated_rng, reseed, sd_ddim_scheduler, t5_kwargs
from diffsweep.tiny.tokenizers import roberta_tokenizer, t5_tokenizer

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase, SpeechT5HifiGan

_UNET_LAYOUT: dict[str, Any] = {
    "block_out_channels": (8, 16),
    "layers_per_block": 2,
    "norm_num_groups": 8,
    "sample_size": 32,
    "in_channels": 4,
    "out_channels": 4,
    "down_block_types": ("DownBlock2D", "CrossAttnDownBlock2D"),
    "up_block_types": ("CrossAttnUpBlock2D", "UpBlock2D"),
}
"""UNet shape shared by both versions; they differ in how text conditions it."""


def _vae_kwargs() -> dict[str, Any]:
    """Mel-spectrogram VAE: one input/output channel."""
    return {
        "in_channels": 1,
        "out_channels": 1,
        "block_out_channels": [8, 16],
        "down_block_types": ["DownEncoderBlock2D", "DownEncoderBlock2D"],
        "up_block_types": ["UpDecoderBlock2D", "UpDecoderBlock2D"],
        "latent_channels": 4,
        "norm_num_groups": 8,
    }


def _clap_text_kwargs(tokenizer: PreTrainedTokenizerBase) -> dict[str, Any]:
    """CLAP text branch for the 77-token Roberta tokenizer; Roberta's position offset needs >= 77 + 2 positions."""
    return {
        "hidden_size": 8,
        "intermediate_size": 16,
        "num_attention_heads": 2,
        "num_hidden_layers": 2,
        "vocab_size": len(tokenizer),
        "max_position_embeddings": 80,
        "bos_token_id": tokenizer.bos_token_id,
        "eos_token_id": tokenizer.eos_token_id,
        "pad_token_id": tokenizer.pad_token_id,
    }


def _vocoder() -> SpeechT5HifiGan:
    """16 kHz HiFi-GAN vocoder over 8 mel bins."""
    from transformers import SpeechT5HifiGan, SpeechT5HifiGanConfig

    return SpeechT5HifiGan(
        SpeechT5HifiGanConfig(
            model_in_dim=8,
            sampling_rate=16000,
            upsample_initial_channel=16,
            upsample_rates=[2, 2],
            upsample_kernel_sizes=[4, 4],
            resblock_kernel_sizes=[3, 7],
            resblock_dilation_sizes=[[1, 3, 5], [1, 3, 5]],
            normalize_before=False,
        )
    )


@isolated_rng
def audioldm() -> Components:
    """AudioLDM: the pooled CLAP text embedding enters the UNet as a class embedding, not through cross-attention."""
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import ClapTextConfig, ClapTextModelWithProjection

    reseed()
    unet = UNet2DConditionModel(
        **_UNET_LAYOUT,
        cross_attention_dim=(8, 16),
        class_embed_type="simple_projection",
        projection_class_embeddings_input_dim=8,
        class_embeddings_concat=True,
    )
    reseed()
    vae = AutoencoderKL(**_vae_kwargs())
    tokenizer = roberta_tokenizer()
    reseed()
    text_encoder = ClapTextModelWithProjection(ClapTextConfig(**_clap_text_kwargs(tokenizer), projection_dim=8)).eval()
    reseed()
    vocoder = _vocoder()
    return {
        "unet": unet,
        "scheduler": sd_ddim_scheduler(),
        "vae": vae,
        "text_encoder": text_encoder,
        "tokenizer": tokenizer,
        "vocoder": vocoder,
    }


@isolated_rng
def audioldm2() -> Components:
    """AudioLDM2: the UNet cross-attends to GPT-2 states (width 16) and T5 states (width 32).

    The feature extractor is built locally; it serves CLAP re-ranking when several waveforms per prompt are asked for.
    """
    from diffusers import AudioLDM2ProjectionModel, AudioLDM2UNet2DConditionModel, AutoencoderKL
    from transformers import (
        ClapConfig,
        ClapFeatureExtractor,
        ClapModel,
        GPT2Config,
        GPT2LMHeadModel,
        T5Config,
        T5EncoderModel,
    )

    lm_dim, t5_dim, clap_dim = 16, 32, 16
    reseed()
    unet = AudioLDM2UNet2DConditionModel(**_UNET_LAYOUT, cross_attention_dim=([None, lm_dim, t5_dim],) * 2)
    reseed()
    vae = AutoencoderKL(**_vae_kwargs())
    tokenizer = roberta_tokenizer()
    reseed()
    text_encoder = ClapModel(
        ClapConfig(
            text_config=_clap_text_kwargs(tokenizer),
            audio_config={
                "spec_size": 8,
                "window_size": 4,
                "num_mel_bins": 8,
                "depths": [1, 1],
                "num_attention_heads": [1, 1],
                "hidden_size": 192,
                "patch_size": 2,
                "patch_stride": 2,
                "patch_embed_input_channels": 4,
            },
            projection_dim=clap_dim,
        )
    ).eval()
    tokenizer_2 = t5_tokenizer(model_max_length=77)
    reseed()
    text_encoder_2 = T5EncoderModel(T5Config(**t5_kwargs(tokenizer_2, t5_dim, num_layers=1, num_heads=1))).eval()
    reseed()
    language_model = GPT2LMHeadModel(
        GPT2Config(n_embd=lm_dim, n_head=1, n_layer=1, vocab_size=1000, n_positions=99, bos_token_id=0, eos_token_id=0)
    ).eval()
    language_model.config.max_new_tokens = 8
    reseed()
    projection_model = AudioLDM2ProjectionModel(
        text_encoder_dim=clap_dim, text_encoder_1_dim=t5_dim, langauge_model_dim=lm_dim
    )
    reseed()
    vocoder = _vocoder()
    return {
        "unet": unet,
        "scheduler": sd_ddim_scheduler(),
        "vae": vae,
        "text_encoder": text_encoder,
        "tokenizer": tokenizer,
        "feature_extractor": ClapFeatureExtractor(feature_size=8, sampling_rate=16000, hop_length=7900),
        "text_encoder_2": text_encoder_2,
        "tokenizer_2": tokenizer_2,
        "language_model": language_model,
        "projection_model": projection_model,
        "vocoder": vocoder,
    }
