"""Tiny Wuerstchen components for the deprecated combined pipeline.

Its three model classes are not exported at diffusers top level, so reloading a saved folder needs the provider's reload fix.
"""

from __future__ import annotations

from diffsweep.tiny.common import Components, clip_text_config, isolated_rng, reseed
from diffsweep.tiny.tokenizers import clip_tokenizer

_TEXT_DIM = 32


@isolated_rng
def wuerstchen() -> Components:
    """Prior, decoder and VQ-GAN; prior and decoder share one tokenizer. Image sizes 128 or 256 work, 64 does not."""
    from diffusers import DDPMWuerstchenScheduler
    from diffusers.pipelines.deprecated.wuerstchen.modeling_paella_vq_model import PaellaVQModel
    from diffusers.pipelines.deprecated.wuerstchen.modeling_wuerstchen_diffnext import WuerstchenDiffNeXt
    from diffusers.pipelines.deprecated.wuerstchen.modeling_wuerstchen_prior import WuerstchenPrior
    from transformers import CLIPTextModel

    tokenizer = clip_tokenizer()
    reseed()
    prior = WuerstchenPrior(c_in=2, c=8, depth=2, c_cond=_TEXT_DIM, c_r=8, nhead=2)
    reseed()
    prior_text_encoder = CLIPTextModel(clip_text_config(tokenizer, _TEXT_DIM))
    reseed()
    decoder = WuerstchenDiffNeXt(
        c_cond=_TEXT_DIM,
        c_r=8,
        c_hidden=[16],
        nhead=[-1],
        blocks=[1],
        level_config=["CT"],
        clip_embd=_TEXT_DIM,
        inject_effnet=[False],
        effnet_embd=4,
    )
    reseed()
    text_encoder = CLIPTextModel(clip_text_config(tokenizer, _TEXT_DIM))
    reseed()
    vqgan = PaellaVQModel(bottleneck_blocks=1, num_vq_embeddings=2, embed_dim=16)
    return {
        "tokenizer": tokenizer,
        "text_encoder": text_encoder,
        "decoder": decoder,
        "scheduler": DDPMWuerstchenScheduler(),
        "vqgan": vqgan,
        "prior_tokenizer": tokenizer,
        "prior_text_encoder": prior_text_encoder,
        "prior_prior": prior,
        "prior_scheduler": DDPMWuerstchenScheduler(),
    }
