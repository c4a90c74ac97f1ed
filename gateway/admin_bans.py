"""The admin API for the rate limiter's bans: `GET /admin/bans`, `DELETE /admin/bans/{identity}`.

A ban (accounts/admit.lua) falls on a user ("user:{id}") or, for anonymous
callers, on an address ("ip:{address}"), and lasts until an admin lifts it
here; lifting a ban also forgets the identity's strikes, its windows and any
block still running, so it starts afresh. A user's ban is also lifted by
`POST /admin/users/{id}/enable`.
"""

from __future__ import annotations

import logging
from typing import Any

from litestar import Controller, Request, delete, get
from litestar.params import FromPath

from accounts.schema import AccountsSchema
from gateway.admin import AdminController, AdminError, _poolgate

log = logging.getLogger("poolgate.admin")


class BansController(Controller):
    path = "/admin/bans"
    guards = AdminController.guards
    tags = ["admin"]
    security = AdminController.security
    exception_handlers = AdminController.exception_handlers

    @get("/")
    async def list_bans(self, request: Request[Any, Any, Any]) -> dict[str, Any]:
        """Every banned identity, with when (ms since the epoch, the store's clock) and why."""
        schema = _schema(request)
        bans = await _poolgate(request).store.hgetall(schema.bans)
        listed = []
        for identity, value in sorted(bans.items()):
            since, _, reason = _text(value).partition("|")
            listed.append({"identity": _text(identity), "since_ms": int(since or 0), "reason": reason})
        return {"bans": listed}

    @delete("/{identity:str}", status_code=200)
    async def lift_ban(self, request: Request[Any, Any, Any], identity: FromPath[str]) -> dict[str, Any]:
        """Lift the ban of `user:{id}` or `ip:{address}`; 404 when it is not banned."""
        schema = _schema(request)
        store = _poolgate(request).store
        async with store.pipeline(transaction=True) as pipe:
            pipe.hdel(schema.bans, identity)
            pipe.delete(schema.limit_strikes(identity), schema.limit_block(identity), schema.limit_minute(identity),
                        schema.limit_hour(identity), schema.limit_image(identity))
            lifted, _ = await pipe.execute()
        if not lifted:
            raise AdminError(404, "not_found_error", "That identity is not banned; GET /admin/bans lists who is.")
        log.info("admin API: lifted the ban of %s", identity)
        return {"lifted": identity}


def _schema(request: Request[Any, Any, Any]) -> AccountsSchema:
    return AccountsSchema(_poolgate(request).settings.redis_prefix)


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
