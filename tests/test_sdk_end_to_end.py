"""The official SDKs work unchanged through the gateway, with a proxy credential instead of a key."""

from __future__ import annotations

import anthropic
import httpx
import openai
import pytest

OPENAI_KEYS = "sk-test-openai-aaaa1111,sk-test-openai-bbbb2222"
ANTHROPIC_KEYS = "sk-ant-test-cccc3333"


@pytest.fixture
def gateway(start_gateway):
    return start_gateway(
        OPENAI_KEY=OPENAI_KEYS, ANTHROPIC_KEY=ANTHROPIC_KEYS, GATEKEEPER="proxy_key", PROXY_KEY="let-me-in"
    )


def openai_client(gateway, base="/proxy/openai/v1"):
    return openai.OpenAI(base_url=gateway.url + base, api_key="let-me-in", max_retries=0)


def anthropic_client(gateway, base="/proxy/anthropic"):
    return anthropic.Anthropic(base_url=gateway.url + base, api_key="let-me-in", max_retries=0)


def test_openai_chat_completion_is_served_and_counted(gateway, upstream):
    reply = openai_client(gateway).chat.completions.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": "Say hello to the pool"}]
    )
    assert reply.choices[0].message.content
    assert reply.usage.prompt_tokens > 0 and reply.usage.completion_tokens > 0
    sent = upstream.requests[-1]
    assert sent["path"] == "/v1/chat/completions"
    assert sent["key"] in OPENAI_KEYS.split(",")
    totals = gateway.usage_totals()
    assert totals["prompts"] == 1
    assert totals["input_tokens"] == reply.usage.prompt_tokens
    assert totals["output_tokens"] == reply.usage.completion_tokens


def test_openai_stream_arrives_whole_and_without_the_usage_chunk_it_did_not_ask_for(gateway, upstream):
    stream = openai_client(gateway).chat.completions.create(
        model="gpt-4o", messages=[{"role": "user", "content": "Stream a few words"}], stream=True
    )
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text
    assert all(c.choices for c in chunks), "the usage-only chunk poolgate asked for must not reach the client"
    # upstream was asked for usage, so the gateway could account for the stream
    assert '"include_usage":true' in upstream.requests[-1]["body"].replace(" ", "")
    totals = gateway.usage_totals()
    assert totals["prompts"] == 1 and totals["output_tokens"] > 0


def test_openai_stream_keeps_the_usage_chunk_when_the_client_asked_for_it(gateway):
    stream = openai_client(gateway).chat.completions.create(
        model="gpt-4o",
        messages=[{"role": "user", "content": "Stream a few words"}],
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens > 0
    assert gateway.usage_totals()["output_tokens"] == chunks[-1].usage.completion_tokens


def test_openai_embeddings_and_models(gateway):
    client = openai_client(gateway)
    embedding = client.embeddings.create(model="text-embedding-3-small", input=["one", "two"])
    assert len(embedding.data) == 2 and embedding.data[0].embedding
    models = client.models.list()
    assert any(m.id.startswith("gpt-4o") for m in models.data)
    assert client.models.retrieve("gpt-4o").id == "gpt-4o"


def test_openai_alias_and_root_routes_and_a_missing_v1(gateway, upstream):
    for base in ("/openai/v1", "/v1", "/proxy/openai"):
        reply = openai_client(gateway, base).chat.completions.create(
            model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}]
        )
        assert reply.choices[0].message.content
        assert upstream.requests[-1]["path"] == "/v1/chat/completions"


def test_claude_model_on_the_root_route_is_translated_to_anthropic(gateway, upstream):
    reply = openai_client(gateway, "/v1").chat.completions.create(
        model="claude-sonnet-4-6", messages=[{"role": "user", "content": "hi"}]
    )
    assert reply.choices[0].message.content
    assert upstream.requests[-1]["path"] == "/v1/messages"  # tests/test_translate_*.py cover the rest


def test_anthropic_message_is_served_and_counted(gateway, upstream):
    message = anthropic_client(gateway).messages.create(
        model="claude-sonnet-4-6", max_tokens=64, messages=[{"role": "user", "content": "Hello Claude"}]
    )
    assert message.content[0].text
    sent = upstream.requests[-1]
    assert sent["path"] == "/v1/messages"
    assert sent["key"] == ANTHROPIC_KEYS
    assert sent["headers"]["anthropic-version"]
    totals = gateway.usage_totals()
    assert totals["input_tokens"] == message.usage.input_tokens
    assert totals["output_tokens"] == message.usage.output_tokens


def test_anthropic_stream_with_the_real_event_sequence(gateway):
    with anthropic_client(gateway).messages.stream(
        model="claude-haiku-4-5", max_tokens=64, messages=[{"role": "user", "content": "Stream please"}]
    ) as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
    assert text and final.usage.output_tokens > 0
    totals = gateway.usage_totals()
    assert totals["input_tokens"] == final.usage.input_tokens
    assert totals["output_tokens"] == final.usage.output_tokens


def test_anthropic_count_tokens_and_models(gateway):
    client = anthropic_client(gateway)
    counted = client.messages.count_tokens(
        model="claude-sonnet-4-6", messages=[{"role": "user", "content": "how many tokens is this"}]
    )
    assert counted.input_tokens > 0
    assert any(m.id.startswith("claude") for m in client.models.list().data)


def test_anthropic_sdk_with_the_gateway_root_as_base_url(gateway, upstream):
    message = anthropic_client(gateway, "").messages.create(
        model="claude-sonnet-4-6", max_tokens=16, messages=[{"role": "user", "content": "hi"}]
    )
    assert message.content[0].text
    assert upstream.requests[-1]["path"] == "/v1/messages"


def test_non_streaming_body_is_relayed_byte_exact(start_gateway):
    """Whitespace, key order and escapes as upstream wrote them: the body is not re-encoded."""
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    odd = b'{ "usage": {"prompt_tokens": 3, "completion_tokens": 2},\n  "id": "x",  "text": "caf\\u00e9 \xe2\x9c\x93" }'

    class Upstream(BaseHTTPRequestHandler):
        def do_POST(self):
            self.rfile.read(int(self.headers["content-length"]))
            self.send_response(200)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(odd)))
            self.end_headers()
            self.wfile.write(odd)

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Upstream)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        gateway = start_gateway(OPENAI_KEY="sk-exact-0001", OPENAI_BASE_URL=f"http://127.0.0.1:{server.server_port}")
        reply = httpx.post(gateway.url + "/v1/chat/completions", json={"model": "gpt-4o", "messages": []})
        assert reply.content == odd
        assert gateway.usage_totals() == {"prompts": 1, "input_tokens": 3, "output_tokens": 2, "estimated_prompts": 0}
    finally:
        server.shutdown()


def test_usage_is_recorded_per_model_family(gateway):
    client = openai_client(gateway)
    client.chat.completions.create(model="gpt-4o-mini-2024-07-18", messages=[{"role": "user", "content": "a"}])
    client.chat.completions.create(model="gpt-4o-2024-08-06", messages=[{"role": "user", "content": "b"}])
    client.embeddings.create(model="text-embedding-3-small", input="c")
    families = ("gpt-4o-mini", "gpt-4o", "embeddings")
    by_family = {f: gateway.run(gateway.app.pool.family_usage(f))["prompts"] for f in families}
    assert by_family == {"gpt-4o-mini": 1, "gpt-4o": 1, "embeddings": 1}
    assert gateway.usage_totals()["prompts"] == 3
