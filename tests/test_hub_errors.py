"""Hub failures become one sentence naming the model and what to do, whatever wraps them."""

from __future__ import annotations

import pytest
from huggingface_hub.errors import GatedRepoError, LocalEntryNotFoundError, RepositoryNotFoundError

from diffsweep.providers.base import describe_load_failure, hub_token

pytestmark = pytest.mark.quick  # unit tests: part of make test-fast

BUILDER = {"model": "org/model", "revision": None}


def _http(kind: type, message: str) -> Exception:
    """A hub HTTP error of the real class; built without an HTTP response, which only its constructor needs."""
    error = kind.__new__(kind)
    Exception.__init__(error, message)
    return error


def _wrapped(error: Exception) -> Exception:
    """diffusers re-raises hub errors as OSError; the cause stays attached."""
    try:
        try:
            raise error
        except Exception as inner:
            raise OSError("Can't load the model for 'org/model'.") from inner
    except OSError as outer:
        return outer


@pytest.fixture(autouse=True)
def online(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("HF_HUB_OFFLINE", "HF_TOKEN", "HUGGINGFACE_HUB_ACCESS_TOKEN"):
        monkeypatch.delenv(name, raising=False)


def test_gated_repo_says_accept_the_licence_and_whether_a_token_was_used(monkeypatch: pytest.MonkeyPatch) -> None:
    error = _wrapped(_http(GatedRepoError, "Access to model org/model is restricted."))
    assert "is gated: accept its licence" in describe_load_failure(BUILDER, "org/model", error)
    assert "no token (set HF_TOKEN" in describe_load_failure(BUILDER, "org/model", error)
    monkeypatch.setenv("HUGGINGFACE_HUB_ACCESS_TOKEN", "hf_alias")
    assert hub_token() == "hf_alias"
    assert "the token in HF_TOKEN" in describe_load_failure(BUILDER, "org/model", error)


def test_missing_repo_says_check_the_id() -> None:
    message = describe_load_failure(BUILDER, "org/model", _wrapped(_http(RepositoryNotFoundError, "404 Client Error")))
    assert message == ("model 'org/model' was not found on the hub, or it is private and no token is set "
                       "(HF_TOKEN): check the repo id")


def test_offline_cache_miss_says_how_to_download(monkeypatch: pytest.MonkeyPatch) -> None:
    message = describe_load_failure(BUILDER, "org/model", _wrapped(LocalEntryNotFoundError("cannot find")))
    assert "is not available offline" in message and "hf download org/model" in message
    assert "\n" not in message
