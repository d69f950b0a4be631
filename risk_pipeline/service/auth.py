"""Bearer-token authentication with roles (reader, trader, operator) for the risk service.

Tokens come from environment variables or a file, never from the command line:

- ``RISK_SERVICE_TOKENS_FILE``: a YAML file ``tokens: [{name: ..., role: ..., token: ...}, ...]``;
- ``RISK_SERVICE_TOKEN_<ROLE>`` (``READER``, ``TRADER``, ``OPERATOR``): one or more tokens separated by commas;
  each is named ``<role>-env-<n>``.

Only SHA-256 digests of the tokens are kept in memory; a presented token is hashed and compared in
constant time. Log lines and error responses name the token (its ``name``) or nothing, never the token.
Roles are not hierarchical: every route lists the roles it admits (``ROUTE_ROLES`` in ``app.py``).
"""

from __future__ import annotations

import hashlib
import hmac
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import yaml

READER = "reader"
TRADER = "trader"
OPERATOR = "operator"
ROLES: tuple[str, ...] = (READER, TRADER, OPERATOR)
#: Shortest token accepted (a guessable token is a configuration error).
MIN_TOKEN_LENGTH = 16


class AuthConfigError(ValueError):
    """The token configuration is unusable (unknown role, short or duplicate token); names the entry, not the token."""


@dataclass(frozen=True)
class Principal:
    """Who called: the token's name and role."""

    name: str
    role: str


def _digest(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


class TokenStore:
    """Digest -> principal; ``authenticate`` returns the principal of a presented token or None."""

    def __init__(self, entries: Mapping[str, Principal] | None = None) -> None:
        self._by_digest: dict[bytes, Principal] = {}
        for token, principal in (entries or {}).items():
            self.add(token, principal)

    def add(self, token: str, principal: Principal) -> None:
        if principal.role not in ROLES:
            raise AuthConfigError(f"token {principal.name!r}: role {principal.role!r} is not one of {ROLES}")
        if len(token) < MIN_TOKEN_LENGTH:
            raise AuthConfigError(f"token {principal.name!r} is shorter than {MIN_TOKEN_LENGTH} characters")
        digest = _digest(token)
        if digest in self._by_digest:
            raise AuthConfigError(f"token {principal.name!r} is the same as token {self._by_digest[digest].name!r}")
        self._by_digest[digest] = principal

    def __len__(self) -> int:
        return len(self._by_digest)

    def authenticate(self, token: str) -> Principal | None:
        digest = _digest(token)
        found = None
        for known, principal in self._by_digest.items():  # constant time per entry, no early exit
            if hmac.compare_digest(known, digest):
                found = principal
        return found


def load_tokens(environ: Mapping[str, str] | None = None) -> TokenStore:
    """Tokens from ``RISK_SERVICE_TOKENS_FILE`` and ``RISK_SERVICE_TOKEN_<ROLE>`` (see the module docstring)."""
    env = os.environ if environ is None else environ
    store = TokenStore()
    path = env.get("RISK_SERVICE_TOKENS_FILE")
    if path:
        data = yaml.safe_load(Path(path).read_text()) or {}
        for i, entry in enumerate(data.get("tokens", [])):
            if not isinstance(entry, dict) or not {"name", "role", "token"} <= set(entry):
                raise AuthConfigError(f"{path}: tokens[{i}] needs name, role and token")
            store.add(str(entry["token"]), Principal(str(entry["name"]), str(entry["role"])))
    for role in ROLES:
        raw = env.get(f"RISK_SERVICE_TOKEN_{role.upper()}", "")
        for n, token in enumerate(t.strip() for t in raw.split(",") if t.strip()):
            store.add(token, Principal(f"{role}-env-{n + 1}", role))
    return store


def bearer_token(authorization: str | None) -> str | None:
    """The token of an ``Authorization: Bearer <token>`` header (None when absent or another scheme)."""
    if not authorization:
        return None
    scheme, _, value = authorization.partition(" ")
    if scheme.lower() != "bearer" or not value.strip():
        return None
    return value.strip()
