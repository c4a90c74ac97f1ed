"""The fake upstream models what translation must handle, as the real APIs do it.

Parallel tool calls (and turning them off), stop sequences, Anthropic's prompt
caching figures, and a stream that fails after it began: each read here with
the official SDKs straight from the mock, so translation's tests stand on
shapes the SDKs themselves accept.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import anthropic
import httpx
import openai
import pytest

from fake_upstream import MockUpstreamHandle, run_mock_upstream_in_thread
from fake_upstream.fake_text import completion_text

WEATHER: Any = {"name": "GetWeather", "input_schema": {"type": "object", "properties": {"city": {"type": "string"}},
                                                       "required": ["city"]}}
TIME: Any = {"name": "GetTime", "input_schema": {"type": "object", "properties": {"utc": {"type": "integer"}},
                                                 "required": ["utc"]}}
ASK_BOTH: Any = [{"role": "user", "content": "Use GetWeather and GetTime."}]


@pytest.fixture(scope="module")
def mock() -> Iterator[MockUpstreamHandle]:
    handle = run_mock_upstream_in_thread()
    yield handle
    handle.stop()


def claude(mock: MockUpstreamHandle, key: str = "sk-ant-gear-0001") -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=mock.url, api_key=key, max_retries=0)


def gpt(mock: MockUpstreamHandle, key: str = "sk-gear-0001") -> openai.OpenAI:
    return openai.OpenAI(base_url=mock.url + "/v1", api_key=key, max_retries=0)


def test_claude_calls_every_tool_the_prompt_names_streamed_as_input_json_deltas(mock: MockUpstreamHandle) -> None:
    with claude(mock).messages.stream(model="claude-haiku-4-5", max_tokens=100, tools=[WEATHER, TIME],
                                      messages=ASK_BOTH) as stream:
        events = list(stream)
        final = stream.get_final_message()
    assert [b.type for b in final.content] == ["text", "tool_use", "tool_use"]
    assert [(b.name, b.input) for b in final.content if b.type == "tool_use"] == [
        ("GetWeather", {"city": "mock"}), ("GetTime", {"utc": 1})]
    starts = [e for e in events if e.type == "content_block_start"]
    assert [s.content_block.input for s in starts if s.content_block.type == "tool_use"] == [{}, {}]
    assert {e.delta.type for e in events if e.type == "content_block_delta"} == {"text_delta", "input_json_delta"}
    one = claude(mock).messages.create(model="claude-haiku-4-5", max_tokens=100, tools=[WEATHER, TIME],
                                       messages=ASK_BOTH, tool_choice={"type": "auto",
                                                                       "disable_parallel_tool_use": True})
    assert [b.type for b in one.content] == ["text", "tool_use"]


def test_gpt_calls_every_tool_the_prompt_names_unless_parallel_calls_are_off(mock: MockUpstreamHandle) -> None:
    tools: Any = [{"type": "function", "function": {"name": t["name"], "parameters": t["input_schema"]}}
                  for t in (WEATHER, TIME)]
    with gpt(mock).chat.completions.stream(model="gpt-4o", messages=ASK_BOTH, tools=tools) as stream:
        final = stream.get_final_completion()
    calls = final.choices[0].message.tool_calls or []
    assert [(c.function.name, json.loads(c.function.arguments)) for c in calls] == [  # type: ignore[union-attr]
        ("GetWeather", {"city": "mock"}), ("GetTime", {"utc": 1})]
    one = gpt(mock).chat.completions.create(model="gpt-4o", messages=ASK_BOTH, tools=tools, parallel_tool_calls=False)
    assert len(one.choices[0].message.tool_calls or []) == 1


def test_stop_sequences_cut_the_reply_where_they_first_occur(mock: MockUpstreamHandle) -> None:
    message = claude(mock).messages.create(model="claude-haiku-4-5", max_tokens=100, stop_sequences=["upstream"],
                                           messages=[{"role": "user", "content": "hi"}])
    assert message.content[0].text == completion_text(16).split("upstream")[0]  # type: ignore[union-attr]
    assert (message.stop_reason, message.stop_sequence) == ("stop_sequence", "upstream")
    with pytest.raises(anthropic.BadRequestError):
        claude(mock).messages.create(model="claude-haiku-4-5", max_tokens=100, stop_sequences=[" "],
                                     messages=[{"role": "user", "content": "hi"}])
    reply = gpt(mock).chat.completions.create(model="gpt-4o", stop="upstream",
                                              messages=[{"role": "user", "content": "hi"}])
    assert reply.choices[0].message.content == completion_text(16).split("upstream")[0]
    assert reply.choices[0].finish_reason == "stop"


def test_a_marked_prefix_is_written_to_the_cache_once_then_read(mock: MockUpstreamHandle) -> None:
    system: Any = [{"type": "text", "text": "shared words " * 30, "cache_control": {"type": "ephemeral"}}]
    usages = [claude(mock).messages.create(model="claude-haiku-4-5", max_tokens=10, system=system,
                                           messages=[{"role": "user", "content": "hi"}]).usage for _ in range(2)]
    first, second = usages
    assert first.cache_creation_input_tokens and first.cache_creation_input_tokens > 60
    assert first.cache_read_input_tokens == 0
    assert second.cache_read_input_tokens == first.cache_creation_input_tokens
    assert second.cache_creation_input_tokens == 0
    assert first.input_tokens == second.input_tokens < first.cache_creation_input_tokens
    plain = claude(mock).messages.create(model="claude-haiku-4-5", max_tokens=10,
                                         messages=[{"role": "user", "content": "hi"}]).usage
    assert (plain.cache_creation_input_tokens, plain.cache_read_input_tokens) == (0, 0)


def test_a_streamerror_key_fails_the_stream_after_it_began(mock: MockUpstreamHandle) -> None:
    text: list[str] = []
    with pytest.raises(anthropic.APIStatusError) as raised:
        with claude(mock, "sk-ant-streamerror-0001").messages.stream(
                model="claude-haiku-4-5", max_tokens=50, messages=[{"role": "user", "content": "hi"}]) as stream:
            text.extend(stream.text_stream)
    assert "".join(text) == completion_text(2)
    assert raised.value.body == {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}
    raw = httpx.post(mock.url + "/v1/chat/completions", headers={"authorization": "Bearer sk-streamerror-0001"},
                     json={"model": "gpt-4o", "stream": True, "messages": [{"role": "user", "content": "hi"}]})
    assert raw.status_code == 200
    last = raw.text.strip().split("\n\n")[-1]
    assert json.loads(last.removeprefix("data: "))["error"]["type"] == "server_error"
    assert "[DONE]" not in raw.text
