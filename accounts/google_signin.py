"""Google sign-in: is this a Google ID token for our client, of a verified email in an allowed domain?

`google-auth` checks the signature against Google's certificates (`GOOGLE_CERTS_URL`), the audience
(`GOOGLE_CLIENT_ID`) and the token's times. What it does not check is checked here: the issuer must be
Google's (`verify_token` with a certs URL skips it), the email verified, and its domain in
`GOOGLE_ALLOWED_DOMAINS` when that is set. Google's certificates are fetched once and kept as long as
Google's `Cache-Control` says (google-auth would fetch them on every call).

Synchronous, as google-auth is: the gateway runs it in a worker thread.
"""

from __future__ import annotations

import logging
import re
import threading
import time
from dataclasses import dataclass
from typing import Any

import google.auth.exceptions
import google.auth.transport
import google.auth.transport.requests
import jwt
from google.oauth2 import id_token

from accounts.signin_users import SignInRefused

log = logging.getLogger("poolgate.signin")
GOOGLE_ISSUERS = frozenset({"accounts.google.com", "https://accounts.google.com"})
DEFAULT_CERTS_MAX_AGE_SEC = 3600.0


@dataclass(frozen=True, slots=True)
class GoogleConfig:
    client_id: str
    allowed_domains: tuple[str, ...] = ()
    certs_url: str = "https://www.googleapis.com/oauth2/v1/certs"


@dataclass(frozen=True, slots=True)
class GoogleAccount:
    email: str  # lower-cased: one person, one user


class GoogleSignIn:
    def __init__(self, config: GoogleConfig) -> None:
        self._config = config
        self._domains = frozenset(d.strip().lower().lstrip("@") for d in config.allowed_domains if d.strip())
        self._certs = CachedCerts()

    def verify(self, credential: str) -> GoogleAccount:
        """The Google account the ID token proves, or SignInRefused (401 not a valid token, 403 not allowed)."""
        try:
            claims = id_token.verify_token(credential, self._certs, audience=self._config.client_id,
                                           certs_url=self._config.certs_url, clock_skew_in_seconds=10)
        except google.auth.exceptions.TransportError as problem:
            log.warning("Google sign-in: Google's certificates could not be fetched: %s", type(problem).__name__)
            raise SignInRefused(502, "Google's certificates could not be fetched; try again.") from None
        except (google.auth.exceptions.GoogleAuthError, jwt.PyJWTError, ValueError, KeyError, TypeError):
            # A bad signature, another audience, an expired token, or not a token at all.
            raise SignInRefused(401, "This Google credential is not valid (or has expired): sign in again.") \
                from None
        if claims.get("iss") not in GOOGLE_ISSUERS:
            raise SignInRefused(401, "This credential was not issued by Google.")
        email = claims.get("email")
        if not isinstance(email, str) or "@" not in email:
            raise SignInRefused(401, "This Google credential carries no email address.")
        if claims.get("email_verified") is not True and claims.get("email_verified") != "true":
            raise SignInRefused(403, "This Google account's email address is not verified.")
        domain = email.rsplit("@", 1)[1].lower()
        if self._domains and domain not in self._domains:
            raise SignInRefused(403, f"Accounts of {domain} may not sign in here.")
        return GoogleAccount(email.lower())


@dataclass(frozen=True, slots=True)
class _Response:
    status: int
    data: bytes
    headers: dict[str, str]


class CachedCerts(google.auth.transport.Request):
    """A google-auth transport that keeps each successful GET for its Cache-Control max-age."""

    def __init__(self) -> None:
        self._transport = google.auth.transport.requests.Request()
        self._kept: dict[str, tuple[float, _Response]] = {}
        self._lock = threading.Lock()  # worker threads share it: one fetch at a time

    def __call__(self, url: str, method: str = "GET", body: Any = None, headers: Any = None, timeout: Any = None,
                 **kwargs: Any) -> _Response:
        with self._lock:
            kept = self._kept.get(url)
            if method == "GET" and kept is not None and kept[0] > time.monotonic():
                return kept[1]
            response = self._transport(url, method=method, body=body, headers=headers, timeout=timeout or 10, **kwargs)
            answer = _Response(response.status, response.data, dict(response.headers))
            if method == "GET" and answer.status == 200:
                self._kept[url] = (time.monotonic() + _max_age(answer.headers), answer)
            return answer


def _max_age(headers: dict[str, str]) -> float:
    control = next((v for k, v in headers.items() if k.lower() == "cache-control"), "")
    found = re.search(r"max-age=(\d+)", control)
    return float(found.group(1)) if found else DEFAULT_CERTS_MAX_AGE_SEC
