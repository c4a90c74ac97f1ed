"""Hostile request bodies: deeply nested JSON is a 400 in the route's dialect, never a 500."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

NESTED = [
    ("[" * 5000 + "]" * 5000).encode(),
    ('{"model": "gpt-4o-mini", "a": ' + '{"a": ' * 1000 + "1" + "}" * 1000 + "}").encode(),
]


def _post(gateway: Any, path: str, body: bytes) -> httpx.Response:
    headers = {"content-type": "application/json", "authorization": "Bearer sk-client", "x-api-key": "sk-client",
               "anthropic-version": "2023-06-01"}
    return httpx.post(gateway.url + path, content=body, headers=headers, timeout=30)


@pytest.mark.parametrize("body", NESTED, ids=["arrays", "objects"])
def test_deeply_nested_json_is_a_400_on_openai_routes(start_gateway: Any, body: bytes) -> None:
    gateway = start_gateway(OPENAI_KEY="sk-hostile-aaaa1111", ANTHROPIC_KEY="sk-ant-hostile-bbbb2222")

    for path in ("/v1/chat/completions", "/proxy/openai/v1/chat/completions"):
        response = _post(gateway, path, body)
        assert response.status_code == 400, response.text
        error = response.json()["error"]
        assert {"message", "type", "code"} <= set(error)
        assert error["type"] == "invalid_request_error"
        assert "nested too deeply" in error["message"]

    ok = _post(gateway, "/v1/chat/completions",
               b'{"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}')
    assert ok.status_code == 200, ok.text


@pytest.mark.parametrize("body", NESTED, ids=["arrays", "objects"])
def test_deeply_nested_json_is_a_400_on_anthropic_routes(start_gateway: Any, body: bytes) -> None:
    gateway = start_gateway(OPENAI_KEY="sk-hostile-aaaa1111", ANTHROPIC_KEY="sk-ant-hostile-bbbb2222")

    response = _post(gateway, "/proxy/anthropic/v1/messages", body)

    assert response.status_code == 400, response.text
    payload = response.json()
    assert payload["type"] == "error"
    assert payload["error"]["type"] == "invalid_request_error"
    assert "nested too deeply" in payload["error"]["message"]

    ok = _post(gateway, "/proxy/anthropic/v1/messages",
               b'{"model": "claude-3-5-haiku-latest", "max_tokens": 16,'
               b' "messages": [{"role": "user", "content": "hi"}]}')
    assert ok.status_code == 200, ok.text


@pytest.mark.parametrize("body", NESTED, ids=["arrays", "objects"])
def test_deeply_nested_json_is_a_400_on_every_admin_route_that_reads_a_body(start_gateway: Any, body: bytes) -> None:
    from checks_support import ADMIN_KEY, admin

    gateway = start_gateway(OPENAI_KEY="sk-hostile-aaaa1111", ADMIN_KEY=ADMIN_KEY)

    for method, path in (("POST", "/keys"), ("POST", "/users"), ("POST", "/users/import"), ("PUT", "/policy")):
        response = admin(gateway, method, path, content=body, headers={"content-type": "application/json"})
        assert response.status_code == 400, (path, response.text)
        assert response.json()["error"]["message"] == "The request body is nested too deeply."
