"""Readable names for builders and axis values: what differs, said briefly.

A run that compares builders (models, schedulers, LoRA sets, dtypes, ...) names each by the
fields in which it differs from the others, e.g. `DPMSolverMultistep karras` or `sd-2-1`, and
keeps those fields as its `identity`. The same words label builder axes on sheets. Text that is
too long is shortened from the middle around the part that differs between values, never to a
prefix every value shares.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

BUILDER_AXIS = "builder."
ELLIPSIS = "…"
MIN_CUT = 4  # characters: a shared head or tail shorter than this is kept, not cut
# Identity fields in the order a label names them; others follow alphabetically.
FIELD_ORDER = ("model", "pipeline", "provider", "scheduler", "loras", "dtype")
# Fields whose value reads on its own; the others are printed as `key=value`.
SELF_EVIDENT = frozenset(FIELD_ORDER)
DTYPES = {"float32": "fp32", "float16": "fp16", "bfloat16": "bf16", "float64": "fp64"}
# Words of model names said shorter, as people say them ("sd-2-1").
MODEL_WORDS = (("stable-diffusion", "sd"),)


@dataclass(frozen=True)
class BuilderLabel:
    """A builder's short name among the builders of its run, and the fields that make it differ."""

    label: str
    identity: dict[str, Any]


def compact(value: Any) -> str:
    """One-line text of any value: strings as they are, the rest as compact JSON."""
    text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False, default=str,
                                                            separators=(", ", ": "))
    return " ".join(text.split())


def model_label(model: str) -> str:
    """`stabilityai/stable-diffusion-2-1` -> `sd-2-1`; local paths and checkpoints by their last part."""
    name = model.rstrip("/").rsplit("/", 1)[-1]
    for suffix in (".safetensors", ".ckpt", ".sft", ".gguf"):
        name = name.removesuffix(suffix)
    for long, short in MODEL_WORDS:
        name = name.replace(long, short)
    return name or model


def scheduler_label(scheduler: Mapping[str, Any] | None) -> str:
    """`{name: DPMSolverMultistepScheduler, config: {use_karras_sigmas: true}}` -> `DPMSolverMultistep karras`."""
    if not scheduler:
        return "model's scheduler"
    words = [str(scheduler.get("name", "?")).removesuffix("Scheduler")]
    for key, value in sorted((scheduler.get("config") or {}).items()):
        option = key.removeprefix("use_").removesuffix("_sigmas")
        if value is True:
            words.append(option)
        elif value is False:
            words.append(f"no {option}")
        else:
            words.append(f"{option}={compact(value)}")
    return " ".join(words)


def loras_label(loras: Sequence[Mapping[str, Any]] | None) -> str:
    """The adapters loaded: `style + detail fused@0.8`, or `no LoRA`."""
    if not loras:
        return "no LoRA"
    parts = []
    for adapter in loras:
        part = str(adapter.get("name", "?"))
        if adapter.get("fuse"):
            part += f" fused@{adapter['scale']:g}" if isinstance(adapter.get("scale"), (int, float)) else " fused"
        parts.append(part)
    return " + ".join(parts)


def quantization_label(identity: Mapping[str, Any]) -> str:
    """`{backend: quanto, weights: int8}` -> `quanto int8`; a GGUF file by its name (it says its type: `...-Q8_0`)."""
    file = identity.get("file")
    if identity.get("backend") == "gguf" and file is not None:
        return "gguf " + model_label(file if isinstance(file, str) else str(file.get("name", "?")))
    words = [str(identity.get("backend", "?")), *([str(identity["weights"])] if identity.get("weights") else [])]
    if identity.get("components"):
        words.append("(" + ", ".join(identity["components"]) + ")")
    return " ".join(words)


def field_label(key: str, value: Any) -> str:
    """One builder field's value, as a label reads it."""
    if key == "model" and isinstance(value, str):
        return model_label(value)
    if key == "scheduler":
        return scheduler_label(value)
    if key == "loras":
        return loras_label(value)
    if key == "dtype" and isinstance(value, str):
        return DTYPES.get(value, value)
    if key == "pipeline" and isinstance(value, str):
        return value.rsplit(".", 1)[-1].removesuffix("Pipeline") or value
    if key == "quantization" and isinstance(value, Mapping):
        return "quantization=" + quantization_label(value)
    text = "none" if value is None else compact(value)
    return text if key in SELF_EVIDENT else f"{key}={text}"


def _distinct_field_labels(key: str, values: Sequence[Any]) -> list[str]:
    """Labels of one field's values; where the short forms collide but the values differ, the full text."""
    short = [field_label(key, value) for value in values]
    raw = [compact(value) for value in values]
    if len(set(short)) < len(set(raw)):
        return [text if key in SELF_EVIDENT else f"{key}={text}" for text in raw]
    return short


def builder_labels(identities: Sequence[Mapping[str, Any]], hashes: Sequence[str] | None = None) -> list[BuilderLabel]:
    """Label each builder by the identity fields that differ between them (in FIELD_ORDER).

    A lone builder (or builders equal in every field shown) is named by its model; labels are made
    distinct with the builder hash where nothing else tells them apart."""
    keys = {key for identity in identities for key in identity}
    ordered = [k for k in FIELD_ORDER if k in keys] + sorted(keys - set(FIELD_ORDER))
    differing = [k for k in ordered if len({compact(identity.get(k)) for identity in identities}) > 1]
    columns = {key: _distinct_field_labels(key, [identity.get(key) for identity in identities]) for key in differing}
    labels = []
    for position, identity in enumerate(identities):
        words = [columns[key][position] for key in differing]
        if not words:
            words = [model_label(str(identity.get("model", "?")))]
        labels.append(BuilderLabel(" · ".join(words), {key: identity.get(key) for key in differing}))
    texts = [b.label for b in labels]
    if hashes is not None and len(set(texts)) < len(texts):
        labels = [BuilderLabel(f"{b.label} #{h[:8]}" if texts.count(b.label) > 1 else b.label, b.identity)
                  for b, h in zip(labels, hashes, strict=True)]
    return labels


def axis_title(name: str) -> str:
    """An axis as a reader says it: `builder.scheduler` -> `scheduler`, `lora.style` -> `LoRA style`."""
    if name.startswith(BUILDER_AXIS):
        return name.removeprefix(BUILDER_AXIS)
    if name.startswith("lora."):
        return f"LoRA {name.removeprefix('lora.')}"
    return name


def axis_value_labels(name: str, values: Sequence[Any]) -> list[str]:
    """Labels of an axis's values; builder axes read like builder labels. Always distinct."""
    if name.startswith(BUILDER_AXIS):
        labels = _distinct_field_labels(name.removeprefix(BUILDER_AXIS), values)
    else:
        labels = [compact(value) for value in values]
    if len(set(labels)) < len(labels):  # e.g. 1 and 1.0 on a float axis
        labels = [json.dumps(value, ensure_ascii=False, default=str) for value in values]
    return labels


def shorten_middle(text: str, keep: int, core: tuple[int, int] | None = None) -> str:
    """`text` in about `keep` characters, cut with ellipses.

    `core` (start, end) marks the part that tells this text from its neighbours: the cut keeps it
    and falls on the head and tail they share; a core too long itself is cut in its own middle."""
    if len(text) <= keep:
        return text
    start, end = core if core is not None else (0, len(text))
    lead = ELLIPSIS if start > 0 else ""
    trail = ELLIPSIS if end < len(text) else ""
    room = keep - len(lead) - len(trail)
    if end - start <= room:  # the core fits: widen it evenly into the shared head and tail
        spare = room - (end - start)
        before = min(start, spare // 2)
        after = min(len(text) - end, spare - before)
        before = min(start, spare - after)
        a, b = start - before, end + after
        return (ELLIPSIS if a > 0 else "") + text[a:b] + (ELLIPSIS if b < len(text) else "")
    core_text = text[start:end]
    room = max(2, room - 1)
    head = (room + 1) // 2
    return lead + core_text[:head] + ELLIPSIS + core_text[len(core_text) - (room - head):] + trail


def differing_spans(texts: Sequence[str]) -> list[tuple[int, int]]:
    """For each text, (start, end) of what tells it from the texts most like it: what lies between the longest
    head and the longest tail it shares with any other text. Measured against its nearest neighbours, not against
    all texts at once, so one unrelated text among three that differ in a word cannot hide that word."""
    heads = _longest_shared(texts, lambda text: text)
    tails = _longest_shared(texts, lambda text: text[::-1])
    spans = []
    for text, head, tail in zip(texts, heads, tails, strict=True):
        start, end = head, max(head, len(text) - tail)
        # widen to whole words, so what differs is never shown as a piece of a word or number
        while start > 0 and _in_word(text[start - 1]) and (start == len(text) or _in_word(text[start])):
            start -= 1
        while end < len(text) and _in_word(text[end]) and (end == 0 or _in_word(text[end - 1])):
            end += 1
        # a shared head or tail of a few characters ("a ") is not worth the ellipsis that would stand for it
        spans.append((0 if start < MIN_CUT else start, len(text) if len(text) - end < MIN_CUT else end))
    return spans


def _longest_shared(texts: Sequence[str], key: Callable[[str], str]) -> list[int]:
    """For each text, the longest head it shares with another (different) text, of `key(text)`. Sorted, the text
    sharing the longest head with a text is next to it, so this takes n log n comparisons, not n²."""
    keyed = [key(text) for text in texts]
    order = sorted(set(keyed))
    longest = {}
    for position, value in enumerate(order):
        neighbours = order[max(0, position - 1):position] + order[position + 1:position + 2]
        longest[value] = max((_shared_head(value, other) for other in neighbours), default=0)
    return [longest[value] for value in keyed]


def _shared_head(a: str, b: str) -> int:
    n = 0
    while n < len(a) and n < len(b) and a[n] == b[n]:
        n += 1
    return n


def _in_word(char: str) -> bool:
    return char.isalnum() or char in "._-"


def shorten_all(texts: Sequence[str], limit: int) -> list[str]:
    """Each text in at most `limit` characters, shortened around what tells it from the others."""
    return fit_all(texts, lambda text: len(text) <= limit)


def shorten_per_group(pairs: Iterable[tuple[str, str]], limit: int) -> dict[tuple[str, str], str]:
    """(group, text) -> the text in at most `limit` characters, shortened around what tells it from the other
    texts of its group (the values of one axis, say)."""
    by_group: dict[str, dict[str, None]] = {}
    for group, text in pairs:
        by_group.setdefault(group, {})[text] = None
    return {(group, text): short for group, texts in by_group.items()
            for text, short in zip(texts, shorten_all(list(texts), limit), strict=True)}


def fit_all(texts: Sequence[str], fits: Callable[[str], bool]) -> list[str]:
    """Each text as given when it fits, else shortened from the middle around what differs until it does."""
    spans = differing_spans(texts)
    result = []
    for text, span in zip(texts, spans, strict=True):
        keep = len(text)
        shown = text
        while keep > 1 and not fits(shown):
            keep = max(1, min(keep - 1, int(keep * 0.9)))
            shown = shorten_middle(text, keep, span)
        result.append(shown)
    return result
