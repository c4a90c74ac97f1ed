"""No upstream can leak a key through poolgate, however it echoes it (issue 18, item 5).

The fake upstream's `echokey` keys get their own key back in every channel a
reply has: headers (the forwarded request ids among them), every JSON body in
plain, `\\u`-escaped, `\\/`-escaped, URL-encoded and base64 forms, an error
event in the middle of a stream; `redirect` keys get a 302 carrying the key.
Each test drives one key behaviour (success, every kind of upstream refusal,
a redirect) through both providers' routes, streamed and not, then looks for
the key, in every form, in all a client, a visitor or an operator can see:
status, headers and bodies, stream events, the status page and its JSON, the
admin API, and every log record.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote

import checks_support
import httpx
import pytest

from fake_upstream.leaks import echoed_forms

ADMIN_KEY = "admin-key-Lk29Qp"
# `/` and `+` in the keys: JSON encoders may write `\/`, URL-encoding writes %2F and %2B.
OPENAI_TAIL = "/Zq9+Tail8x2W-oai"
ANTHROPIC_TAIL = "/Mm4+Tail5y7Q-ant"
# A key's behaviour in the fake upstream is picked by words in its text (fake_upstream/behaviour.py).
# A key that serves goes through every call below; a refused one (the refusal comes before the endpoint
# looks at the request) through the first two, one whole reply and one stream: `rpm1` serves the first.
BEHAVIOURS = ["serves", "fail500", "overloaded", "revoked", "noquota", "forbidden", "redirect", "rpm1"]

CHAT = [{"role": "user", "content": "Say hello"}]
OPENAI_CALLS: list[tuple[str, str, dict[str, Any] | None]] = [
    ("POST", "/proxy/openai/v1/chat/completions", {"model": "gpt-4o", "messages": CHAT}),
    ("POST", "/proxy/openai/v1/chat/completions", {"model": "gpt-4o", "messages": CHAT, "stream": True}),
    ("POST", "/proxy/openai/v1/chat/completions",
     {"model": "gpt-4o-mini", "messages": CHAT, "stream": True, "stream_options": {"include_usage": True}}),
    ("POST", "/proxy/openai/v1/chat/completions", {"model": "gpt-4o"}),  # upstream's 400: no messages
    ("POST", "/proxy/openai/v1/chat/completions", {"model": "gpt-nope", "messages": CHAT}),  # upstream's 404
    ("POST", "/proxy/openai/v1/responses", {"model": "gpt-4.1", "input": "Say hello", "stream": True}),
    ("POST", "/proxy/openai/v1/embeddings", {"model": "text-embedding-3-small", "input": "hello"}),
    ("GET", "/proxy/openai/v1/models", None),
]
ANTHROPIC_CALLS: list[tuple[str, str, dict[str, Any] | None]] = [
    ("POST", "/proxy/anthropic/v1/messages", {"model": "claude-haiku-4-5", "max_tokens": 20, "messages": CHAT}),
    ("POST", "/proxy/anthropic/v1/messages",
     {"model": "claude-sonnet-4-5", "max_tokens": 20, "messages": CHAT, "stream": True}),
    ("POST", "/proxy/anthropic/v1/messages", {"model": "claude-haiku-4-5", "messages": CHAT}),  # 400: no max_tokens
    ("POST", "/proxy/anthropic/v1/messages", {"model": "claude-nope-9", "max_tokens": 20, "messages": CHAT}),
    ("POST", "/proxy/anthropic/v1/messages/count_tokens", {"model": "claude-haiku-4-5", "messages": CHAT}),
    ("GET", "/proxy/anthropic/v1/models", None),
]


def leaks_of(text: str, key: str) -> list[str]:
    """Every way `text` holds `key`: as is, once JSON escapes or URL-encoding are undone, or in base64."""
    unescaped = re.sub(r"\\u([0-9a-fA-F]{4})", lambda m: chr(int(m.group(1), 16)), text).replace("\\/", "/")
    found = [name for name, form in (("plain", text), ("json-escaped", unescaped), ("url-encoded", unquote(text)),
                                      ("escaped and url-encoded", unquote(unescaped))) if key in form]
    for token in re.findall(r"[A-Za-z0-9+/_-]{16,}={0,2}", text):
        for alphabet in (None, b"-_"):
            try:
                decoded = base64.b64decode(token + "=" * (-len(token) % 4), altchars=alphabet)
            except (binascii.Error, ValueError):
                continue
            if key.encode() in decoded:
                found.append(f"base64 {token}")
    return found


def test_the_leak_check_finds_every_form_the_echoing_upstream_writes() -> None:
    key = "sk-echokey" + OPENAI_TAIL
    for name, form in echoed_forms(key).items():
        assert leaks_of(f'{{"echo": "{form}"}}', key), f"the check misses the {name} form"
    assert leaks_of('{"fine": "sk-...-oai"}', key) == []


def test_the_echoing_upstream_really_leaks_in_every_channel(upstream: Any) -> None:
    """Without poolgate in between, the key is everywhere: the tests below would otherwise prove nothing."""
    key = "sk-echokey-serves" + OPENAI_TAIL
    auth = {"authorization": f"Bearer {key}"}
    whole = httpx.post(upstream.url + "/v1/chat/completions", headers=auth,
                       json={"model": "gpt-4o", "messages": CHAT})
    stream = httpx.post(upstream.url + "/v1/chat/completions", headers=auth,
                        json={"model": "gpt-4o", "messages": CHAT, "stream": True})
    refused = httpx.post(upstream.url + "/v1/chat/completions", headers=auth, json={"model": "gpt-4o"})
    moved = httpx.get(upstream.url + "/v1/models", headers={"authorization": "Bearer sk-redirect" + OPENAI_TAIL})

    assert key in whole.headers["x-request-id"] and key in whole.headers["x-echo-key"]
    for name, form in echoed_forms(key).items():
        assert f'"{name}":"{form}"' in whole.text, f"the {name} form is in the body as written"
    mid_stream = [event for event in stream.text.split("\n\n") if '"error"' in event]
    assert len(mid_stream) == 1 and leaks_of(mid_stream[0], key)
    assert not stream.text.split("\n\n")[-2].startswith('data: {"error"'), "the error event is mid-stream"
    assert refused.status_code == 400 and key in refused.json()["error"]["message"]
    assert moved.status_code == 302 and leaks_of(moved.headers["location"], "sk-redirect" + OPENAI_TAIL)


@dataclass
class Seen:
    """Everything observed, by where it was seen."""

    texts: dict[str, str] = field(default_factory=dict)

    def add(self, where: str, response: httpx.Response) -> None:
        headers = "\n".join(f"{name}: {value}" for name, value in response.headers.multi_items())
        self.texts[where] = f"{response.status_code}\n{headers}\n\n{response.text}"

    def assert_no_leak(self, key: str) -> None:
        leaks = {where: found for where, text in self.texts.items() if (found := leaks_of(text, key))}
        assert not leaks, f"the key reached: {leaks}"


class CapturedLogs(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.lines: list[str] = []
        self._format = logging.Formatter("%(name)s %(levelname)s %(message)s")

    def emit(self, record: logging.LogRecord) -> None:
        line = self._format.format(record)  # with any traceback and stack, as a log file would hold them
        self.lines.append(line)


@pytest.fixture
def captured_logs() -> Iterator[CapturedLogs]:
    """Every record of poolgate's loggers, and of the servers it runs in, down to DEBUG."""
    handler = CapturedLogs()
    loggers = [logging.getLogger(name) for name in ("poolgate", "uvicorn", "litestar", "asyncio")]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.addHandler(handler)
        logger.setLevel(logging.DEBUG)
    yield handler
    for logger, level in zip(loggers, levels, strict=True):
        logger.removeHandler(handler)
        logger.setLevel(level)


def drive(gateway: Any, calls: list[tuple[str, str, dict[str, Any] | None]], anthropic: bool) -> Seen:
    seen = Seen()
    headers = {"anthropic-version": "2023-06-01"} if anthropic else {}
    with httpx.Client(base_url=gateway.url, timeout=30) as client:
        for number, (method, path, body) in enumerate(calls):
            response = client.request(method, path, json=body, headers=headers)
            seen.add(f"{method} {path} #{number}", response)
            assert response.status_code < 300 or response.status_code >= 400, "a redirect was passed on"
            assert response.status_code != 500, response.text
        admin = {"authorization": f"Bearer {ADMIN_KEY}"}
        keys = client.get("/admin/keys", headers=admin)
        assert keys.status_code == 200
        seen.add("admin key list", keys)
        for view in keys.json()["keys"]:
            seen.add(f"admin key {view['id']}", client.get(f"/admin/keys/{view['id']}", headers=admin))
        seen.add("status page", client.get("/"))
        seen.add("status JSON", client.get("/status"))
    return seen


def start(start_gateway: Any, provider: str, key: str) -> Any:
    env_name = "OPENAI_KEY" if provider == "openai" else "ANTHROPIC_KEY"
    return start_gateway(**{env_name: key, "ADMIN_KEY": ADMIN_KEY, "QUEUE_TIMEOUT_SEC": "1",
                            "KEY_COOLDOWN_MAX_SEC": "1", "UPSTREAM_RETRIES": "1"})


@pytest.mark.parametrize("behaviour", BEHAVIOURS)
def test_an_echoing_openai_upstream_never_shows_the_key(
    start_gateway: Any, upstream: Any, captured_logs: CapturedLogs, behaviour: str
) -> None:
    key = f"sk-echokey-{behaviour}{OPENAI_TAIL}"
    gateway = start(start_gateway, "openai", key)

    seen = drive(gateway, OPENAI_CALLS if behaviour == "serves" else OPENAI_CALLS[:2], anthropic=False)

    assert any(r["key"] == key for r in upstream.requests), "upstream was reached with the key"
    seen.texts["logs"] = "\n".join(captured_logs.lines)
    seen.assert_no_leak(key)


@pytest.mark.parametrize("behaviour", BEHAVIOURS)
def test_an_echoing_anthropic_upstream_never_shows_the_key(
    start_gateway: Any, upstream: Any, captured_logs: CapturedLogs, behaviour: str
) -> None:
    key = f"sk-ant-echokey-{behaviour}{ANTHROPIC_TAIL}"
    gateway = start(start_gateway, "anthropic", key)

    seen = drive(gateway, ANTHROPIC_CALLS if behaviour == "serves" else ANTHROPIC_CALLS[:2], anthropic=True)

    assert any(r["key"] == key for r in upstream.requests), "upstream was reached with the key"
    seen.texts["logs"] = "\n".join(captured_logs.lines)
    seen.assert_no_leak(key)


def test_a_served_reply_still_arrives_whole_once_scrubbed(start_gateway: Any, upstream: Any) -> None:
    """Scrubbing takes out the key, nothing else: the reply still parses and says what upstream said."""
    key = "sk-echokey-serves" + OPENAI_TAIL
    gateway = start(start_gateway, "openai", key)

    reply = httpx.post(gateway.url + "/proxy/openai/v1/chat/completions",
                       json={"model": "gpt-4o", "messages": CHAT}, timeout=30)
    stream = httpx.post(gateway.url + "/proxy/openai/v1/chat/completions",
                        json={"model": "gpt-4o", "messages": CHAT, "stream": True}, timeout=30)

    assert reply.status_code == 200
    body = reply.json()
    assert body["choices"][0]["message"]["content"].startswith("This is a reply")
    assert body["echo"]["plain"] == body["echo"]["unicode_escaped"] == "***"
    # base64 loses the key's whole 3-byte groups; the last byte or two stay as a partial group
    assert body["echo"]["base64"] == "***aQ=="
    assert all("***" in value for value in body["echo"].values())
    assert reply.headers["x-request-id"] == "req_***"
    assert "set-cookie" not in reply.headers and "x-echo-key" not in reply.headers
    events = [block for block in stream.text.split("\n\n") if block and not block.startswith(": poolgate: cost=")]
    assert events[-1] == "data: [DONE]"
    payloads = [json.loads(event.removeprefix("data: ")) for event in events[:-1]]
    errors = [p["error"] for p in payloads if "error" in p]
    assert errors == [{"message": "Upstream hiccup for API key ***", "type": "server_error", "code": None,
                       "echo": "***"}]


@pytest.mark.parametrize("provider", ["openai", "anthropic"])
def test_key_checks_against_an_echoing_upstream_never_show_the_key(
    start_gateway: Any, upstream: Any, captured_logs: CapturedLogs, provider: str
) -> None:
    """Checks read upstream's replies too (models lists, refusals); what they record is poolgate's own words."""
    prefix = "sk-" if provider == "openai" else "sk-ant-"
    tail = OPENAI_TAIL if provider == "openai" else ANTHROPIC_TAIL
    # distinct last four characters: the admin API shows a key by them
    good, revoked = f"{prefix}echokey-serves{tail}-Srv1", f"{prefix}echokey-revoked{tail}-Rvk2"
    env_name = "OPENAI_KEY" if provider == "openai" else "ANTHROPIC_KEY"
    gateway = start_gateway(**{env_name: f"{good},{revoked}", "ADMIN_KEY": checks_support.ADMIN_KEY,
                               "CHECK_KEYS": "true"})
    worker_output: list[str] = []

    checks_support.run_checks(
        gateway, lambda: checks_support.key_view(gateway, revoked)["status"] == "revoked"
        and checks_support.key_view(gateway, good)["last_check"], "both keys to be checked", worker_output)

    assert {r["key"] for r in upstream.requests} == {good, revoked}
    seen = Seen()
    for view in checks_support.listed_keys(gateway):
        seen.add(f"admin key {view['id']}", checks_support.admin(gateway, "GET", f"/keys/{view['id']}"))
    seen.add("status page", httpx.get(gateway.url + "/"))
    seen.add("status JSON", httpx.get(gateway.url + "/status"))
    seen.texts["logs"] = "\n".join(captured_logs.lines)
    seen.texts["worker output"] = "\n".join(worker_output)
    for key in (good, revoked):
        seen.assert_no_leak(key)
