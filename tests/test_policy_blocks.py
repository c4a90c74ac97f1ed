"""Blocked addresses and origins, the admin whitelist, and their lists edited at run time in every process."""

from __future__ import annotations

import anthropic
import httpx
import openai
import pytest
from processes import wait_for

from gateway.blocks import Blocks, PolicyLists

ADMIN_KEY = "adm-policy-test-key"
ADMIN = {"authorization": f"Bearer {ADMIN_KEY}"}
CHAT = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}


def _gateway(start_gateway, **env):
    return start_gateway(OPENAI_KEY="sk-test-blocks-aaaa1111", ANTHROPIC_KEY="sk-ant-test-blocks-bbbb",
                         ADMIN_KEY=ADMIN_KEY, **env)


def test_a_blacklisted_address_is_refused_on_every_route_in_its_dialect(start_gateway, upstream):
    gateway = _gateway(start_gateway, IP_BLACKLIST="10.0.0.0/8,127.0.0.0/8")
    chat = httpx.post(gateway.url + "/v1/chat/completions", json=CHAT)
    assert chat.status_code == 403 and chat.json()["error"]["code"] == "blocked_address"
    claude = anthropic.Anthropic(base_url=gateway.url + "/proxy/anthropic", api_key="x", max_retries=0)
    with pytest.raises(anthropic.PermissionDeniedError) as refused:
        claude.messages.create(model="claude-haiku-4-5", max_tokens=5, messages=[{"role": "user", "content": "hi"}])
    assert refused.value.body["error"]["type"] == "permission_error"
    for path in ("/health", "/", "/status", "/admin/keys", "/no/such/path"):
        assert httpx.get(gateway.url + path, headers=ADMIN).status_code == 403, path
    assert not upstream.requests


def test_addresses_outside_the_blacklist_are_served(start_gateway):
    gateway = _gateway(start_gateway, IP_BLACKLIST="10.0.0.0/8,2001:db8::/32")
    assert httpx.post(gateway.url + "/v1/chat/completions", json=CHAT).status_code == 200


def test_ipv6_networks_and_ipv4_mapped_addresses_match() -> None:
    lists = PolicyLists(ip_blacklist=("2001:db8::/32", "203.0.113.0/24"))
    blocks = Blocks(store=None, redis_prefix="t:", defaults=lists)
    assert blocks.address_blocked("2001:db8::1")
    assert blocks.address_blocked("::ffff:203.0.113.9")
    assert not blocks.address_blocked("2001:db9::1")
    assert not blocks.address_blocked("unknown")


def test_a_blocked_origin_gets_403_and_a_browser_is_sent_away(start_gateway, upstream):
    gateway = _gateway(start_gateway, BLOCKED_ORIGINS="reseller.example,bad.test",
                       BLOCK_MESSAGE="Use the proxy directly.", BLOCK_REDIRECT="https://example.org/why")
    client = openai.OpenAI(base_url=gateway.url + "/v1", api_key="x", max_retries=0,
                           default_headers={"Origin": "https://www.Reseller.example"})
    with pytest.raises(openai.PermissionDeniedError) as refused:
        client.chat.completions.create(**CHAT)
    assert refused.value.code == "blocked_origin"
    assert refused.value.body["message"] == "Use the proxy directly."
    by_referer = httpx.post(gateway.url + "/v1/chat/completions", json=CHAT,
                            headers={"referer": "https://bad.test/chat"})
    assert by_referer.status_code == 403
    page = httpx.get(gateway.url + "/", headers={"referer": "https://bad.test/", "accept": "text/html"})
    assert page.status_code == 403 and page.headers["content-type"].startswith("text/html")
    assert 'http-equiv="refresh" content="0; url=https://example.org/why"' in page.text
    assert "Use the proxy directly." in page.text
    assert httpx.post(gateway.url + "/v1/chat/completions", json=CHAT,
                      headers={"origin": "https://good.example"}).status_code == 200
    assert len(upstream.requests) == 1


def test_the_admin_whitelist_keeps_admin_from_other_networks_only(start_gateway):
    gateway = _gateway(start_gateway, ADMIN_WHITELIST="10.0.0.0/8")
    refused = httpx.get(gateway.url + "/admin/keys", headers=ADMIN)
    assert refused.status_code == 403 and "ADMIN_WHITELIST" in refused.json()["error"]["message"]
    assert httpx.get(gateway.url + "//Admin/policy", headers=ADMIN).status_code == 403
    assert httpx.post(gateway.url + "/v1/chat/completions", json=CHAT).status_code == 200
    allowed = _gateway(start_gateway, ADMIN_WHITELIST="127.0.0.1/32,::1")
    assert httpx.get(allowed.url + "/admin/keys", headers=ADMIN).status_code == 200


def test_policy_lists_are_read_and_replaced_through_the_admin_api(start_gateway):
    gateway = _gateway(start_gateway, BLOCKED_ORIGINS="one.example")
    assert httpx.get(gateway.url + "/admin/policy").status_code == 401
    assert httpx.get(gateway.url + "/admin/policy", headers=ADMIN).json() == {
        "ip_blacklist": [], "admin_whitelist": [], "blocked_origins": ["one.example"]}
    bad = httpx.put(gateway.url + "/admin/policy", headers=ADMIN, json={"ip_blacklist": ["not-a-network"]})
    assert bad.status_code == 400 and "not-a-network" in bad.json()["error"]["message"]
    assert httpx.put(gateway.url + "/admin/policy", headers=ADMIN, content=b"{nope").status_code == 400
    replaced = httpx.put(gateway.url + "/admin/policy", headers=ADMIN, json={"blocked_origins": ["two.example"]})
    assert replaced.status_code == 200
    assert httpx.post(gateway.url + "/v1/chat/completions", json=CHAT,
                      headers={"origin": "https://one.example"}).status_code == 200
    assert httpx.post(gateway.url + "/v1/chat/completions", json=CHAT,
                      headers={"origin": "https://two.example"}).status_code == 403


def test_a_change_through_one_process_takes_effect_in_every_process(start_gateway, store_url):
    if not store_url.startswith("redis"):
        pytest.skip("two gateways share lists only through a real Redis; the embedded store is one process's")
    first, second = _gateway(start_gateway), _gateway(start_gateway)

    def status(gateway, origin="https://shop.example"):
        return httpx.post(gateway.url + "/v1/chat/completions", json=CHAT, headers={"origin": origin}).status_code

    assert status(first) == status(second) == 200
    put = httpx.put(first.url + "/admin/policy", headers=ADMIN, json={"blocked_origins": ["shop.example"]})
    assert put.status_code == 200
    assert status(first) == 403, "the process that took the change uses it at once"
    assert wait_for(lambda: status(second) == 403, timeout=5), "the other process picks it up from the store"
    assert httpx.get(second.url + "/admin/policy", headers=ADMIN).json()["blocked_origins"] == ["shop.example"]
    httpx.put(second.url + "/admin/policy", headers=ADMIN, json={"ip_blacklist": ["127.0.0.1"]})
    assert wait_for(lambda: httpx.get(first.url + "/health").status_code == 403, timeout=5)


def test_a_change_reaches_every_worker_process(redis_server, tmp_path):
    if redis_server is None:
        pytest.skip("redis-server is not installed here (apt-get install redis-server); CI runs this test")
    from test_settings_and_cli import gateway_from_the_command_line

    env = {"OPENAI_KEY": "sk-workers-policy-0001", "REDIS_URL": redis_server, "ADMIN_KEY": ADMIN_KEY,
           "REDIS_PREFIX": f"policy-workers-{tmp_path.name[-8:]}:"}
    with gateway_from_the_command_line(tmp_path, env, "--workers", "2") as (url, _):
        def statuses() -> set[int]:  # fresh connections, so both workers answer some
            return {httpx.post(url + "/v1/chat/completions", json=CHAT,
                               headers={"origin": "https://shop.example"}).status_code for _ in range(12)}

        assert statuses() == {200}
        assert httpx.put(url + "/admin/policy", headers=ADMIN,
                         json={"blocked_origins": ["shop.example"]}).status_code == 200
        assert wait_for(lambda: statuses() == {403}, timeout=10), "every worker refuses the origin"
