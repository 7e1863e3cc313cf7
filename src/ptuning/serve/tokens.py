"""The server's tokens, and how a presented one is checked (light: the CLI imports it for its options).

A token arrives as ``Authorization: Bearer <token>`` and is compared in constant time
(:func:`hmac.compare_digest`) against every accepted token, so the time taken tells neither which one nor
how much of it matched.
"""

from __future__ import annotations

import hmac
from dataclasses import dataclass

from ..errors import PTuningError

ADMIN_ENV = "PTUNING_ADMIN_TOKEN"
PREDICT_ENV = "PTUNING_PREDICT_TOKEN"
MIN_TOKEN_CHARS = 16


@dataclass(frozen=True)
class Tokens:
    """``admin``: required by POST/DELETE /v1/tasks (None: management is off). ``predict``: if set, required by
    /v1/predict (the admin token is accepted there too)."""

    admin: str | None = None
    predict: str | None = None

    def __post_init__(self) -> None:
        for role, token in (("admin", self.admin), ("prediction", self.predict)):
            if token is not None and len(token) < MIN_TOKEN_CHARS:
                raise PTuningError(
                    f"the {role} token is too short: use at least {MIN_TOKEN_CHARS} characters "
                    "(e.g. python -c 'import secrets; print(secrets.token_urlsafe(32))')"
                )

    def admin_refusal(self, authorization: str | None) -> tuple[int, str] | None:
        """``(status, reason)`` when ``authorization`` (the header) may not manage tasks; None when it may."""
        if self.admin is None:
            return 403, f"task management is disabled: start the server with --admin-token or {ADMIN_ENV}"
        return _refusal(authorization, (self.admin,), "admin")

    def predict_refusal(self, authorization: str | None) -> tuple[int, str] | None:
        if self.predict is None:
            return None
        return _refusal(authorization, tuple(t for t in (self.predict, self.admin) if t is not None), "prediction")

    def is_admin(self, authorization: str | None) -> bool:
        return self.admin is not None and _refusal(authorization, (self.admin,), "admin") is None


def bearer(authorization: str | None) -> str | None:
    scheme, _, value = (authorization or "").partition(" ")
    return value.strip() if scheme.lower() == "bearer" and value.strip() else None


def _refusal(authorization: str | None, accepted: tuple[str, ...], role: str) -> tuple[int, str] | None:
    presented = bearer(authorization)
    if presented is None:
        return 401, f"this endpoint needs the {role} token: send 'Authorization: Bearer <token>'"
    given = presented.encode("utf-8", "surrogateescape")
    matches = [hmac.compare_digest(given, token.encode("utf-8")) for token in accepted]  # all of them, no early exit
    return None if any(matches) else (403, f"wrong {role} token")
