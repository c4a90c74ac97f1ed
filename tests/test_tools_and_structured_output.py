"""Tool calls and structured output work end to end through poolgate, with the official SDKs' helpers.

The SDKs' stream helpers rebuild a tool call from its fragments (OpenAI's
`delta.tool_calls`, Anthropic's `input_json_delta`) and parse structured
output into pydantic models: if poolgate dropped, split or reordered an event,
the accumulated call or the parsed object would be wrong.
"""

from __future__ import annotations

import json
from typing import Any

import anthropic
import openai
import pydantic
import pytest

PROXY_KEY = "tools-pass-Qw83"


class GetWeather(pydantic.BaseModel):
    """Current weather in a city."""

    city: str
    unit: str
    days: int


class Person(pydantic.BaseModel):
    name: str
    age: int
    tags: list[str]


CLAUDE_TOOL: Any = {"name": "GetWeather", "description": "Current weather in a city",
                    "input_schema": GetWeather.model_json_schema()}
ASK: Any = [{"role": "user", "content": "What is the weather in Paris? Use GetWeather."}]


@pytest.fixture
def gateway(start_gateway: Any) -> Any:
    return start_gateway(OPENAI_KEY="sk-test-tools-openai-0001", ANTHROPIC_KEY="sk-ant-test-tools-0001",
                         GATEKEEPER="proxy_key", PROXY_KEY=PROXY_KEY)


def openai_client(gateway: Any) -> openai.OpenAI:
    return openai.OpenAI(base_url=gateway.url + "/proxy/openai/v1", api_key=PROXY_KEY, max_retries=0)


def anthropic_client(gateway: Any) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=gateway.url + "/proxy/anthropic", api_key=PROXY_KEY, max_retries=0)


def sent_body(upstream: Any) -> dict[str, Any]:
    return json.loads(upstream.requests[-1]["body"])  # type: ignore[no-any-return]


def test_openai_tool_call_is_parsed_whole_and_accumulated_from_a_stream(gateway: Any, upstream: Any) -> None:
    client = openai_client(gateway)
    tool = openai.pydantic_function_tool(GetWeather)
    whole = client.chat.completions.parse(model="gpt-4o", messages=ASK, tools=[tool])
    assert sent_body(upstream)["tools"][0]["function"]["name"] == "GetWeather"
    with client.chat.completions.stream(model="gpt-4o-mini", messages=ASK, tools=[tool]) as stream:
        streamed = stream.get_final_completion()

    for completion in (whole, streamed):
        assert completion.choices[0].finish_reason == "tool_calls"
        (call,) = completion.choices[0].message.tool_calls or []
        assert call.function.name == "GetWeather"
        assert isinstance(call.function.parsed_arguments, GetWeather)
        assert call.function.parsed_arguments.days >= 1


def test_openai_forced_tool_streams_its_arguments_event_by_event(gateway: Any) -> None:
    stream = openai_client(gateway).chat.completions.create(
        model="gpt-4.1", messages=[{"role": "user", "content": "hi"}], stream=True,
        tools=[openai.pydantic_function_tool(GetWeather)],
        tool_choice={"type": "function", "function": {"name": "GetWeather"}},
    )
    chunks = [chunk for chunk in stream if chunk.choices]

    first = (chunks[0].choices[0].delta.tool_calls or [])[0]
    assert first.index == 0 and first.id and first.function and first.function.name == "GetWeather"
    fragments = [(c.choices[0].delta.tool_calls or [])[0] for c in chunks[1:-1]]
    assert len(fragments) > 2
    arguments = "".join(f.function.arguments or "" for f in fragments if f.function)
    assert GetWeather.model_validate_json(arguments).city


def test_openai_structured_output_is_parsed_whole_and_streamed(gateway: Any, upstream: Any) -> None:
    client = openai_client(gateway)
    whole = client.chat.completions.parse(model="gpt-4o", messages=ASK, response_format=Person)
    assert sent_body(upstream)["response_format"]["type"] == "json_schema"
    with client.chat.completions.stream(model="gpt-4o", messages=ASK, response_format=Person) as stream:
        streamed = stream.get_final_completion()

    for completion in (whole, streamed):
        person = completion.choices[0].message.parsed
        assert isinstance(person, Person) and person.name


def test_anthropic_tool_use_is_whole_and_accumulated_from_a_stream(gateway: Any, upstream: Any) -> None:
    client = anthropic_client(gateway)
    whole = client.messages.create(model="claude-haiku-4-5", max_tokens=200, messages=ASK, tools=[CLAUDE_TOOL],
                                   tool_choice={"type": "tool", "name": "GetWeather"})
    assert sent_body(upstream)["tools"] == [CLAUDE_TOOL]
    with client.messages.stream(model="claude-sonnet-4-5", max_tokens=200, messages=ASK,
                                tools=[CLAUDE_TOOL]) as stream:
        streamed = stream.get_final_message()

    for message in (whole, streamed):
        assert message.stop_reason == "tool_use"
        (tool_use,) = [block for block in message.content if block.type == "tool_use"]
        assert tool_use.type == "tool_use" and tool_use.name == "GetWeather"
        assert GetWeather.model_validate(tool_use.input).days >= 1
    assert [block.type for block in streamed.content] == ["text", "tool_use"]


def test_anthropic_structured_output_is_parsed_whole_and_streamed(gateway: Any, upstream: Any) -> None:
    client = anthropic_client(gateway)
    whole = client.messages.parse(model="claude-sonnet-4-5", max_tokens=200, messages=ASK, output_format=Person)
    assert sent_body(upstream)["output_config"]["format"]["type"] == "json_schema"
    with client.messages.stream(model="claude-haiku-4-5", max_tokens=200, messages=ASK,
                                output_format=Person) as stream:
        streamed = stream.get_final_message()

    for parsed in (whole.parsed_output, streamed.parsed_output):
        assert isinstance(parsed, Person) and isinstance(parsed.age, int)


def test_responses_api_function_call_and_structured_output_through_poolgate(gateway: Any, upstream: Any) -> None:
    client = openai_client(gateway)
    tool: Any = {"type": "function", "name": "GetWeather", "parameters": GetWeather.model_json_schema()}
    with client.responses.stream(model="gpt-4.1", input="Use GetWeather for Paris", tools=[tool]) as stream:
        called = stream.get_final_response()
    assert sent_body(upstream)["tools"] == [tool]
    with client.responses.stream(model="gpt-4o", input="Who?", text_format=Person) as stream:
        structured = stream.get_final_response()

    (item,) = called.output
    assert item.type == "function_call" and item.name == "GetWeather"
    assert GetWeather.model_validate_json(item.arguments).city
    assert isinstance(structured.output_parsed, Person)
