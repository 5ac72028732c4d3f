"""Where models come from: hub ids, local folders, single checkpoint files and diffsweep's tiny stand-ins; the hub's
token and offline mode; and what a failed load means, said in one sentence."""

from __future__ import annotations

import json
import os
import socket
from collections.abc import Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

TINY_PREFIX = "tiny:"


SINGLE_FILE_SUFFIXES = (".safetensors", ".ckpt", ".sft", ".pt", ".bin", ".gguf")


def looks_local(name: str) -> bool:
    """A path rather than a hub id (`org/name`, which never starts with '.') or a URL: absolute, `~`,
    `./` or `../`, deeper than `org/name`, or a checkpoint file name."""
    if "://" in name or name.startswith(TINY_PREFIX):
        return False
    return name.startswith(("/", "~", ".")) or name.count("/") > 1 or name.endswith(SINGLE_FILE_SUFFIXES)


def is_single_file(source: Path | str) -> bool:
    """A single checkpoint file (local, or a hub file URL) rather than a diffusers folder or repo."""
    text = str(source)
    return text.endswith(SINGLE_FILE_SUFFIXES) and (Path(text).is_file() or text.startswith("https://"))


def hub_token() -> str | None:
    """HF_TOKEN, or its older alias HUGGINGFACE_HUB_ACCESS_TOKEN."""
    return os.environ.get("HF_TOKEN") or os.environ.get("HUGGINGFACE_HUB_ACCESS_TOKEN") or None


def hub_kwargs(settings: Mapping[str, Any], source: Path | str) -> dict[str, Any]:
    """What from_pretrained needs to fetch `source` as `settings` (a builder, ControlNet, adapter or component) say:
    revision, variant and token for a hub id; variant alone for a local path."""
    kwargs: dict[str, Any] = {}
    if settings.get("variant"):
        kwargs["variant"] = settings["variant"]
    if isinstance(source, str):
        kwargs["revision"] = settings.get("revision") or "main"
        if hub_token():
            kwargs["token"] = hub_token()
    return kwargs


def hub_offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on")


def hub_endpoint() -> str:
    return os.environ.get("HF_ENDPOINT", "https://huggingface.co").rstrip("/")


def cached_file(repo: str, filename: str, revision: str | None) -> Path | None:
    """A hub repo's file where the local Hugging Face cache has it; None otherwise (nothing is fetched)."""
    from huggingface_hub import try_to_load_from_cache  # noqa: PLC0415 - start-up time: the hub client loads only when a model is looked up

    try:
        cached = try_to_load_from_cache(repo, filename, revision=revision)
    except ValueError:  # not a valid hub id (HFValidationError): the checks that look at the id say what is wrong
        return None
    return Path(cached) if isinstance(cached, str) else None


def in_hub_cache(repo: str, revision: str | None) -> bool:
    """Whether a hub repo's config.json is in the local Hugging Face cache."""
    return cached_file(repo, "config.json", revision) is not None


def model_json(source: Path | str, filename: str, revision: str | None) -> dict[str, Any] | None:
    """A model's JSON file (model_index.json, `<component>/config.json`) read without fetching anything: from a local
    folder, or from the local Hugging Face cache for a hub id; None where it is not there."""
    path = source / filename if isinstance(source, Path) else cached_file(source, filename, revision)
    if path is None or not path.is_file():
        return None
    loaded = json.loads(path.read_text(encoding="utf-8"))
    return loaded if isinstance(loaded, dict) else None


def hub_reachable(timeout: float = 3.0) -> bool:
    """Whether the hub's host answers at all: one connection, no retries. Through a proxy, assumed (the download
    then says what went wrong)."""
    if any(os.environ.get(name) for name in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy")):
        return True
    endpoint = urlparse(hub_endpoint())
    if not endpoint.hostname:
        return False
    try:
        socket.create_connection((endpoint.hostname, endpoint.port or 443), timeout=timeout).close()
    except OSError:
        return False
    return True


def _chain(error: BaseException) -> list[BaseException]:
    """The error and what caused it (diffusers often wraps hub errors in OSError/EnvironmentError)."""
    chain: list[BaseException] = []
    current: BaseException | None = error
    while current is not None and current not in chain:
        chain.append(current)
        current = current.__cause__ or current.__context__
    return chain


# connection failures of the HTTP clients huggingface_hub uses, by class name (requests, httpx and their forks)
_CONNECTION_ERRORS = frozenset({"ConnectError", "ConnectTimeout", "ConnectionError", "ProxyError", "SSLError"})


def describe_load_failure(builder: Mapping[str, Any], source: Path | str, error: Exception) -> str:
    """One sentence that names the model, what is missing and what to do about it."""
    from huggingface_hub.errors import (  # noqa: PLC0415 - start-up time: the hub client loads only when a model is looked up
        GatedRepoError,
        LocalEntryNotFoundError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    model = builder["model"]
    text = f"{type(error).__name__}: {error}".splitlines()[0][:300]
    if isinstance(source, Path):
        return f"model '{model}' could not be loaded from {source}: {text}"
    chain = _chain(error)
    kinds = tuple(type(e) for e in chain)
    lowered = " ".join(str(e) for e in chain).lower()
    revision = builder.get("revision") or "main"
    if any(issubclass(k, GatedRepoError) for k in kinds) or "gated" in lowered:
        token = "the token in HF_TOKEN" if hub_token() else "no token (set HF_TOKEN or HUGGINGFACE_HUB_ACCESS_TOKEN)"
        return (f"model '{model}' is gated: accept its licence on its hub page, then use a token with access "
                f"(this run had {token})")
    if any(issubclass(k, RevisionNotFoundError) for k in kinds):
        return f"model '{model}' has no revision '{revision}' on the hub: check builder.revision"
    if any(issubclass(k, RepositoryNotFoundError) for k in kinds) or "401" in lowered or "404" in lowered:
        access = "the token has no access" if hub_token() else "no token is set (HF_TOKEN)"
        return f"model '{model}' was not found on the hub, or it is private and {access}: check the repo id"
    if not hub_offline() and (any(issubclass(k, (ConnectionError, TimeoutError, socket.gaierror)) for k in kinds)
                              or any(k.__name__ in _CONNECTION_ERRORS for k in kinds)):
        endpoint = hub_endpoint()
        cause = next(str(e) for e in reversed(chain) if str(e).strip()).splitlines()[0][:120]
        return (f"model '{model}' could not be fetched: the Hugging Face hub ({endpoint}) is unreachable ({cause}) "
                f"and the model is not in the local cache; check the network or proxy, or download it where the hub "
                f"can be reached (`hf download {model}`)")
    if hub_offline() or any(issubclass(k, LocalEntryNotFoundError) for k in kinds) or "offline" in lowered:
        return (f"model '{model}' is not available offline (HF_HUB_OFFLINE is set or the hub is unreachable, "
                f"and it is not in the local Hugging Face cache): download it first with "
                f"`hf download {model}` on a connected machine, or point builder.model at a local folder")
    if "does not appear to have a file named" in lowered or "missing" in lowered:
        return f"model '{model}' (revision {revision}) lacks a file or component diffusers needs: {text}"
    return f"model '{model}' could not be loaded: {text}"
