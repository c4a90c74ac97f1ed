"""Helpers for the admin and user pages' tests: a browser-like httpx client that logs in through the form."""

from __future__ import annotations

import re
from typing import Any

import httpx
from checks_support import ADMIN_KEY

_CSRF = re.compile(r'name="csrf" value="([^"]+)"')


def csrf_of(page: str) -> str:
    """The CSRF token a page's forms carry."""
    found = _CSRF.search(page)
    assert found, "the page has no form with a CSRF token"
    return found.group(1)


def browser(gateway: Any, **kwargs: Any) -> httpx.Client:
    """A client that keeps cookies and does not follow redirects, like a browser tab we can inspect."""
    return httpx.Client(base_url=gateway.url, timeout=30, follow_redirects=False, **kwargs)


def log_in(client: httpx.Client, admin_key: str = ADMIN_KEY) -> httpx.Response:
    """Open /admin and post the login form, as a browser would; the login's answer."""
    form = client.get("/admin")
    assert form.status_code == 200, form.text
    return client.post("/admin/login", data={"csrf": csrf_of(form.text), "admin_key": admin_key})


def signed_in(gateway: Any) -> httpx.Client:
    client = browser(gateway)
    reply = log_in(client)
    assert reply.status_code == 303 and reply.headers["location"] == "/admin/manage/keys", reply.text
    return client


def post_form(client: httpx.Client, page_path: str, action: str, **fields: Any) -> httpx.Response:
    """Open a page and post one of its forms with the page's CSRF token, as a click on its button would."""
    page = client.get(page_path)
    assert page.status_code == 200, page.text
    return client.post(action, data={"csrf": csrf_of(page.text), **fields})
