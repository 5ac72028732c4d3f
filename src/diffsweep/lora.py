"""LoRA adapters: which are loaded is builder identity; their scales are generation parameters.

Unfused adapters are loaded once under their names and re-weighted per batch with
`set_adapters`, so a sweep over scales never reloads the model. Fused adapters are baked into
the weights at build time (their scale is then identity) and unloaded, so nothing of them can
leak into another builder's pipeline, which is a separate cache entry anyway.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from diffsweep.hub import hub_offline
from diffsweep.inputs import file_digest
from diffsweep.paths import find_file

PARAM_PREFIX = "lora."


def scale_param(name: str) -> str:
    return PARAM_PREFIX + name


def unfused(loras: Sequence[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    return [lora for lora in loras if not lora.get("fuse")]


def absolutise(loras: Sequence[Mapping[str, Any]], base_dirs: list[Path]) -> list[dict[str, Any]]:
    """Local sources as absolute paths (hub ids stay as they are)."""
    resolved = []
    for lora in loras:
        candidate = find_file(lora["source"], base_dirs)
        resolved.append({**lora, "source": str(candidate.absolute())} if candidate.exists() else dict(lora))
    return resolved


WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".ckpt")
HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
PATH_PREFIXES = ("./", "../", "/", "~", ".\\")
DEFAULT_WEIGHT_NAME = "pytorch_lora_weights.safetensors"  # what diffusers picks among several files


def looks_like_a_path(source: str) -> bool:
    """A source a hub repo id cannot be: a weights file name (`loras/style.safetensors`), a path that starts
    like one, or one with a backslash or more than one folder. `owner/name` alone stays a hub id."""
    return (source.endswith(WEIGHT_SUFFIXES) or source.startswith(PATH_PREFIXES) or "\\" in source
            or source.count("/") > 1)


def source_problem(lora: Mapping[str, Any]) -> str | None:
    """Why an adapter's source cannot be loaded, checked before anything is written: a local file or
    folder must exist and hold LoRA weights; a hub id must be in the local cache when offline."""

    source, weight_name = Path(lora["source"]).expanduser(), lora.get("weight_name")
    if weight_name and (Path(weight_name).is_absolute() or ".." in Path(weight_name).parts):
        return f"weight_name {weight_name!r} must name a file inside the adapter's source, not a path out of it"
    if source.is_file():
        return None if source.suffix in WEIGHT_SUFFIXES else (
            f"{source} is not a LoRA weights file (expected {', '.join(WEIGHT_SUFFIXES)})")
    if source.is_dir():
        return _folder_problem(source, weight_name)
    if looks_like_a_path(lora["source"]):
        return (f"{source.absolute()} does not exist (read as a file path; a hub LoRA is named owner/name, "
                f"with weight_name for the file in it)")
    if not HUB_ID.match(lora["source"]):
        return f"{source.absolute()} does not exist (nor is '{lora['source']}' a hub id like owner/name)"
    if hub_offline():
        if not weight_name:
            return (f"hub LoRA '{lora['source']}' needs weight_name offline (the file in the repo to load): without "
                    f"the hub, diffusers cannot look up which file holds the weights")
        from huggingface_hub import try_to_load_from_cache  # noqa: PLC0415 - start-up time: the hub client loads only when a model is looked up

        cached = try_to_load_from_cache(lora["source"], weight_name, revision=lora.get("revision"))
        if not isinstance(cached, str):
            return (f"hub LoRA '{lora['source']}' ({weight_name}) is not in the local Hugging Face cache and "
                    f"HF_HUB_OFFLINE is set; download it first with `hf download {lora['source']} {weight_name}` "
                    f"or point source at a local file")
    return None


def _folder_problem(source: Path, weight_name: str | None) -> str | None:
    """A local adapter folder must hold one weights file, or the one weight_name names, inside it."""
    if weight_name:
        if not (source / weight_name).resolve().is_relative_to(source.resolve()):  # no link out of the source
            return f"weight_name {weight_name!r} leads out of {source} (through a link)"
        return None if (source / weight_name).is_file() else f"{source} has no file {weight_name} (weight_name)"
    found = sorted(p.name for p in source.iterdir() if p.suffix in (".safetensors", ".bin"))
    if not found:
        return f"{source} holds no LoRA weights (*.safetensors or *.bin)"
    if len(found) > 1 and DEFAULT_WEIGHT_NAME not in found:
        return f"{source} holds several weight files ({', '.join(found)}); set weight_name to the one to load"
    return None


def identity(loras: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Hash input for the adapters: local weights by content, hub ones by repo and revision."""
    entries = []
    for lora in loras:
        entry = {"name": lora["name"], "fuse": bool(lora.get("fuse"))}
        source = Path(lora["source"])
        if source.is_file():
            entry["sha256"] = file_digest(source)
        elif source.is_dir():
            hasher = hashlib.sha256()
            for path in sorted(source.rglob(lora.get("weight_name") or "*.safetensors")):
                hasher.update(file_digest(path).encode())
            entry["sha256"] = hasher.hexdigest()
        else:
            entry.update(source=lora["source"], revision=lora.get("revision"))
        if lora.get("weight_name"):
            entry["weight_name"] = lora["weight_name"]
        if lora.get("fuse"):
            entry["scale"] = float(lora.get("scale", 1.0))
        entries.append(entry)
    return entries


def problems(loras: Sequence[Mapping[str, Any]], params: Mapping[str, Any]) -> list[tuple[str, str]]:
    """Scale parameters that name no loaded adapter, or a fused one."""
    by_name = {lora["name"]: lora for lora in loras}
    found = []
    for key in params:
        if not key.startswith(PARAM_PREFIX):
            continue
        name = key.removeprefix(PARAM_PREFIX)
        if name not in by_name:
            have = ", ".join(by_name) or "none"
            found.append((key, f"no adapter named '{name}' in builder.loras (loaded: {have})"))
        elif by_name[name].get("fuse"):
            found.append((key, f"adapter '{name}' is fused at build time; set builder.loras[].scale instead"))
    return found


def default_scales(loras: Sequence[Mapping[str, Any]]) -> dict[str, float]:
    """Every unfused adapter at scale 1.0 unless the sweep says otherwise."""
    return {scale_param(lora["name"]): 1.0 for lora in unfused(loras)}


def load(pipe: Any, loras: Sequence[Mapping[str, Any]], token: str | None = None) -> None:
    """Load every adapter; fuse and drop the fused ones first so they cannot be unloaded by accident."""
    fused = [lora for lora in loras if lora.get("fuse")]
    for lora in fused:
        _load_one(pipe, lora, token)
    if fused:
        names = [adapter["name"] for adapter in fused]
        pipe.set_adapters(names, adapter_weights=[float(adapter.get("scale", 1.0)) for adapter in fused])
        pipe.fuse_lora(adapter_names=names, lora_scale=1.0)
        pipe.unload_lora_weights()  # the fused deltas stay in the weights; the adapter modules go
    for lora in unfused(loras):
        _load_one(pipe, lora, token)


def _load_one(pipe: Any, lora: Mapping[str, Any], token: str | None) -> None:
    kwargs: dict[str, Any] = {"adapter_name": lora["name"]}
    if lora.get("weight_name"):
        kwargs["weight_name"] = lora["weight_name"]
    if not Path(lora["source"]).exists():
        kwargs["revision"] = lora.get("revision") or "main"
        if token:
            kwargs["token"] = token
    pipe.load_lora_weights(lora["source"], **kwargs)


def apply_scales(pipe: Any, loras: Sequence[Mapping[str, Any]], params: Mapping[str, Any]) -> None:
    """Activate every unfused adapter at the batch's scales (set explicitly: diffusers otherwise
    keeps only the last loaded adapter active)."""
    active = unfused(loras)
    if active:
        pipe.set_adapters([adapter["name"] for adapter in active],
                          adapter_weights=[float(params[scale_param(adapter["name"])]) for adapter in active])
