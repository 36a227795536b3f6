"""Who may use the service: the API key, read from a file or the environment and compared in constant time."""

from __future__ import annotations

import hmac

from silhouette.wire import DEFAULT_API_KEY_ENV, load_api_key

__all__ = ["DEFAULT_API_KEY_ENV", "key_problem", "load_api_key", "service_key"]


def key_problem(given: bytes | None, expected: bytes | None) -> str | None:
    """Why a request's API key is refused ('missing' or 'wrong'), or None when it may pass (or auth is off)."""
    if expected is None:
        return None
    if given is None:
        return "missing"
    return None if hmac.compare_digest(given, expected) else "wrong"


def service_key(no_auth: bool, env_name: str | None, file: str | None) -> str | None:
    """The key this service requires (None with --no-auth), read in the process that serves."""
    return None if no_auth else load_api_key(env_name, file)
