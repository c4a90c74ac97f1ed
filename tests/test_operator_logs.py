"""What an operator reads: one line per failed request, start-up warnings, and JSON lines on request."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys

import httpx
from processes import free_port, wait_until_listening

from gateway.cli import render_config_reference

FAILING = "sk-fail500-Lg01Xy"
GOOD = "sk-good-Lg02Zw"
CHAT = {"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}]}


def test_a_failed_request_is_one_line_with_family_key_id_upstream_status_and_time(start_gateway, caplog):
    gateway = start_gateway(OPENAI_KEY=FAILING, UPSTREAM_RETRIES="0", GATEKEEPER="proxy_key",
                            PROXY_KEY="client-pass-Lg03")
    caplog.set_level(logging.INFO)
    reply = httpx.post(gateway.url + "/proxy/openai/v1/chat/completions", json=CHAT,
                       headers={"Authorization": "Bearer client-pass-Lg03"})
    assert reply.status_code == 502
    assert httpx.post(gateway.url + "/proxy/openai/v1/chat/completions", json={"model": 5},
                      headers={"Authorization": "Bearer client-pass-Lg03"}).status_code == 400
    failed = [r.getMessage() for r in caplog.records if r.getMessage().startswith("request failed")]
    key_id = gateway.key_status(FAILING)["id"]
    assert len(failed) == 1, "one line per 5xx, none for a client's mistake"
    assert failed[0].startswith(f"request failed: 502 on openai chat/completions, family gpt-4o, key {key_id}, "
                                "upstream 500, after ")
    assert failed[0].endswith(" s")
    everything = "\n".join(r.getMessage() for r in caplog.records)
    assert FAILING not in everything and FAILING[-6:] not in everything and "client-pass-Lg03" not in everything


def _environment(**extra: str) -> dict[str, str]:
    names = {row.split("=")[0] for row in render_config_reference("env").splitlines() if not row.startswith("#")}
    return {**{k: v for k, v in os.environ.items() if k not in names}, **extra}


def _serve_and_stop(tmp_path, env: dict[str, str], during=None) -> str:
    """`poolgate serve` as a real process until /health answers (and `during(url)` ran); its stderr."""
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "gateway.cli", "serve", "--host", "127.0.0.1", "--port", str(port)],
        env=_environment(CHECK_KEYS="false", **env), cwd=tmp_path, stderr=subprocess.PIPE, text=True,
    )
    try:
        wait_until_listening(f"http://127.0.0.1:{port}/health", process)
        if during is not None:
            during(f"http://127.0.0.1:{port}")
    finally:
        process.terminate()
        _, stderr = process.communicate(timeout=30)
    return stderr


def test_log_format_json_makes_every_line_one_json_object(tmp_path):
    closed = f"http://user:url-pw-Lg04@127.0.0.1:{free_port()}/v1"  # nothing listens: upstream never answers

    def fail_one(url: str) -> None:
        assert httpx.post(url + "/proxy/anthropic/v1/messages", json={
            "model": "claude-sonnet-4-5", "max_tokens": 8, "messages": [{"role": "user", "content": "hi"}]
        }).status_code == 502

    stderr = _serve_and_stop(tmp_path, {"LOG_FORMAT": "json", "ANTHROPIC_KEY": "sk-ant-Lg05secret",
                                        "ANTHROPIC_BASE_URL": closed, "UPSTREAM_RETRIES": "0"}, fail_one)
    lines = stderr.strip().splitlines()
    entries = [json.loads(line) for line in lines]  # fails on any line that is not one JSON object
    assert all(set(e) >= {"time", "level", "logger", "message"} for e in entries)
    messages = [e["message"] for e in entries]
    assert any("ends in /v1" in m for m in messages), "the corrected base URL is said at start-up"
    assert any(m.startswith("request failed: 502 on anthropic messages, family claude-sonnet, key ")
               and ", upstream no answer, after " in m for m in messages)
    assert any("Started server process" in m for m in messages), "uvicorn's own lines are JSON too"
    assert "sk-ant-Lg05secret" not in stderr and "Lg05secret" not in stderr and "url-pw-Lg04" not in stderr


def test_trusting_every_forwarder_off_a_known_platform_is_warned_about(tmp_path):
    warned = _serve_and_stop(tmp_path, {"OPENAI_KEY": GOOD, "FORWARDED_ALLOW_IPS": "*"})
    assert len([line for line in warned.splitlines() if "FORWARDED_ALLOW_IPS=*" in line]) == 1
    on_a_space = _serve_and_stop(tmp_path, {"OPENAI_KEY": GOOD, "FORWARDED_ALLOW_IPS": "*", "SPACE_ID": "me/pool"})
    assert "FORWARDED_ALLOW_IPS" not in on_a_space
    named = _serve_and_stop(tmp_path, {"OPENAI_KEY": GOOD, "FORWARDED_ALLOW_IPS": "10.0.0.5"})
    assert "FORWARDED_ALLOW_IPS" not in named
