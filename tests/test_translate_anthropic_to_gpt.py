"""The official `anthropic` SDK reaches GPT through poolgate: Chat Completions upstream, Anthropic's format back.

Every test checks what the SDK hands the application and what the fake OpenAI
upstream received.
"""

from __future__ import annotations

import base64
import json
from typing import Any

import anthropic
import pytest

from fake_upstream.fake_text import completion_text

ANTHROPIC_KEY = "sk-ant-test-translate-0002"
OPENAI_KEY = "sk-test-translate-openai-0002"
GPT = "gpt-4o-mini"
PNG = base64.b64encode(b"\x89PNG\r\n\x1a\n" + bytes(24)).decode()
WEATHER: Any = {"name": "GetWeather", "description": "Current weather in a city",
                "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}
TIME: Any = {"name": "GetTime", "input_schema": {"type": "object", "properties": {"utc_offset": {"type": "integer"}},
                                                 "required": ["utc_offset"]}}
ASK_BOTH: Any = [{"role": "user", "content": "Use GetWeather and GetTime for Paris."}]


@pytest.fixture
def gateway(start_gateway: Any) -> Any:
    return start_gateway(OPENAI_KEY=OPENAI_KEY, ANTHROPIC_KEY=ANTHROPIC_KEY)


def client(gateway: Any, base: str = "") -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=gateway.url + base, api_key="x", max_retries=0)


def sent(upstream: Any) -> dict[str, Any]:
    request = upstream.requests[-1]
    assert request["path"] == "/v1/chat/completions"
    assert request["key"] == OPENAI_KEY
    return json.loads(request["body"])  # type: ignore[no-any-return]


def test_a_message_for_gpt_is_a_chat_completion_upstream_and_a_message_back(gateway: Any, upstream: Any) -> None:
    message = client(gateway).messages.create(
        model=GPT, max_tokens=100, system="Be brief.", metadata={"user_id": "user-7"}, extra_body={"temperature": 0.5},
        messages=[{"role": "user", "content": "Hello"}, {"role": "assistant", "content": "Hi."},
                  {"role": "user", "content": [{"type": "text", "text": "Tell me more"}]}],
    )

    body = sent(upstream)
    assert body["messages"] == [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hello"},
                                {"role": "assistant", "content": "Hi."},
                                {"role": "user", "content": "Tell me more"}]
    assert body["max_completion_tokens"] == 100 and body["user"] == "user-7" and body["temperature"] == 0.5
    assert message.type == "message" and message.role == "assistant"
    assert message.model == GPT
    assert [b.type for b in message.content] == ["text"]
    assert message.content[0].text == completion_text(16)  # type: ignore[union-attr]
    assert message.stop_reason == "end_turn"
    assert message.usage.input_tokens > 0 and message.usage.output_tokens == 16
    totals = gateway.usage_totals()
    assert (totals["input_tokens"], totals["output_tokens"]) == (message.usage.input_tokens, 16)


def test_a_streamed_message_from_gpt_arrives_event_by_event(gateway: Any, upstream: Any) -> None:
    with client(gateway).messages.stream(model=GPT, max_tokens=10, messages=[{"role": "user", "content": "hi"}]) \
            as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()

    body = sent(upstream)
    assert body["stream"] is True and body["stream_options"] == {"include_usage": True}
    assert text == completion_text(10)
    assert final.stop_reason == "max_tokens"
    assert final.usage.output_tokens == 10 and final.usage.input_tokens > 0  # from the closing message_delta
    assert gateway.usage_totals()["input_tokens"] == final.usage.input_tokens


def test_a_tool_round_trip_with_two_parallel_calls(gateway: Any, upstream: Any) -> None:
    claude = client(gateway)
    first = claude.messages.create(model=GPT, max_tokens=200, tools=[WEATHER, TIME], messages=ASK_BOTH)

    uses = [b for b in first.content if b.type == "tool_use"]
    assert first.stop_reason == "tool_use"
    assert [u.name for u in uses] == ["GetWeather", "GetTime"]
    assert set(uses[1].input) == {"utc_offset"}  # type: ignore[arg-type]
    assert sent(upstream)["tools"][0] == {"type": "function", "function": {
        "name": "GetWeather", "parameters": WEATHER["input_schema"], "description": "Current weather in a city"}}

    history: Any = [*ASK_BOTH, {"role": "assistant", "content": [u.model_dump() for u in uses]},
                    {"role": "user", "content": [
                        {"type": "tool_result", "tool_use_id": uses[0].id, "content": "Sunny"},
                        {"type": "tool_result", "tool_use_id": uses[1].id, "content": [{"type": "text", "text": "1"}]},
                        {"type": "text", "text": "Thanks"}]}]
    answer = claude.messages.create(model=GPT, max_tokens=200, tools=[WEATHER, TIME], messages=history)

    body = sent(upstream)
    assert [m["role"] for m in body["messages"]] == ["user", "assistant", "tool", "tool", "user"]
    assert [c["id"] for c in body["messages"][1]["tool_calls"]] == [uses[0].id, uses[1].id]
    assert body["messages"][2] == {"role": "tool", "tool_call_id": uses[0].id, "content": "Sunny"}
    assert body["messages"][3] == {"role": "tool", "tool_call_id": uses[1].id, "content": "1"}
    assert answer.stop_reason == "end_turn"


def test_streamed_parallel_tool_calls_are_reassembled_by_the_sdk(gateway: Any, upstream: Any) -> None:
    with client(gateway).messages.stream(model=GPT, max_tokens=200, tools=[WEATHER, TIME], messages=ASK_BOTH) \
            as stream:
        final = stream.get_final_message()

    uses = [b for b in final.content if b.type == "tool_use"]
    assert final.stop_reason == "tool_use"
    assert [(u.name, set(u.input)) for u in uses] == [  # type: ignore[arg-type]
        ("GetWeather", {"city"}), ("GetTime", {"utc_offset"})]
    assert len({u.id for u in uses}) == 2


def test_tool_choice_settings_reach_gpt_as_its_own(gateway: Any, upstream: Any) -> None:
    claude = client(gateway)
    one = claude.messages.create(model=GPT, max_tokens=50, tools=[WEATHER, TIME], messages=ASK_BOTH,
                                 tool_choice={"type": "auto", "disable_parallel_tool_use": True})
    assert (sent(upstream)["tool_choice"], sent(upstream)["parallel_tool_calls"]) == ("auto", False)
    assert len([b for b in one.content if b.type == "tool_use"]) == 1
    claude.messages.create(model=GPT, max_tokens=50, tools=[WEATHER], messages=ASK_BOTH, tool_choice={"type": "any"})
    assert sent(upstream)["tool_choice"] == "required"
    claude.messages.create(model=GPT, max_tokens=50, tools=[WEATHER], messages=ASK_BOTH, tool_choice={"type": "none"})
    assert sent(upstream)["tool_choice"] == "none"
    claude.messages.create(model=GPT, max_tokens=50, tools=[WEATHER, TIME], messages=ASK_BOTH,
                           tool_choice={"type": "tool", "name": "GetTime"})
    assert sent(upstream)["tool_choice"] == {"type": "function", "function": {"name": "GetTime"}}


def test_an_image_goes_as_a_data_url(gateway: Any, upstream: Any) -> None:
    client(gateway).messages.create(model=GPT, max_tokens=20, messages=[{"role": "user", "content": [
        {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": PNG}},
        {"type": "image", "source": {"type": "url", "url": "https://example.com/cat.png"}},
        {"type": "text", "text": "What is this?"}]}])

    assert sent(upstream)["messages"] == [{"role": "user", "content": [
        {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{PNG}"}},
        {"type": "image_url", "image_url": {"url": "https://example.com/cat.png"}},
        {"type": "text", "text": "What is this?"}]}]


def test_stop_sequences_become_stop(gateway: Any, upstream: Any) -> None:
    message = client(gateway).messages.create(model=GPT, max_tokens=50, stop_sequences=["mock"],
                                              messages=[{"role": "user", "content": "hi"}])
    assert sent(upstream)["stop"] == ["mock"]
    assert message.content[0].text == completion_text(16).split("mock")[0]  # type: ignore[union-attr]
    assert message.stop_reason == "end_turn"


def test_thinking_is_reasoning_effort_for_a_reasoning_model_and_refused_for_others(gateway: Any,
                                                                                    upstream: Any) -> None:
    claude = client(gateway)
    claude.messages.create(model="o4-mini", max_tokens=2000, extra_body={"temperature": 1},
                           messages=[{"role": "user", "content": "hi"}],
                           thinking={"type": "enabled", "budget_tokens": 1024})
    body = sent(upstream)
    assert body["reasoning_effort"] == "low" and "temperature" not in body
    with pytest.raises(anthropic.BadRequestError) as raised:
        claude.messages.create(model=GPT, max_tokens=2000, messages=[{"role": "user", "content": "hi"}],
                               thinking={"type": "enabled", "budget_tokens": 1024})
    assert "does not reason" in raised.value.message
    assert len(upstream.requests) == 1


def test_an_upstream_error_before_the_stream_comes_back_in_anthropic_format(gateway: Any, upstream: Any) -> None:
    for stream in (False, True):
        with pytest.raises(anthropic.NotFoundError) as raised:
            client(gateway).messages.create(model="gpt-4o-nope", max_tokens=10, stream=stream,
                                            messages=[{"role": "user", "content": "hi"}])
        assert raised.value.body == {"type": "error", "error": {
            "type": "invalid_request_error", "message": "The model `gpt-4o-nope` does not exist or you do not have "
                                                       "access to it."}}


def test_an_upstream_error_mid_stream_becomes_an_anthropic_error_event(start_gateway: Any, upstream: Any) -> None:
    gateway = start_gateway(OPENAI_KEY="sk-test-streamerror-0002")
    got: list[str] = []
    with pytest.raises(anthropic.APIStatusError) as raised:
        with client(gateway).messages.stream(model=GPT, max_tokens=50, messages=[{"role": "user", "content": "hi"}]) \
                as stream:
            got.extend(stream.text_stream)
    assert "".join(got) == completion_text(2)
    assert raised.value.body == {"type": "error", "error": {
        "type": "api_error", "message": "The server had an error while processing your request. Sorry about that!"}}


def test_the_anthropic_provider_route_translates_only_when_allowed(start_gateway: Any, upstream: Any) -> None:
    gateway = start_gateway(OPENAI_KEY=OPENAI_KEY, TRANSLATE_ON_PROVIDER_ROUTES="true")
    message = client(gateway, "/proxy/anthropic").messages.create(
        model=GPT, max_tokens=10, messages=[{"role": "user", "content": "hi"}])
    assert sent(upstream)["model"] == GPT
    assert message.content[0].text == completion_text(10)  # type: ignore[union-attr]
