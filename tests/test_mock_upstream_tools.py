"""The mock upstream refuses unknown models, calls tools and honours JSON schemas as the real APIs do.

Over real HTTP with the official SDKs, whose stream helpers accumulate tool
calls from the events: if the mock's events were shaped wrong, the helpers'
accumulated call would be wrong too.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import anthropic
import httpx
import jsonschema
import openai
import pydantic
import pytest

from fake_upstream import MockUpstreamHandle, run_mock_upstream_in_thread
from fake_upstream.schema_instance import instance_of

WEATHER_TOOL: Any = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Current weather in a city",
        "parameters": {
            "type": "object",
            "properties": {
                "city": {"type": "string"},
                "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
                "days": {"type": "integer", "minimum": 1},
            },
            "required": ["city", "unit", "days"],
            "additionalProperties": False,
        },
    },
}
TIME_TOOL: Any = {
    "type": "function",
    "function": {"name": "get_time", "parameters": {"type": "object", "properties": {}, "required": []}},
}
CLAUDE_WEATHER_TOOL: Any = {
    "name": "get_weather",
    "description": "Current weather in a city",
    "input_schema": WEATHER_TOOL["function"]["parameters"],
}
ASK: Any = [{"role": "user", "content": "What is the weather in Paris?"}]


class Person(pydantic.BaseModel):
    name: str
    age: int
    tags: list[str]
    role: str | None


@pytest.fixture(scope="module")
def mock_upstream() -> Iterator[MockUpstreamHandle]:
    handle = run_mock_upstream_in_thread(output_tokens=8)
    yield handle
    handle.stop()


def openai_client(mock: MockUpstreamHandle) -> openai.OpenAI:
    return openai.OpenAI(base_url=mock.url + "/v1", api_key="sk-test-tools-0001", max_retries=0)


def anthropic_client(mock: MockUpstreamHandle) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=mock.url, api_key="sk-ant-test-tools-0001", max_retries=0)


# --- model names ------------------------------------------------------------


@pytest.mark.parametrize("model", ["gpt-nope", "claude-haiku-4-5", "gpt-4o-but-not-really"])
def test_openai_unknown_model_is_a_404_model_not_found(mock_upstream: MockUpstreamHandle, model: str) -> None:
    with pytest.raises(openai.NotFoundError) as raised:
        openai_client(mock_upstream).chat.completions.create(model=model, messages=ASK)

    assert raised.value.status_code == 404
    assert raised.value.code == "model_not_found"
    assert raised.value.type == "invalid_request_error"
    assert f"`{model}` does not exist" in raised.value.message


@pytest.mark.parametrize("model", ["gpt-nope", "claude-nope-9", "gpt-4o"])
def test_anthropic_unknown_model_is_a_404_not_found_error(mock_upstream: MockUpstreamHandle, model: str) -> None:
    with pytest.raises(anthropic.NotFoundError) as raised:
        anthropic_client(mock_upstream).messages.create(model=model, max_tokens=8, messages=ASK)

    assert raised.value.status_code == 404
    assert raised.value.body == {"type": "error", "error": {"type": "not_found_error", "message": f"model: {model}"},
                                 "request_id": raised.value.request_id}


@pytest.mark.parametrize(
    "model",
    ["gpt-4o", "gpt-4o-mini-2024-07-18", "gpt-4.1", "gpt-4.1-nano", "gpt-5", "gpt-5-mini", "o1", "o3-mini",
     "o4-mini", "gpt-3.5-turbo", "chatgpt-4o-latest", "ft:gpt-4o-mini-2024-07-18:acme::abc123"],
)
def test_openai_real_model_names_are_served(mock_upstream: MockUpstreamHandle, model: str) -> None:
    completion = openai_client(mock_upstream).chat.completions.create(model=model, messages=ASK)

    assert completion.model == model


def test_openai_embedding_models_are_served_and_chat_models_are_not_embedding_typos(
    mock_upstream: MockUpstreamHandle,
) -> None:
    client = openai_client(mock_upstream)
    assert client.embeddings.create(model="text-embedding-3-small", input="hi").data
    with pytest.raises(openai.NotFoundError):
        client.embeddings.create(model="text-embedding-4-huge", input="hi")


@pytest.mark.parametrize(
    "model",
    ["claude-haiku-4-5", "claude-sonnet-4-5", "claude-sonnet-4-5-20250929", "claude-opus-4-1",
     "claude-sonnet-4-6", "claude-3-5-haiku-latest", "claude-3-7-sonnet-20250219", "claude-3-haiku-20240307"],
)
def test_anthropic_real_model_names_are_served(mock_upstream: MockUpstreamHandle, model: str) -> None:
    message = anthropic_client(mock_upstream).messages.create(model=model, max_tokens=8, messages=ASK)

    assert message.model == model


# --- OpenAI tool calls -----------------------------------------------------------


def test_openai_forced_tool_is_called_with_arguments_fitting_its_schema(mock_upstream: MockUpstreamHandle) -> None:
    completion = openai_client(mock_upstream).chat.completions.create(
        model="gpt-4o", messages=[{"role": "user", "content": "hi"}], tools=[TIME_TOOL, WEATHER_TOOL],
        tool_choice={"type": "function", "function": {"name": "get_weather"}},
    )

    message = completion.choices[0].message
    assert message.content is None
    (call,) = message.tool_calls or []
    assert call.type == "function" and call.id.startswith("call_")
    assert call.function.name == "get_weather"
    arguments = json.loads(call.function.arguments)
    jsonschema.validate(arguments, WEATHER_TOOL["function"]["parameters"])
    assert arguments["unit"] == "celsius" and arguments["days"] >= 1
    # naming the function makes the real API finish with `stop`, not `tool_calls`
    assert completion.choices[0].finish_reason == "stop"


def test_openai_prompt_naming_a_tool_gets_a_call_and_the_tool_result_gets_text(
    mock_upstream: MockUpstreamHandle,
) -> None:
    client = openai_client(mock_upstream)
    messages: Any = [{"role": "user", "content": "Use get_time please"}]
    first = client.chat.completions.create(model="gpt-4o-mini", messages=messages, tools=[WEATHER_TOOL, TIME_TOOL])

    assert first.choices[0].finish_reason == "tool_calls"
    (call,) = first.choices[0].message.tool_calls or []
    assert call.function.name == "get_time" and json.loads(call.function.arguments) == {}

    messages += [first.choices[0].message.model_dump(exclude_none=True),
                 {"role": "tool", "tool_call_id": call.id, "content": "12:00"}]
    second = client.chat.completions.create(model="gpt-4o-mini", messages=messages, tools=[WEATHER_TOOL, TIME_TOOL])
    assert second.choices[0].finish_reason == "stop"
    assert second.choices[0].message.tool_calls is None and second.choices[0].message.content


def test_openai_tools_without_a_named_one_or_with_choice_none_get_text(mock_upstream: MockUpstreamHandle) -> None:
    client = openai_client(mock_upstream)
    unnamed = client.chat.completions.create(model="gpt-4o", messages=ASK, tools=[TIME_TOOL])
    refused = client.chat.completions.create(
        model="gpt-4o", messages=[{"role": "user", "content": "get_time"}], tools=[TIME_TOOL], tool_choice="none"
    )

    for completion in (unnamed, refused):
        assert completion.choices[0].message.tool_calls is None
        assert completion.choices[0].message.content


def test_openai_streamed_tool_call_is_shaped_as_the_real_api_streams_it(mock_upstream: MockUpstreamHandle) -> None:
    response = httpx.post(
        mock_upstream.url + "/v1/chat/completions",
        json={"model": "gpt-4o", "messages": ASK, "stream": True, "tools": [WEATHER_TOOL], "tool_choice": "required"},
        headers={"authorization": "Bearer sk-test-tools-0001"},
    )

    events = [block.removeprefix("data: ") for block in response.text.split("\n\n") if block]
    assert events[-1] == "[DONE]"
    deltas = [json.loads(event)["choices"][0] for event in events[:-1]]
    opening = deltas[0]["delta"]["tool_calls"][0]
    assert opening["index"] == 0 and opening["id"].startswith("call_") and opening["type"] == "function"
    assert opening["function"] == {"name": "get_weather", "arguments": ""}
    fragments = [d["delta"]["tool_calls"][0] for d in deltas[1:-1]]
    assert len(fragments) > 2, "arguments arrive in fragments"
    assert all(f["index"] == 0 and set(f) == {"index", "function"} for f in fragments)
    arguments = "".join(f["function"]["arguments"] for f in fragments)
    jsonschema.validate(json.loads(arguments), WEATHER_TOOL["function"]["parameters"])
    assert deltas[-1]["finish_reason"] == "tool_calls" and deltas[-1]["delta"] == {}


def test_openai_sdk_stream_helper_accumulates_the_tool_call(mock_upstream: MockUpstreamHandle) -> None:
    with openai_client(mock_upstream).chat.completions.stream(
        model="gpt-4.1", messages=[{"role": "user", "content": "call get_weather"}], tools=[WEATHER_TOOL]
    ) as stream:
        final = stream.get_final_completion()

    (call,) = final.choices[0].message.tool_calls or []
    assert call.function.name == "get_weather"
    jsonschema.validate(json.loads(call.function.arguments), WEATHER_TOOL["function"]["parameters"])


# --- OpenAI structured output ------------------------------------------------------


def test_openai_json_schema_response_format_is_honoured_whole_and_streamed(
    mock_upstream: MockUpstreamHandle,
) -> None:
    client = openai_client(mock_upstream)
    parsed = client.chat.completions.parse(model="gpt-4o", messages=ASK, response_format=Person)
    with client.chat.completions.stream(model="gpt-4o", messages=ASK, response_format=Person) as stream:
        streamed = stream.get_final_completion()

    for completion in (parsed, streamed):
        person = completion.choices[0].message.parsed
        assert isinstance(person, Person)
        assert person.name and isinstance(person.age, int)


def test_openai_json_schema_with_nested_refs_enums_and_bounds_yields_a_valid_instance(
    mock_upstream: MockUpstreamHandle,
) -> None:
    schema = {
        "type": "object",
        "properties": {
            "owner": {"$ref": "#/$defs/Person"},
            "size": {"type": "number", "exclusiveMinimum": 10, "maximum": 20},
            "kind": {"enum": ["a", "b"]},
            "items": {"type": "array", "items": {"$ref": "#/$defs/Person"}, "minItems": 2},
            "code": {"type": "string", "minLength": 12},
            "when": {"type": "string", "format": "date-time"},
            "maybe": {"anyOf": [{"type": "null"}, {"type": "integer"}]},
        },
        "required": ["owner", "size", "kind", "items", "code", "when", "maybe"],
        "$defs": {"Person": {"type": "object", "properties": {"name": {"type": "string"}}, "required": ["name"]}},
    }
    completion = openai_client(mock_upstream).chat.completions.create(
        model="gpt-4o", messages=ASK,
        response_format={"type": "json_schema", "json_schema": {"name": "thing", "schema": schema, "strict": True}},
    )

    value = json.loads(completion.choices[0].message.content or "")
    jsonschema.validate(value, schema)
    assert len(value["items"]) == 2 and len(value["code"]) >= 12


def test_schema_instances_satisfy_recursive_and_combined_schemas() -> None:
    tree = {
        "$ref": "#/definitions/Node",
        "definitions": {"Node": {
            "type": "object",
            "properties": {"children": {"type": "array", "items": {"$ref": "#/definitions/Node"}, "minItems": 1},
                           "parent": {"anyOf": [{"$ref": "#/definitions/Node"}, {"type": "null"}]}},
            "required": ["parent"],
        }},
    }
    combined = {"allOf": [{"type": "object", "properties": {"a": {"type": "integer", "multipleOf": 5,
                                                                   "minimum": 7}}, "required": ["a"]},
                          {"properties": {"b": {"const": "x"}}, "required": ["b"]}]}
    for schema in (tree, combined, {"type": ["string", "null"], "maxLength": 2}, {"type": "boolean"}):
        jsonschema.validate(instance_of(schema), schema)
    assert instance_of(combined) == {"a": 10, "b": "x"}


# --- Anthropic tool calls and structured output ---------------------------------------


def test_anthropic_forced_tool_is_a_tool_use_block_fitting_its_schema(mock_upstream: MockUpstreamHandle) -> None:
    message = anthropic_client(mock_upstream).messages.create(
        model="claude-haiku-4-5", max_tokens=100, messages=[{"role": "user", "content": "hi"}],
        tools=[CLAUDE_WEATHER_TOOL], tool_choice={"type": "tool", "name": "get_weather"},
    )

    assert message.stop_reason == "tool_use"
    (block,) = message.content
    assert block.type == "tool_use" and block.name == "get_weather" and block.id.startswith("toolu_")
    jsonschema.validate(block.input, CLAUDE_WEATHER_TOOL["input_schema"])


def test_anthropic_streamed_tool_use_is_shaped_as_the_real_api_streams_it(
    mock_upstream: MockUpstreamHandle,
) -> None:
    response = httpx.post(
        mock_upstream.url + "/v1/messages",
        json={"model": "claude-sonnet-4-5", "max_tokens": 100, "messages": ASK, "stream": True,
              "tools": [CLAUDE_WEATHER_TOOL], "tool_choice": {"type": "any"}},
        headers={"x-api-key": "sk-ant-test-tools-0001", "anthropic-version": "2023-06-01"},
    )

    events = [json.loads(block.split("data: ", 1)[1]) for block in response.text.split("\n\n") if block]
    types = [event["type"] for event in events]
    assert types[:3] == ["message_start", "content_block_start", "ping"]
    assert types[-3:] == ["content_block_stop", "message_delta", "message_stop"]
    assert events[1]["content_block"]["type"] == "tool_use"
    assert events[1]["content_block"]["input"] == {} and events[1]["content_block"]["name"] == "get_weather"
    deltas = [e["delta"] for e in events if e["type"] == "content_block_delta"]
    assert all(d["type"] == "input_json_delta" for d in deltas) and len(deltas) > 2
    jsonschema.validate(json.loads("".join(d["partial_json"] for d in deltas)), CLAUDE_WEATHER_TOOL["input_schema"])
    assert events[-2]["delta"]["stop_reason"] == "tool_use"


def test_anthropic_sdk_stream_helper_accumulates_text_then_tool_use(mock_upstream: MockUpstreamHandle) -> None:
    with anthropic_client(mock_upstream).messages.stream(
        model="claude-haiku-4-5", max_tokens=100, tools=[CLAUDE_WEATHER_TOOL],
        messages=[{"role": "user", "content": "Please call get_weather for Paris"}],
    ) as stream:
        final = stream.get_final_message()

    assert [block.type for block in final.content] == ["text", "tool_use"]
    tool_use = final.content[1]
    assert tool_use.type == "tool_use" and tool_use.name == "get_weather"
    jsonschema.validate(tool_use.input, CLAUDE_WEATHER_TOOL["input_schema"])
    assert final.stop_reason == "tool_use"


def test_anthropic_tool_result_gets_text_back(mock_upstream: MockUpstreamHandle) -> None:
    messages: Any = [
        {"role": "user", "content": "call get_weather"},
        {"role": "assistant", "content": [{"type": "tool_use", "id": "toolu_1", "name": "get_weather",
                                           "input": {"city": "Paris", "unit": "celsius", "days": 1}}]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_1", "content": "sunny"}]},
    ]
    message = anthropic_client(mock_upstream).messages.create(
        model="claude-haiku-4-5", max_tokens=100, messages=messages, tools=[CLAUDE_WEATHER_TOOL]
    )

    assert message.stop_reason == "end_turn" and [b.type for b in message.content] == ["text"]


def test_anthropic_output_format_is_honoured_whole_and_streamed(mock_upstream: MockUpstreamHandle) -> None:
    client = anthropic_client(mock_upstream)
    parsed = client.messages.parse(model="claude-sonnet-4-5", max_tokens=200, messages=ASK, output_format=Person)
    with client.messages.stream(
        model="claude-sonnet-4-5", max_tokens=200, messages=ASK, output_format=Person
    ) as stream:
        streamed = stream.get_final_message()

    assert isinstance(parsed.parsed_output, Person)
    assert isinstance(streamed.parsed_output, Person)
    assert streamed.parsed_output.age == parsed.parsed_output.age


# --- OpenAI Responses API -------------------------------------------------------------

RESPONSES_WEATHER_TOOL: Any = {"type": "function", "name": "get_weather",
                               "parameters": WEATHER_TOOL["function"]["parameters"], "strict": True}


def test_responses_forced_function_call_whole_and_streamed(mock_upstream: MockUpstreamHandle) -> None:
    client = openai_client(mock_upstream)
    choice: Any = {"type": "function", "name": "get_weather"}
    whole = client.responses.create(model="gpt-4.1", input="hi", tools=[RESPONSES_WEATHER_TOOL], tool_choice=choice)
    with client.responses.stream(model="gpt-4.1", input="hi", tools=[RESPONSES_WEATHER_TOOL],
                                 tool_choice=choice) as stream:
        kinds = [event.type for event in stream]
        streamed = stream.get_final_response()

    assert kinds[:3] == ["response.created", "response.in_progress", "response.output_item.added"]
    assert kinds.count("response.function_call_arguments.delta") > 2
    assert kinds[-3:] == ["response.function_call_arguments.done", "response.output_item.done",
                          "response.completed"]
    for response in (whole, streamed):
        (item,) = response.output
        assert item.type == "function_call" and item.name == "get_weather" and item.call_id.startswith("call_")
        jsonschema.validate(json.loads(item.arguments), RESPONSES_WEATHER_TOOL["parameters"])


def test_responses_function_output_gets_text_back(mock_upstream: MockUpstreamHandle) -> None:
    response = openai_client(mock_upstream).responses.create(
        model="gpt-4.1", tools=[RESPONSES_WEATHER_TOOL],
        input=[{"role": "user", "content": "call get_weather"},
               {"type": "function_call_output", "call_id": "call_1", "output": "sunny"}],
    )

    assert [item.type for item in response.output] == ["message"] and response.output_text


def test_responses_text_format_json_schema_is_honoured_whole_and_streamed(mock_upstream: MockUpstreamHandle) -> None:
    client = openai_client(mock_upstream)
    whole = client.responses.parse(model="gpt-4o", input="Who?", text_format=Person)
    with client.responses.stream(model="gpt-4o", input="Who?", text_format=Person) as stream:
        streamed = stream.get_final_response()

    assert isinstance(whole.output_parsed, Person) and isinstance(streamed.output_parsed, Person)
    assert whole.output_parsed == streamed.output_parsed
