"""In-memory tokenizers for tiny pipelines.

transformers >= 5 tokenizers accept a vocabulary in their constructor, so no vocab files are downloaded.
Byte-level vocabularies without merges encode any UTF-8 text, one token per byte.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, TypeVar

if TYPE_CHECKING:
    from transformers import CLIPTokenizer, LlamaTokenizer, Qwen2Tokenizer, RobertaTokenizer, T5Tokenizer

QWEN_SPECIAL_TOKENS: tuple[str, ...] = (
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "<|vision_start|>",
    "<|vision_end|>",
    "<|image_pad|>",
    "<|video_pad|>",
)
"""Qwen chat-template tokens plus the vision tokens that `Qwen2_5_VLConfig` refers to."""

ROBERTA_SPECIAL_TOKENS: tuple[str, ...] = ("<s>", "<pad>", "</s>", "<unk>", "<mask>")

_Tok = TypeVar("_Tok", bound=Any)


def byte_alphabet() -> list[str]:
    """GPT-2's `bytes_to_unicode` table: 256 printable characters, one per byte value, in byte order."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    codes = printable.copy()
    extra = 0
    for byte in range(256):
        if byte not in printable:
            printable.append(byte)
            codes.append(256 + extra)
            extra += 1
    table = dict(zip(printable, codes, strict=True))
    return [chr(table[byte]) for byte in range(256)]


def clip_tokenizer(model_max_length: int = 77) -> CLIPTokenizer:
    """Byte-level CLIP BPE; each byte also appears with the `</w>` suffix CLIP puts on a word's last piece."""
    from transformers import CLIPTokenizer

    alphabet = byte_alphabet()
    pieces = ["<|startoftext|>", "<|endoftext|>", *alphabet, *(c + "</w>" for c in alphabet)]
    return CLIPTokenizer(vocab={p: i for i, p in enumerate(pieces)}, merges=[], model_max_length=model_max_length)


def t5_tokenizer(model_max_length: int = 512) -> T5Tokenizer:
    """Unigram T5 over visible ASCII; anything else maps to `<unk>`."""
    from transformers import T5Tokenizer

    vocab = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0), ("▁", -2.0)]
    vocab += [(chr(code), -5.0) for code in range(33, 127)]
    vocab += [("▁" + chr(code), -4.0) for code in range(ord("a"), ord("z") + 1)]
    return T5Tokenizer(vocab=vocab, extra_ids=0, model_max_length=model_max_length)


def qwen2_tokenizer(model_max_length: int = 1024) -> Qwen2Tokenizer:
    """Byte-level Qwen2 tokenizer whose chat-template tokens stay whole."""
    from transformers import Qwen2Tokenizer

    return _byte_level(Qwen2Tokenizer, QWEN_SPECIAL_TOKENS, model_max_length)


def roberta_tokenizer(model_max_length: int = 77) -> RobertaTokenizer:
    """Byte-level Roberta tokenizer, as used by CLAP text encoders."""
    from transformers import RobertaTokenizer

    return _byte_level(RobertaTokenizer, ROBERTA_SPECIAL_TOKENS, model_max_length)


def llama_tokenizer(model_max_length: int = 128) -> LlamaTokenizer:
    """Llama BPE with no merges over "▁" and the 256 byte-fallback pieces (`<0x00>`..`<0xFF>`): every character other
    than a space is encoded as its UTF-8 bytes, so any text is encodable. The pipeline pads with the end token."""
    from transformers import LlamaTokenizer

    pieces = ["<unk>", "<s>", "</s>", "▁", *(f"<0x{byte:02X}>" for byte in range(256))]
    return LlamaTokenizer(vocab={p: i for i, p in enumerate(pieces)}, merges=[], model_max_length=model_max_length)


def _byte_level(cls: type[_Tok], specials: tuple[str, ...], model_max_length: int) -> _Tok:
    """Specials first, then the byte alphabet; specials must be registered or they are split into characters."""
    from tokenizers import AddedToken

    pieces = [*specials, *byte_alphabet()]
    tok = cls(vocab={p: i for i, p in enumerate(pieces)}, merges=[], model_max_length=model_max_length)
    tok.add_tokens([AddedToken(s, special=True, normalized=False) for s in specials], special_tokens=True)
    return tok
