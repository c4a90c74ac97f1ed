"""Sign-in routes: a purchase or a Google account in, a session token out.

    POST /appstore                    body: a StoreKit 2 signed transaction (JWS), or a legacy base64 app receipt
                                      -> {"token", "expires_at"}                         (Pico AI Proxy's path)
    GET  /token?credential=<Google ID token>, POST /token {"credential"} (JSON or a form)
                                      -> {"token", "email", "expires_at"}                 (AI Proxy's path)
    POST /admin/sessions              {"email" | "user_id", "ttl_sec"} with the admin key -> a session for a user

Each stage is decided elsewhere: the purchase (accounts/appstore.py), the Google account
(accounts/google_signin.py), who that is in the store (accounts/signin_users.py), the token
(accounts/sessions.py). Here: the order, the limits and the answers. Every attempt is counted per address
in the store first (`SIGNIN_PER_MINUTE`, 429 beyond), bodies over `MAX_SIGNIN_BODY_BYTES` get 413, the
synchronous verification libraries run in a worker thread, and every refusal is `{"error": "..."}` with
its status, never a 500 and never what was sent.
"""

from __future__ import annotations

import json
import logging
import math
import re
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs

import anyio.to_thread
from litestar import Controller, Request, Response, get, post
from redis.exceptions import RedisError

from accounts.apple_roots import apple_root_certificates
from accounts.appstore import AppStoreConfig, AppStoreSignIn
from accounts.google_signin import GoogleConfig, GoogleSignIn
from accounts.schema import AccountsSchema
from accounts.sessions import SessionBook, Sessions
from accounts.signin_users import SignInRefused, SignInUsers
from gateway.admin import AdminController, AdminError, require_admin
from gateway.settings import Settings

log = logging.getLogger("poolgate.signin")

MAX_SIGNIN_BODY_BYTES = 256 * 1024  # a signed transaction is ~4 KB, a receipt with years of renewals ~100 KB
_USER_ID = re.compile(r"^[0-9a-f]{16}$")


@dataclass
class SignIn:
    """What the sign-in routes work with, built once at start-up (`build_signin`)."""

    settings: Settings
    store: Any
    sessions: Sessions | None  # None: no JWT_SECRET, no sessions
    book: SessionBook
    users: SignInUsers
    app_store: AppStoreSignIn | None  # None: GATEKEEPER has no app_store
    google: GoogleSignIn | None  # None: GATEKEEPER has no google


def build_signin(s: Settings, store: Any) -> SignIn:
    """The sign-in services GATEKEEPER asks for, and sessions when JWT_SECRET is set."""
    schema = AccountsSchema(s.redis_prefix)
    modes = s.gatekeeper_modes
    app_store = None
    if "app_store" in modes:
        roots = apple_root_certificates(s.apple_root_certs_dir)  # some there: settings checked it at start-up
        if s.app_store_allow_xcode:
            log.warning("APP_STORE_ALLOW_XCODE=true: Xcode and local-testing purchases are accepted WITHOUT any "
                        "signature check; anyone can forge one and get a session. Never in production.")
        if not s.app_apple_id:
            log.warning("APP_APPLE_ID is unset: only sandbox (TestFlight) purchases can sign in")
        app_store = AppStoreSignIn(AppStoreConfig(
            s.app_bundle_id, s.app_apple_id, tuple(roots), online_checks=s.app_store_online_checks,
            allow_xcode=s.app_store_allow_xcode, api_url=s.app_store_api_url, iap_private_key=s.iap_private_key,
            iap_key_id=s.iap_key_id, iap_issuer_id=s.iap_issuer_id,
        ))
    google = None
    if "google" in modes:
        google = GoogleSignIn(GoogleConfig(s.google_client_id, s.google_allowed_domains, s.google_certs_url))
    sessions = Sessions(s.jwt_secret, s.session_ttl_sec) if s.jwt_secret else None
    return SignIn(s, store, sessions, SessionBook(store, schema), SignInUsers(store, schema), app_store, google)


def _signin(request: Request[Any, Any, Any]) -> SignIn:
    signin: SignIn = request.app.state.admin_services.signin  # set at start-up
    return signin


def _refusal(status: int, message: str, headers: dict[str, str] | None = None) -> Response[Any]:
    return Response({"error": message}, status_code=status, headers={"Cache-Control": "no-store", **(headers or {})})


async def _guarded(request: Request[Any, Any, Any], work: Any) -> Response[Any]:
    """Count the attempt against the address's limit, then run `work`; every failure an `{"error"}` answer."""
    signin = _signin(request)
    address = request.client.host if request.client else "unknown"
    try:
        wait_ms = await signin.users.retry_after_ms(address, signin.settings.signin_per_minute)
        if wait_ms:
            wait = max(1, math.ceil(wait_ms / 1000))
            return _refusal(429, f"Too many sign-in attempts from this address; try again in {wait} s.",
                            {"Retry-After": str(wait)})
        answer: dict[str, Any] = await work(signin)
        return Response(answer, headers={"Cache-Control": "no-store"})
    except SignInRefused as refused:
        return _refusal(refused.status, refused.message)
    except RedisError as error:
        log.warning("sign-in: the store did not answer: %s", type(error).__name__)
        return _refusal(503, "The gateway cannot reach its store right now. Try again in a moment.")
    except Exception as error:  # never a traceback to the client: the type name to the operator
        log.error("sign-in failed unexpectedly: %s", type(error).__name__)
        return _refusal(503, "Sign-in failed on the gateway's side; try again in a moment.")


async def _body(request: Request[Any, Any, Any]) -> bytes:
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > MAX_SIGNIN_BODY_BYTES:
        raise _too_large()
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > MAX_SIGNIN_BODY_BYTES:
            raise _too_large()
        chunks.append(chunk)
    return b"".join(chunks)


def _too_large() -> SignInRefused:
    return SignInRefused(413, f"The body is larger than sign-in accepts ({MAX_SIGNIN_BODY_BYTES} bytes).")


def _text(raw: bytes, what: str) -> str:
    try:
        text = raw.decode("ascii").strip()
    except UnicodeDecodeError:
        raise SignInRefused(400, f"The {what} must be ASCII text.") from None
    if not text:
        raise SignInRefused(400, f"Send the {what} as the body.")
    return text


async def _session_for(signin: SignIn, method: str, subject: str, nickname: str, email: str = "") -> tuple[str, int]:
    assert signin.sessions is not None, "sessions are checked at start-up for every sign-in mode"
    user = await signin.users.find_or_create(method, subject, nickname=nickname, email=email,
                                             default_quotas=signin.settings.token_quotas())
    if user.created:
        log.info("sign-in: new user %s (%s)", user.user_id, method)
    return signin.sessions.mint(user.user_id, user.generation, method)


@post("/appstore", status_code=200, include_in_schema=False)
async def app_store_sign_in(request: Request[Any, Any, Any]) -> Response[Any]:
    """A purchase in, a session out: 401 when the purchase is not a live one of this app."""
    async def work(signin: SignIn) -> dict[str, Any]:
        if signin.app_store is None:
            raise SignInRefused(404, "App Store sign-in is off on this proxy (GATEKEEPER has no app_store).")
        body = _text(await _body(request), "signed transaction")
        seconds, micros = await signin.store.time()  # the store's clock: a purchase expires the same for all
        purchase = await anyio.to_thread.run_sync(
            signin.app_store.verify, body, int(seconds) * 1000 + int(micros) // 1000)
        token, expires_at = await _session_for(signin, "app_store", purchase.subject,
                                               f"App Store {purchase.subject[:8]}")
        return {"token": token, "expires_at": expires_at}
    return await _guarded(request, work)


@get("/token", include_in_schema=False)
async def google_sign_in_get(request: Request[Any, Any, Any]) -> Response[Any]:
    """A Google ID token (`?credential=`) in, a session out."""
    async def work(signin: SignIn) -> dict[str, Any]:
        return await _google(signin, request.query_params.get("credential") or "")
    return await _guarded(request, work)


@post("/token", status_code=200, include_in_schema=False)
async def google_sign_in_post(request: Request[Any, Any, Any]) -> Response[Any]:
    """The same, the credential posted as JSON `{"credential"}` or as a form (Google's button posts one)."""
    async def work(signin: SignIn) -> dict[str, Any]:
        raw = await _body(request)
        if "json" in request.headers.get("content-type", ""):
            try:
                document = json.loads(raw)
            except ValueError:
                raise SignInRefused(400, 'The body must be JSON like {"credential": "..."}.') from None
            credential = document.get("credential") if isinstance(document, dict) else None
        else:
            credential = (parse_qs(raw.decode("latin-1")).get("credential") or [""])[0]
        return await _google(signin, credential if isinstance(credential, str) else "")
    return await _guarded(request, work)


async def _google(signin: SignIn, credential: str) -> dict[str, Any]:
    if signin.google is None:
        raise SignInRefused(404, "Google sign-in is off on this proxy (GATEKEEPER has no google).")
    if not credential.strip():
        raise SignInRefused(400, "Send the Google ID token as `credential`.")
    account = await anyio.to_thread.run_sync(signin.google.verify, credential.strip())
    token, expires_at = await _session_for(signin, "google", account.email, account.email, email=account.email)
    return {"token": token, "email": account.email, "expires_at": expires_at}


class AdminSessionsController(Controller):
    """`POST /admin/sessions`: hand a session to a user, as AI Proxy's admins did for an email."""

    path = "/admin/sessions"
    guards = [require_admin]
    tags = ["admin: users"]
    security = [{"AdminKey": []}]
    exception_handlers = AdminController.exception_handlers

    @post("/", status_code=201)
    async def mint_session(self, request: Request[Any, Any, Any]) -> dict[str, Any]:
        """A session for a user: body {"user_id": "..."} or {"email": "..."} (a Google user, created if new),
        and "ttl_sec" (optional; default SESSION_TTL_SEC). The token is shown this once."""
        signin = _signin(request)
        if signin.sessions is None:
            raise AdminError(400, "invalid_request_error", "Sessions need JWT_SECRET (at least 32 characters).")
        body = await _admin_body(request)
        ttl = body.get("ttl_sec", signin.settings.session_ttl_sec)
        if isinstance(ttl, bool) or not isinstance(ttl, int) or not 0 < ttl <= 366 * 86400:
            raise AdminError(400, "invalid_request_error", "Invalid ttl_sec: seconds, from 1 to a year.")
        user_id, email = body.get("user_id"), body.get("email")
        if (user_id is None) == (email is None):
            raise AdminError(400, "invalid_request_error", 'Send one of "user_id" or "email".')
        if user_id is not None:
            if not isinstance(user_id, str) or not _USER_ID.match(user_id):
                raise AdminError(404, "not_found_error", "No such user: user ids are 16 hex digits.")
            generation = await signin.book.generation(user_id)
            if generation is None:
                raise AdminError(404, "not_found_error", "No user with that id.")
        else:
            if not isinstance(email, str) or not re.fullmatch(r"[^@\s]{1,64}@[^@\s]{1,255}", email):
                raise AdminError(400, "invalid_request_error", "Invalid email.")
            user = await signin.users.find_or_create("google", email.lower(), nickname=email.lower(),
                                                     email=email.lower(), default_quotas=signin.settings.token_quotas())
            user_id, generation = user.user_id, user.generation
        token, expires_at = signin.sessions.mint(user_id, generation, "admin", ttl)
        log.info("admin API: made a session for user %s", user_id)
        return {"token": token, "user_id": user_id, "expires_at": expires_at}


async def _admin_body(request: Request[Any, Any, Any]) -> dict[str, Any]:
    try:
        body = json.loads(await request.body())
    except ValueError:
        body = None
    if not isinstance(body, dict):
        raise AdminError(400, "invalid_request_error", 'The body must be a JSON object like {"email": "..."}.')
    return body


signin_routes = [app_store_sign_in, google_sign_in_get, google_sign_in_post]
