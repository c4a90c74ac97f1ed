"""The admin API for keys, under `/admin`: list, add, remove, disable, enable, recheck — without a restart.

Every change is made in the shared store, so every gateway process sees it at
once. The caller proves itself with `Authorization: Bearer <ADMIN_KEY>`
(compared in constant time); an address that fails `ADMIN_LOCKOUT_FAILURES`
times is locked out for `ADMIN_LOCKOUT_SEC`, counted in the store so all
processes agree. With `ADMIN_KEY` unset the API answers 404, as if absent.

Keys only ever appear masked (`sk-...abcd`); errors never repeat what the
caller sent, since that may be a key. Errors are `{"error": {"message", "type"}}`.
"""

from __future__ import annotations

import hmac
import logging
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from litestar import Controller, Request, Response, Router, delete, get, post, route
from litestar.connection import ASGIConnection
from litestar.exceptions import HTTPException, ValidationException
from litestar.handlers.base import BaseRouteHandler
from litestar.openapi import OpenAPIConfig
from litestar.openapi.spec import Components, SecurityScheme
from litestar.params import FromPath, JSONBody
from redis.exceptions import RedisError

from gateway import __version__
from gateway.admin_guard import AdminGuard
from keypool.inventory import KeyInventory
from keypool.keys import PROVIDERS, parse_keys
from keypool.schema import PoolSchema

if TYPE_CHECKING:
    from gateway.key_checks import KeyChecks
    from gateway.settings import Settings

log = logging.getLogger("poolgate.admin")

_KEY_ID = re.compile(r"^[0-9a-f]{12}$")
MAX_KEYS_PER_REQUEST = 1000


class AdminError(Exception):
    def __init__(self, status: int, kind: str, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.kind = kind
        self.message = message
        self.headers = headers or {}


class AdminServices(Protocol):
    """What the admin API works with, handed to it when the app is built (the app itself satisfies it)."""

    settings: Settings
    store: Any
    key_checks: KeyChecks


def _poolgate(connection: ASGIConnection[Any, Any, Any, Any]) -> AdminServices:
    services: AdminServices = connection.app.state.admin_services  # set when the app is built
    return services


async def require_admin(connection: ASGIConnection[Any, Any, Any, Any], handler: BaseRouteHandler) -> None:
    """Let the request through only with the admin key, from an address that is not locked out.

    The lockout is checked and a failure counted in one store script, so any number of concurrent
    wrong guesses from an address gets exactly `ADMIN_LOCKOUT_FAILURES` of them checked.
    """
    app = _poolgate(connection)
    s = app.settings
    if not s.admin_key:
        raise AdminError(404, "not_found_error", "The admin API is off: set ADMIN_KEY to turn it on.")
    address = connection.client.host if connection.client else "unknown"
    scheme, _sep, given = connection.headers.get("authorization", "").partition(" ")
    right = scheme.lower() == "bearer" and hmac.compare_digest(given.strip().encode(), s.admin_key.encode())
    verdict = await AdminGuard.for_store(app.store).judge(
        s.redis_prefix, address, wrong=not right, max_failures=s.admin_lockout_failures,
        lockout_sec=s.admin_lockout_sec,
    )
    if verdict.locked:
        raise AdminError(
            429, "rate_limit_error", "Too many failed admin logins from this address; try again later.",
            {"Retry-After": str(verdict.retry_after_sec)},
        )
    if right:
        return
    log.warning("admin API: wrong or missing admin key from %s (%d failed)", address, verdict.failures)
    raise AdminError(
        401, "authentication_error", "This needs the admin key: Authorization: Bearer <ADMIN_KEY>.",
        {"WWW-Authenticate": "Bearer"},
    )


async def require_admin_on(connection: ASGIConnection[Any, Any, Any, Any], _: BaseRouteHandler) -> None:
    """The admin docs need no key (they hold nothing secret), but with the admin API off they are absent too."""
    if not _poolgate(connection).settings.admin_key:
        raise AdminError(404, "not_found_error", "The admin API is off: set ADMIN_KEY to turn it on.")


def _error_response(status: int, kind: str, message: str, headers: dict[str, str] | None = None) -> Response[Any]:
    return Response({"error": {"message": message, "type": kind}}, status_code=status, headers=headers)


def _on_admin_error(_: Request[Any, Any, Any], exc: AdminError) -> Response[Any]:
    return _error_response(exc.status, exc.kind, exc.message, exc.headers)


def _on_store_error(_: Request[Any, Any, Any], exc: RedisError) -> Response[Any]:
    # A Redis that is down or restarting: say so (503, try again), as the proxy routes do, not a bare 500.
    log.warning("admin API: the store did not answer: %s", type(exc).__name__)
    message = "The gateway cannot reach its store right now. Try again in a moment."
    return _error_response(503, "store_unavailable", message)


def _on_validation_error(_: Request[Any, Any, Any], exc: ValidationException) -> Response[Any]:
    # Only field names and msgspec's type messages: never the values, which may be keys.
    problems = [
        f"{item.get('key') or 'body'}: {item.get('message')}"
        for item in (exc.extra if isinstance(exc.extra, list) else [])
        if isinstance(item, dict)
    ]
    detail = "; ".join(problems) or "expected a JSON object like {\"provider\": \"openai\", \"keys\": [\"sk-...\"]}"
    return _error_response(400, "invalid_request_error", f"Invalid request body: {detail}")


def _on_too_deep(_: Request[Any, Any, Any], exc: RecursionError) -> Response[Any]:
    # The JSON decoder gives up on a body nested thousands deep (`[[[[...`): the client's mistake, not ours.
    return _error_response(400, "invalid_request_error", "The request body is nested too deeply.")


def _on_http_error(_: Request[Any, Any, Any], exc: HTTPException) -> Response[Any]:
    if exc.status_code == 404:
        return _error_response(404, "not_found_error", "No such admin endpoint; see /admin/docs.")
    if exc.status_code == 400:
        return _error_response(400, "invalid_request_error", "The request body must be JSON, as /admin/docs shows.")
    return _error_response(exc.status_code, "invalid_request_error", f"Request refused ({exc.status_code}).")


# The OpenAPI document (and its viewers) at /admin/docs; it describes the API and holds nothing secret.
# Every path under it answers 404, like the rest of /admin, when ADMIN_KEY is unset.
ADMIN_OPENAPI_CONFIG = OpenAPIConfig(
    title="poolgate",
    version=__version__,
    description="The admin API for keys: `Authorization: Bearer <ADMIN_KEY>`.",
    path="/admin/docs",
    components=Components(security_schemes={"AdminKey": SecurityScheme(type="http", scheme="bearer")}),
    openapi_router=Router(
        path="/admin/docs", route_handlers=[], guards=[require_admin_on],
        exception_handlers={AdminError: _on_admin_error},
    ),
)


@dataclass
class AddKeys:
    """Keys to add to the pool. OpenAI keys may be written `sk-...:org-...` to pin an organization."""

    provider: str
    keys: list[str]


class AdminController(Controller):
    path = "/admin"
    guards = [require_admin]
    tags = ["admin"]
    security = [{"AdminKey": []}]
    exception_handlers = {
        AdminError: _on_admin_error,
        RedisError: _on_store_error,
        ValidationException: _on_validation_error,
        HTTPException: _on_http_error,
        RecursionError: _on_too_deep,
    }

    @get("/keys")
    async def list_keys(self, request: Request[Any, Any, Any]) -> dict[str, Any]:
        """Every key: masked, with status, families, in flight, usage, and its last check and result."""
        return {"keys": await _inventory(request).describe()}

    @get("/keys/{key_id:str}")
    async def get_key(self, request: Request[Any, Any, Any], key_id: FromPath[str]) -> dict[str, Any]:
        """One key, as in the list."""
        return {"key": (await _views(request, [_known_id(key_id)]))[0]}

    @post("/keys", status_code=201)
    async def add_keys(self, request: Request[Any, Any, Any], data: JSONBody[AddKeys]) -> dict[str, Any]:
        """Add keys (checked at once); keys already in the pool are left as they are."""
        return await add_pool_keys(request, data.provider, data.keys)

    @delete("/keys/{key_id:str}", status_code=200)
    async def remove_key(self, request: Request[Any, Any, Any], key_id: FromPath[str]) -> dict[str, Any]:
        """Remove a key (and its entries for other organizations). A configured key returns at the next start
        unless it is also removed from OPENAI_KEY / ANTHROPIC_KEY; disable it to keep it out for good."""
        return {"removed": await remove_pool_key(request, key_id)}

    @post("/keys/{key_id:str}/disable", status_code=200)
    async def disable_key(self, request: Request[Any, Any, Any], key_id: FromPath[str]) -> dict[str, Any]:
        """Take a key out of service until enabled; traffic and checks never bring it back."""
        return await set_key_disabled(request, key_id, True)

    @post("/keys/{key_id:str}/enable", status_code=200)
    async def enable_key(self, request: Request[Any, Any, Any], key_id: FromPath[str]) -> dict[str, Any]:
        """Put a key back in service (whatever its status) and check it."""
        return await set_key_disabled(request, key_id, False)

    @post("/keys/{key_id:str}/recheck", status_code=202)
    async def recheck_key(self, request: Request[Any, Any, Any], key_id: FromPath[str]) -> dict[str, Any]:
        """Check one key now; its `last_check` shows the result when done."""
        return await recheck_keys(request, [key_id])

    @post("/keys/recheck", status_code=202)
    async def recheck_all(self, request: Request[Any, Any, Any]) -> dict[str, Any]:
        """Check every key now."""
        return await recheck_keys(request, None)

    @route("/{rest:path}", http_method=["GET", "POST", "PUT", "PATCH", "DELETE"], include_in_schema=False)
    async def unknown(self, rest: FromPath[str]) -> None:
        """Anything else under /admin: a 404 in the admin API's own shape (after the admin key is checked)."""
        raise AdminError(404, "not_found_error", "No such admin endpoint; see /admin/docs.")


def _inventory(request: Request[Any, Any, Any]) -> KeyInventory:
    app = _poolgate(request)
    return KeyInventory(app.store, PoolSchema(app.settings.redis_prefix))


def _known_id(key_id: FromPath[str]) -> str:
    # Never echo what does not look like a key id: an operator may paste a secret here by mistake.
    if not _KEY_ID.match(key_id):
        raise AdminError(404, "not_found_error", "No such key: key ids are 12 hex digits, as GET /admin/keys lists.")
    return key_id


def _not_found() -> AdminError:
    return AdminError(404, "not_found_error", "No key with that id.")


async def _views(request: Request[Any, Any, Any], key_ids: list[str]) -> list[dict[str, Any]]:
    views = await _inventory(request).describe(key_ids)
    if not views:
        raise _not_found()
    return views


# The actions themselves, one implementation each: the API above and the admin pages (web/admin_pages.py) call them.


async def add_pool_keys(request: Request[Any, Any, Any], provider: str, keys: list[str]) -> dict[str, Any]:
    """Add keys (checked at once); keys already in the pool are left as they are. AdminError (400) names a bad one
    by its number, never by its text."""
    if provider not in PROVIDERS:
        raise AdminError(400, "invalid_request_error", "provider must be \"openai\" or \"anthropic\".")
    if not keys or len(keys) > MAX_KEYS_PER_REQUEST:
        raise AdminError(400, "invalid_request_error", f"keys must list 1 to {MAX_KEYS_PER_REQUEST} keys.")
    for number, entry in enumerate(keys, start=1):
        if not entry.strip() or any(ch.isspace() or not ch.isprintable() for ch in entry.strip()):
            raise AdminError(
                400, "invalid_request_error", f"key #{number} is empty or contains spaces or control characters."
            )
    inventory = _inventory(request)
    added, present = await inventory.add(parse_keys(provider, keys))
    app = _poolgate(request)
    await app.key_checks.request(added)
    log.info("admin API: added %d %s key(s) %s", len(added), provider, ", ".join(added))
    return {
        "added": await inventory.describe(added),
        "already_present": await inventory.describe(present),
        "check": "scheduled" if added and app.key_checks.enabled else "off" if added else "none",
    }


async def remove_pool_key(request: Request[Any, Any, Any], key_id: str) -> list[str]:
    """Remove a key and the entries split off it; the ids removed."""
    removed = await _inventory(request).remove(_known_id(key_id))
    if removed is None:
        raise _not_found()
    log.info("admin API: removed key(s) %s", ", ".join(removed))
    return removed


async def set_key_disabled(request: Request[Any, Any, Any], key_id: str, disabled: bool) -> dict[str, Any]:
    """Disable a key, or enable it and check it."""
    kid = _known_id(key_id)
    if not await _inventory(request).set_disabled(kid, disabled):
        raise _not_found()
    log.info("admin API: key %s %s", kid, "disabled" if disabled else "enabled")
    if not disabled:
        await _poolgate(request).key_checks.request([kid])
    return {"key": (await _views(request, [kid]))[0]}


async def recheck_keys(request: Request[Any, Any, Any], key_ids: list[str] | None) -> dict[str, Any]:
    """Check the given keys now (None: every key)."""
    if key_ids is None:
        key_ids = await _inventory(request).key_ids()
    else:
        key_ids = [_known_id(kid) for kid in key_ids]
        for kid in key_ids:
            if not await _inventory(request).exists(kid):
                raise _not_found()
    checks = _poolgate(request).key_checks
    if not checks.enabled:
        raise AdminError(409, "invalid_request_error", "Key checks are off (CHECK_KEYS=false).")
    await checks.request(key_ids)
    return {"scheduled": key_ids}
