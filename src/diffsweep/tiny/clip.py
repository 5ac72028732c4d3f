"""A tiny random-weight CLIP (model + processor) for scoring runs offline: `score.clip.model: tiny:clip`.

It loads through the same `CLIPModel.from_pretrained` / `CLIPProcessor.from_pretrained` path as a published
checkpoint. Its weights are random, so its scores measure nothing; it exists so scoring can be exercised and
benchmarked without the hub.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from diffsweep.tiny.tokenizers import clip_tokenizer

if TYPE_CHECKING:
    from transformers import CLIPModel, CLIPProcessor

IMAGE_SIZE = 16  # the processor resizes and centre-crops every image to this


def clip_processor() -> CLIPProcessor:
    from transformers import CLIPImageProcessor, CLIPProcessor

    images = CLIPImageProcessor(size={"shortest_edge": IMAGE_SIZE}, crop_size={"height": IMAGE_SIZE, "width": IMAGE_SIZE})
    return CLIPProcessor(image_processor=images, tokenizer=clip_tokenizer())


def clip_model(vocab_size: int) -> CLIPModel:
    import torch
    from transformers import CLIPConfig, CLIPModel

    config = CLIPConfig(
        text_config={"hidden_size": 16, "intermediate_size": 32, "num_attention_heads": 2, "num_hidden_layers": 1,
                     "vocab_size": vocab_size, "bos_token_id": 0, "eos_token_id": 1, "pad_token_id": 1},
        vision_config={"hidden_size": 16, "intermediate_size": 32, "num_attention_heads": 2, "num_hidden_layers": 1,
                       "image_size": IMAGE_SIZE, "patch_size": 8},
        projection_dim=16)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        return CLIPModel(config).eval()
