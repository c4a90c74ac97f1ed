"""Usage is never lost: a stream cut short is counted from what was relayed, and marked as estimated.

OpenAI reports a stream's usage only in its last chunk and Anthropic its output
tokens only near the end, so a stream the client leaves (or upstream breaks)
before then would otherwise count zero tokens: a budget evaded by hanging up.
"""

from __future__ import annotations

import json

import httpx
import pytest
from processes import wait_for
from scripted_upstream import STREAM_HEAD, Exchange, ScriptedUpstream, chunked

from catalog.families import family_of
from fake_upstream import run_mock_upstream_in_thread

PROMPT = "Tell me a long story about a lighthouse keeper and the sea, with many details."
OPENAI_STREAM = ("/proxy/openai/v1/chat/completions",
                 {"model": "gpt-4o", "stream": True, "messages": [{"role": "user", "content": PROMPT}]})
ANTHROPIC_STREAM = ("/proxy/anthropic/v1/messages",
                    {"model": "claude-haiku-4-5", "max_tokens": 1000, "stream": True,
                     "messages": [{"role": "user", "content": PROMPT}]})
STREAMS = {"openai": OPENAI_STREAM, "anthropic": ANTHROPIC_STREAM}


@pytest.fixture
def slow_upstream():
    handle = run_mock_upstream_in_thread(tokens_per_sec=20, output_tokens=400)
    yield handle
    handle.stop()


@pytest.mark.parametrize("provider", ["openai", "anthropic"])
def test_a_stream_the_client_leaves_midway_is_counted_as_estimated(start_gateway, slow_upstream, provider):
    gateway = start_gateway(OPENAI_KEY="sk-stream-key-0001", ANTHROPIC_KEY="sk-ant-stream-key-0002",
                            OPENAI_BASE_URL=slow_upstream.url, ANTHROPIC_BASE_URL=slow_upstream.url)
    path, body = STREAMS[provider]
    with httpx.stream("POST", gateway.url + path, json=body, timeout=30) as reply:
        assert reply.status_code == 200
        seen = b""
        for chunk in reply.iter_raw():  # four words of text have arrived, then the client leaves
            seen += chunk
            if seen.count(b'"delta":{"content":"') + seen.count(b'"type":"text_delta"') >= 4:
                break
    assert wait_for(lambda: gateway.usage_totals()["prompts"] == 1), "the cut stream was settled"
    totals = gateway.usage_totals()
    assert totals["input_tokens"] > 5, "the prompt was counted"
    assert totals["output_tokens"] >= 4, "the text relayed before the client left was counted"
    assert totals["output_tokens"] < 100, "only what was relayed, not the whole 400-token answer"
    assert totals["estimated_prompts"] == 1
    family = family_of(provider, body["model"])
    assert gateway.run(gateway.app.pool.family_usage(family))["estimated_prompts"] == 1


def _openai_delta(text: str) -> bytes:
    return b"data: " + json.dumps({"id": "c", "object": "chat.completion.chunk", "model": "gpt-4o",
                                   "choices": [{"index": 0, "delta": {"content": text}}]}).encode() + b"\n\n"


def _anthropic_events(texts: list[str]) -> list[bytes]:
    start = {"type": "message_start", "message": {"id": "m", "type": "message", "role": "assistant",
                                                  "model": "claude-haiku-4-5", "content": [],
                                                  "usage": {"input_tokens": 21, "output_tokens": 1}}}
    events = [b"event: message_start\ndata: " + json.dumps(start).encode() + b"\n\n",
              b'event: content_block_start\ndata: {"type":"content_block_start","index":0,'
              b'"content_block":{"type":"text","text":""}}\n\n']
    for text in texts:
        delta = {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": text}}
        events.append(b"event: content_block_delta\ndata: " + json.dumps(delta).encode() + b"\n\n")
    return events


WORDS = ["Once", " upon", " a", " time", ",", " a", " keeper", " watched", " the", " sea", "."]


def _broken_stream(provider: str):
    async def answer(exchange: Exchange) -> None:
        events = [_openai_delta(w) for w in WORDS] if provider == "openai" else _anthropic_events(WORDS)
        await exchange.write(STREAM_HEAD + b"".join(chunked(e) for e in events))
        # ...and upstream breaks off: no usage, no last chunk, no end of the chunked body.
    return answer


@pytest.mark.parametrize("provider", ["openai", "anthropic"])
def test_a_stream_upstream_breaks_midway_is_counted_as_estimated(start_gateway, provider):
    upstream = ScriptedUpstream(_broken_stream(provider)).start()
    try:
        gateway = start_gateway(OPENAI_KEY="sk-stream-key-0001", ANTHROPIC_KEY="sk-ant-stream-key-0002",
                                OPENAI_BASE_URL=upstream.url, ANTHROPIC_BASE_URL=upstream.url)
        path, body = STREAMS[provider]
        with httpx.stream("POST", gateway.url + path, json=body, timeout=30) as reply:
            relayed = b"".join(reply.iter_raw())
        assert relayed.count(b"keeper") == 1, "the client got what upstream sent before it broke"
        assert wait_for(lambda: gateway.usage_totals()["prompts"] == 1)
        totals = gateway.usage_totals()
        assert totals["input_tokens"] > 5
        assert 8 <= totals["output_tokens"] <= 20, "about one token a word relayed"
        assert totals["estimated_prompts"] == 1
        assert gateway.key_status("0001" if provider == "openai" else "0002")["estimated_prompts"] == 1
    finally:
        upstream.stop()


@pytest.mark.parametrize("provider", ["openai", "anthropic"])
def test_a_complete_stream_is_counted_from_upstreams_usage_not_estimated(start_gateway, upstream, provider):
    gateway = start_gateway(OPENAI_KEY="sk-stream-key-0001", ANTHROPIC_KEY="sk-ant-stream-key-0002")
    path, body = STREAMS[provider]
    with httpx.stream("POST", gateway.url + path, json=body, timeout=30) as reply:
        relayed = b"".join(reply.iter_raw())
    assert reply.status_code == 200 and relayed
    assert wait_for(lambda: gateway.usage_totals()["prompts"] == 1)
    totals = gateway.usage_totals()
    assert len(upstream.requests) == 1
    assert totals["output_tokens"] == 16, "the fake upstream's own count (16 tokens by default)"
    assert totals["estimated_prompts"] == 0


def test_a_long_stream_cut_short_is_counted_whole(start_gateway):
    """Past 256 KB the relayed events are boiled down to text as the stream goes; none of it is lost."""
    words = [" the"] * 4000  # one cl100k token each; ~600 KB of OpenAI chunks

    async def answer(exchange: Exchange) -> None:
        await exchange.write(STREAM_HEAD + b"".join(chunked(_openai_delta(w)) for w in words))

    upstream = ScriptedUpstream(answer).start()
    try:
        gateway = start_gateway(OPENAI_KEY="sk-stream-key-0001", OPENAI_BASE_URL=upstream.url)
        path, body = OPENAI_STREAM
        with httpx.stream("POST", gateway.url + path, json=body, timeout=30) as reply:
            relayed = b"".join(reply.iter_raw())
        assert relayed.count(b'"content": " the"') == 4000
        assert wait_for(lambda: gateway.usage_totals()["prompts"] == 1)
        totals = gateway.usage_totals()
        assert totals["output_tokens"] == 4000
        assert totals["estimated_prompts"] == 1
    finally:
        upstream.stop()


def test_without_its_encoding_counting_falls_back_to_four_bytes_a_token_and_says_so_once(monkeypatch, caplog):
    import tiktoken

    from catalog import encodings, tokens

    def missing(*_args):
        raise encodings.EncodingUnavailable("gone")

    monkeypatch.setattr(encodings, "_load", missing)
    monkeypatch.setattr(tiktoken, "get_encoding", missing)
    encodings.encoding.cache_clear()
    try:
        assert tokens.count_tokens("x" * 400) == 100
        assert tokens.count_tokens("y" * 9) == 3
    finally:
        encodings.encoding.cache_clear()
        monkeypatch.undo()
    warnings = [r for r in caplog.records if r.name == "poolgate.tokens"]
    assert len(warnings) == 1 and "4 bytes a token" in warnings[0].getMessage()
    assert tokens.count_tokens(" the" * 10) == 10, "with the bundled encoding back, real counts"
