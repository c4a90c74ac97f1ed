"""`GET /metrics`: the Prometheus text format, behind SERVICE_INFO_PASSWORD like `/status`.

Whichever gateway process answers reports the whole deployment (see gateway/metrics.py), so
Prometheus scrapes the service once, through its load balancer, as one target.
"""

from __future__ import annotations

from typing import Any

from litestar import Request, Response, get

from gateway.metrics import render_metrics
from web.routes import _may_see, _refused


@get("/metrics", include_in_schema=False)
async def metrics_route(request: Request[Any, Any, Any]) -> Response[Any]:
    app = request.app.state.admin_services  # the PoolgateApp
    if not _may_see(request, app.settings.service_info_password):
        return _refused(as_json=True)
    keys = await app.pool.describe_keys()
    body = render_metrics(await app.metrics.totals(), keys, await app.queue_stats(keys), await app.pool.store_ms())
    # The classic text format, which every Prometheus reads (Litestar adds the charset).
    return Response(body, media_type="text/plain; version=0.0.4", headers={"Cache-Control": "no-store"})
