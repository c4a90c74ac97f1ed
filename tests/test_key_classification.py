"""Only what upstream's error *type/code* says about the account retires a key; message text never does.

Error messages can echo what the client sent, so a client able to put "credit balance is too low"
or "invalid_api_key" into a 400's message must not be able to take pool keys out of service.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import pytest

CHAT = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}
MESSAGE = {"model": "claude-haiku-4-5", "max_tokens": 16, "messages": [{"role": "user", "content": "hi"}]}

ECHOED_TEXTS = [
    "Your credit balance is too low to access the Anthropic API.",
    "invalid_api_key",
    "insufficient_quota",
    "account_deactivated",
    "billing_hard_limit_reached",
    "authentication_error",
    "Your API key is invalid",
    "Incorrect API key provided",
]


class ScriptedUpstream:
    """Answers every request with one status and JSON body, and counts the requests."""

    def __init__(self) -> None:
        self.status = 200
        self.body: dict[str, Any] = {}
        self.hits = 0
        script = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                self.rfile.read(int(self.headers.get("content-length") or 0))
                script.hits += 1
                payload = json.dumps(script.body).encode()
                self.send_response(script.status)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def log_message(self, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    def answer(self, status: int, body: dict[str, Any]) -> None:
        self.status, self.body = status, body

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()


@pytest.fixture
def scripted() -> Iterator[ScriptedUpstream]:
    server = ScriptedUpstream()
    yield server
    server.stop()


def _gateway(start_gateway: Any, scripted: ScriptedUpstream) -> Any:
    return start_gateway(
        OPENAI_BASE_URL=scripted.url,
        ANTHROPIC_BASE_URL=scripted.url,
        OPENAI_KEY="sk-pool-openai-0001,sk-pool-openai-0002",
        ANTHROPIC_KEY="sk-ant-pool-0003,sk-ant-pool-0004",
        MAX_KEY_ATTEMPTS="4",
    )


def _chat(gateway: Any) -> httpx.Response:
    return httpx.post(gateway.url + "/proxy/openai/v1/chat/completions", json=CHAT, timeout=30)


def _message(gateway: Any) -> httpx.Response:
    return httpx.post(gateway.url + "/proxy/anthropic/v1/messages", json=MESSAGE, timeout=30)


def _statuses(gateway: Any) -> dict[str, str]:
    return {key["key"][-4:]: key["status"] for key in gateway.keys()}


def _openai_error(message: str, kind: str = "invalid_request_error", code: str | None = None) -> dict[str, Any]:
    return {"error": {"message": message, "type": kind, "param": None, "code": code}}


def _anthropic_error(message: str, kind: str = "invalid_request_error") -> dict[str, Any]:
    return {"type": "error", "error": {"type": kind, "message": message}}


@pytest.mark.parametrize("status", [400, 403])
def test_echoed_account_words_in_an_openai_error_message_retire_no_key(start_gateway, scripted, status):
    gateway = _gateway(start_gateway, scripted)
    for text in ECHOED_TEXTS:
        scripted.answer(status, _openai_error(f"Invalid value for 'user': '{text}'."))
        for _ in range(2):
            reply = _chat(gateway)
            assert reply.status_code == status, "the client's own error is passed through"
    assert set(_statuses(gateway).values()) == {"active"}


@pytest.mark.parametrize("status", [400, 403])
def test_echoed_account_words_in_an_anthropic_error_message_retire_no_key(start_gateway, scripted, status):
    gateway = _gateway(start_gateway, scripted)
    kind = "invalid_request_error" if status == 400 else "permission_error"
    for text in ECHOED_TEXTS:
        scripted.answer(status, _anthropic_error(f"messages.0.content: '{text}' is not allowed here", kind))
        for _ in range(2):
            reply = _message(gateway)
            assert reply.status_code == status, "the client's own error is passed through"
    assert set(_statuses(gateway).values()) == {"active"}


def test_an_openai_403_without_an_account_code_retires_no_key(start_gateway, scripted):
    gateway = _gateway(start_gateway, scripted)
    scripted.answer(403, _openai_error("You have insufficient permissions for this operation.", "permission_error"))
    for _ in range(3):
        assert _chat(gateway).status_code == 403
    scripted.answer(403, _openai_error("Country, region, or territory not supported", "request_forbidden",
                                       "unsupported_country_region_territory"))
    assert _chat(gateway).status_code == 403
    assert set(_statuses(gateway).values()) == {"active"}


def test_an_openai_401_invalid_api_key_still_revokes(start_gateway, scripted):
    gateway = _gateway(start_gateway, scripted)
    scripted.answer(401, _openai_error("Incorrect API key provided: sk-pool-***0001.", code="invalid_api_key"))
    _chat(gateway)
    statuses = _statuses(gateway)
    assert "revoked" in {statuses["0001"], statuses["0002"]}
    assert statuses["0003"] == statuses["0004"] == "active"


def test_an_openai_account_deactivated_code_revokes(start_gateway, scripted):
    gateway = _gateway(start_gateway, scripted)
    scripted.answer(401, _openai_error("This key is associated with a deactivated account.",
                                       code="account_deactivated"))
    _chat(gateway)
    assert {_statuses(gateway)["0001"], _statuses(gateway)["0002"]} == {"revoked"}


def test_an_openai_429_insufficient_quota_still_marks_over_quota(start_gateway, scripted):
    gateway = _gateway(start_gateway, scripted)
    scripted.answer(429, _openai_error("You exceeded your current quota.", "insufficient_quota", "insufficient_quota"))
    _chat(gateway)
    assert {_statuses(gateway)["0001"], _statuses(gateway)["0002"]} == {"over_quota"}


def test_an_openai_plain_429_only_rests_the_key(start_gateway, scripted):
    gateway = _gateway(start_gateway, scripted)
    scripted.answer(429, _openai_error("Rate limit reached for requests", "requests", "rate_limit_exceeded"))
    _chat(gateway)
    assert "cooling_down" in {_statuses(gateway)["0001"], _statuses(gateway)["0002"]}
    assert "over_quota" not in _statuses(gateway).values() and "revoked" not in _statuses(gateway).values()


def test_an_anthropic_401_authentication_error_still_revokes(start_gateway, scripted):
    gateway = _gateway(start_gateway, scripted)
    scripted.answer(401, _anthropic_error("invalid x-api-key", "authentication_error"))
    _message(gateway)
    statuses = _statuses(gateway)
    assert {statuses["0003"], statuses["0004"]} == {"revoked"}
    assert statuses["0001"] == statuses["0002"] == "active"


def test_an_anthropic_billing_error_marks_over_quota(start_gateway, scripted):
    gateway = _gateway(start_gateway, scripted)
    scripted.answer(400, _anthropic_error("Your credit balance is too low.", "billing_error"))
    _message(gateway)
    assert {_statuses(gateway)["0003"], _statuses(gateway)["0004"]} == {"over_quota"}
