"""`poolgate serve` behaves as a service: clear start-up failures, sane base URLs, helpful 404s, no secret in logs."""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import httpx
import openai
import pytest
from processes import free_port, wait_until_listening
from test_settings_and_cli import _all_setting_names, run_poolgate

CHAT = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}


@contextlib.contextmanager
def serving(env: dict[str, str]) -> Iterator[tuple[str, list[str]]]:
    """`poolgate serve` as a real process; yields its URL and a list holding its stderr once it stopped."""
    port = free_port()
    clean = {k: v for k, v in os.environ.items() if k not in _all_setting_names()}
    proc = subprocess.Popen(
        [sys.executable, "-m", "gateway.cli", "serve"],
        env={**clean, "PORT": str(port), "BIND_ADDRESS": "127.0.0.1", "CHECK_KEYS": "false", **env},
        cwd="/", stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )
    logs: list[str] = []
    try:
        wait_until_listening(f"http://127.0.0.1:{port}/health", proc)
        yield f"http://127.0.0.1:{port}", logs
    finally:
        proc.terminate()
        logs.append(proc.communicate(timeout=15)[1])


# --- start-up -----------------------------------------------------------------------------


def test_a_port_already_in_use_exits_with_status_1_and_one_clear_line() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]

        result = run_poolgate("serve", env={"PORT": str(port), "BIND_ADDRESS": "127.0.0.1", "CHECK_KEYS": "false"})

    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert f"127.0.0.1:{port}" in lines[0] and "in use" in lines[0]


@pytest.mark.parametrize("port", ["0", "-1", "65536", "70000"])
def test_a_port_outside_1_to_65535_is_refused_at_start_up(port: str) -> None:
    result = run_poolgate("serve", env={"PORT": port})

    assert result.returncode == 2
    assert f"PORT={port}" in result.stderr and "1 to 65535" in result.stderr


def test_a_port_outside_1_to_65535_on_the_command_line_is_refused() -> None:
    result = run_poolgate("serve", "--port", "99999", env={})

    assert result.returncode == 2
    assert "1 to 65535" in result.stderr


# --- base URLs ----------------------------------------------------------------------------


@pytest.mark.parametrize("suffix", ["/v1", "/v1/", "/V1"])
def test_a_base_url_ending_in_v1_is_corrected_with_a_warning(upstream: Any, suffix: str) -> None:
    env = {"OPENAI_KEY": "sk-base-url-0001", "OPENAI_BASE_URL": upstream.url + suffix}
    with serving(env) as (url, logs):
        reply = httpx.post(url + "/v1/chat/completions", json=CHAT, timeout=30)

    assert reply.status_code == 200, reply.text
    assert [r["path"] for r in upstream.requests] == ["/v1/chat/completions"]
    warnings = [line for line in logs[0].splitlines() if "OPENAI_BASE_URL" in line]
    assert len(warnings) == 1 and "/v1" in warnings[0], logs[0]


def test_credentials_in_a_base_url_never_reach_a_log_line(upstream: Any) -> None:
    with_password = upstream.url.replace("http://", "http://someone:base-url-s3cret@") + "/v1"
    env = {"ANTHROPIC_KEY": "sk-ant-base-url-0002", "ANTHROPIC_BASE_URL": with_password,
           "OPENAI_KEY": "sk-base-url-0003", "OPENAI_BASE_URL": f"http://127.0.0.1:{free_port()}",
           "UPSTREAM_RETRIES": "0", "LOG_LEVEL": "debug"}
    claude = {"model": "claude-haiku-4-5", "max_tokens": 10, "messages": [{"role": "user", "content": "hi"}]}
    with serving(env) as (url, logs):
        served = httpx.post(url + "/v1/messages", json=claude, timeout=30)
        failed = httpx.post(url + "/v1/chat/completions", json=CHAT, timeout=30)

    assert served.status_code == 200 and failed.status_code == 502
    assert "ANTHROPIC_BASE_URL" in logs[0], "the /v1 correction was announced"
    assert "base-url-s3cret" not in logs[0]
    assert "base-url-s3cret" not in served.text + failed.text


def test_credentials_in_the_openai_base_url_are_refused_without_repeating_them() -> None:
    # OpenAI-format upstreams take the key in `Authorization`, which basic auth from the URL would replace.
    result = run_poolgate("serve", env={"OPENAI_BASE_URL": "https://someone:base-url-s3cret@llm.example"})

    assert result.returncode == 2
    assert "OPENAI_BASE_URL" in result.stderr and "user:password@" in result.stderr
    assert "base-url-s3cret" not in result.stderr


# --- 404 outside the API ------------------------------------------------------------------


def test_an_unknown_path_answers_json_naming_the_base_urls(start_gateway: Any) -> None:
    gateway = start_gateway(OPENAI_KEY="sk-404-0001")

    reply = httpx.get(gateway.url + "/chat/completions")

    assert reply.status_code == 404
    error = reply.json()["error"]
    assert error["type"] == "invalid_request_error" and error["code"] == "unknown_url"
    assert f"{gateway.url}/v1" in error["message"]
    assert f"{gateway.url}/proxy/anthropic" in error["message"]


def test_an_unknown_path_answers_an_anthropic_client_in_its_dialect(start_gateway: Any) -> None:
    gateway = start_gateway(OPENAI_KEY="sk-404-0002")

    reply = httpx.post(gateway.url + "/v2/messages", headers={"anthropic-version": "2023-06-01"}, json={})

    assert reply.status_code == 404
    body = reply.json()
    assert body["type"] == "error" and body["error"]["type"] == "not_found_error"
    assert f"{gateway.url}/proxy/anthropic" in body["error"]["message"]


def test_an_unknown_path_answers_a_browser_with_a_plain_page(start_gateway: Any) -> None:
    gateway = start_gateway(OPENAI_KEY="sk-404-0003")

    reply = httpx.get(gateway.url + "/nothing/here", headers={"accept": "text/html,application/xhtml+xml"})

    assert reply.status_code == 404
    assert reply.headers["content-type"].startswith("text/html")
    assert f"{gateway.url}/v1" in reply.text and f"{gateway.url}/proxy/anthropic" in reply.text
    assert "<script" not in reply.text


def test_an_unknown_endpoint_under_v1_names_the_routes_instead_of_the_readme(start_gateway: Any) -> None:
    gateway = start_gateway(OPENAI_KEY="sk-404-0004")

    with pytest.raises(openai.NotFoundError) as raised:
        openai.OpenAI(base_url=gateway.url + "/v1", api_key="x").get("/no-such-thing", cast_to=object)

    message = raised.value.body["message"]  # type: ignore[index]
    assert "README" not in message
    assert "/v1/chat/completions" in message
