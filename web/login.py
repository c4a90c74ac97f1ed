"""`GET /login`: the page a class or a team signs in on with Google, and gets its personal token.

It looks like the status page (same stylesheet). Google's button script is the one thing loaded from
elsewhere; the page posts Google's credential to `/token` (gateway/signin.py) and shows the session token
with a copy button, and the base URLs to paste into a client.
"""

from __future__ import annotations

import secrets
from pathlib import Path
from typing import Any

from jinja2 import Environment, FileSystemLoader
from litestar import Request, Response, get
from litestar.enums import MediaType

_TEMPLATES = Path(__file__).parent / "templates"
_ENV = Environment(loader=FileSystemLoader(_TEMPLATES), autoescape=True)
_GOOGLE = "https://accounts.google.com"


@get("/login", include_in_schema=False)
async def login_route(request: Request[Any, Any, Any]) -> Response[Any]:
    settings = request.app.state.admin_services.settings
    google_on = "google" in settings.gatekeeper_modes
    base = (settings.public_url or str(request.base_url)).rstrip("/")
    route = "/" + settings.proxy_endpoint_route.strip("/")
    nonce = secrets.token_urlsafe(16)
    page = _ENV.get_template("login.html").render(
        title=settings.server_title or "poolgate",
        client_id=settings.google_client_id if google_on else "",
        domains=settings.google_allowed_domains,
        endpoints={"openai": f"{base}{route}/openai", "anthropic": f"{base}{route}/anthropic"},
        token_path="/token",
        nonce=nonce,
    )
    # Google's button runs its own frames and styles from accounts.google.com; nothing else comes from afar.
    csp = (f"default-src 'none'; script-src 'nonce-{nonce}' {_GOOGLE}/gsi/client; "
           f"style-src 'nonce-{nonce}' {_GOOGLE}/gsi/style; frame-src {_GOOGLE}/gsi/; "
           f"connect-src 'self' {_GOOGLE}/gsi/; img-src data: https:; base-uri 'none'; form-action 'none'")
    headers = {"Cache-Control": "no-store", "X-Content-Type-Options": "nosniff", "Content-Security-Policy": csp,
               "Referrer-Policy": "no-referrer-when-downgrade"}  # Google's button needs the page's origin
    return Response(page, media_type=MediaType.HTML, headers=headers)
