"""A page on another origin calls poolgate with `fetch` in headless Chromium: CORS, streaming, blocked origins.

Skipped (saying why) when Chromium is not installed, as the status page's browser test is.
"""

from __future__ import annotations

import json
import os
import subprocess
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
from test_status_page_browser import CHROMIUM, QUIET_FLAGS


@pytest.fixture
def browser() -> str:
    if CHROMIUM is None:
        if os.environ.get("POOLGATE_REQUIRE_CHROMIUM") == "1":
            pytest.fail("POOLGATE_REQUIRE_CHROMIUM=1 but chromium is not installed")
        pytest.skip("chromium is not installed here (apt-get install chromium); CI runs this test")
    return CHROMIUM


PAGE = """<!doctype html><html><body><script>
(async () => {
  const results = {};
  const headers = {"Authorization": "Bearer let-me-in", "Content-Type": "application/json",
                   "X-Stainless-Lang": "js", "OpenAI-Beta": "assistants=v2"};
  try {
    const whole = await fetch("GATEWAY/proxy/openai/v1/chat/completions", {method: "POST", headers,
      body: JSON.stringify({model: "gpt-4o-mini", messages: [{role: "user", content: "hi"}]})});
    const body = await whole.json();
    results.whole = {status: whole.status, content: body.choices[0].message.content,
                     wait: whole.headers.get("x-queue-wait-ms")};
    const streamed = await fetch("GATEWAY/proxy/openai/v1/chat/completions", {method: "POST", headers,
      body: JSON.stringify({model: "gpt-4o-mini", stream: true, messages: [{role: "user", content: "hi"}]})});
    const reader = streamed.body.getReader();
    let text = "", chunks = 0;
    for (;;) { const {done, value} = await reader.read(); if (done) break; chunks++;
               text += new TextDecoder().decode(value); }
    results.stream = {status: streamed.status, done: text.includes("[DONE]"), chunks};
    const claude = await fetch("GATEWAY/proxy/anthropic/v1/messages", {method: "POST",
      headers: {"x-api-key": "let-me-in", "anthropic-version": "2023-06-01", "content-type": "application/json",
                "anthropic-dangerous-direct-browser-access": "true"},
      body: JSON.stringify({model: "claude-haiku-4-5", max_tokens: 10, messages: [{role: "user", content: "hi"}]})});
    results.claude = {status: claude.status};
  } catch (error) { results.error = String(error); }
  await fetch("/report", {method: "POST", body: JSON.stringify(results)});  // the page's own origin
})();
</script></body></html>"""


class _PageSite:
    """Serves the page from its own origin and receives what the page reports back."""

    def __init__(self, page: str) -> None:
        self.reported = threading.Event()
        self.results: dict[str, Any] = {}
        site = self

        class Page(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                body = page.encode()
                self.send_response(200)
                self.send_header("content-type", "text/html")
                self.send_header("content-length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_POST(self) -> None:
                site.results = json.loads(self.rfile.read(int(self.headers["content-length"])))
                self.send_response(204)
                self.end_headers()
                site.reported.set()

            def log_message(self, *args: object) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Page)
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        # "localhost", not 127.0.0.1: another origin than the gateway's, as a real web front-end is
        self.url = f"http://localhost:{self._server.server_port}/"

    def results_from(self, chromium_binary: str, profile: Path) -> dict[str, Any]:
        browser = subprocess.Popen([chromium_binary, *QUIET_FLAGS, f"--user-data-dir={profile}", self.url],
                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            assert self.reported.wait(60), "the page never reported back"
        finally:
            browser.terminate()
            browser.wait(15)
            self._server.shutdown()
        return self.results


def _gateway(start_gateway, **env):
    return start_gateway(OPENAI_KEY="sk-test-cors-aaaa1111", ANTHROPIC_KEY="sk-ant-test-cors-bbbb",
                         GATEKEEPER="proxy_key", PROXY_KEY="let-me-in", **env)


def test_a_page_on_another_origin_calls_both_apis_and_reads_a_stream(start_gateway, browser, tmp_path, upstream):
    gateway = _gateway(start_gateway)
    results = _PageSite(PAGE.replace("GATEWAY", gateway.url)).results_from(browser, tmp_path / "profile")
    assert "error" not in results, results
    assert results["whole"]["status"] == 200 and results["whole"]["content"]
    assert results["whole"]["wait"] is not None, "x-queue-wait-ms is exposed to the page"
    assert results["stream"]["status"] == 200 and results["stream"]["done"]
    assert results["claude"]["status"] == 200


def test_a_blocked_origin_wins_over_cors(start_gateway, browser, tmp_path, upstream):
    gateway = _gateway(start_gateway, BLOCKED_ORIGINS="localhost")
    results = _PageSite(PAGE.replace("GATEWAY", gateway.url)).results_from(browser, tmp_path / "profile")
    assert "Failed to fetch" in str(results.get("error")), results  # the preflight got no CORS grant
    assert not upstream.requests


def test_preflight_needs_no_credential_and_grants_the_sdk_headers(start_gateway):
    gateway = _gateway(start_gateway)
    preflight = httpx.options(gateway.url + "/v1/chat/completions", headers={
        "origin": "https://app.example", "access-control-request-method": "POST",
        "access-control-request-headers": "authorization, content-type, x-stainless-os, anthropic-version, x-evil"})
    assert preflight.status_code == 204
    assert preflight.headers["access-control-allow-origin"] == "*"
    granted = {h.strip() for h in preflight.headers["access-control-allow-headers"].split(",")}
    assert granted == {"authorization", "content-type", "x-stainless-os", "anthropic-version"}
    assert "POST" in preflight.headers["access-control-allow-methods"]


def test_a_list_of_allowed_origins_narrows_cors(start_gateway):
    gateway = _gateway(start_gateway, CORS_ALLOWED_ORIGINS="https://app.example")
    ok = httpx.post(gateway.url + "/v1/chat/completions", headers={"origin": "https://app.example",
                    "authorization": "Bearer let-me-in"}, json={"model": "gpt-4o-mini", "messages": []})
    assert ok.headers["access-control-allow-origin"] == "https://app.example"
    assert "x-queue-wait-ms" in ok.headers["access-control-expose-headers"]
    other = httpx.post(gateway.url + "/v1/chat/completions", headers={"origin": "https://other.example",
                       "authorization": "Bearer let-me-in"}, json={"model": "gpt-4o-mini", "messages": []})
    assert "access-control-allow-origin" not in other.headers
