"""The admin API for the request policy's lists: `GET|PUT /admin/policy` and `GET|PUT /admin/policy/prompt-filter`.

The lists are IP_BLACKLIST, ADMIN_WHITELIST and BLOCKED_ORIGINS
(gateway/blocks.py). PUT replaces all three (a missing field is an empty
list) in the store; every gateway process takes them up within about a second.
The prompt filter's rules are REJECT_PHRASES (a list of regular expressions)
and REJECT_MESSAGE (gateway/prompt_filter.py), replaced the same way.
Same admin key and lockout as the key routes (gateway/admin.py).
"""

from __future__ import annotations

import logging
from typing import Any

import msgspec
from litestar import Controller, Request, get, put

from gateway.admin import AdminController, AdminError, require_admin
from gateway.blocks import Blocks, PolicyLists
from gateway.prompt_filter import PromptFilter, PromptRules

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


    @get("/prompt-filter")
    async def get_prompt_filter(self, request: Request[Any, Any, Any]) -> dict[str, Any]:
        """The prompt filter in force: reject_phrases (regular expressions) and reject_message."""
        return prompt_filter_of(request).rules.as_json()

    @put("/prompt-filter")
    async def put_prompt_filter(self, request: Request[Any, Any, Any]) -> dict[str, Any]:
        """Replace the phrases and the message (missing or empty: REJECT_MESSAGE); every gateway process uses
        them within about a second."""
        prompt_filter = prompt_filter_of(request)
        try:
            rules = PromptRules.from_json(msgspec.json.decode(await request.body()), prompt_filter.default_message)
        except msgspec.DecodeError:
            raise AdminError(400, "invalid_request_error", "The body must be a JSON object.") from None
        except ValueError as error:
            raise AdminError(400, "invalid_request_error", f"Invalid prompt filter: {error}.") from None
        await prompt_filter.replace(rules)
        log.info("admin API: prompt filter replaced (%d phrases)", len(rules.reject_phrases))
        return rules.as_json()


def prompt_filter_of(request: Request[Any, Any, Any]) -> PromptFilter:
    prompt_filter: PromptFilter = request.app.state.prompt_filter  # set when the app starts
    return prompt_filter


def _blocks(request: Request[Any, Any, Any]) -> Blocks:
    blocks: Blocks = request.app.state.policy_blocks  # set when the app starts
    return blocks
