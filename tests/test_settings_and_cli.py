"""Configuration is checked at start-up, documented from one source, and the CLI runs the real thing."""

from __future__ import annotations

import contextlib
import os
import re
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import pytest
from processes import free_port, wait_until_listening

from gateway.cli import render_config_reference
from gateway.settings import ConfigError, Settings

ROOT = Path(__file__).resolve().parent.parent


def run_poolgate(*args: str, env: dict[str, str], timeout: float = 20) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if k not in _all_setting_names()}
    return subprocess.run(
        [sys.executable, "-m", "gateway.cli", *args],
        env={**clean, **env},
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd="/",  # no .env file here
    )


def _all_setting_names() -> set[str]:
    return {row.split("=")[0] for row in render_config_reference("env").splitlines() if not row.startswith("#")}


def test_every_configuration_problem_is_reported_on_its_own_line():
    result = run_poolgate(
        "serve", env={"GATEKEEPER": "proxy_key", "PORT": "eighty", "OPENAI_BASE_URL": "api.openai.com"}
    )
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert any("GATEKEEPER=proxy_key needs PROXY_KEY" in line for line in lines)
    assert any("PORT='eighty'" in line for line in lines)
    assert any("OPENAI_BASE_URL" in line for line in lines)
    assert len(lines) == 3
    assert "Traceback" not in result.stderr


def test_several_workers_need_redis():
    result = run_poolgate("serve", "--workers", "2", env={})
    assert result.returncode == 2
    assert "--workers 2 needs REDIS_URL" in result.stderr


def test_settings_come_from_a_dotenv_file_under_the_environment(tmp_path, monkeypatch):
    (tmp_path / ".env").write_text("GATEKEEPER=proxy_key\nPROXY_KEY=from-file\nPORT=9999\n")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("PORT", "7000")
    settings = Settings.from_env()
    assert settings.proxy_key == "from-file" and settings.port == 7000


def test_unknown_gatekeeper_is_refused():
    with pytest.raises(ConfigError) as caught:
        Settings.from_env({"GATEKEEPER": "user_tokens"}, env_file=None)
    assert "GATEKEEPER='user_tokens'" in caught.value.problems[0]


def test_public_view_never_contains_a_secret():
    settings = Settings.from_env(
        {"OPENAI_KEY": "sk-hidden-1", "PROXY_KEY": "pw-hidden", "GATEKEEPER": "proxy_key", "ADMIN_KEY": "adm-hidden",
         "REDIS_URL": "redis://:pw-redis@localhost:6379",
         "ANTHROPIC_BASE_URL": "https://user:pw-in-url@llm.example.com"},
        env_file=None,
    )
    shown = repr(settings.public_view())
    for secret in ("sk-hidden-1", "pw-hidden", "adm-hidden", "pw-redis", "pw-in-url"):
        assert secret not in shown
    assert settings.public_view()["anthropic_base_url"] == "https://llm.example.com"


def test_readme_configuration_table_matches_the_settings():
    readme = (ROOT / "README.md").read_text()
    table = render_config_reference("markdown")
    assert table in readme, "regenerate the README table with `poolgate config`"


def test_env_example_lists_every_variable_with_its_default():
    example = (ROOT / ".env.example").read_text()
    assert render_config_reference("env") in example, "regenerate with `poolgate config --format env`"


def test_readme_quick_start_test_command_is_what_ci_runs():
    readme = (ROOT / "README.md").read_text()
    command = re.search(r"python3 -m pytest[^\n`#]*", readme)
    assert command is not None
    assert command.group(0).strip() in (ROOT / ".ci" / "run").read_text()


@contextlib.contextmanager
def gateway_from_the_command_line(
    tmp_path: Path, env: dict[str, str], *serve_args: str
) -> Iterator[tuple[str, list[str]]]:
    """`poolgate mock-upstream` and `poolgate serve` as real processes, the gateway pointed at the mock.

    Yields the gateway's URL and a list that holds both processes' stderr once they have stopped.
    """
    mock_port, gateway_port = free_port(), free_port()
    clean = {k: v for k, v in os.environ.items() if k not in _all_setting_names()}
    mock = subprocess.Popen(
        [sys.executable, "-m", "gateway.cli", "mock-upstream", "--port", str(mock_port)],
        env=clean, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    gateway = subprocess.Popen(
        [sys.executable, "-m", "gateway.cli", "serve", *serve_args],
        env={**clean, "OPENAI_BASE_URL": f"http://127.0.0.1:{mock_port}", "PORT": str(gateway_port),
             # A short grace: the 15 s this helper waits for the processes to end must outlast it.
             "BIND_ADDRESS": "127.0.0.1", "SHUTDOWN_GRACE_SEC": "3", **env},
        cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    logs: list[str] = []
    try:
        wait_until_listening(f"http://127.0.0.1:{mock_port}/_mock/requests", mock)
        wait_until_listening(f"http://127.0.0.1:{gateway_port}/health", gateway)
        yield f"http://127.0.0.1:{gateway_port}", logs
    finally:
        for proc in (gateway, mock):
            proc.terminate()
        logs.extend(proc.communicate(timeout=15)[1] for proc in (gateway, mock))


def test_poolgate_serve_and_mock_upstream_work_from_the_command_line(tmp_path):
    env = {"OPENAI_KEY": "sk-cli-test-0001", "GATEKEEPER": "proxy_key", "PROXY_KEY": "cli-pass"}
    with gateway_from_the_command_line(tmp_path, env) as (url, logs):
        assert httpx.get(f"{url}/health").json()["status"] == "ok"
        client = openai.OpenAI(base_url=f"{url}/proxy/openai/v1", api_key="cli-pass")
        reply = client.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "hi"}])
        assert reply.choices[0].message.content
    assert logs, "both processes' logs were read"
    assert "sk-cli-test-0001" not in "".join(logs), "a key must never appear in a log line"
    assert "cli-pass" not in "".join(logs)


def test_an_unreachable_redis_is_one_clear_line_without_its_password():
    port = free_port()  # nothing listens there
    result = run_poolgate("serve", env={"REDIS_URL": f"redis://:hunter2@127.0.0.1:{port}/0"})
    assert result.returncode == 2
    assert "cannot use REDIS_URL" in result.stderr
    assert "hunter2" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_several_workers_share_one_redis(redis_server, tmp_path):
    if redis_server is None:
        pytest.skip("redis-server is not installed here (apt-get install redis-server); CI runs this test")
    prefix = f"workers-{uuid.uuid4().hex[:8]}:"
    env = {"OPENAI_KEY": "sk-workers-0001", "REDIS_URL": redis_server, "REDIS_PREFIX": prefix}
    with gateway_from_the_command_line(tmp_path, env, "--workers", "2") as (url, _):
        chat = {"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}]}
        for _ in range(20):  # fresh connections, so both workers take some
            reply = httpx.post(f"{url}/v1/chat/completions", json=chat)
            assert reply.status_code == 200
        import redis

        totals = redis.Redis.from_url(redis_server).hgetall(f"{prefix}usage:total")
        assert int(totals[b"prompts"]) == 20, "every worker accounts into the one shared store"
