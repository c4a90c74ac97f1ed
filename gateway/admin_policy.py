"""The admin API for the request policy's lists: `GET|PUT /admin/policy`.

The lists are IP_BLACKLIST, ADMIN_WHITELIST and BLOCKED_ORIGINS
(gateway/blocks.py). PUT replaces all three (a missing field is an empty
list) in the store; every gateway process takes them up within about a second.
Same admin key and lockout as the key routes (gateway/admin.py).
"""

from __future__ import annotations

import logging
from typing import Any

import msgspec
from litestar import Controller, Request, get, put

from gateway.admin import AdminController, AdminError, require_admin
from gateway.blocks import Blocks, PolicyLists

log = logging.getLogger("poolgate.admin")


class AdminPolicyController(Controller):
    path = "/admin/policy"
    guards = [require_admin]
    tags = ["admin"]
    security = [{"AdminKey": []}]
    exception_handlers = AdminController.exception_handlers

    @get("/")
    async def get_policy(self, request: Request[Any, Any, Any]) -> dict[str, Any]:
        """The lists in force: ip_blacklist, admin_whitelist, blocked_origins."""
        return _blocks(request).lists.as_json()

    @put("/")
    async def put_policy(self, request: Request[Any, Any, Any]) -> dict[str, Any]:
        """Replace the lists; every gateway process uses them within about a second."""
        try:
            lists = PolicyLists.from_json(msgspec.json.decode(await request.body()))
        except msgspec.DecodeError:
            raise AdminError(400, "invalid_request_error", "The body must be a JSON object.") from None
        except ValueError as error:
            raise AdminError(400, "invalid_request_error", f"Invalid policy lists: {error}.") from None
        await _blocks(request).replace(lists)
        log.info("admin API: policy lists replaced (%d blocked networks, %d admin networks, %d blocked origins)",
                 len(lists.ip_blacklist), len(lists.admin_whitelist), len(lists.blocked_origins))
        return lists.as_json()


def _blocks(request: Request[Any, Any, Any]) -> Blocks:
    blocks: Blocks = request.app.state.policy_blocks  # set when the app starts
    return blocks
