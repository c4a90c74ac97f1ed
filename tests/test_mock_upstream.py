"""The mock upstream behaves like the real OpenAI and Anthropic APIs, as their official SDKs see them.

Everything here goes over real HTTP to a mock serving from its own thread, so
these tests also pin what the rest of poolgate's tests rely on: shapes, error
classes, rate-limit headers, SSE framing and the request recording.
"""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Iterator
from typing import Any

import anthropic
import httpx
import openai
import pytest

from fake_upstream import MockUpstreamHandle, run_mock_upstream_in_thread

# Typed Any: the SDKs' TypedDict message params reject a plain dict literal held in a variable.
CHAT: Any = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Say hello to the pool"}]

CLAUDE_CHAT: Any = [{"role": "user", "content": "Say hello to the pool"}]


@pytest.fixture(scope="module")
def mock_upstream() -> Iterator[MockUpstreamHandle]:
    handle = run_mock_upstream_in_thread(output_tokens=12)
    yield handle
    handle.stop()


def openai_client(mock: MockUpstreamHandle, key: str = "sk-test-plain-0001") -> openai.OpenAI:
    return openai.OpenAI(base_url=mock.url + "/v1", api_key=key, max_retries=0)


def anthropic_client(mock: MockUpstreamHandle, key: str = "sk-ant-test-plain-0001") -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=mock.url, api_key=key, max_retries=0)


# --- OpenAI ------------------------------------------------------------------


def test_chat_completion_has_the_real_shape_and_usage(mock_upstream: MockUpstreamHandle) -> None:
    completion = openai_client(mock_upstream).chat.completions.create(model="gpt-4o-mini", messages=CHAT)

    assert completion.object == "chat.completion"
    assert completion.id.startswith("chatcmpl-")
    assert completion.model == "gpt-4o-mini"
    choice = completion.choices[0]
    assert choice.message.role == "assistant"
    assert choice.finish_reason == "stop"
    assert len(choice.message.content.split()) == 12
    assert completion.usage.completion_tokens == 12
    # six words of text plus per-message overhead: more than the words, not wildly more
    assert 6 < completion.usage.prompt_tokens < 30
    assert completion.usage.total_tokens == completion.usage.prompt_tokens + 12


def test_chat_completion_is_cut_short_by_max_tokens(mock_upstream: MockUpstreamHandle) -> None:
    client = openai_client(mock_upstream)
    by_max_tokens = client.chat.completions.create(model="gpt-4o", messages=CHAT, max_tokens=3)
    by_new_name = client.chat.completions.create(model="gpt-4o", messages=CHAT, max_completion_tokens=5)

    assert by_max_tokens.usage.completion_tokens == 3
    assert by_max_tokens.choices[0].finish_reason == "length"
    assert by_new_name.usage.completion_tokens == 5


def test_chat_stream_sends_role_then_words_then_finish_then_usage(mock_upstream: MockUpstreamHandle) -> None:
    stream = openai_client(mock_upstream).chat.completions.create(
        model="gpt-4o", messages=CHAT, stream=True, stream_options={"include_usage": True}
    )
    chunks = list(stream)

    assert all(chunk.object == "chat.completion.chunk" for chunk in chunks)
    assert chunks[0].choices[0].delta.role == "assistant"
    words = [c.choices[0].delta.content for c in chunks[1:-2]]
    assert len(words) == 12 and all(words)
    assert chunks[-2].choices[0].finish_reason == "stop"
    assert chunks[-1].choices == []
    assert chunks[-1].usage.completion_tokens == 12
    assert all(chunk.usage is None for chunk in chunks[:-1])


def test_chat_stream_without_include_usage_has_no_usage_chunk(mock_upstream: MockUpstreamHandle) -> None:
    response = httpx.post(
        mock_upstream.url + "/v1/chat/completions",
        json={"model": "gpt-4o", "messages": CHAT, "stream": True},
        headers={"authorization": "Bearer sk-test-plain-0001"},
    )

    assert response.headers["content-type"].startswith("text/event-stream")
    assert response.headers["transfer-encoding"] == "chunked"
    events = [block for block in response.text.split("\n\n") if block]
    assert events[-1] == "data: [DONE]"
    payloads = [json.loads(block.removeprefix("data: ")) for block in events[:-1]]
    assert all("usage" not in payload for payload in payloads)
    assert payloads[-1]["choices"][0]["finish_reason"] == "stop"


def test_chat_without_messages_is_a_400_naming_the_parameter(mock_upstream: MockUpstreamHandle) -> None:
    with pytest.raises(openai.BadRequestError) as raised:
        openai_client(mock_upstream).chat.completions.create(model="gpt-4o", messages=None)  # type: ignore[arg-type]

    assert raised.value.status_code == 400
    assert raised.value.param == "messages"
    assert raised.value.type == "invalid_request_error"


def test_body_that_is_not_json_is_a_400(mock_upstream: MockUpstreamHandle) -> None:
    response = httpx.post(
        mock_upstream.url + "/v1/chat/completions",
        content=b"{not json",
        headers={"authorization": "Bearer sk-test-plain-0001", "content-type": "application/json"},
    )

    assert response.status_code == 400
    assert response.json()["error"]["type"] == "invalid_request_error"


def test_legacy_completion_answers_text(mock_upstream: MockUpstreamHandle) -> None:
    completion = openai_client(mock_upstream).completions.create(
        model="gpt-3.5-turbo-instruct", prompt="Once upon a time", max_tokens=4
    )

    assert completion.object == "text_completion"
    assert len(completion.choices[0].text.split()) == 4
    assert completion.usage.prompt_tokens == 4


def test_embeddings_are_deterministic_vectors_of_eight(mock_upstream: MockUpstreamHandle) -> None:
    client = openai_client(mock_upstream)
    first = client.embeddings.create(model="text-embedding-3-small", input=["alpha beta", "gamma"])
    again = client.embeddings.create(
        model="text-embedding-3-small", input="alpha beta", encoding_format="float"
    )

    assert [item.index for item in first.data] == [0, 1]
    assert all(len(item.embedding) == 8 for item in first.data)
    assert first.data[0].embedding != first.data[1].embedding
    assert again.data[0].embedding == pytest.approx(first.data[0].embedding, abs=1e-6)
    assert first.usage.prompt_tokens == first.usage.total_tokens == 3


def test_models_list_names_current_models(mock_upstream: MockUpstreamHandle) -> None:
    client = openai_client(mock_upstream)
    names = {model.id for model in client.models.list()}
    model = client.models.retrieve("gpt-4.1-mini")

    assert {"gpt-4o", "gpt-4o-mini", "gpt-4.1", "gpt-4.1-mini", "o3-mini", "text-embedding-3-small"} <= names
    assert model.object == "model" and model.owned_by
    with pytest.raises(openai.NotFoundError):
        client.models.retrieve("gpt-nonexistent")


def test_responses_answer_output_text_and_usage(mock_upstream: MockUpstreamHandle) -> None:
    response = openai_client(mock_upstream).responses.create(model="gpt-4.1", input="Say hello to the pool")

    assert response.object == "response"
    assert response.status == "completed"
    assert len(response.output_text.split()) == 12
    assert response.usage.output_tokens == 12
    assert response.usage.total_tokens == response.usage.input_tokens + 12


def test_responses_stream_ends_with_completed_usage(mock_upstream: MockUpstreamHandle) -> None:
    events = list(openai_client(mock_upstream).responses.create(model="gpt-4.1", input="hello", stream=True))

    types = [event.type for event in events]
    assert types[0] == "response.created"
    assert types.count("response.output_text.delta") == 12
    assert types[-1] == "response.completed"
    assert events[-1].response.usage.output_tokens == 12


def test_moderation_flags_nothing(mock_upstream: MockUpstreamHandle) -> None:
    moderation = openai_client(mock_upstream).moderations.create(input=["one", "two"])

    assert [result.flagged for result in moderation.results] == [False, False]


def test_request_without_key_is_refused_like_the_real_api(mock_upstream: MockUpstreamHandle) -> None:
    response = httpx.get(mock_upstream.url + "/v1/models")

    assert response.status_code == 401
    assert "You didn't provide an API key" in response.json()["error"]["message"]
    assert response.headers["x-request-id"].startswith("req_")


def test_other_v1_paths_are_answered_so_forwarding_shows_in_the_recording(
    mock_upstream: MockUpstreamHandle,
) -> None:
    headers = {"authorization": "Bearer sk-test-plain-0001"}
    files = httpx.get(mock_upstream.url + "/v1/files", headers=headers)
    outside = httpx.post(mock_upstream.url + "/foo", headers=headers)

    assert files.status_code == 200
    assert files.json() == {"object": "mock", "path": "/v1/files"}
    assert outside.status_code == 404
    assert outside.json() == {
        "error": {
            "message": "Invalid URL (POST /foo)",
            "type": "invalid_request_error",
            "param": None,
            "code": None,
        }
    }


# --- Anthropic ----------------------------------------------------------------


def test_anthropic_message_has_the_real_shape_and_usage(mock_upstream: MockUpstreamHandle) -> None:
    message = anthropic_client(mock_upstream).messages.create(
        model="claude-haiku-4-5", max_tokens=100, messages=CLAUDE_CHAT, system="Be brief."
    )

    assert message.type == "message" and message.role == "assistant"
    assert message.id.startswith("msg_")
    assert message.model == "claude-haiku-4-5"
    assert message.stop_reason == "end_turn"
    assert len(message.content[0].text.split()) == 12
    assert message.usage.output_tokens == 12
    assert message.usage.input_tokens > 5


def test_anthropic_max_tokens_cuts_the_reply_short(mock_upstream: MockUpstreamHandle) -> None:
    message = anthropic_client(mock_upstream).messages.create(
        model="claude-haiku-4-5", max_tokens=2, messages=CLAUDE_CHAT
    )

    assert message.stop_reason == "max_tokens"
    assert message.usage.output_tokens == 2


def test_anthropic_stream_follows_the_real_event_sequence(mock_upstream: MockUpstreamHandle) -> None:
    with anthropic_client(mock_upstream).messages.stream(
        model="claude-haiku-4-5", max_tokens=100, messages=CLAUDE_CHAT
    ) as stream:
        types = [event.type for event in stream]
        final = stream.get_final_message()

    assert types[:2] == ["message_start", "content_block_start"]
    assert types.count("content_block_delta") == 12
    assert types[-3:] == ["content_block_stop", "message_delta", "message_stop"]
    assert final.usage.output_tokens == 12
    assert final.usage.input_tokens > 0
    assert final.stop_reason == "end_turn"
    assert len(final.content[0].text.split()) == 12


def test_anthropic_stream_frames_every_event_with_its_name(mock_upstream: MockUpstreamHandle) -> None:
    response = httpx.post(
        mock_upstream.url + "/v1/messages",
        json={"model": "claude-haiku-4-5", "max_tokens": 3, "messages": CLAUDE_CHAT, "stream": True},
        headers={"x-api-key": "sk-ant-test-plain-0001", "anthropic-version": "2023-06-01"},
    )

    blocks = [block for block in response.text.split("\n\n") if block]
    names = [block.split("\n")[0].removeprefix("event: ") for block in blocks]
    assert names == [
        "message_start",
        "content_block_start",
        "ping",
        "content_block_delta",
        "content_block_delta",
        "content_block_delta",
        "content_block_stop",
        "message_delta",
        "message_stop",
    ]
    delta = json.loads(blocks[-2].split("\n")[1].removeprefix("data: "))
    assert delta["delta"]["stop_reason"] == "max_tokens"
    assert delta["usage"]["output_tokens"] == 3


def test_anthropic_counts_tokens(mock_upstream: MockUpstreamHandle) -> None:
    client = anthropic_client(mock_upstream)
    short = client.messages.count_tokens(model="claude-haiku-4-5", messages=CLAUDE_CHAT)
    longer = client.messages.count_tokens(
        model="claude-haiku-4-5", messages=[{"role": "user", "content": "word " * 50}]
    )

    assert short.input_tokens > 0
    assert longer.input_tokens > short.input_tokens


def test_anthropic_models_list_has_the_anthropic_shape(mock_upstream: MockUpstreamHandle) -> None:
    response = httpx.get(
        mock_upstream.url + "/v1/models",
        headers={"x-api-key": "sk-ant-test-plain-0001", "anthropic-version": "2023-06-01"},
    )
    page = response.json()
    model = anthropic_client(mock_upstream).models.retrieve(page["first_id"])

    assert response.headers["request-id"].startswith("req_")
    assert page["has_more"] is False
    assert page["data"][0] == {
        "type": "model",
        "id": page["first_id"],
        "display_name": model.display_name,
        "created_at": page["data"][0]["created_at"],
    }
    assert page["last_id"] == page["data"][-1]["id"]


def test_anthropic_needs_a_key_and_a_version(mock_upstream: MockUpstreamHandle) -> None:
    body = {"model": "claude-haiku-4-5", "max_tokens": 10, "messages": CLAUDE_CHAT}
    no_key = httpx.post(
        mock_upstream.url + "/v1/messages", json=body, headers={"anthropic-version": "2023-06-01"}
    )
    no_version = httpx.post(mock_upstream.url + "/v1/messages", json=body, headers={"x-api-key": "sk-ant-x"})

    assert no_key.status_code == 401
    assert no_key.json()["error"] == {
        "type": "authentication_error",
        "message": "x-api-key header is required",
    }
    assert no_version.status_code == 400
    assert no_version.json()["error"]["type"] == "invalid_request_error"


def test_anthropic_message_without_max_tokens_is_a_400(mock_upstream: MockUpstreamHandle) -> None:
    response = httpx.post(
        mock_upstream.url + "/v1/messages",
        json={"model": "claude-haiku-4-5", "messages": CLAUDE_CHAT},
        headers={"x-api-key": "sk-ant-test-plain-0001", "anthropic-version": "2023-06-01"},
    )

    assert response.status_code == 400
    assert response.json()["type"] == "error"
    assert "max_tokens" in response.json()["error"]["message"]


# --- keys that misbehave --------------------------------------------------------


def test_revoked_openai_key_is_invalid_api_key_with_only_its_tail_shown(
    mock_upstream: MockUpstreamHandle,
) -> None:
    key = "sk-test-revoked-secretpart-wxyz"
    with pytest.raises(openai.AuthenticationError) as raised:
        openai_client(mock_upstream, key).chat.completions.create(model="gpt-4o", messages=CHAT)

    assert raised.value.code == "invalid_api_key"
    assert "wxyz" in raised.value.message
    assert "secretpart" not in raised.value.message


def test_openai_key_without_quota_is_insufficient_quota(mock_upstream: MockUpstreamHandle) -> None:
    with pytest.raises(openai.RateLimitError) as raised:
        openai_client(mock_upstream, "sk-test-noquota-1").chat.completions.create(
            model="gpt-4o", messages=CHAT
        )

    assert raised.value.code == "insufficient_quota"
    assert raised.value.type == "insufficient_quota"


def test_forbidden_failing_and_overloaded_openai_keys(mock_upstream: MockUpstreamHandle) -> None:
    def ask(key: str) -> None:
        openai_client(mock_upstream, key).chat.completions.create(model="gpt-4o", messages=CHAT)

    with pytest.raises(openai.PermissionDeniedError):
        ask("sk-test-forbidden-1")
    with pytest.raises(openai.InternalServerError) as failed:
        ask("sk-test-fail500-1")
    with pytest.raises(openai.InternalServerError) as overloaded:
        ask("sk-test-overloaded-1")

    assert failed.value.status_code == 500 and failed.value.type == "server_error"
    assert overloaded.value.status_code == 503


def test_revoked_anthropic_key_is_an_authentication_error(mock_upstream: MockUpstreamHandle) -> None:
    with pytest.raises(anthropic.AuthenticationError) as raised:
        anthropic_client(mock_upstream, "sk-ant-revoked-1").messages.create(
            model="claude-haiku-4-5", max_tokens=10, messages=CLAUDE_CHAT
        )

    assert raised.value.body["error"] == {"type": "authentication_error", "message": "invalid x-api-key"}


def test_anthropic_key_without_credit_is_a_402_billing_error(
    mock_upstream: MockUpstreamHandle,
) -> None:
    with pytest.raises(anthropic.APIStatusError) as raised:
        anthropic_client(mock_upstream, "sk-ant-noquota-1").messages.create(
            model="claude-haiku-4-5", max_tokens=10, messages=CLAUDE_CHAT
        )

    assert raised.value.status_code == 402
    assert raised.value.body["error"]["type"] == "billing_error"
    assert "credit balance is too low" in raised.value.message


def test_forbidden_failing_and_overloaded_anthropic_keys(mock_upstream: MockUpstreamHandle) -> None:
    def ask(key: str) -> None:
        anthropic_client(mock_upstream, key).messages.create(
            model="claude-haiku-4-5", max_tokens=10, messages=CLAUDE_CHAT
        )

    with pytest.raises(anthropic.PermissionDeniedError):
        ask("sk-ant-forbidden-1")
    with pytest.raises(anthropic.InternalServerError) as failed:
        ask("sk-ant-fail500-1")
    with pytest.raises(anthropic.InternalServerError) as overloaded:
        ask("sk-ant-overloaded-1")

    assert failed.value.status_code == 500
    assert overloaded.value.status_code == 529
    assert overloaded.value.body["error"]["type"] == "overloaded_error"


def test_ratelimited_key_is_always_429_with_retry_after_and_headers(
    mock_upstream: MockUpstreamHandle,
) -> None:
    with pytest.raises(openai.RateLimitError) as raised:
        openai_client(mock_upstream, "sk-test-ratelimited-1").chat.completions.create(
            model="gpt-4o", messages=CHAT
        )

    headers = raised.value.response.headers
    assert raised.value.code == "rate_limit_exceeded"
    assert raised.value.type == "requests"
    assert "Rate limit reached for gpt-4o" in raised.value.message
    assert headers["retry-after"] == "1"
    assert headers["x-ratelimit-remaining-requests"] == "0"
    assert "x-ratelimit-reset-requests" in headers and "x-ratelimit-limit-tokens" in headers


def test_rpm_key_is_limited_after_n_requests_with_headers_on_every_reply(
    mock_upstream: MockUpstreamHandle,
) -> None:
    key = f"sk-test-rpm3-{time.time_ns()}"
    client = openai_client(mock_upstream, key)
    replies = [
        client.chat.completions.with_raw_response.create(model="gpt-4o", messages=CHAT) for _ in range(3)
    ]
    with pytest.raises(openai.RateLimitError) as raised:
        client.chat.completions.create(model="gpt-4o", messages=CHAT)

    assert [r.headers["x-ratelimit-remaining-requests"] for r in replies] == ["2", "1", "0"]
    assert all(r.headers["x-ratelimit-limit-requests"] == "3" for r in replies)
    assert replies[0].headers["x-ratelimit-reset-requests"].endswith("s")
    limited = raised.value.response.headers
    assert 1 <= int(limited["retry-after"]) <= 60
    assert limited["x-ratelimit-remaining-requests"] == "0"
    assert "Limit 3, Used 3, Requested 1" in raised.value.message


def test_rpm_limit_on_anthropic_reports_anthropic_headers(mock_upstream: MockUpstreamHandle) -> None:
    client = anthropic_client(mock_upstream, f"sk-ant-rpm1-{time.time_ns()}")
    first = client.messages.with_raw_response.create(
        model="claude-haiku-4-5", max_tokens=5, messages=CLAUDE_CHAT
    )
    with pytest.raises(anthropic.RateLimitError) as raised:
        client.messages.create(model="claude-haiku-4-5", max_tokens=5, messages=CLAUDE_CHAT)

    assert first.headers["anthropic-ratelimit-requests-limit"] == "1"
    assert first.headers["anthropic-ratelimit-requests-remaining"] == "0"
    assert first.headers["anthropic-ratelimit-requests-reset"].endswith("Z")
    assert "anthropic-ratelimit-tokens-remaining" in first.headers
    assert raised.value.body["error"]["type"] == "rate_limit_error"
    assert 1 <= int(raised.value.response.headers["retry-after"]) <= 60


def test_unlimited_key_gets_no_rate_limit_headers(mock_upstream: MockUpstreamHandle) -> None:
    reply = openai_client(mock_upstream).chat.completions.with_raw_response.create(
        model="gpt-4o", messages=CHAT
    )

    assert "x-ratelimit-limit-requests" not in reply.headers
    assert reply.headers["openai-processing-ms"].isdigit()


def test_default_rpm_applies_to_keys_that_name_none() -> None:
    with run_mock_upstream_in_thread(rpm=1) as mock:
        client = openai_client(mock, "sk-test-plain-0001")
        client.models.list()
        with pytest.raises(openai.RateLimitError):
            client.models.list()
        openai_client(mock, "sk-test-rpm5-other").models.list()


# --- recording and HTTP -----------------------------------------------------------


def test_recording_shows_what_each_request_carried(mock_upstream: MockUpstreamHandle) -> None:
    mock_upstream.reset()
    openai_client(mock_upstream, "sk-test-recorded-0001").with_options(
        default_headers={"OpenAI-Organization": "org-recorded"}
    ).models.list()
    anthropic_client(mock_upstream, "sk-ant-recorded-0002").messages.count_tokens(
        model="claude-haiku-4-5", messages=CLAUDE_CHAT
    )
    httpx.get(mock_upstream.url + "/v1/models?limit=5", headers={"x-api-key": "sk-ant-header-key"})

    first, second, third = mock_upstream.requests
    assert (first["method"], first["path"], first["key"], first["status"]) == (
        "GET",
        "/v1/models",
        "sk-test-recorded-0001",
        200,
    )
    assert first["headers"]["openai-organization"] == "org-recorded"
    assert first["completed"] is True
    assert (second["method"], second["path"], second["key"]) == (
        "POST",
        "/v1/messages/count_tokens",
        "sk-ant-recorded-0002",
    )
    assert json.loads(second["body"])["model"] == "claude-haiku-4-5"
    assert (third["query"], third["key"], third["status"]) == ("limit=5", "sk-ant-header-key", 400)
    assert first["started_at"] <= second["started_at"] <= third["started_at"]


def test_control_endpoints_list_and_reset_the_recording(mock_upstream: MockUpstreamHandle) -> None:
    httpx.get(mock_upstream.url + "/v1/models", headers={"authorization": "Bearer sk-test-plain-0001"})
    listed = httpx.get(mock_upstream.url + "/_mock/requests").json()
    reset = httpx.post(mock_upstream.url + "/_mock/reset")

    assert listed[-1]["path"] == "/v1/models" and listed[-1]["key"] == "sk-test-plain-0001"
    assert reset.status_code == 200
    assert mock_upstream.requests == []


def test_chunked_request_body_is_read_whole(mock_upstream: MockUpstreamHandle) -> None:
    mock_upstream.reset()
    body = json.dumps({"model": "gpt-4o", "messages": CHAT}).encode()
    parts = iter([body[:10], body[10:]])
    response = httpx.post(
        mock_upstream.url + "/v1/chat/completions",
        content=parts,
        headers={"authorization": "Bearer sk-test-plain-0001", "content-type": "application/json"},
    )

    assert response.status_code == 200
    assert mock_upstream.requests[-1]["headers"]["transfer-encoding"] == "chunked"
    assert mock_upstream.requests[-1]["body"] == body.decode()


def test_one_connection_carries_several_requests(mock_upstream: MockUpstreamHandle) -> None:
    request = (
        b"GET /v1/models/gpt-4o HTTP/1.1\r\nHost: mock\r\nAuthorization: Bearer sk-test-plain-0001\r\n\r\n"
    )
    with socket.create_connection(("127.0.0.1", mock_upstream.port), timeout=5) as sock:
        answers = [_read_one_response(sock, request) for _ in range(3)]

    assert all(status == 200 and json.loads(body)["id"] == "gpt-4o" for status, body in answers)


def test_recording_keeps_only_the_last_ten_thousand_requests() -> None:
    requests = b"".join(
        b"GET /v1/files?i=%d HTTP/1.1\r\nHost: mock\r\nAuthorization: Bearer sk-test-many\r\n\r\n" % i
        for i in range(10_001)
    )
    with run_mock_upstream_in_thread() as mock:
        with socket.create_connection(("127.0.0.1", mock.port), timeout=30) as sock:
            sock.sendall(requests)  # pipelined: answered in order on one connection
            received = b""
            while received.count(b"HTTP/1.1 200") < 10_001:
                received += sock.recv(1 << 20)
        recorded = mock.requests

    assert len(recorded) == 10_000
    assert (recorded[0]["query"], recorded[-1]["query"]) == ("i=1", "i=10000")


def _read_one_response(sock: socket.socket, request: bytes) -> tuple[int, bytes]:
    sock.sendall(request)
    data = b""
    while b"\r\n\r\n" not in data:
        data += sock.recv(65536)
    head, _, body = data.partition(b"\r\n\r\n")
    length = next(
        int(line.split(b":")[1]) for line in head.split(b"\r\n") if line.lower().startswith(b"content-length")
    )
    while len(body) < length:
        body += sock.recv(65536)
    return int(head.split(b" ")[1]), body


@pytest.fixture(scope="module")
def slow_mock() -> Iterator[MockUpstreamHandle]:
    """Streams 10 tokens at 20 a second: half a second a stream."""
    handle = run_mock_upstream_in_thread(tokens_per_sec=20, output_tokens=10)
    yield handle
    handle.stop()


def _stream_chat(mock: MockUpstreamHandle, *, read_all: bool) -> None:
    body: dict[str, Any] = {"model": "gpt-4o", "messages": CHAT, "stream": True}
    with httpx.stream(
        "POST",
        mock.url + "/v1/chat/completions",
        json=body,
        headers={"authorization": "Bearer sk-test-plain-0001"},
    ) as response:
        for _chunk in response.iter_raw():
            if not read_all:
                break


def test_client_hanging_up_mid_stream_is_recorded_as_not_completed(slow_mock: MockUpstreamHandle) -> None:
    slow_mock.reset()
    _stream_chat(slow_mock, read_all=False)
    time.sleep(1.5)  # well past the moment the whole stream would have been written

    assert slow_mock.requests[-1]["status"] == 200
    assert slow_mock.requests[-1]["completed"] is False


def test_stream_read_to_the_end_is_recorded_as_completed(slow_mock: MockUpstreamHandle) -> None:
    slow_mock.reset()
    _stream_chat(slow_mock, read_all=True)

    assert slow_mock.requests[-1]["completed"] is True


# --- Accounts: organizations, per-key model lists, revival -------------------------------


def test_organizations_list_the_default_one_first_and_orgs2_keys_belong_to_two(
    mock_upstream: MockUpstreamHandle,
) -> None:
    def orgs(key: str) -> list[dict[str, Any]]:
        reply = httpx.get(mock_upstream.url + "/v1/organizations", headers={"authorization": f"Bearer {key}"})
        assert reply.status_code == 200
        return reply.json()["data"]  # type: ignore[no-any-return]

    single, double = orgs("sk-test-plain-0001"), orgs("sk-orgs2-0001")

    assert [o["is_default"] for o in single] == [True]
    assert [o["is_default"] for o in double] == [True, False]
    assert single[0]["id"] == double[0]["id"] and double[1]["id"].startswith("org-")


def test_an_orgs_key_is_refused_for_an_organization_it_is_not_in(mock_upstream: MockUpstreamHandle) -> None:
    second = "org-mockextra000000000000002"
    member = openai.OpenAI(
        base_url=mock_upstream.url + "/v1", api_key="sk-orgs2-0002", organization=second, max_retries=0
    )
    stranger = openai.OpenAI(
        base_url=mock_upstream.url + "/v1", api_key="sk-orgs1-0003", organization=second, max_retries=0
    )

    assert member.chat.completions.with_raw_response.create(
        model="gpt-4o", messages=CHAT
    ).headers["openai-organization"] == second
    with pytest.raises(openai.AuthenticationError) as refused:
        stranger.chat.completions.create(model="gpt-4o", messages=CHAT)
    assert refused.value.code == "mismatched_organization"


def test_nogpt4_key_neither_lists_nor_reaches_gpt_4_models(mock_upstream: MockUpstreamHandle) -> None:
    client = openai_client(mock_upstream, "sk-nogpt4-0001")

    names = {model.id for model in client.models.list()}

    assert "gpt-5" in names and not any(name.startswith("gpt-4") for name in names)
    with pytest.raises(openai.NotFoundError) as missing:
        client.chat.completions.create(model="gpt-4o", messages=CHAT)
    assert missing.value.code == "model_not_found"
    with pytest.raises(openai.NotFoundError):
        client.models.retrieve("gpt-4o")
    assert client.chat.completions.create(model="gpt-5", messages=CHAT).choices


def test_noopus_anthropic_key_neither_lists_nor_reaches_opus(mock_upstream: MockUpstreamHandle) -> None:
    client = anthropic_client(mock_upstream, "sk-ant-noopus-0001")

    names = {model.id for model in client.models.list()}

    assert names and not any("opus" in name for name in names)
    with pytest.raises(anthropic.NotFoundError):
        client.messages.create(model="claude-opus-4-5-20251101", max_tokens=5, messages=CLAUDE_CHAT)


def test_a_revived_key_is_refused_no_more_until_reset() -> None:
    with run_mock_upstream_in_thread() as mock:
        client = openai_client(mock, "sk-revoked-0009")
        with pytest.raises(openai.AuthenticationError):
            client.models.list()

        revived = httpx.post(mock.url + "/_mock/keys/sk-revoked-0009/revive")
        listed = client.models.list()
        mock.reset()

        assert revived.status_code == 200 and listed.data
        with pytest.raises(openai.AuthenticationError):
            client.models.list()
