"""The status page at `/` and its JSON twin at `/status`: what a visitor sees, and what they never see."""

from __future__ import annotations

import base64
import re
import time

import httpx
import pytest
from status_helpers import ADMIN_KEY, PROXY_KEY, SECRETS, busy_gateway, page_body, send_traffic

from gateway.settings import ConfigError, Settings


def test_the_page_lists_each_family_with_its_keys_queue_and_wait(start_gateway):
    gateway = busy_gateway(start_gateway)
    reply = httpx.get(gateway.url + "/")
    assert reply.status_code == 200
    assert reply.headers["content-type"].startswith("text/html")
    html = reply.text
    gpt4o = _row(html, "gpt-4o")
    assert "1 active" in gpt4o
    assert "1 cooling" in gpt4o and "1 over quota" in gpt4o and "1 revoked" in gpt4o
    assert '<td class="n queue">3</td>' in gpt4o
    assert "42 sec" in gpt4o
    sonnet = _row(html, "claude-sonnet")
    assert "2 active" in sonnet and "1 min 35 sec" in sonnet and '<td class="n queue">7</td>' in sonnet
    assert "no wait" in _row(html, "gpt-4o-mini"), "under 2 seconds is no wait"
    assert "no wait" in _row(html, "claude-opus"), "a family nobody queues for"
    assert "<polyline" in gpt4o, "the chart draws the recent waits"
    assert 'class="wait-chart"' in _row(html, "claude-opus") and "<polyline" not in _row(html, "claude-opus")


def test_the_page_shows_totals_endpoints_and_public_configuration(start_gateway):
    gateway = busy_gateway(start_gateway)
    html = httpx.get(gateway.url + "/").text
    assert "<title>poolgate</title>" in html
    assert re.search(r'<span class="value">11</span><span class="label">prompts served', html)
    assert re.search(r'<span class="value">1</span><span class="label">people active now', html)
    assert f"{gateway.url}/proxy/openai" in html and f"{gateway.url}/proxy/anthropic" in html
    assert "proxy password" in html, "tells visitors which credential to use"
    assert "<code>gatekeeper</code></th><td>proxy_key" in html
    assert "<code>max_request_bytes</code></th><td>33554432" in html
    assert '<meta http-equiv="refresh"' in html, "refreshes itself without JavaScript"
    assert "<script" not in html and "https://cdn" not in html
    assert "prefers-color-scheme: dark" in html


def test_status_json_has_the_page_data(start_gateway):
    gateway = busy_gateway(start_gateway)
    status = httpx.get(gateway.url + "/status").json()
    assert status["prompts"] == 11 and status["tokens"] > 0 and status["people_active_now"] == 1
    assert status["keys"]["openai"] == {
        "total": 4, "active": 1, "cooling_down": 1, "over_quota": 1, "revoked": 1, "disabled": 0
    }
    assert status["endpoints"] == {
        "openai": gateway.url + "/proxy/openai", "anthropic": gateway.url + "/proxy/anthropic"
    }
    gpt4o = status["families"]["gpt-4o"]
    assert gpt4o["in_queue"] == 3 and gpt4o["estimated_wait"] == "42 sec" and gpt4o["estimated_wait_sec"] == 42.0
    assert len(gpt4o["recent_waits"]) == 15 and gpt4o["prompts"] == 8
    assert status["families"]["claude-sonnet"]["estimated_wait"] == "1 min 35 sec"
    assert status["families"]["turbo"]["in_queue"] == 0 and status["families"]["turbo"]["estimated_wait"] == "no wait"
    assert status["status"] == "6 keys: 3 active, 1 cooling down, 1 over quota, 1 revoked."
    assert status["config"]["gatekeeper"] == "proxy_key"
    assert status["uptime_sec"] >= 0 and status["build"].startswith("0.")


def test_status_is_read_from_the_store_at_most_every_two_seconds(start_gateway):
    gateway = busy_gateway(start_gateway)
    first = httpx.get(gateway.url + "/status").json()["prompts"]
    send_traffic(gateway, openai_chats=2, claude_messages=0)
    assert httpx.get(gateway.url + "/status").json()["prompts"] == first, "served from the snapshot"
    time.sleep(2.2)
    assert httpx.get(gateway.url + "/status").json()["prompts"] == first + 2


def test_endpoints_use_public_url_when_set(start_gateway):
    gateway = start_gateway(PUBLIC_URL="https://proxy.example.org/", OPENAI_KEY="sk-good-0001")
    status = httpx.get(gateway.url + "/status").json()
    assert status["endpoints"]["openai"] == "https://proxy.example.org/proxy/openai"
    assert "https://proxy.example.org/proxy/anthropic" in httpx.get(gateway.url + "/").text


def test_endpoints_follow_the_host_the_visitor_used(start_gateway):
    gateway = start_gateway(OPENAI_KEY="sk-good-0001", PROXY_ENDPOINT_ROUTE="/api")
    status = httpx.get(gateway.url + "/status", headers={"Host": "my-space.hf.space"}).json()
    assert status["endpoints"]["openai"] == "http://my-space.hf.space/api/openai"


@pytest.mark.parametrize(
    ("env", "title"),
    [
        ({"SERVER_TITLE": "Friends' <proxy>", "SPACE_AUTHOR_NAME": "ann", "SPACE_TITLE": "x"}, "Friends' <proxy>"),
        ({"SPACE_AUTHOR_NAME": "ann", "SPACE_TITLE": "claude-proxy", "RENDER_SERVICE_NAME": "r"}, "ann / claude-proxy"),
        ({"RENDER_SERVICE_NAME": "poolgate-web"}, "poolgate-web"),
        ({}, "poolgate"),
    ],
)
def test_the_title_comes_from_server_title_then_the_space_then_render(start_gateway, env, title):
    gateway = start_gateway(**env)
    assert httpx.get(gateway.url + "/status").json()["title"] == title
    html = httpx.get(gateway.url + "/").text
    escaped = title.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;").replace("'", "&#39;")
    assert f"<h1>{escaped}</h1>" in html


def test_a_pool_without_keys_says_so(start_gateway):
    gateway = start_gateway()
    html = httpx.get(gateway.url + "/").text
    assert "No keys are configured yet." in html and "the pool has no keys yet" in html


def test_service_info_password_gates_the_page_and_the_json(start_gateway):
    gateway = start_gateway(SERVICE_INFO_PASSWORD="peek-Xc81", OPENAI_KEY="sk-good-0001")
    for path in ("/", "/status"):
        refused = httpx.get(gateway.url + path)
        assert refused.status_code == 401 and "Basic" in refused.headers["www-authenticate"]
        assert "sk-good" not in refused.text and "openai" not in refused.text.lower()
        assert httpx.get(gateway.url + path, auth=("anyone", "wrong")).status_code == 401
        assert httpx.get(gateway.url + path, auth=("anyone", "peek-Xc81")).status_code == 200
        assert httpx.get(gateway.url + path, headers={"Authorization": "Bearer peek-Xc81"}).status_code == 200
        assert httpx.get(gateway.url + path, params={"password": "peek-Xc81"}).status_code == 200
    assert httpx.get(gateway.url + "/health").status_code == 200, "health checks stay open"


def test_no_secret_appears_on_the_page_or_in_the_json(start_gateway, store_url):
    body = page_body("<main>{title} {JSON} {config:page_body} {config:proxy_key} {config:admin_key}</main>")
    gateway = busy_gateway(start_gateway, SERVICE_INFO_PASSWORD="peek-Xc81", PAGE_BODY=body)
    auth = ("visitor", "peek-Xc81")
    shown = httpx.get(gateway.url + "/", auth=auth).text + httpx.get(gateway.url + "/status", auth=auth).text
    for secret in (*SECRETS, PROXY_KEY, ADMIN_KEY, body, "peek-Xc81", *([store_url] if store_url else [])):
        assert secret not in shown
    default = busy_gateway(start_gateway, REDIS_PREFIX="status-secrets-default:").url
    shown = httpx.get(default + "/").text + httpx.get(default + "/status").text
    for secret in SECRETS:
        assert secret not in shown
        assert secret[-8:] not in shown, "not even masked"


def test_a_page_body_that_is_not_base64_stops_start_up():
    with pytest.raises(ConfigError) as caught:
        Settings.from_env({"PAGE_BODY": "<h1>not encoded</h1>"}, env_file=None)
    assert caught.value.problems == ["PAGE_BODY is not base64 (encode the HTML with `base64 -w0 page.html`)"]
    with pytest.raises(ConfigError) as caught:
        Settings.from_env({"PAGE_BODY": base64.b64encode(b"\xff\xfe<h1>").decode()}, env_file=None)
    assert caught.value.problems == ["PAGE_BODY does not decode to UTF-8 text"]


def _row(html: str, family: str) -> str:
    match = re.search(rf'<tr data-family="{re.escape(family)}">(.*?)</tr>', html, re.S)
    assert match, f"no row for {family}"
    return match.group(1)


@pytest.mark.parametrize(("gatekeeper", "said", "extra"), [
    ("none", ["anything; this proxy is open"], {}),
    ("user_token", ["your own user token"], {"ADMIN_KEY": ADMIN_KEY}),
    ("user_token,google", ["your own user token", "/login"],
     {"JWT_SECRET": "s" * 32, "GOOGLE_CLIENT_ID": "client.apps.googleusercontent.com"}),
])
def test_the_page_names_the_credential_this_proxy_asks_for(start_gateway, gatekeeper, said, extra):
    gateway = start_gateway(GATEKEEPER=gatekeeper, **extra)
    html = httpx.get(gateway.url + "/").text
    for words in said:
        assert words in html
    if gatekeeper != "none":
        assert "this proxy is open" not in html, "a proxy that asks for a credential is not open"
