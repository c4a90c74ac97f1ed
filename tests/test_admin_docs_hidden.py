"""With ADMIN_KEY unset the admin API is off: its docs answer 404 too; with it set they are served."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from checks_support import ADMIN_KEY

DOC_PATHS = ["/admin/docs", "/admin/docs/", "/admin/docs/openapi.json", "/admin/docs/openapi.yaml",
             "/admin/docs/openapi.yml", "/admin/docs/swagger", "/admin/docs/redoc", "/admin/docs/elements",
             "/admin/docs/rapidoc", "/admin/docs/oauth2-redirect.html"]


@pytest.mark.parametrize("path", DOC_PATHS)
def test_without_admin_key_the_admin_docs_answer_404(start_gateway: Any, path: str) -> None:
    gateway = start_gateway(OPENAI_KEY="sk-docs-aaaa1111")

    response = httpx.get(gateway.url + path, timeout=30)

    assert response.status_code == 404, (path, response.status_code)
    assert "ADMIN_KEY" in response.json()["error"]["message"]


@pytest.mark.parametrize("path", ["/admin/docs/openapi.json", "/admin/docs/swagger", "/admin/docs"])
def test_with_admin_key_the_admin_docs_are_served(start_gateway: Any, path: str) -> None:
    gateway = start_gateway(OPENAI_KEY="sk-docs-aaaa1111", ADMIN_KEY=ADMIN_KEY)

    response = httpx.get(gateway.url + path, timeout=30, follow_redirects=True)

    assert response.status_code == 200, (path, response.status_code)
    if path.endswith(".json"):
        assert "/admin/keys" in response.json()["paths"]
