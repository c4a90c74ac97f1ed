"""The request mappings, item by item (issue 14's "must get right" list), in both directions where it applies."""

from __future__ import annotations

import base64
from typing import Any

import pytest

from gateway.errors import GatewayError
from gateway.translate.chat_request import anthropic_request
from gateway.translate.images import claude_image, sniff_media_type
from gateway.translate.messages_request import openai_request

CLAUDE = "claude-sonnet-4-5"
GPT = "gpt-4o"
HI: Any = [{"role": "user", "content": "hi"}]


def to_claude(**payload: Any) -> dict[str, Any]:
    return anthropic_request({"model": CLAUDE, "messages": HI, **payload}, CLAUDE)


def to_gpt(model: str = GPT, **payload: Any) -> dict[str, Any]:
    return openai_request({"model": model, "max_tokens": 100, "messages": HI, **payload}, model)


def refused(call: Any, *args: Any, **kwargs: Any) -> str:
    with pytest.raises(GatewayError) as raised:
        call(*args, **kwargs)
    assert raised.value.kind == "invalid_request"
    return raised.value.message


# --- system and developer messages -----------------------------------------------------------


def test_system_and_developer_messages_become_the_top_level_system() -> None:
    body = to_claude(messages=[{"role": "system", "content": "A"}, {"role": "user", "content": "hi"},
                               {"role": "developer", "content": [{"type": "text", "text": "B"}]}])
    assert body["system"] == [{"type": "text", "text": "A"}, {"type": "text", "text": "B"}]
    assert body["messages"] == [{"role": "user", "content": [{"type": "text", "text": "hi"}]}]


def test_the_top_level_system_becomes_the_first_message() -> None:
    assert to_gpt(system="A")["messages"][0] == {"role": "system", "content": "A"}
    blocks = to_gpt(system=[{"type": "text", "text": "A"}, {"type": "text", "text": "B", "cache_control": {}}])
    assert blocks["messages"][0] == {"role": "system", "content": "A\n\nB"}
    assert to_gpt(system="  ")["messages"] == [{"role": "user", "content": "hi"}]


# --- turns -------------------------------------------------------------------------------------


def test_consecutive_messages_of_one_role_are_merged_into_one_turn() -> None:
    body = to_claude(messages=[{"role": "user", "content": "a"}, {"role": "user", "content": "b"},
                               {"role": "assistant", "content": "c"}, {"role": "assistant", "content": "d"}])
    assert body["messages"] == [
        {"role": "user", "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]},
        {"role": "assistant", "content": [{"type": "text", "text": "c"}, {"type": "text", "text": "d"}]},
    ]


def test_empty_text_is_never_sent_and_an_empty_turn_is_left_out() -> None:
    body = to_claude(messages=[{"role": "user", "content": "a"}, {"role": "assistant", "content": ""},
                               {"role": "user", "content": [{"type": "text", "text": " "}, {"type": "text",
                                                                                            "text": "b"}]}])
    assert body["messages"] == [
        {"role": "user", "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]}]
    assert "empty" not in str(body)
    message = refused(to_claude, messages=[{"role": "user", "content": ""}])
    assert "no user or assistant message" in message


def test_assistant_tool_calls_become_tool_use_blocks_and_tool_replies_one_user_turn_in_order() -> None:
    calls = [{"id": "call_1", "type": "function", "function": {"name": "a", "arguments": '{"x": 1}'}},
             {"id": "call_2", "type": "function", "function": {"name": "b", "arguments": ""}}]
    body = to_claude(messages=[
        {"role": "user", "content": "go"},
        {"role": "assistant", "content": "", "tool_calls": calls},  # "" must not become an empty text block
        {"role": "tool", "tool_call_id": "call_1", "content": "one"},
        {"role": "tool", "tool_call_id": "call_2", "content": [{"type": "text", "text": "two"}]},
        {"role": "user", "content": "and now?"},
    ])
    assert body["messages"][1] == {"role": "assistant", "content": [
        {"type": "tool_use", "id": "call_1", "name": "a", "input": {"x": 1}},
        {"type": "tool_use", "id": "call_2", "name": "b", "input": {}}]}
    assert body["messages"][2] == {"role": "user", "content": [
        {"type": "tool_result", "tool_use_id": "call_1", "content": "one"},
        {"type": "tool_result", "tool_use_id": "call_2", "content": [{"type": "text", "text": "two"}]},
        {"type": "text", "text": "and now?"}]}
    assert len(body["messages"]) == 3


def test_tool_results_come_first_in_their_user_turn_even_when_the_client_put_text_before_them() -> None:
    calls = [{"id": "call_1", "type": "function", "function": {"name": "a", "arguments": "{}"}}]
    body = to_claude(messages=[*HI, {"role": "assistant", "tool_calls": calls},
                               {"role": "user", "content": "(the tool ran)"},
                               {"role": "tool", "tool_call_id": "call_1", "content": "one"}])
    assert body["messages"][2]["content"] == [{"type": "tool_result", "tool_use_id": "call_1", "content": "one"},
                                              {"type": "text", "text": "(the tool ran)"}]


def test_tool_arguments_that_are_no_json_object_are_a_clear_400() -> None:
    bad = {"role": "assistant", "tool_calls": [{"id": "c", "function": {"name": "a", "arguments": "[1]"}}]}
    assert "JSON object" in refused(to_claude, messages=[*HI, bad])


def test_tool_use_blocks_become_tool_calls_and_tool_results_tool_messages_in_order() -> None:
    body = to_gpt(messages=[
        {"role": "user", "content": "go"},
        {"role": "assistant", "content": [{"type": "thinking", "thinking": "hm", "signature": "s"},
                                          {"type": "text", "text": "Calling."},
                                          {"type": "tool_use", "id": "t1", "name": "a", "input": {"x": 1}},
                                          {"type": "tool_use", "id": "t2", "name": "b", "input": {}}]},
        {"role": "user", "content": [{"type": "text", "text": "here"},
                                     {"type": "tool_result", "tool_use_id": "t1", "content": "one"},
                                     {"type": "tool_result", "tool_use_id": "t2", "is_error": True}]},
    ])
    assert body["messages"][1] == {"role": "assistant", "content": "Calling.", "tool_calls": [
        {"id": "t1", "type": "function", "function": {"name": "a", "arguments": '{"x":1}'}},
        {"id": "t2", "type": "function", "function": {"name": "b", "arguments": "{}"}}]}
    assert body["messages"][2:] == [{"role": "tool", "tool_call_id": "t1", "content": "one"},
                                    {"role": "tool", "tool_call_id": "t2", "content": ""},
                                    {"role": "user", "content": "here"}]


# --- max_tokens, stop, sampling ----------------------------------------------------------------


def test_max_tokens_is_always_sent_to_claude() -> None:
    assert to_claude(max_completion_tokens=50, max_tokens=70)["max_tokens"] == 50
    assert to_claude(max_tokens=70)["max_tokens"] == 70
    assert to_claude()["max_tokens"] == 8192
    assert anthropic_request({"messages": HI}, "claude-3-haiku-20240307")["max_tokens"] == 4096
    assert "positive integer" in refused(to_claude, max_tokens=0)


def test_max_tokens_becomes_max_completion_tokens_and_is_required() -> None:
    assert to_gpt()["max_completion_tokens"] == 100
    assert "max_tokens" in refused(openai_request, {"messages": HI}, GPT)


def test_stop_becomes_stop_sequences_without_whitespace_only_entries() -> None:
    assert to_claude(stop="END")["stop_sequences"] == ["END"]
    assert to_claude(stop=["END", " ", "\n\t", "x"])["stop_sequences"] == ["END", "x"]


def test_stop_sequences_become_stop() -> None:
    assert to_gpt(stop_sequences=["END", " "])["stop"] == ["END"]
    assert "stop" not in to_gpt(stop_sequences=[])
    assert "at most 4" in refused(to_gpt, stop_sequences=["a", "b", "c", "d", "e"])


def test_temperature_wins_over_top_p_for_claude_and_is_kept_within_its_range() -> None:
    both = to_claude(temperature=0.3, top_p=0.9)
    assert both["temperature"] == 0.3 and "top_p" not in both
    assert to_claude(top_p=0.9)["top_p"] == 0.9
    assert to_claude(temperature=1.7)["temperature"] == 1.0


def test_sampling_is_left_out_for_openai_reasoning_models() -> None:
    assert to_gpt(temperature=0.2, top_p=0.5)["temperature"] == 0.2
    reasoning = to_gpt("o3-mini", temperature=0.2, top_p=0.5, top_k=5)
    assert not {"temperature", "top_p", "top_k"} & set(reasoning)


# --- tools -------------------------------------------------------------------------------------

FUNCTION: Any = {"type": "function", "function": {"name": "f", "description": "d",
                                                  "parameters": {"type": "object", "properties": {}}}}
CLAUDE_TOOL: Any = {"name": "f", "description": "d", "input_schema": {"type": "object", "properties": {}}}


def test_tools_and_tool_choice_become_claudes() -> None:
    assert to_claude(tools=[FUNCTION])["tools"] == [CLAUDE_TOOL]
    for choice, expected in (("auto", {"type": "auto"}), ("required", {"type": "any"}), ("none", {"type": "none"}),
                             ({"type": "function", "function": {"name": "f"}}, {"type": "tool", "name": "f"})):
        assert to_claude(tools=[FUNCTION], tool_choice=choice)["tool_choice"] == expected
    assert to_claude(tools=[FUNCTION], parallel_tool_calls=False)["tool_choice"] == {
        "type": "auto", "disable_parallel_tool_use": True}
    assert to_claude(tools=[FUNCTION], tool_choice="required", parallel_tool_calls=False)["tool_choice"] == {
        "type": "any", "disable_parallel_tool_use": True}
    assert "disable_parallel_tool_use" not in to_claude(tools=[FUNCTION], tool_choice="none",
                                                        parallel_tool_calls=False)["tool_choice"]
    assert "only function tools" in refused(to_claude, tools=[{"type": "custom", "custom": {"name": "x"}}])


def test_tools_and_tool_choice_become_openais() -> None:
    assert to_gpt(tools=[CLAUDE_TOOL])["tools"] == [FUNCTION]
    for choice, expected in (({"type": "auto"}, "auto"), ({"type": "any"}, "required"), ({"type": "none"}, "none"),
                             ({"type": "tool", "name": "f"}, {"type": "function", "function": {"name": "f"}})):
        assert to_gpt(tools=[CLAUDE_TOOL], tool_choice=choice)["tool_choice"] == expected
    single = to_gpt(tools=[CLAUDE_TOOL], tool_choice={"type": "auto", "disable_parallel_tool_use": True})
    assert single["parallel_tool_calls"] is False
    assert "server tools" in refused(to_gpt, tools=[{"type": "web_search_20250305", "name": "web_search"}])


# --- images ------------------------------------------------------------------------------------

IMAGES = {
    "image/jpeg": b"\xff\xd8\xff\xe0" + bytes(20),
    "image/png": b"\x89PNG\r\n\x1a\n" + bytes(20),
    "image/gif": b"GIF89a" + bytes(20),
    "image/webp": b"RIFF\x24\x00\x00\x00WEBPVP8 " + bytes(20),
}


@pytest.mark.parametrize("media_type", sorted(IMAGES))
def test_a_data_url_becomes_a_base64_source_typed_from_its_bytes(media_type: str) -> None:
    data = base64.b64encode(IMAGES[media_type]).decode()
    assert sniff_media_type(IMAGES[media_type]) == media_type
    assert claude_image(f"data:application/octet-stream;base64,{data}") == {
        "type": "image", "source": {"type": "base64", "media_type": media_type, "data": data}}


def test_images_claude_cannot_read_and_broken_data_urls_are_refused() -> None:
    bmp = base64.b64encode(b"BM" + bytes(30)).decode()
    assert "JPEG, PNG, GIF and WebP" in refused(claude_image, f"data:image/bmp;base64,{bmp}")
    assert "base64" in refused(claude_image, "data:image/png,rawbytes")
    assert "valid base64" in refused(claude_image, "data:image/png;base64,!!!!not-base64!!!!")
    assert "http(s)" in refused(claude_image, "ftp://example.com/a.png")


def test_a_plain_url_becomes_a_url_source_and_back() -> None:
    url = "https://example.com/a.png"
    body = to_claude(messages=[{"role": "user", "content": [{"type": "image_url", "image_url": {"url": url}}]}])
    assert body["messages"][0]["content"] == [{"type": "image", "source": {"type": "url", "url": url}}]
    back = to_gpt(messages=[{"role": "user", "content": [{"type": "image", "source": {"type": "url", "url": url}}]}])
    assert back["messages"][0]["content"] == [{"type": "image_url", "image_url": {"url": url}}]


def test_a_base64_source_becomes_a_data_url() -> None:
    source = {"type": "base64", "media_type": "image/gif", "data": "R0lGODlh"}
    body = to_gpt(messages=[{"role": "user", "content": [{"type": "image", "source": source}]}])
    url = "data:image/gif;base64,R0lGODlh"
    assert body["messages"][0]["content"] == [{"type": "image_url", "image_url": {"url": url}}]


# --- output format, n, reasoning, user ----------------------------------------------------------

SCHEMA: Any = {"type": "object", "properties": {"a": {"type": "string"}}, "required": ["a"]}


def test_json_schema_output_maps_both_ways_and_json_mode_without_a_schema_is_refused() -> None:
    body = to_claude(response_format={"type": "json_schema", "json_schema": {"name": "x", "schema": SCHEMA}})
    assert body["output_config"] == {"format": {"type": "json_schema", "schema": SCHEMA}}
    assert "no JSON mode without a schema" in refused(to_claude, response_format={"type": "json_object"})
    assert "output_config" not in to_claude(response_format={"type": "text"})
    back = to_gpt(output_config={"format": {"type": "json_schema", "schema": SCHEMA}})
    assert back["response_format"] == {"type": "json_schema",
                                       "json_schema": {"name": "output", "schema": SCHEMA, "strict": True}}


def test_more_than_one_choice_and_log_probabilities_are_refused() -> None:
    assert "`n` must be 1" in refused(to_claude, n=3)
    assert to_claude(n=1)["messages"]
    assert "log probabilities" in refused(to_claude, logprobs=True)
    assert "text only" in refused(to_claude, modalities=["text", "audio"])


def test_reasoning_effort_becomes_a_thinking_budget_on_top_of_the_answer_room() -> None:
    body = to_claude(reasoning_effort="medium", max_completion_tokens=1000, temperature=0.5)
    assert body["thinking"] == {"type": "enabled", "budget_tokens": 4096}
    assert body["max_tokens"] == 5096 and "temperature" not in body
    assert "thinking" not in to_claude(reasoning_effort="minimal")


def test_reasoning_effort_is_refused_where_thinking_cannot_be_replayed_or_tools_are_forced() -> None:
    replay = [*HI, {"role": "assistant", "tool_calls": [{"id": "c", "function": {"name": "f", "arguments": "{}"}}]},
              {"role": "tool", "tool_call_id": "c", "content": "x"}]
    assert "replays tool calls" in refused(to_claude, messages=replay, reasoning_effort="low")
    assert "tool_choice auto or none" in refused(to_claude, tools=[FUNCTION], tool_choice="required",
                                                 reasoning_effort="low")


def test_thinking_becomes_reasoning_effort_by_budget() -> None:
    for budget, effort in ((1024, "low"), (8000, "medium"), (32000, "high")):
        assert to_gpt("o3", thinking={"type": "enabled", "budget_tokens": budget})["reasoning_effort"] == effort
    assert "reasoning_effort" not in to_gpt("o3", thinking={"type": "disabled"})
    assert "does not reason" in refused(to_gpt, thinking={"type": "enabled", "budget_tokens": 1024})


def test_user_and_metadata_user_id_map_both_ways() -> None:
    assert to_claude(user="u1")["metadata"] == {"user_id": "u1"}
    assert to_gpt(metadata={"user_id": "u1"})["user"] == "u1"


def test_stream_asks_openai_for_its_usage_chunk() -> None:
    assert to_gpt(stream=True)["stream_options"] == {"include_usage": True}
    assert to_claude(stream=True, stream_options={"include_usage": True})["stream"] is True
    assert "stream_options" not in to_claude(stream=True, stream_options={"include_usage": True})


def test_model_aliases_are_read_as_pairs_and_a_malformed_one_stops_start_up() -> None:
    from gateway.settings import ConfigError, Settings

    settings = Settings.from_env({"MODEL_ALIASES": "gpt-4o = claude-sonnet-4-5, fast=gpt-4o-mini"}, env_file=None)
    assert settings.aliases == {"gpt-4o": "claude-sonnet-4-5", "fast": "gpt-4o-mini"}
    for bad in ("gpt-4o", "=claude-sonnet-4-5", "gpt-4o="):
        with pytest.raises(ConfigError) as raised:
            Settings.from_env({"MODEL_ALIASES": bad}, env_file=None)
        assert "MODEL_ALIASES entry" in str(raised.value)
