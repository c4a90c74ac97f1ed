"""What every admin page shares: who is signed in, the CSRF check of a form, and rendering in the status page's look.

A page handler runs only for an open session (`require_session`, a guard): a
browser without one is sent to the login form at `/admin`. A post is read with
`read_form`, which refuses (403) a form without the session's CSRF token before
the handler does anything. With `ADMIN_KEY` unset every page answers 404, as the
admin API does. Pages are plain server-rendered HTML; the only script is the
copy button's, allowed by a per-page nonce in the Content-Security-Policy.
"""

from __future__ import annotations

import logging
import secrets
from pathlib import Path
from typing import Any
from urllib.parse import quote

from jinja2 import Environment, FileSystemLoader
from litestar import Request, Response
from litestar.connection import ASGIConnection
from litestar.datastructures import FormMultiDict
from litestar.enums import MediaType
from litestar.handlers.base import BaseRouteHandler
from litestar.response import Redirect
from litestar.types import ExceptionHandlersMap
from redis.exceptions import RedisError

from gateway.admin import AdminError
from gateway.settings import Settings
from web.sessions import SESSION_COOKIE, AdminSessions, csrf_matches, csrf_token
from web.status import page_title

log = logging.getLogger("poolgate.admin")

_TEMPLATES = Path(__file__).parent / "templates"
LOGIN_PATH = "/admin"
HOME_PATH = "/admin/manage"


class NotSignedIn(Exception):
    """No open session: a browser is sent to the login form."""


class PageRefused(Exception):
    """A request the pages refuse, shown as a short page with its status (403 for a missing CSRF token)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


templates = Environment(loader=FileSystemLoader(_TEMPLATES), autoescape=True)
templates.filters["num"] = lambda n: f"{n:,}"


def services(connection: ASGIConnection[Any, Any, Any, Any]) -> Any:
    """The app's services (settings, store, key checks), as the admin API reads them."""
    return connection.app.state.admin_services


def settings_of(connection: ASGIConnection[Any, Any, Any, Any]) -> Settings:
    settings: Settings = services(connection).settings
    return settings


def sessions_of(connection: ASGIConnection[Any, Any, Any, Any]) -> AdminSessions:
    app = services(connection)
    s = app.settings
    return AdminSessions(app.store, s.redis_prefix, s.admin_session_ttl_sec, s.admin_key)


def is_https(connection: ASGIConnection[Any, Any, Any, Any]) -> bool:
    # uvicorn has already applied X-Forwarded-Proto when (and only when) it came from a trusted proxy.
    return connection.scope.get("scheme") == "https"


async def require_pages_on(connection: ASGIConnection[Any, Any, Any, Any], _: BaseRouteHandler) -> None:
    """Like the admin API, the pages do not exist while ADMIN_KEY is unset."""
    if not settings_of(connection).admin_key:
        raise AdminError(404, "not_found_error", "The admin pages are off: set ADMIN_KEY to turn them on.")


async def require_session(connection: ASGIConnection[Any, Any, Any, Any], handler: BaseRouteHandler) -> None:
    await require_pages_on(connection, handler)
    if not await sessions_of(connection).is_open(connection.cookies.get(SESSION_COOKIE, "")):
        raise NotSignedIn()


async def read_form(request: Request[Any, Any, Any]) -> FormMultiDict:
    """The posted form, once its CSRF token is the session's; otherwise 403 and nothing is done."""
    form = await request.form()
    expected = csrf_token(request.cookies.get(SESSION_COOKIE, ""))
    if not csrf_matches(expected, form.get("csrf")):
        log.warning("admin pages: a post to %s without this session's CSRF token was refused", request.url.path)
        raise PageRefused(403, "This form is out of date or did not come from this site (no valid CSRF token). "
                               "Open the page again and retry.")
    return form


def render(request: Request[Any, Any, Any], template: str, *, status: int = 200, **context: Any) -> Response[Any]:
    """A page in the status page's look, with the session's CSRF token for its forms."""
    nonce = secrets.token_urlsafe(16)
    session_id = request.cookies.get(SESSION_COOKIE, "")
    page = templates.get_template(template).render(
        title=page_title(settings_of(request)),
        csrf=csrf_token(session_id) if session_id else "",
        nonce=nonce,
        path=request.url.path,
        **context,
    )
    return html_response(page, status, nonce)


def html_response(page: str, status: int, nonce: str = "", cookies: list[Any] | None = None) -> Response[Any]:
    script = f"'nonce-{nonce}'" if nonce else "'none'"
    headers = {
        "Cache-Control": "no-store",  # pages may hold a one-time token or the users' list
        "X-Content-Type-Options": "nosniff",
        "Referrer-Policy": "no-referrer",
        "Content-Security-Policy": (
            f"default-src 'none'; style-src 'unsafe-inline'; img-src data:; script-src {script}; "
            "form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
        ),
    }
    return Response(page, status_code=status, media_type=MediaType.HTML, headers=headers, cookies=cookies)


def see(path: str, done: str = "") -> Redirect:
    """After a post, back to a page (303), with a short fixed notice naming what was done."""
    return Redirect(path + (f"?done={quote(done)}" if done else ""), status_code=303)


def on_not_signed_in(request: Request[Any, Any, Any], _: NotSignedIn) -> Response[Any]:
    return Redirect(LOGIN_PATH, status_code=303)


def on_refused(request: Request[Any, Any, Any], exc: PageRefused) -> Response[Any]:
    return render(request, "refused.html", status=exc.status, message=exc.message)


def on_admin_error(request: Request[Any, Any, Any], exc: AdminError) -> Response[Any]:
    headers = exc.headers
    response = render(request, "refused.html", status=exc.status, message=exc.message)
    response.headers.update(headers)
    return response


def on_store_error(request: Request[Any, Any, Any], exc: RedisError) -> Response[Any]:
    log.warning("admin pages: the store did not answer: %s", type(exc).__name__)
    return render(request, "refused.html", status=503,
                  message="The gateway cannot reach its store right now. Try again in a moment.")


PAGE_ERRORS: ExceptionHandlersMap = {
    NotSignedIn: on_not_signed_in,
    PageRefused: on_refused,
    AdminError: on_admin_error,
    RedisError: on_store_error,
}
