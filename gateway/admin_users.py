"""The admin API for users, under `/admin/users`: the same admin key, lockout, errors and OpenAPI as the key routes.

    POST   /admin/users                      create; the answer holds the token, this once
    GET    /admin/users                      ?page=&per_page=&sort=&order=&type=&disabled=&nickname=
    GET    /admin/users/export               every user, with token hashes (accounts/import_export.py says why)
    POST   /admin/users/import               poolgate's export or the OAI Reverse Proxy's; all or nothing
    GET|PATCH|DELETE /admin/users/{id}
    POST   /admin/users/{id}/disable         {"reason": "..."}
    POST   /admin/users/{id}/enable          also lifts the rate limiter's ban on the user
    POST   /admin/users/{id}/rotate-token    a new token, this once; the old one stops working at once
    POST   /admin/users/{id}/refresh-quota
    POST   /admin/users/{id}/revoke-sessions  every session token of the user stops working at once

Bodies are read here so a bad one gets 400 naming the field. No answer holds a
token or a token hash, except the one-time token of create and rotate-token and
the export's hashes; errors never repeat what was sent.
"""

from __future__ import annotations

import json
import logging
import re
from typing import Any

from litestar import Controller, Request, delete, get, patch, post
from litestar.params import FromPath

from accounts.import_export import ImportProblem, apply_import, export_document, read_import
from accounts.schema import AccountsSchema
from accounts.sessions import SessionBook
from accounts.users import MAX_REASON_CHARS, SORTS, USER_TYPES, UserBook, UserInputError, checked_text, read_user_fields
from gateway.admin import AdminController, AdminError, require_admin
from gateway.settings import Settings

log = logging.getLogger("poolgate.admin")

_USER_ID = re.compile(r"^[0-9a-f]{16}$")
MAX_PER_PAGE = 500


class UsersController(Controller):
    path = "/admin/users"
    guards = [require_admin]
    tags = ["admin: users"]
    security = [{"AdminKey": []}]
    exception_handlers = AdminController.exception_handlers

    @post("/", status_code=201)
    async def create_user(self, request: Request[Any, Any, Any]) -> dict[str, Any]:
        """Create a user with the default quotas (TOKEN_QUOTA_<FAMILY>) under what the body sets.

        Body (every field optional): nickname, type (normal | special | temporary), expires_at (ms; temporary
        users need it), note, max_ips, public, quotas {family: tokens, 0 unlimited}, refresh {family: tokens},
        email (budgets are looked up by it and by its @domain).
        The answer's `token` is shown this once: poolgate keeps only its hash.
        """
        body = _json(await request.body())
        changes = _checked(lambda: read_user_fields(body, _families(request), creating=True))
        user, token = await _book(request).create(changes, _settings(request).token_quotas())
        log.info("admin API: created user %s (%s)", user["id"], user["type"])
        return {"user": user, "token": token}

    @get("/")
    async def list_users(self, request: Request[Any, Any, Any]) -> dict[str, Any]:
        """Users, a page at a time: `sort` created_at | last_used_at | prompt_count | nickname, `order` asc | desc,
        filters `type`, `disabled` (true | false) and `nickname` (part of it, any case)."""
        query = request.query_params
        page = _query_count(query.get("page"), "page", 1)
        per_page = min(_query_count(query.get("per_page"), "per_page", 50), MAX_PER_PAGE)
        sort = query.get("sort") or "created_at"
        if sort not in SORTS:
            raise _bad("sort", f"must be one of {', '.join(SORTS)}")
        order = query.get("order") or "asc"
        if order not in ("asc", "desc"):
            raise _bad("order", "must be asc or desc")
        type_ = query.get("type") or None
        if type_ is not None and type_ not in USER_TYPES:
            raise _bad("type", f"must be one of {', '.join(USER_TYPES)}")
        disabled_text = query.get("disabled")
        if disabled_text not in (None, "", "true", "false"):
            raise _bad("disabled", "must be true or false")
        disabled = None if not disabled_text else disabled_text == "true"
        users, total = await _book(request).find(
            type_=type_, disabled=disabled, nickname=query.get("nickname") or None, sort=sort,
            descending=order == "desc", page=page, per_page=per_page,
        )
        return {"users": users, "total": total, "page": page, "per_page": per_page}

    @get("/export")
    async def export_users(self, request: Request[Any, Any, Any]) -> dict[str, Any]:
        """Every user as poolgate's import reads it back: with each token's hash, so a restore keeps tokens
        working (a hash is no credential), never a token."""
        book = _book(request)
        return export_document(await book.raw_records(), book.families)

    @post("/import", status_code=200)
    async def import_users(self, request: Request[Any, Any, Any]) -> dict[str, Any]:
        """Import poolgate's export or the OAI Reverse Proxy's user export (plaintext tokens, hashed here, so they
        keep working). Every record is checked first: a bad one is named and nothing is imported. A user with the
        same id (poolgate) or token (OAI Reverse Proxy) is replaced."""
        document = _json(await request.body())
        book = _book(request)
        seconds, micros = await book.store.time()
        try:
            plan = read_import(document, book.families, int(seconds) * 1000 + int(micros) // 1000)
            result = await apply_import(book, plan)
        except ImportProblem as problem:
            raise AdminError(400, "invalid_request_error", f"Nothing was imported: {problem}") from None
        log.info("admin API: imported %d user(s), %d replaced", result["imported"], result["replaced"])
        return result

    @get("/{user_id:str}")
    async def get_user(self, request: Request[Any, Any, Any], user_id: FromPath[str]) -> dict[str, Any]:
        """One user, with its addresses and per-family quotas and usage."""
        return {"user": await _view(request, user_id)}

    @patch("/{user_id:str}")
    async def update_user(self, request: Request[Any, Any, Any], user_id: FromPath[str]) -> dict[str, Any]:
        """Change fields (as on create); `null` removes nickname, note, max_ips (back to MAX_IPS_PER_USER) or a
        family's refresh amount."""
        uid = _known_id(user_id)
        body = _json(await request.body())
        changes = _checked(lambda: read_user_fields(body, _families(request), creating=False))
        book = _book(request)
        if not await _checked_async(book.update(uid, changes)):
            raise _not_found()
        return {"user": await _view(request, uid)}

    @delete("/{user_id:str}", status_code=200)
    async def delete_user(self, request: Request[Any, Any, Any], user_id: FromPath[str]) -> dict[str, Any]:
        """Delete a user: its token stops working, its addresses and limiter state go with it."""
        uid = _known_id(user_id)
        if not await _book(request).delete(uid):
            raise _not_found()
        log.info("admin API: deleted user %s", uid)
        return {"deleted": uid}

    @post("/{user_id:str}/disable", status_code=200)
    async def disable_user(self, request: Request[Any, Any, Any], user_id: FromPath[str]) -> dict[str, Any]:
        """Refuse the user's requests (403 with the reason) until enabled. Body: {"reason": "..."} (optional)."""
        uid = _known_id(user_id)
        raw = await request.body()
        body = _json(raw) if raw.strip() else {}
        if not isinstance(body, dict) or set(body) - {"reason"}:
            raise _bad("body", "must be a JSON object like {\"reason\": \"...\"}")
        reason = _checked(lambda: checked_text("reason", body.get("reason") or "disabled by an admin",
                                               MAX_REASON_CHARS))
        if not await _book(request).disable(uid, reason):
            raise _not_found()
        log.info("admin API: disabled user %s", uid)
        return {"user": await _view(request, uid)}

    @post("/{user_id:str}/enable", status_code=200)
    async def enable_user(self, request: Request[Any, Any, Any], user_id: FromPath[str]) -> dict[str, Any]:
        """Let the user in again, and lift the rate limiter's ban, block and strikes on it."""
        uid = _known_id(user_id)
        if not await _book(request).enable(uid):
            raise _not_found()
        log.info("admin API: enabled user %s", uid)
        return {"user": await _view(request, uid)}

    @post("/{user_id:str}/rotate-token", status_code=200)
    async def rotate_token(self, request: Request[Any, Any, Any], user_id: FromPath[str]) -> dict[str, Any]:
        """A new token for the user, shown this once; the old token stops working at once."""
        uid = _known_id(user_id)
        token = await _book(request).rotate_token(uid)
        if token is None:
            raise _not_found()
        log.info("admin API: rotated the token of user %s", uid)
        return {"user": await _view(request, uid), "token": token}

    @post("/{user_id:str}/refresh-quota", status_code=200)
    async def refresh_quota(self, request: Request[Any, Any, Any], user_id: FromPath[str]) -> dict[str, Any]:
        """Refresh the user's quotas now: each family's use goes down by its refresh amount, or back to 0."""
        uid = _known_id(user_id)
        if not await _book(request).refresh_quota(uid):
            raise _not_found()
        return {"user": await _view(request, uid)}

    @post("/{user_id:str}/revoke-sessions", status_code=200)
    async def revoke_sessions(self, request: Request[Any, Any, Any], user_id: FromPath[str]) -> dict[str, Any]:
        """End every session (sign-in or admin-made) of the user at once; its user token is untouched."""
        uid = _known_id(user_id)
        services = request.app.state.admin_services
        book = SessionBook(services.store, AccountsSchema(services.settings.redis_prefix))
        if await book.revoke(uid) is None:
            raise _not_found()
        log.info("admin API: revoked the sessions of user %s", uid)
        return {"user": await _view(request, uid)}


def _settings(request: Request[Any, Any, Any]) -> Settings:
    settings: Settings = request.app.state.admin_services.settings
    return settings


def _book(request: Request[Any, Any, Any]) -> UserBook:
    services = request.app.state.admin_services
    return UserBook(services.store, AccountsSchema(services.settings.redis_prefix), _families(request))


def _families(request: Request[Any, Any, Any]) -> tuple[str, ...]:
    return tuple(_settings(request).token_quotas())


async def _view(request: Request[Any, Any, Any], user_id: FromPath[str]) -> dict[str, Any]:
    view = await _book(request).get(_known_id(user_id))
    if view is None:
        raise _not_found()
    return view


def _known_id(user_id: str) -> str:
    # Never echo what does not look like a user id: an admin may paste a token here by mistake.
    if not _USER_ID.match(user_id):
        raise AdminError(404, "not_found_error", "No such user: user ids are 16 hex digits, as GET /admin/users lists.")
    return user_id


def _not_found() -> AdminError:
    return AdminError(404, "not_found_error", "No user with that id.")


def _bad(field_name: str, message: str) -> AdminError:
    return AdminError(400, "invalid_request_error", f"Invalid {field_name}: {message}")


def _json(raw: bytes) -> Any:
    try:
        return json.loads(raw)
    except ValueError:
        raise _bad("body", "must be JSON, as /admin/docs shows") from None


def _checked(read: Any) -> Any:
    try:
        return read()
    except UserInputError as problem:
        raise _bad(problem.field, problem.message) from None


async def _checked_async(work: Any) -> Any:
    try:
        return await work
    except UserInputError as problem:
        raise _bad(problem.field, problem.message) from None


def _query_count(raw: str | None, name: str, default: int) -> int:
    if raw is None or raw == "":
        return default
    if not raw.isdigit() or int(raw) < 1:
        raise _bad(name, "must be a whole number from 1")
    return int(raw)
