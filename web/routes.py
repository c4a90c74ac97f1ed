"""`GET /` (the status page) and `GET /status` (its JSON twin), optionally behind SERVICE_INFO_PASSWORD.

Both read one cached snapshot (`web.status`), so a busy page costs the store
next to nothing. The default page is plain server-rendered HTML: no script,
nothing from a CDN, a meta refresh, dark mode from the visitor's system
setting. With `PAGE_BODY` set the operator's page is shown instead; if it
fails, visitors get the default page with a one-line notice (status 200,
never a stack trace) and the operator a log line.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import time
from pathlib import Path
from typing import Any

from jinja2 import Environment, FileSystemLoader
from litestar import Request, Response, get
from litestar.enums import MediaType
from markupsafe import Markup

from gateway.settings import decode_page_body
from web.chart import wait_chart
from web.page_body import CustomPage
from web.status import StatusCache, StatusSource, build_label, build_status

REFRESH_SEC = 30
_TEMPLATES = Path(__file__).parent / "templates"
# The default page needs nothing but its own inline style and the SVG charts.
_DEFAULT_PAGE_CSP = "default-src 'none'; style-src 'unsafe-inline'; img-src data:; base-uri 'none'; form-action 'none'"
_BROKEN_NOTICE = "This proxy's custom page could not be shown; here is the standard one."


class StatusPage:
    """The status page of one gateway process: its snapshot cache, templates and the operator's PAGE_BODY."""

    def __init__(self, app: StatusSource) -> None:
        self.source = app
        settings = app.settings
        self.cache = StatusCache(app)
        self.build = build_label(settings)
        self._env = Environment(loader=FileSystemLoader(_TEMPLATES), autoescape=True)
        self._env.filters["num"] = lambda n: f"{n:,}"
        self._env.filters["setting"] = _setting_text
        self.custom: CustomPage | None = None
        if settings.page_body:  # validity of the base64 itself is checked with the settings, at start-up
            self.custom = CustomPage(decode_page_body(settings.page_body), settings.public_view())

    async def status(self, request: Request[Any, Any, Any]) -> dict[str, Any]:
        snapshot = await self.cache.snapshot()
        return build_status(
            snapshot,
            settings=self.source.settings,
            base_url=str(request.base_url),
            started_at=self.source.started_at,
            build=self.build,
        )

    def html(self, status: dict[str, Any]) -> tuple[str, bool]:
        """The page and whether it is the operator's own."""
        header = Markup(self._env.get_template("header.html").render(status))
        if self.custom is not None:
            page = self.custom.render(status, header)
            if page is not None:
                return page, True
        now = time.time()
        charts = {name: wait_chart(name, f["recent_waits"], now) for name, f in status["families"].items()}
        page = self._env.get_template("status.html").render(
            status,
            header_html=header,
            charts=charts,
            refresh_sec=REFRESH_SEC,
            notice=_BROKEN_NOTICE if self.custom is not None else "",
        )
        return page, False


def _setting_text(value: Any) -> str:
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, list | tuple):
        return ", ".join(str(v) for v in value) or "(none)"
    return str(value) if value != "" else "(unset)"


def _may_see(request: Request[Any, Any, Any], password: str) -> bool:
    """SERVICE_INFO_PASSWORD as HTTP Basic (any user name: browsers ask for it natively), Bearer or `?password=`."""
    if not password:
        return True
    offered = request.query_params.get("password", "")
    scheme, _, credential = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() == "bearer":
        offered = credential.strip()
    elif scheme.lower() == "basic":
        try:
            offered = base64.b64decode(credential.strip()).decode("utf-8").partition(":")[2]
        except (binascii.Error, UnicodeDecodeError):
            offered = ""
    return hmac.compare_digest(offered.encode(), password.encode())


def _refused(as_json: bool) -> Response[Any]:
    headers = {"WWW-Authenticate": 'Basic realm="poolgate status", charset="UTF-8"', "Cache-Control": "no-store"}
    if as_json:
        return Response({"error": "this proxy's status needs a password"}, status_code=401, headers=headers)
    body = "<!doctype html><title>Password needed</title><p>This proxy's status page needs a password.</p>"
    return Response(body, status_code=401, media_type=MediaType.HTML, headers=headers)


def _page_of(request: Request[Any, Any, Any]) -> tuple[StatusSource, StatusPage]:
    page: StatusPage = request.app.state.status_page  # set when the app is built
    return page.source, page


@get("/", include_in_schema=False)
async def status_page(request: Request[Any, Any, Any]) -> Response[Any]:
    """The page a visitor opens first: models, queues, waits, and what to paste into a client."""
    app, page = _page_of(request)
    if not _may_see(request, app.settings.service_info_password):
        return _refused(as_json=False)
    html, custom = page.html(await page.status(request))
    headers = {"Cache-Control": "no-cache", "X-Content-Type-Options": "nosniff"}
    if not custom:  # the operator's own page may load what it likes
        headers["Content-Security-Policy"] = _DEFAULT_PAGE_CSP
    return Response(html, media_type=MediaType.HTML, headers=headers)


@get("/status", include_in_schema=False)
async def status_json(request: Request[Any, Any, Any]) -> Response[Any]:
    """The page's data as JSON, at the OAI Reverse Proxy's path."""
    app, page = _page_of(request)
    if not _may_see(request, app.settings.service_info_password):
        return _refused(as_json=True)
    return Response(await page.status(request), headers={"Cache-Control": "no-cache"})


status_routes = [status_page, status_json]
