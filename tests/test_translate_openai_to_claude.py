"""The official `openai` SDK reaches Claude through poolgate: Anthropic's Messages API upstream, OpenAI's format back.

Every test checks both sides: what the SDK hands the application, and what the
fake Anthropic upstream received (the request mapping), so a translation that
"works" only because the fake is lenient would still fail here.
"""

from __future__ import annotations

import base64
import json
from typing import Any

import httpx
import openai
import pydantic
import pytest

from fake_upstream.fake_text import completion_text
from fake_upstream.leaks import echoed_forms

ANTHROPIC_KEY = "sk-ant-test-translate-0001"
OPENAI_KEY = "sk-test-translate-openai-0001"
CLAUDE = "claude-sonnet-4-5"
PNG_1PX = base64.b64encode(
    bytes.fromhex("89504e470d0a1a0a0000000d4948445200000001000000010806000000"
                  "1f15c4890000000d49444154789c63000100000500010d0a2db40000000049454e44ae426082")
).decode()


class GetWeather(pydantic.BaseModel):
    """Current weather in a city."""

    city: str


class GetTime(pydantic.BaseModel):
    """Local time in a city."""

    city: str
    utc_offset: int


TOOLS: Any = [openai.pydantic_function_tool(GetWeather), openai.pydantic_function_tool(GetTime)]
ASK_BOTH: Any = [{"role": "user", "content": "Use GetWeather and GetTime for Paris."}]


@pytest.fixture
def gateway(start_gateway: Any) -> Any:
    return start_gateway(OPENAI_KEY=OPENAI_KEY, ANTHROPIC_KEY=ANTHROPIC_KEY)


def client(gateway: Any, base: str = "/v1") -> openai.OpenAI:
    return openai.OpenAI(base_url=gateway.url + base, api_key="x", max_retries=0)


def sent(upstream: Any, index: int = -1) -> dict[str, Any]:
    request = upstream.requests[index]
    assert request["path"] == "/v1/messages"
    assert request["key"] == ANTHROPIC_KEY
    return json.loads(request["body"])  # type: ignore[no-any-return]


def test_a_chat_completion_for_claude_is_a_message_upstream_and_a_completion_back(gateway: Any,
                                                                                   upstream: Any) -> None:
    reply = client(gateway).chat.completions.create(model=CLAUDE, messages=[
        {"role": "system", "content": "Be brief."},
        {"role": "developer", "content": "Answer in English."},
        {"role": "user", "content": "Hello"},
        {"role": "user", "content": [{"type": "text", "text": "Claude"}, {"type": "text", "text": ""}]},
    ], user="user-42")

    body = sent(upstream)
    assert body["system"] == [{"type": "text", "text": "Be brief."}, {"type": "text", "text": "Answer in English."}]
    assert body["messages"] == [{"role": "user", "content": [{"type": "text", "text": "Hello"},
                                                             {"type": "text", "text": "Claude"}]}]
    assert body["max_tokens"] == 8192  # Anthropic requires it; the client named none
    assert body["metadata"] == {"user_id": "user-42"}
    assert reply.object == "chat.completion"
    assert reply.model.startswith("claude-sonnet-4-5")
    assert reply.choices[0].message.content == completion_text(16)
    assert reply.choices[0].finish_reason == "stop"
    assert reply.usage is not None and reply.usage.prompt_tokens > 0
    assert reply.usage.completion_tokens == 16
    totals = gateway.usage_totals()
    assert totals["input_tokens"] == reply.usage.prompt_tokens  # counted in the upstream's family, once
    assert totals["output_tokens"] == 16


def test_a_streamed_chat_completion_from_claude_arrives_chunk_by_chunk(gateway: Any, upstream: Any) -> None:
    chunks = list(client(gateway).chat.completions.create(
        model=CLAUDE, messages=[{"role": "user", "content": "Stream please"}], stream=True, max_tokens=10,
    ))

    assert sent(upstream)["stream"] is True and sent(upstream)["max_tokens"] == 10
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == completion_text(10)
    assert chunks[0].choices[0].delta.role == "assistant"
    assert [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason] == ["length"]
    assert all(c.usage is None for c in chunks)  # the client did not ask for usage: it gets none
    assert len({c.id for c in chunks}) == 1
    assert gateway.usage_totals()["output_tokens"] == 10


def test_include_usage_gets_a_usage_chunk_with_cache_reads_counted_in_the_prompt(gateway: Any,
                                                                                 upstream: Any) -> None:
    cached: Any = {"role": "system", "content": [
        {"type": "text", "text": "A long shared preamble " * 20, "cache_control": {"type": "ephemeral"}}]}
    ask: Any = [cached, {"role": "user", "content": "hi"}]
    usages = []
    for _ in range(2):
        chunks = list(client(gateway).chat.completions.create(
            model=CLAUDE, messages=ask, stream=True, stream_options={"include_usage": True}))
        assert chunks[-1].choices == []
        usages.append(chunks[-1].usage)

    assert sent(upstream)["system"][0]["cache_control"] == {"type": "ephemeral"}
    first, second = usages
    assert first is not None and second is not None
    assert first.prompt_tokens == second.prompt_tokens > 80  # input + cache writes / reads, never less
    assert first.prompt_tokens_details is not None and first.prompt_tokens_details.cached_tokens == 0
    assert second.prompt_tokens_details is not None and second.prompt_tokens_details.cached_tokens > 80
    assert second.completion_tokens == 16
    assert gateway.usage_totals()["input_tokens"] == first.prompt_tokens + second.prompt_tokens


def test_a_tool_round_trip_with_two_parallel_calls(gateway: Any, upstream: Any) -> None:
    oai = client(gateway)
    first = oai.chat.completions.create(model=CLAUDE, messages=ASK_BOTH, tools=TOOLS, tool_choice="auto")

    calls = first.choices[0].message.tool_calls or []
    assert first.choices[0].finish_reason == "tool_calls"
    assert [c.function.name for c in calls] == ["GetWeather", "GetTime"]  # type: ignore[union-attr]
    assert len({c.id for c in calls}) == 2
    assert set(json.loads(calls[1].function.arguments)) == {"city", "utc_offset"}  # type: ignore[union-attr]
    assert sent(upstream)["tools"][0] == {"name": "GetWeather", "description": "Current weather in a city.",
                                          "input_schema": TOOLS[0]["function"]["parameters"]}
    assert sent(upstream)["tool_choice"] == {"type": "auto"}

    history: Any = [*ASK_BOTH, first.choices[0].message.model_dump(exclude_none=True),
                    {"role": "tool", "tool_call_id": calls[0].id, "content": "Sunny"},
                    {"role": "tool", "tool_call_id": calls[1].id, "content": "12:00"}]
    history[1]["content"] = ""  # as clients replay a tool-calling turn: never sent as an empty text block
    answer = oai.chat.completions.create(model=CLAUDE, messages=history, tools=TOOLS)

    body = sent(upstream)
    assert [m["role"] for m in body["messages"]] == ["user", "assistant", "user"]
    assert [b["type"] for b in body["messages"][1]["content"]] == ["tool_use", "tool_use"]  # no empty text
    assert body["messages"][2]["content"] == [
        {"type": "tool_result", "tool_use_id": calls[0].id, "content": "Sunny"},
        {"type": "tool_result", "tool_use_id": calls[1].id, "content": "12:00"},
    ]
    assert answer.choices[0].finish_reason == "stop"
    assert answer.choices[0].message.content == completion_text(16)


def test_streamed_parallel_tool_calls_are_reassembled_by_the_sdk(gateway: Any, upstream: Any) -> None:
    with client(gateway).chat.completions.stream(model=CLAUDE, messages=ASK_BOTH, tools=TOOLS) as stream:
        final = stream.get_final_completion()

    calls = final.choices[0].message.tool_calls or []
    assert final.choices[0].finish_reason == "tool_calls"
    assert [c.function.name for c in calls] == ["GetWeather", "GetTime"]
    assert isinstance(calls[0].function.parsed_arguments, GetWeather)
    assert isinstance(calls[1].function.parsed_arguments, GetTime)
    assert final.choices[0].message.content  # Claude said what it was about to do, as a text block first


def test_parallel_tool_calls_false_and_a_named_tool_reach_claude_as_its_own_settings(gateway: Any,
                                                                                    upstream: Any) -> None:
    oai = client(gateway)
    one = oai.chat.completions.create(model=CLAUDE, messages=ASK_BOTH, tools=TOOLS, parallel_tool_calls=False)
    assert sent(upstream)["tool_choice"] == {"type": "auto", "disable_parallel_tool_use": True}
    assert len(one.choices[0].message.tool_calls or []) == 1
    oai.chat.completions.create(model=CLAUDE, messages=ASK_BOTH, tools=TOOLS, tool_choice="required")
    assert sent(upstream)["tool_choice"] == {"type": "any"}
    oai.chat.completions.create(model=CLAUDE, messages=ASK_BOTH, tools=TOOLS, tool_choice="none")
    assert sent(upstream)["tool_choice"] == {"type": "none"}
    named = oai.chat.completions.create(model=CLAUDE, messages=ASK_BOTH, tools=TOOLS,
                                        tool_choice={"type": "function", "function": {"name": "GetTime"}})
    assert sent(upstream)["tool_choice"] == {"type": "tool", "name": "GetTime"}
    assert [c.function.name for c in named.choices[0].message.tool_calls or []] == ["GetTime"]  # type: ignore


def test_images_go_as_a_base64_source_typed_from_their_bytes_or_as_a_url(gateway: Any, upstream: Any) -> None:
    client(gateway).chat.completions.create(model=CLAUDE, messages=[{"role": "user", "content": [
        {"type": "text", "text": "What is this?"},
        {"type": "image_url", "image_url": {"url": f"data:image/jpeg;base64,{PNG_1PX}"}},  # declared wrongly
        {"type": "image_url", "image_url": {"url": "https://example.com/cat.png"}},
    ]}])

    blocks = sent(upstream)["messages"][0]["content"]
    assert blocks[1] == {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": PNG_1PX}}
    assert blocks[2] == {"type": "image", "source": {"type": "url", "url": "https://example.com/cat.png"}}


def test_an_image_claude_cannot_read_is_a_clear_400_before_any_key_is_used(gateway: Any, upstream: Any) -> None:
    bmp = base64.b64encode(b"BM" + bytes(60)).decode()
    with pytest.raises(openai.BadRequestError) as raised:
        client(gateway).chat.completions.create(model=CLAUDE, messages=[{"role": "user", "content": [
            {"type": "image_url", "image_url": {"url": f"data:image/bmp;base64,{bmp}"}}]}])
    assert "JPEG, PNG, GIF and WebP" in raised.value.message
    assert upstream.requests == []


def test_a_stop_sequence_ends_the_reply_and_whitespace_only_ones_are_dropped(gateway: Any, upstream: Any) -> None:
    reply = client(gateway).chat.completions.create(
        model=CLAUDE, messages=[{"role": "user", "content": "hi"}], stop=["mock", " ", "\n"])

    assert sent(upstream)["stop_sequences"] == ["mock"]
    assert reply.choices[0].message.content == completion_text(16).split("mock")[0]
    assert reply.choices[0].finish_reason == "stop"


def test_more_than_one_choice_is_a_clear_400_in_openai_format(gateway: Any, upstream: Any) -> None:
    with pytest.raises(openai.BadRequestError) as raised:
        client(gateway).chat.completions.create(model=CLAUDE, messages=[{"role": "user", "content": "hi"}], n=2)
    # Said by the schema checks (gateway/request_schema.py), before translation is reached.
    assert "`n` greater than 1 cannot be served for Claude models" in raised.value.message
    assert upstream.requests == []


def test_an_upstream_error_before_the_stream_comes_back_in_openai_format(gateway: Any, upstream: Any) -> None:
    for stream in (False, True):
        with pytest.raises(openai.NotFoundError) as raised:
            client(gateway).chat.completions.create(
                model="claude-sonnet-9-nope", messages=[{"role": "user", "content": "hi"}], stream=stream)
        assert raised.value.body == {"message": "model: claude-sonnet-9-nope", "type": "invalid_request_error",
                                     "param": None, "code": "not_found_error"}


def test_an_upstream_error_mid_stream_becomes_an_openai_error_chunk(start_gateway: Any, upstream: Any) -> None:
    gateway = start_gateway(ANTHROPIC_KEY="sk-ant-test-streamerror-0001")
    got: list[str] = []
    with pytest.raises(openai.APIError) as raised:
        for chunk in client(gateway).chat.completions.create(
                model=CLAUDE, messages=[{"role": "user", "content": "hi"}], stream=True):
            got.append(chunk.choices[0].delta.content or "")
    assert "".join(got) == completion_text(2)  # what came before the failure was relayed
    assert raised.value.message == "Overloaded"
    assert raised.value.type == "server_error"


def test_model_aliases_apply_before_routing(start_gateway: Any, upstream: Any) -> None:
    gateway = start_gateway(ANTHROPIC_KEY=ANTHROPIC_KEY, OPENAI_KEY=OPENAI_KEY,
                            MODEL_ALIASES="gpt-4o=claude-haiku-4-5, fast = gpt-4o-mini")
    reply = client(gateway).chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "hi"}])
    assert sent(upstream)["model"] == "claude-haiku-4-5"
    assert reply.choices[0].message.content == completion_text(16)
    client(gateway).chat.completions.create(model="fast", messages=[{"role": "user", "content": "hi"}])
    assert upstream.requests[-1]["path"] == "/v1/chat/completions"
    assert json.loads(upstream.requests[-1]["body"])["model"] == "gpt-4o-mini"


def test_provider_routes_translate_only_when_the_operator_allows_it(start_gateway: Any, upstream: Any) -> None:
    plain = start_gateway(OPENAI_KEY=OPENAI_KEY, ANTHROPIC_KEY=ANTHROPIC_KEY)
    with pytest.raises(openai.BadRequestError):
        client(plain, "/proxy/openai/v1").chat.completions.create(
            model=CLAUDE, messages=[{"role": "user", "content": "hi"}])
    assert upstream.requests == []
    allowing = start_gateway(ANTHROPIC_KEY=ANTHROPIC_KEY, TRANSLATE_ON_PROVIDER_ROUTES="true")
    reply = client(allowing, "/proxy/openai/v1").chat.completions.create(
        model=CLAUDE, messages=[{"role": "user", "content": "hi"}])
    assert sent(upstream)["messages"] == [{"role": "user", "content": [{"type": "text", "text": "hi"}]}]
    assert reply.choices[0].message.content == completion_text(16)


@pytest.mark.parametrize("stream", [False, True])
def test_a_key_an_upstream_echoes_never_reaches_a_translated_client(start_gateway: Any, upstream: Any,
                                                                    stream: bool) -> None:
    key = "sk-ant-echokey-translate-0001"
    gateway = start_gateway(ANTHROPIC_KEY=key)
    body = {"model": CLAUDE, "messages": [{"role": "user", "content": "hi"}], "stream": stream}

    reply = httpx.post(gateway.url + "/v1/chat/completions", json=body, timeout=30)
    assert reply.status_code == 200
    assert upstream.requests[-1]["key"] == key  # the key that served it echoed itself in every channel
    for form in (key, *echoed_forms(key).values()):
        assert form not in reply.text and form not in str(reply.headers)
    if stream:  # the echo is an error event mid-stream: the client's stream ends with it, nothing after
        last = [b for b in reply.text.strip().split("\n\n") if not b.startswith(": poolgate: cost=")][-1]  # money aside
        assert json.loads(last.removeprefix("data: "))["error"]["message"].startswith("Upstream hiccup for API key")
    missing = httpx.post(gateway.url + "/v1/chat/completions", json={**body, "model": "claude-sonnet-9-nope"})
    assert missing.status_code == 404 and missing.json()["error"]["type"] == "invalid_request_error"
    for form in (key, *echoed_forms(key).values()):
        assert form not in missing.text
