"""Canonical identities: the builder hash and the item id.

Both are SHA-256 over canonical JSON of resolved, typed values: sorted keys, compact separators,
UTF-8 kept as is, NaN/Infinity refused, Python's shortest round-trip float spelling, and a
`hash_schema` version field. Integers and floats are normalised by the schema before hashing,
so `30` and `30.0` for an integer key hash alike, as do `7` and `7.0` for a number key.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
import secrets
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

HASH_SCHEMA = 1
SHORT = 12


def canonical_json(value: Any) -> str:
    """The one serialisation every hash is taken over."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def digest(kind: str, payload: Mapping[str, Any]) -> str:
    """Full hex SHA-256 of a versioned, kind-tagged payload."""
    document = {"hash_schema": HASH_SCHEMA, "kind": kind, **payload}
    return hashlib.sha256(canonical_json(document).encode("utf-8")).hexdigest()


def short(full_digest: str) -> str:
    """The 12-character form used in file names and logs."""
    return full_digest[:SHORT]


def builder_hash(identity: Mapping[str, Any]) -> str:
    """Hash of a builder's identity (see diffsweep.planning.plan.builder_identity for what is in it)."""
    return digest("builder", {"builder": dict(identity)})


def item_id(builder_digest: str, params: Mapping[str, Any]) -> str:
    """Hash of one output: its builder plus every generation parameter, seed included."""
    return digest("item", {"builder": builder_digest, "params": dict(params)})


def normalise_number(value: Any, kind: str) -> Any:
    """Coerce a JSON number to the schema's kind ("integer" or "number")."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return value
    if isinstance(value, float) and not math.isfinite(value):
        raise ValueError(f"{value} is not a finite number")
    if kind == "integer":
        return int(value)
    if kind == "number":
        return float(value)
    return value


def item_id_filler(builder_digest: str, params: Mapping[str, Any], varying: list[str]) -> Callable[[list[str]], str]:
    """`item_id` of items whose params differ only in the `varying` keys, as a function of those
    values' canonical JSON (in `varying` order).

    The document is serialised once with a marker in each varying place; each item then only fills
    in its values, which gives the very text `item_id` would hash (JSON serialises a nested value
    exactly as it does the value alone) at a fraction of the cost: what lets a plan of a million
    items be hashed in seconds."""
    token = secrets.token_hex(8)
    marked = {**params, **{key: f"@{token}:{slot}@" for slot, key in enumerate(varying)}}
    text = canonical_json({"hash_schema": HASH_SCHEMA, "kind": "item", "builder": builder_digest, "params": marked})
    pieces = re.split(f'"@{token}:([0-9]+)@"', text)
    segments, slots = pieces[0::2], [int(slot) for slot in pieces[1::2]]
    head, rest = segments[0], list(zip(slots, segments[1:], strict=True))

    def fill(values: list[str]) -> str:
        text = head + "".join(values[slot] + segment for slot, segment in rest)
        return hashlib.sha256(text.encode("utf-8")).hexdigest()

    return fill


def file_digest(path: Path) -> str:
    """Full hex SHA-256 of a file's bytes, read in blocks (outputs can be large videos)."""
    digest_of = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest_of.update(block)
    return digest_of.hexdigest()
