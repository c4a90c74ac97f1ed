"""`poolgate demo` works with no keys at all: one process, and what it prints is enough to use it."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator

import anthropic
import httpx
import openai
import pytest
from processes import free_port, wait_until_listening

from gateway.cli import render_config_reference

# A user's real keys in the environment must not reach the demo's fake upstream, nor appear anywhere.
REAL_LOOKING_KEY = "sk-real-Ab12Cd34Ef56"


def _environment(**extra: str) -> dict[str, str]:
    names = {row.split("=")[0] for row in render_config_reference("env").splitlines() if not row.startswith("#")}
    return {**{k: v for k, v in os.environ.items() if k not in names}, **extra}


class Demo:
    def __init__(self, process: subprocess.Popen[str], banner: str) -> None:
        self.process, self.banner = process, banner

    def printed(self, pattern: str) -> str:
        found = re.search(pattern, self.banner)
        assert found is not None, f"the banner does not show {pattern!r}:\n{self.banner}"
        return found.group(1)


@pytest.fixture
def demo(tmp_path) -> Iterator[Demo]:
    """`poolgate demo` as a user starts it, with their real key and a Redis URL in the environment it must ignore."""
    env = _environment(PORT=str(free_port()), OPENAI_KEY=REAL_LOOKING_KEY, REDIS_URL="redis://127.0.0.1:1/0")
    process = subprocess.Popen(
        [sys.executable, "-m", "gateway.cli", "demo"], env=env, cwd=tmp_path,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    lines = []
    try:
        for line in process.stdout or ():  # the banner is printed once the port is bound
            lines.append(line)
            if line.startswith("Ctrl-C stops it"):
                break
        banner = "".join(lines)
        assert "status page" in banner, f"no banner; stderr:\n{process.stderr.read() if process.stderr else ''}"
        yield Demo(process, banner)
    finally:
        process.terminate()
        _, stderr = process.communicate(timeout=20)
        assert REAL_LOOKING_KEY not in "".join(lines) + stderr


def test_the_printed_snippets_work_with_the_official_sdks_and_the_status_page_shows_a_living_pool(demo):
    status_page = demo.printed(r"status page\s+(\S+)")
    openai_base = demo.printed(r'OpenAI\(base_url="([^"]+)"')
    anthropic_base = demo.printed(r'Anthropic\(base_url="([^"]+)"')
    credential = demo.printed(r'api_key="([^"]+)"')
    wait_until_listening(status_page + "health", demo.process)

    gpt = openai.OpenAI(base_url=openai_base, api_key=credential, max_retries=0)
    claude = anthropic.Anthropic(base_url=anthropic_base, api_key=credential, max_retries=0)
    reply = gpt.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "Hello"}])
    assert reply.choices[0].message.content
    message = claude.messages.create(
        model="claude-sonnet-4-5", max_tokens=64, messages=[{"role": "user", "content": "Hello"}]
    )
    assert message.content[0].text  # type: ignore[union-attr]

    # The limited key answers one request a minute; requests go on succeeding on the others until the pool
    # has met its 429 and rests it. Bounded: the pool spreads requests over its three usable OpenAI keys.
    for _ in range(12):
        keys = httpx.get(status_page + "status").json()["keys"]["openai"]
        if keys["cooling_down"]:
            break
        reply = gpt.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "Hi"}])
        assert reply.choices[0].message.content
    assert keys == {"total": 4, "active": 2, "cooling_down": 1, "over_quota": 0, "revoked": 1, "disabled": 0}
    page = httpx.get(status_page)
    assert page.status_code == 200
    assert "1 revoked" in page.text and "1 cooling" in page.text


@pytest.mark.skipif(shutil.which("curl") is None, reason="curl is not installed here")
def test_the_curl_line_is_ready_to_paste(demo):
    command = re.search(r"^\s*(curl .*\\\n.*)$", demo.banner, re.MULTILINE)
    assert command is not None, demo.banner
    wait_until_listening(demo.printed(r"status page\s+(\S+)") + "health", demo.process)
    pasted = subprocess.run(["bash", "-c", command.group(1) + " --fail --silent"], capture_output=True, text=True,
                            timeout=30)
    assert pasted.returncode == 0, pasted.stderr
    assert json.loads(pasted.stdout)["choices"][0]["message"]["content"]


def test_serve_without_keys_says_in_one_line_how_to_add_them_or_try_the_demo(tmp_path):
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "gateway.cli", "serve", "--port", str(port), "--host", "127.0.0.1"],
        env=_environment(CHECK_KEYS="false"), cwd=tmp_path, stderr=subprocess.PIPE, text=True,
    )
    try:
        wait_until_listening(f"http://127.0.0.1:{port}/health", process)
    finally:
        process.terminate()
        _, stderr = process.communicate(timeout=20)
    hints = [line for line in stderr.splitlines() if "no keys configured" in line]
    assert len(hints) == 1
    assert "OPENAI_KEY" in hints[0] and "poolgate demo" in hints[0]


def test_version_is_printed():
    from gateway import __version__

    result = subprocess.run([sys.executable, "-m", "gateway.cli", "--version"], capture_output=True, text=True,
                            timeout=30)
    assert result.returncode == 0
    assert result.stdout.strip() == f"poolgate {__version__}"
