"""ALLOWED_MODEL_FAMILIES holds however a request is spelt, and families not served are not shown."""

from __future__ import annotations

import json
from typing import Any

import anthropic
import httpx
import openai
import pytest
from test_settings_and_cli import run_poolgate

from gateway.settings import ConfigError, Settings

ONLY_MINI = {"OPENAI_KEY": "sk-families-0001", "ANTHROPIC_KEY": "sk-ant-families-0002",
             "ALLOWED_MODEL_FAMILIES": "gpt-4o-mini,claude-haiku"}
MESSAGES = [{"role": "user", "content": "hi"}]


def post_json(gateway: Any, body: bytes, path: str = "/v1/chat/completions") -> httpx.Response:
    return httpx.post(gateway.url + path, content=body, headers={"content-type": "application/json"}, timeout=30)


# --- JSON bodies ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "body",
    [
        pytest.param({"messages": MESSAGES}, id="no-model"),
        pytest.param({"model": "", "messages": MESSAGES}, id="empty-model"),
        pytest.param({"model": "   ", "messages": MESSAGES}, id="blank-model"),
        pytest.param({"model": 4, "messages": MESSAGES}, id="number-model"),
        pytest.param({"model": ["gpt-4o"], "messages": MESSAGES}, id="list-model"),
        pytest.param({"model": {"name": "gpt-4o"}, "messages": MESSAGES}, id="object-model"),
        pytest.param({"model": None, "messages": MESSAGES}, id="null-model"),
    ],
)
def test_a_request_without_a_usable_model_is_a_400_and_never_reaches_upstream(
    start_gateway: Any, upstream: Any, body: dict[str, Any]
) -> None:
    gateway = start_gateway(**ONLY_MINI)

    reply = post_json(gateway, json.dumps(body).encode())

    assert reply.status_code == 400, reply.text
    assert reply.json()["error"]["type"] == "invalid_request_error"
    assert "model" in reply.json()["error"]["message"]
    assert upstream.requests == []


def test_a_duplicated_model_key_reaches_upstream_only_as_the_model_that_was_checked(
    start_gateway: Any, upstream: Any
) -> None:
    gateway = start_gateway(**ONLY_MINI)
    body = b'{"model": "gpt-4o", "model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}'

    reply = post_json(gateway, body)

    assert reply.status_code == 200, reply.text
    [seen] = upstream.requests
    pairs = json.loads(seen["body"], object_pairs_hook=lambda kv: kv)
    assert [v for k, v in pairs if k == "model"] == ["gpt-4o-mini"], "upstream sees one model, the allowed one"


def test_an_anthropic_request_without_a_model_is_a_400_in_anthropic_dialect(start_gateway: Any, upstream: Any) -> None:
    gateway = start_gateway(**ONLY_MINI)
    client = anthropic.Anthropic(base_url=gateway.url + "/proxy/anthropic", api_key="x", max_retries=0)

    with pytest.raises(anthropic.BadRequestError) as raised:
        client.messages.create(model=7, max_tokens=5, messages=MESSAGES)  # type: ignore[arg-type]

    assert raised.value.body["error"]["type"] == "invalid_request_error"  # type: ignore[index]
    assert upstream.requests == []


# --- multipart bodies -----------------------------------------------------------------------


def multipart(*parts: tuple[str, bytes], boundary: str = "b0undary") -> tuple[bytes, str]:
    """A form from (Content-Disposition parameters, content) pairs, spelt exactly as given."""
    out = b""
    for disposition, content in parts:
        out += f"--{boundary}\r\nContent-Disposition: form-data; {disposition}\r\n\r\n".encode() + content + b"\r\n"
    return out + f"--{boundary}--\r\n".encode(), f"multipart/form-data; boundary={boundary}"


AUDIO = ('name="file"; filename="a.wav"', b"RIFF" + b"\0" * 100)
BIG_AUDIO = ('name="file"; filename="a.wav"', b"RIFF" + b"\0" * 100_000)


@pytest.mark.parametrize(
    ("parts", "status"),
    [
        pytest.param([AUDIO, ('name="model"', b"whisper-1")], 403, id="quoted"),
        pytest.param([AUDIO, ("name=model", b"whisper-1")], 403, id="unquoted-name"),
        pytest.param([BIG_AUDIO, ('name="model"', b"whisper-1")], 403, id="model-after-a-large-file"),
        pytest.param([AUDIO], 400, id="no-model"),
        pytest.param([AUDIO, ('name="model"', b"")], 400, id="empty-model"),
        pytest.param([AUDIO, ('name="model"', b"gpt-4o-mini"), ('name="model"', b"whisper-1")], 400, id="two-models"),
    ],
)
def test_a_multipart_upload_cannot_slip_a_model_past_the_allowed_families(
    start_gateway: Any, upstream: Any, parts: list[tuple[str, bytes]], status: int
) -> None:
    gateway = start_gateway(**ONLY_MINI)
    body, content_type = multipart(*parts)

    reply = httpx.post(gateway.url + "/v1/audio/transcriptions", content=body,
                       headers={"content-type": content_type}, timeout=30)

    assert reply.status_code == status, reply.text
    assert upstream.requests == []


def test_a_multipart_upload_of_an_allowed_family_goes_through(start_gateway: Any, upstream: Any) -> None:
    gateway = start_gateway(**{**ONLY_MINI, "ALLOWED_MODEL_FAMILIES": "audio"})
    client = openai.OpenAI(base_url=gateway.url + "/v1", api_key="x", max_retries=0)

    client.audio.transcriptions.create(model="whisper-1", file=("a.wav", b"RIFF" + b"\0" * 100))

    assert [r["path"] for r in upstream.requests] == ["/v1/audio/transcriptions"]


# --- the other provider's model on a provider route -----------------------------------------


def test_a_claude_model_on_the_openai_route_is_a_clear_400(start_gateway: Any, upstream: Any) -> None:
    gateway = start_gateway(OPENAI_KEY="sk-families-0003", ANTHROPIC_KEY="sk-ant-families-0004")
    client = openai.OpenAI(base_url=gateway.url + "/proxy/openai/v1", api_key="x", max_retries=0)

    with pytest.raises(openai.BadRequestError) as raised:
        client.chat.completions.create(model="claude-haiku-4-5", messages=MESSAGES)  # type: ignore[arg-type]

    assert "/proxy/anthropic" in raised.value.message
    assert upstream.requests == []


def test_a_gpt_model_on_the_anthropic_route_is_a_clear_400(start_gateway: Any, upstream: Any) -> None:
    gateway = start_gateway(OPENAI_KEY="sk-families-0005", ANTHROPIC_KEY="sk-ant-families-0006")
    client = anthropic.Anthropic(base_url=gateway.url + "/proxy/anthropic", api_key="x", max_retries=0)

    with pytest.raises(anthropic.BadRequestError) as raised:
        client.messages.create(model="gpt-4o", max_tokens=5, messages=MESSAGES)  # type: ignore[arg-type]

    assert "/v1/chat/completions" in raised.value.message
    assert upstream.requests == []


# --- what is shown --------------------------------------------------------------------------


def test_the_models_lists_show_only_allowed_families(start_gateway: Any) -> None:
    gateway = start_gateway(**ONLY_MINI)
    oai = openai.OpenAI(base_url=gateway.url + "/v1", api_key="x", max_retries=0)
    claude = anthropic.Anthropic(base_url=gateway.url + "/proxy/anthropic", api_key="x", max_retries=0)

    openai_ids = [m.id for m in oai.models.list()]
    claude_ids = [m.id for m in claude.models.list()]

    assert openai_ids and all(i.startswith("gpt-4o-mini") for i in openai_ids), openai_ids
    assert claude_ids and all("haiku" in i for i in claude_ids), claude_ids
    with pytest.raises(openai.PermissionDeniedError):
        oai.models.retrieve("gpt-4o")


def test_the_status_page_shows_only_allowed_families(start_gateway: Any) -> None:
    gateway = start_gateway(**ONLY_MINI)

    status = httpx.get(gateway.url + "/status").json()
    page = httpx.get(gateway.url + "/").text

    assert set(status["families"]) == {"gpt-4o-mini", "claude-haiku"}
    assert "claude-opus" not in page and "gpt-4.1" not in page


# --- start-up -------------------------------------------------------------------------------


def test_an_unknown_family_stops_start_up_with_the_known_ones() -> None:
    with pytest.raises(ConfigError) as raised:
        Settings.from_env({"ALLOWED_MODEL_FAMILIES": "gpt-4o-mini,gpt-9"}, env_file=None)

    [problem] = raised.value.problems
    assert "'gpt-9'" in problem and "gpt-4o-mini" in problem and "claude-haiku" in problem


def test_an_unknown_family_stops_poolgate_serve() -> None:
    result = run_poolgate("serve", env={"ALLOWED_MODEL_FAMILIES": "gpt4o"})

    assert result.returncode == 2
    assert "gpt4o" in result.stderr and "gpt-4o-mini" in result.stderr
