"""The status page's `{user:data}` and `{user:aliases}`: public users' nicknames and prompt counts, never a token."""

from __future__ import annotations

import html as html_lib
import json
import re
from typing import Any

import httpx
from checks_support import ADMIN_KEY, admin
from status_helpers import page_body
from users_support import create_user, schema_of, set_fields

PAGE = '<html><body><p id="data">{user:data}</p><p id="aliases">{user:aliases}</p></body></html>'


def shown_tags(gateway: Any) -> dict[str, Any]:
    reply = httpx.get(gateway.url + "/")
    assert reply.status_code == 200
    found = dict(re.findall(r'<p id="(\w+)">(.*?)</p>', reply.text))
    return {name: json.loads(html_lib.unescape(value)) for name, value in found.items()} | {"_page": reply.text}


def test_public_users_appear_by_nickname_with_their_prompt_counts_and_nobody_else(start_gateway: Any) -> None:
    gateway = start_gateway(OPENAI_KEY="sk-tags-0001", ADMIN_KEY=ADMIN_KEY, PAGE_BODY=page_body(PAGE))
    bee, bee_token = create_user(gateway, nickname="bee", public=True)
    _, hidden_token = create_user(gateway, nickname="hidden")
    _, ant_token = create_user(gateway, nickname="<b>ant</b>", public=True)
    set_fields(gateway, schema_of(gateway).user(bee["id"]), prompt_count=12)  # as settlement counts prompts

    shown = shown_tags(gateway)
    status = httpx.get(gateway.url + "/status").json()

    assert shown["data"]["users"] == [{"nickname": "<b>ant</b>", "prompt_count": 0},
                                      {"nickname": "bee", "prompt_count": 12}]
    assert shown["data"]["total"] == 3 and shown["data"]["active_now"] == 0
    assert shown["aliases"] == ["<b>ant</b>", "bee"]
    assert "<b>ant" not in shown["_page"], "nicknames are escaped: a nickname is not HTML"
    assert status["users"] == {"total": 3, "public": shown["data"]["users"]}
    for secret in (bee_token, hidden_token, ant_token, "hidden"):
        assert secret not in shown["_page"] and secret not in json.dumps(status)


def test_a_user_who_stops_being_public_leaves_the_page(start_gateway: Any) -> None:
    gateway = start_gateway(OPENAI_KEY="sk-tags-0001", ADMIN_KEY=ADMIN_KEY, PAGE_BODY=page_body(PAGE))
    user, _ = create_user(gateway, nickname="shy", public=True)
    admin(gateway, "PATCH", f"/users/{user['id']}", json={"public": False})
    create_user(gateway, nickname="gone", public=True)
    admin(gateway, "DELETE", f"/users/{admin(gateway, 'GET', '/users?nickname=gone').json()['users'][0]['id']}")

    shown = shown_tags(gateway)

    assert shown["data"]["users"] == [] and shown["aliases"] == [] and shown["data"]["total"] == 1
