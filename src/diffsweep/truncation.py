"""Prompts longer than a text encoder takes.

Diffusers cuts such a prompt to the encoder's length and at most logs a warning, so a sweep over long
prompts would silently compare cut ones. Each item's prompts are measured with the pipeline's own
tokenizers before the call, and what is cut is logged and recorded with the item
(`prompt_truncated`: per prompt parameter and tokenizer, the tokens used of how many, and the text
dropped), the same way diffusers itself computes what it removes.
"""

from __future__ import annotations

import inspect
from collections.abc import Iterator, Mapping
from typing import Any

TEXT_PARAMS = ("prompt", "negative_prompt")
TOKENIZER_SLOTS = ("tokenizer", "tokenizer_2", "tokenizer_3")


def _limits(pipe: Any, params: Mapping[str, Any]) -> Iterator[tuple[str, Any, int]]:
    """(slot, tokenizer, tokens it keeps) for the tokenizers whose cut is known: CLIP ones keep their
    model_max_length; T5 ones keep the call's max_sequence_length. Encoders that wrap a prompt in a
    chat template (Qwen, Gemma, ...) are not measured rather than measured wrong."""
    call = inspect.signature(pipe.__call__).parameters
    for slot in TOKENIZER_SLOTS:
        tokenizer = getattr(pipe, slot, None)
        kind = type(tokenizer).__name__
        if tokenizer is None:
            continue
        if kind.startswith("CLIPTokenizer"):
            yield slot, tokenizer, int(tokenizer.model_max_length)
        elif kind.startswith("T5Tokenizer") and "max_sequence_length" in call:
            length = params.get("max_sequence_length") or call["max_sequence_length"].default
            if isinstance(length, int):
                yield slot, tokenizer, length


def prompt_truncation(pipe: Any, params: Mapping[str, Any]) -> dict[str, dict[str, dict[str, Any]]]:
    """{prompt parameter: {tokenizer slot: {tokens, used_tokens, dropped_text}}} for every prompt of one
    item that a tokenizer of `pipe` cuts; empty when nothing is cut."""
    found: dict[str, dict[str, dict[str, Any]]] = {}
    for slot, tokenizer, limit in _limits(pipe, params):
        for key in TEXT_PARAMS:
            if slot != "tokenizer" and params.get(f"{key}_2") is not None:
                key = f"{key}_2"  # the second encoder's own prompt (SDXL, Flux); it defaults to the first
            text = params.get(key)
            if not isinstance(text, str) or not text:
                continue
            ids = tokenizer(text, truncation=False)["input_ids"]
            if len(ids) <= limit:
                continue
            # kept: the first limit-1 tokens and the end token; dropped: what lay between them
            dropped = tokenizer.decode(ids[limit - 1:-1], skip_special_tokens=True)
            found.setdefault(key, {})[slot] = {"tokens": len(ids), "used_tokens": limit, "dropped_text": dropped}
    return found
