"""Only generation endpoints reach upstream, however the path is spelled."""

from __future__ import annotations

import httpx
import pytest

from gateway.errors import GatewayError
from gateway.routing import normalise_path

REFUSED = [
    ("GET", "/proxy/openai/v1/dashboard/billing/usage"),
    ("GET", "/proxy/openai/dashboard/billing/subscription"),
    ("GET", "/proxy/openai/v1/organization/usage/completions"),
    ("GET", "/proxy/openai/v1/organization/projects"),
    ("GET", "/proxy/openai/v1/organization/admin_api_keys"),
    ("GET", "/proxy/openai/v1/files"),
    ("POST", "/proxy/openai/v1/fine_tuning/jobs"),
    ("POST", "/proxy/openai/v1/batches"),
    ("POST", "/proxy/openai/v1/assistants"),
    ("POST", "/proxy/openai/v1/threads"),
    ("DELETE", "/proxy/openai/v1/models/ft:gpt-4o:acme:custom:abc123"),
    ("GET", "/proxy/openai/v1/chat/completions"),
    ("GET", "/v1/files"),
    ("GET", "/openai/v1/organization/usage/costs"),
    ("POST", "/proxy/anthropic/v1/messages/batches"),
    ("GET", "/proxy/anthropic/v1/organizations/api_keys"),
    ("GET", "/proxy/anthropic/v1/files"),
    # spellings that must not sneak through
    ("GET", "/proxy/openai/v1/chat/completions/../../files"),
    ("GET", "/proxy/openai/v1/models/..%2f..%2ffiles"),
    ("GET", "/proxy/openai/v1/%2e%2e/v1/files"),
    ("GET", "/proxy/openai/v1/%252e%252e/v1/files"),
    ("GET", "/proxy/openai//v1//FILES/"),
    ("GET", "/proxy/openai/v1/Dashboard/Billing/Usage"),
    ("GET", "/PROXY/OpenAI/v1/files"),
    ("POST", "/proxy/openai/v1/chat/completions/..;/../files"),
]


@pytest.fixture
def gateway(start_gateway):
    return start_gateway(OPENAI_KEY="sk-test-filter-aaaa", ANTHROPIC_KEY="sk-ant-filter-bbbb")


@pytest.mark.parametrize(("method", "path"), REFUSED)
def test_refused_endpoints_never_reach_upstream(gateway, upstream, method, path):
    reply = httpx.request(method, gateway.url + path, content=b"{}", headers={"content-type": "application/json"})
    assert reply.status_code in (403, 404), reply.text
    assert upstream.requests == []
    body = reply.json()
    if "/anthropic/" in path:
        assert body["type"] == "error" and body["error"]["message"]
    else:
        assert body["error"]["message"] and body["error"]["type"]


def test_management_endpoints_get_403_and_nonsense_gets_404(gateway):
    refused = httpx.get(gateway.url + "/proxy/openai/v1/organization/users")
    assert refused.status_code == 403
    assert "not available through this proxy" in refused.json()["error"]["message"]
    unknown = httpx.post(gateway.url + "/proxy/openai/v1/no/such/thing", json={})
    assert unknown.status_code == 404
    assert unknown.json()["error"]["code"] == "unknown_url"
    anthropic_refused = httpx.post(gateway.url + "/proxy/anthropic/v1/messages/batches", json={})
    assert anthropic_refused.status_code == 403
    assert anthropic_refused.json()["error"]["type"] == "permission_error"


def test_operator_can_widen_the_allow_list(start_gateway, upstream):
    gateway = start_gateway(OPENAI_KEY="sk-test-widen-aaaa", EXTRA_ALLOWED_ENDPOINTS="openai:fine_tuning")
    allowed = httpx.post(gateway.url + "/proxy/openai/v1/fine_tuning/jobs", json={"model": "gpt-4o-mini"})
    assert allowed.status_code == 200
    assert upstream.requests[-1]["path"] == "/v1/fine_tuning/jobs"
    still_refused = httpx.get(gateway.url + "/proxy/openai/v1/files")
    assert still_refused.status_code == 403


def test_unknown_route_outside_the_proxy_is_404(gateway, upstream):
    assert httpx.get(gateway.url + "/no-such-page").status_code == 404
    assert upstream.requests == []


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("/proxy/openai/v1/chat/completions", ("proxy", "openai", "v1", "chat", "completions")),
        ("/a/./b/../c//d/", ("a", "c", "d")),
        ("/../../etc", ("etc",)),
        ("/v1/%2e%2e/%2E%2E/files", ("files",)),
        ("/v1/models%2f..%2f..%2ffiles", ("files",)),
        ("/v1\\..\\files", ("files",)),
        ("/v1/%25%32%65%25%32%65/files", ("files",)),
    ],
)
def test_paths_are_normalised_before_matching(raw, expected):
    assert normalise_path(raw) == expected


def test_control_characters_in_paths_are_rejected():
    with pytest.raises(GatewayError) as caught:
        normalise_path("/v1/chat%0a/completions")
    assert caught.value.status == 400
