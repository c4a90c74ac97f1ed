"""Malformed bodies, types, headers and paths sent to every route never get a 5xx and never hang.

Bounded: a fixed number of examples per route group, each request with a
client timeout (a hang fails as a timeout). Hypothesis keeps no example
database here, so a run leaves nothing behind; a failure prints its example.
"""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

ADMIN_KEY = "admin-fuzz-key"
GATEWAY_ENV = {"OPENAI_KEY": "sk-fuzz-0001", "ANTHROPIC_KEY": "sk-ant-fuzz-0002", "ADMIN_KEY": ADMIN_KEY,
               "ADMIN_LOCKOUT_FAILURES": "1000000", "USER_CONCURRENCY_LIMIT": "100"}
REQUEST_TIMEOUT_SEC = 20.0  # far above any honest answer on loopback: hitting it means a hang
FUZZ = settings(max_examples=150, deadline=None, database=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])

MODELS = ["gpt-4o", "gpt-4o-mini", "gpt-4.1", "claude-haiku-4-5", "claude-sonnet-4-5", "text-embedding-3-small"]
PROXY_PATHS = [
    "/v1/chat/completions", "/v1/completions", "/v1/embeddings", "/v1/responses", "/v1/responses/input_tokens",
    "/v1/moderations", "/v1/images/generations", "/v1/audio/speech", "/v1/audio/transcriptions", "/v1/models",
    "/v1/models/gpt-4o", "/v1/messages", "/proxy/openai/v1/chat/completions", "/proxy/openai/v1/embeddings",
    "/proxy/anthropic/v1/messages", "/proxy/anthropic/v1/messages/count_tokens", "/proxy/anthropic/v1/models",
    "/openai/v1/chat/completions", "/v1/v1/chat/completions",
]
OTHER_PATHS = ["/", "/status", "/health", "/admin/keys", "/admin/keys/0123456789ab", "/admin/keys/recheck",
               "/admin/keys/0123456789ab/disable", "/admin/docs", "/admin/docs/openapi.json", "/nowhere"]

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=40),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=4),
    max_leaves=20,
)
# Bodies shaped like API calls whose fields hold anything at all.
api_like = st.fixed_dictionaries(
    {"model": st.sampled_from(MODELS) | json_values},
    optional={
        "messages": json_values | st.just([{"role": "user", "content": "hi"}]),
        "input": json_values,
        "prompt": json_values,
        "stream": st.booleans() | json_values,
        "stream_options": json_values,
        "max_tokens": st.integers(min_value=-5, max_value=50) | json_values,
        "keys": json_values,
        "provider": st.sampled_from(["openai", "anthropic"]) | json_values,
    },
)
bodies = st.one_of(
    api_like.map(lambda d: json.dumps(d).encode()),
    json_values.map(lambda v: json.dumps(v).encode()),
    st.binary(max_size=300),
    st.text(max_size=200).map(str.encode),
    st.just(b"[" * 3000),
    st.builds(lambda n: b"--x\r\nContent-Disposition: form-data; name=model\r\n\r\n" + n.encode() + b"\r\n--x--\r\n",
              st.text(max_size=30)),
)
# Any printable ASCII; the client library refuses surrounding whitespace in a header value, so it is trimmed.
header_text = st.text(alphabet=st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=60).map(str.strip)
headers = st.fixed_dictionaries(
    {},
    optional={
        "content-type": st.sampled_from(["application/json", "text/plain", "multipart/form-data; boundary=x",
                                         "multipart/form-data", "application/x-www-form-urlencoded"]) | header_text,
        "authorization": st.sampled_from([f"Bearer {ADMIN_KEY}", "Bearer", "Basic x"]) | header_text,
        "x-api-key": header_text,
        "anthropic-version": st.sampled_from(["2023-06-01"]) | header_text,
        "accept": st.sampled_from(["text/html", "application/json", "*/*"]) | header_text,
        "x-forwarded-for": header_text,
        "accept-encoding": header_text,
    },
)
methods = st.sampled_from(["GET", "POST", "PUT", "DELETE", "PATCH", "HEAD", "OPTIONS"])
path_noise = st.text(alphabet="abv1/._-%25~\\2eEfF", max_size=30)


def send(client: httpx.Client, method: str, path: str, body: bytes, hdrs: dict[str, str]) -> httpx.Response:
    return client.request(method, path, content=body if method not in ("GET", "HEAD") else None, headers=hdrs)


def assert_answered(reply: httpx.Response) -> None:
    assert reply.status_code < 500, f"{reply.status_code}: {reply.text[:300]}"


@pytest.fixture
def client(start_gateway: Any) -> Any:
    gateway = start_gateway(**GATEWAY_ENV)
    with httpx.Client(base_url=gateway.url, timeout=REQUEST_TIMEOUT_SEC) as http:
        yield http


@FUZZ
@given(path=st.sampled_from(PROXY_PATHS), method=st.sampled_from(["POST", "POST", "POST", "GET"]), body=bodies,
       hdrs=headers)
def test_proxy_routes_answer_malformed_requests_without_a_5xx(
    client: httpx.Client, path: str, method: str, body: bytes, hdrs: dict[str, str]
) -> None:
    assert_answered(send(client, method, path, body, hdrs))


@FUZZ
@given(path=st.sampled_from(OTHER_PATHS), method=methods, body=bodies, hdrs=headers)
def test_status_admin_and_health_answer_malformed_requests_without_a_5xx(
    client: httpx.Client, path: str, method: str, body: bytes, hdrs: dict[str, str]
) -> None:
    assert_answered(send(client, method, path, body, hdrs))


@FUZZ
@given(prefix=st.sampled_from(["/", "/v1/", "/proxy/openai/", "/proxy/anthropic/", "/admin/", "/openai/"]),
       noise=path_noise, method=methods, hdrs=headers)
def test_odd_paths_answer_without_a_5xx(
    client: httpx.Client, prefix: str, noise: str, method: str, hdrs: dict[str, str]
) -> None:
    assert_answered(send(client, method, prefix + noise, b"{}", hdrs))
