"""What a client that knocked at a path poolgate does not serve is told: the base URLs to use.

Outside the API routes a 404 names them, in the dialect the client speaks: an
Anthropic SDK (it always sends `anthropic-version`) gets Anthropic's error shape,
a browser (it asks for `text/html`) a plain page, anything else OpenAI's shape.
"""

from __future__ import annotations

import html
from typing import Any

from litestar import Request, Response
from litestar.exceptions import NotFoundException

from gateway.errors import ANTHROPIC, OPENAI, GatewayError, render_error


def base_urls(public_url: str, request_base: str, proxy_route: str) -> dict[str, str]:
    """The base URLs clients should configure, by kind of client."""
    base = (public_url or request_base).rstrip("/")
    route = "/" + proxy_route.strip("/")
    return {
        "OpenAI-format clients": f"{base}/v1",
        "Anthropic clients": f"{base}{route}/anthropic",
        "the OAI Reverse Proxy's OpenAI route": f"{base}{route}/openai/v1",
    }


def not_found_here(request: Request[Any, Any, Any], _: NotFoundException) -> Response[Any]:
    """The 404 for any path outside the API routes, naming the base URLs to use."""
    settings = request.app.state.admin_services.settings
    urls = base_urls(settings.public_url, str(request.base_url), settings.proxy_endpoint_route)
    path = request.url.path[:200]
    if "text/html" in request.headers.get("accept", ""):
        items = "".join(
            f"<li>{html.escape(who)}: <code>{html.escape(url)}</code></li>" for who, url in urls.items()
        )
        page = (
            "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>Not found</title></head>"
            f"<body><h1>Nothing here</h1><p>{html.escape(path)} is not a page of this proxy. "
            f"Set your client's base URL to one of these:</p><ul>{items}</ul>"
            "<p>The <a href=\"/\">status page</a> shows what this proxy serves.</p></body></html>"
        )
        return Response(page, status_code=404, media_type="text/html; charset=utf-8")
    dialect = ANTHROPIC if "anthropic-version" in request.headers else OPENAI
    names = "; ".join(f"{who}: {url}" for who, url in urls.items())
    error = GatewayError("not_found", f"No such path: {request.method} {path}. Use one of these base URLs — {names}.")
    status, _headers, body = render_error(dialect, error)
    return Response(body, status_code=status, media_type="application/json")
