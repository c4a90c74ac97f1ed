"""The ASGI application: proxy routes go straight to the request pipeline, the rest to Litestar.

Proxy paths are recognised only after normalisation (stage 1), so the decision
"is this a proxy call?" cannot be dodged by spelling. Proxied requests skip
Litestar's request machinery — the pipeline speaks ASGI itself and keeps the
hot path short; Litestar serves everything else (health, the status page, the
admin API) and runs start-up and shut-down.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from litestar import Litestar, Request, Response, get
from litestar.exceptions import NotFoundException
from redis.exceptions import RedisError

from accounts.admission import Admission, LimiterPolicy
from accounts.budgets import BudgetPolicy, HoldKeeper, set_budgets
from accounts.refresh import InProcessQuotaRefresh
from accounts.schema import AccountsSchema
from accounts.usage_mover import UsageLedger
from accounts.users import UserBook
from catalog.prices import PriceBook, load_overrides
from dispatch import Dispatcher
from gateway import __version__
from gateway.admin import ADMIN_OPENAPI_CONFIG, AdminController
from gateway.admin_bans import BansController
from gateway.admin_policy import AdminPolicyController
from gateway.admin_users import UsersController
from gateway.admission import AdmissionStage
from gateway.client_link import ClientLink
from gateway.endpoint_filter import EndpointFilter
from gateway.errors import OPENAI, GatewayError
from gateway.front_door import FrontDoor
from gateway.gatekeeper import Gatekeeper
from gateway.key_checks import KeyChecks, KeyChecksOff, build_key_checks
from gateway.key_registration import KeyRegistration
from gateway.logging_setup import configure_logging
from gateway.metrics import MetricsStore, RequestObserver, Tally
from gateway.pipeline import ProxyPipeline
from gateway.policy_wiring import build_front_door, build_prompt_filter, build_request_policy
from gateway.prompt_filter import PromptFilter
from gateway.providers import AnthropicProvider, OpenAIProvider
from gateway.relay import Relay
from gateway.routing import Route, resolve_route
from gateway.script_link import open_script_runner
from gateway.settings import Settings, refresh_cron
from gateway.shutdown import STOP_WITHIN_SEC, within
from gateway.signin import AdminSessionsController, SignIn, build_signin, signin_routes
from gateway.store import open_store
from gateway.upstream_client import UpstreamClient
from gateway.usage_routes import BudgetsController, UsageController
from gateway.wrong_path import not_found_here
from keypool import KeyPool, PoolSchema, parse_keys
from queues.waiting import FamilyQueues
from web.admin_pages import admin_page_routes
from web.login import login_route
from web.metrics import metrics_route
from web.routes import StatusPage, status_routes
from web.usage_pages import UsagePages
from web.user_admin_pages import UserPages
from web.user_page import user_page_routes

log = logging.getLogger("poolgate")
YOUNG_COLLECTION_AFTER = 10_000  # the collector's first threshold; Python's default is 700
ROUTES_REMEMBERED = 1024
_UNSEEN: Any = object()


class PoolgateApp:
    """What the server runs. `pool` and `store` exist between start-up and shut-down."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.store: Any = None
        self.pool: KeyPool | None = None
        self.dispatch: Dispatcher | None = None
        self.key_checks: KeyChecks = KeyChecksOff()
        self.key_registration: KeyRegistration | None = None
        self.queues: FamilyQueues | None = None
        self.quota_refresh: InProcessQuotaRefresh | None = None
        self.hold_keeper: HoldKeeper | None = None  # renews this process's cost reservations (accounts/budgets.py)
        self.usage_mover: UsageLedger | None = None  # the usage records: moved from the store, read by GET /usage
        self._pipeline: ProxyPipeline | None = None
        self.front_door: FrontDoor | None = None  # blocks and CORS (gateway/front_door.py), built at start-up
        self.prompt_filter: PromptFilter | None = None  # REJECT_PHRASES (gateway/prompt_filter.py), built at start-up
        self.signin: SignIn | None = None  # sessions and sign-in (gateway/signin.py), built at start-up
        self._observer = RequestObserver(Tally())  # counts and times each proxied request (gateway/metrics.py)
        self.metrics: MetricsStore | None = None
        self._clients: dict[str, UpstreamClient] = {}
        # Clients call a handful of paths: each is normalised and routed once (routing is pure), not per request.
        self._routes: dict[str, Route | None] = {}
        # logging_config=None: poolgate configures logging itself; Litestar's default would take over the root logger.
        self.litestar = Litestar(
            openapi_config=ADMIN_OPENAPI_CONFIG,
            route_handlers=[health, *status_routes, metrics_route, *signin_routes, login_route],
            lifespan=[self._lifespan], debug=False,
            logging_config=None,
            # A wrong path is told the base URLs to use; a store that does not answer is a 503, never a bare 500.
            exception_handlers={NotFoundException: not_found_here, RedisError: _store_unavailable},
        )
        self.litestar.state.admin_services = self  # what gateway/admin.py reads
        self.litestar.register(AdminController)  # the admin API for keys (gateway/admin.py)
        self.litestar.register(UsersController)  # and for users (gateway/admin_users.py)
        self.litestar.register(BansController)  # the rate limiter's bans (gateway/admin_bans.py)
        self.litestar.register(AdminPolicyController)  # and for the policy's lists (gateway/admin_policy.py)
        self.litestar.register(AdminSessionsController)  # sessions handed out by an admin (gateway/signin.py)
        self.litestar.register(UsageController)  # the usage report, GET /usage and /usage/me (gateway/usage_routes.py)
        # The same in a browser (keys, policy, maintenance, users, usage), and /user.
        pages: list[Any] = [*admin_page_routes, UserPages, UsagePages, *user_page_routes]
        for page in pages:
            self.litestar.register(page)
        self.litestar.register(BudgetsController)  # and the budget table, /admin/budgets
        self.status_page = StatusPage(self)
        self.litestar.state.status_page = self.status_page
        self.started_at = time.time()

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            raw = scope.get("raw_path")
            path = raw.decode("latin-1") if raw else scope["path"]
            route = self._routes.get(path, _UNSEEN)
            if route is _UNSEEN:
                try:
                    route = resolve_route(path, self.settings.proxy_endpoint_route)
                except GatewayError as error:
                    await ClientLink(send, receive, OPENAI).send_error(error)
                    return
                if len(self._routes) >= ROUTES_REMEMBERED:  # paths made up to fill it only evict each other
                    self._routes.clear()
                self._routes[path] = route
            if self.front_door is not None:
                send = await self.front_door.let_in(scope, send, route)
                if send is None:
                    return  # refused (blocked address or origin) or a CORS preflight, answered
            if route is not None:
                assert self._pipeline is not None, "the pipeline is built at start-up"
                await self._observer.serve(self._pipeline, route, scope, receive, send)
                return
        await self.litestar(scope, receive, send)  # type: ignore[arg-type]

    @asynccontextmanager
    async def _lifespan(self, _: Litestar) -> AsyncIterator[None]:
        await self.start()
        try:
            yield
        finally:
            await self.stop()

    async def start(self) -> None:
        s = self.settings
        self.started_at = time.time()
        self.store = open_store(s.redis_url, sentinels=s.redis_sentinels,
                                cluster_prefix=s.redis_prefix if s.redis_cluster else "")
        self.pool = KeyPool(self.store, PoolSchema(s.redis_prefix))
        # Read before the background tasks start, so it does not open a connection of its own beside theirs: after
        # a Redis restart each pooled connection fails its next command once (tests/test_store_repopulation.py).
        self.front_door = await build_front_door(s, self.store)
        self.litestar.state.policy_blocks = self.front_door.blocks
        self.prompt_filter = await build_prompt_filter(s, self.store)  # REJECT_PHRASES, editable by an admin
        self.litestar.state.prompt_filter = self.prompt_filter
        self.signin = build_signin(s, self.store)
        keys = parse_keys("openai", s.openai_keys) + parse_keys("anthropic", s.anthropic_keys)
        # Registered now, and again by whichever process first sees the store come back empty.
        self.key_registration = KeyRegistration(self.store, self.pool, keys, s.redis_prefix)
        await self.key_registration.register()
        # Behind sentinels or on a cluster, scripts go through the store's client, which follows the master
        # after a failover (gateway/sentinel.py, gateway/cluster.py); the hot path's own link has one address.
        following = s.redis_sentinels or s.redis_cluster
        scripts = self.store if following else open_script_runner(s.redis_url, self.store)
        self.dispatch = Dispatcher(self.pool, s.lease_ttl_sec, key_concurrency=s.key_concurrency, scripts=scripts)
        self.dispatch.keeper.start()
        # Key health (gateway/key_checks.py): checks at start-up and on a schedule, rechecks after retirement.
        self.key_checks = build_key_checks(s, self.store)
        self.dispatch.on_retired = self.key_checks.retired
        self.key_registration.on_registered_again = self.key_checks.request
        await self.key_checks.start()
        self.key_registration.start()
        # Quota refreshes: `poolgate worker`'s rq cron with Redis (gateway/worker.py), a timer here when embedded.
        cron_line = refresh_cron(s.quota_refresh_period)
        if cron_line and s.store_is_embedded:
            users = UserBook(self.store, AccountsSchema(s.redis_prefix), tuple(s.token_quotas()))
            self.quota_refresh = InProcessQuotaRefresh(users, cron_line)
            self.quota_refresh.start()
        providers = {
            "openai": OpenAIProvider(s.openai_base_url, s.key_cooldown_max_sec),
            "anthropic": AnthropicProvider(s.anthropic_base_url, s.key_cooldown_max_sec),
        }
        self._clients = {name: UpstreamClient(timeout_sec=s.upstream_timeout_sec) for name in providers}
        self.queues = FamilyQueues(
            self.store,
            self.dispatch,
            user_concurrency_limit=s.user_concurrency_limit,
            queue_timeout_sec=s.queue_timeout_sec,
            heartbeat_interval_sec=s.heartbeat_interval_sec,
            tokens_punishment_factor=s.tokens_punishment_factor,
            ticket_ttl_sec=s.queue_ticket_ttl_sec,
        )
        await self.queues.start()
        self.metrics = MetricsStore(self.store, s.redis_prefix, self._observer.tally)
        self.metrics.start()
        relay = Relay(
            self.dispatch,
            self.queues,
            providers,  # type: ignore[arg-type]
            self._clients,
            upstream_retries=s.upstream_retries,
            max_key_attempts=s.max_key_attempts,
        )
        # Money (issue 13): prices per model, the budget table, and the keeper of cost reservations.
        admission = Admission(
            self.dispatch.scripts, self.store, AccountsSchema(s.redis_prefix), limiter_policy(s),
            max_ips=s.max_ips_per_user, max_ips_auto_ban=s.max_ips_auto_ban,
            quota_refresh_cron=refresh_cron(s.quota_refresh_period) or "",
            budgets=BudgetPolicy(s.monthly_budget_usd, s.budget_time_zone, s.lease_ttl_sec),
        )
        await set_budgets(self.store, AccountsSchema(s.redis_prefix).budgets, s.budget_table())
        self.hold_keeper = admission.hold_keeper
        self.hold_keeper.start()
        self.usage_mover = UsageLedger(self.store, AccountsSchema(s.redis_prefix).usage_events, s.usage_db_path,
                                       s.usage_database_url, s.usage_retention_days)
        if s.store_is_embedded:  # with Redis, `poolgate worker` moves them (gateway/worker.py)
            self.usage_mover.start()
        self._pipeline = ProxyPipeline(
            endpoint_filter=EndpointFilter(s.extra_allowed_endpoints),
            gatekeeper=Gatekeeper(s.gatekeeper, s.proxy_key, s.admin_key, self.signin.sessions),
            admission=AdmissionStage(
                admission, self.dispatch, default_output_tokens=s.quota_default_output_tokens,
                prices=PriceBook(load_overrides(s.prices_override), s.unknown_model_policy),
            ),
            relay=relay,
            max_request_bytes=s.max_request_bytes,
            proxy_route="/" + s.proxy_endpoint_route.strip("/"),
            allowed_families=frozenset(s.allowed_model_families),
            stalled_client_sec=s.stalled_client_sec,
            policy=build_request_policy(s, self.prompt_filter),
            model_aliases=s.aliases,
            translate_on_provider_routes=s.translate_on_provider_routes,
        )
        # Everything built so far lives as long as the process: out of the collector's sight, a full collection
        # walks only what requests allocate (about 7% of the CPU a request costs, measured with bench/).
        gc.collect()
        gc.freeze()
        # A young collection runs each time 700 more container objects live than died, and 32 requests in
        # flight hold more than that: it ran every dozen requests, walking every request in flight, for 6%
        # of the CPU (bench/, non-streaming). Requests make almost no cyclic garbage, so collecting it after
        # YOUNG_COLLECTION_AFTER objects costs no memory worth the name and takes that 6% back.
        gc.set_threshold(YOUNG_COLLECTION_AFTER, *gc.get_threshold()[1:])
        counts = {p: sum(1 for k in keys if k.provider == p) for p in ("openai", "anthropic")}
        log.info(
            "poolgate %s ready: %d OpenAI and %d Anthropic keys, gatekeeper %s, store %s",
            __version__, counts["openai"], counts["anthropic"], s.gatekeeper,
            "embedded (single process)" if s.store_is_embedded else "redis",
        )

    async def queue_stats(self, keys: list[dict[str, Any]] | None = None) -> dict[str, dict[str, Any]]:
        """Per model family: {"in_queue": int, "estimated_wait_sec": float, "recent_waits": [[unix_time, sec]...]}.

        Families with nobody waiting and no recent waits may be absent. Pass
        `keys` (the pool's `describe_keys()`) when already read.
        """
        return await self.queues.stats(keys) if self.queues is not None else {}

    async def stop(self) -> None:
        """Stop the background work and close the store, each step bounded (gateway/shutdown.py): a store that
        does not answer, or a task deaf to its cancellation, delays the exit by seconds, never holds it."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + STOP_WITHIN_SEC
        if self.front_door is not None:
            await within(deadline, "the policy lists' watch", self.front_door.blocks.stop())
        if self.prompt_filter is not None:
            await within(deadline, "the prompt filter's watch", self.prompt_filter.stop())
        # Requests cancelled at the end of the shut-down grace are still giving back their leases and tickets.
        await self._observer.wait_for_requests(timeout_sec=min(10.0, max(0.0, deadline - loop.time())))
        if self.metrics is not None:
            await within(deadline, "the last metrics flush", self.metrics.stop())
        if self.key_registration is not None:
            await within(deadline, "the key registration watch", self.key_registration.stop())
        await within(deadline, "the key checks", self.key_checks.stop())
        if self.quota_refresh is not None:
            await within(deadline, "the quota refresh", self.quota_refresh.stop())
        if self.queues is not None:
            await within(deadline, "the queues", self.queues.stop())
        if self.dispatch is not None:
            await within(deadline, "the lease keeper", self.dispatch.keeper.stop())
        if self.hold_keeper is not None:
            await within(deadline, "the cost reservations' keeper", self.hold_keeper.stop())
        if self.usage_mover is not None:
            await within(deadline, "the usage mover", self.usage_mover.stop())
        for name, client in self._clients.items():
            await within(deadline, f"the {name} upstream client", client.aclose())
        if self.dispatch is not None and self.dispatch.scripts is not self.store:
            await within(deadline, "the script link", self.dispatch.scripts.aclose())
        if self.store is not None:
            await within(deadline, "the store", self.store.aclose())


@get("/health")
async def health(request: Request) -> Response[dict[str, Any]]:
    """Liveness and store reachability, for load balancers and deploy platforms: 503 while the store is away."""
    app: PoolgateApp = request.app.state.admin_services
    store = "embedded" if app.settings.store_is_embedded else "redis"
    try:
        await app.store.ping()
    except RedisError as error:
        log.warning("health: the store did not answer: %s", type(error).__name__)
        return Response({"status": "store_unavailable", "version": __version__, "store": store}, status_code=503)
    return Response({"status": "ok", "version": __version__, "store": store})


def _store_unavailable(request: Request[Any, Any, Any], error: RedisError) -> Response[Any]:
    log.warning("%s: the store did not answer: %s", request.url.path, type(error).__name__)
    message = "The gateway cannot reach its store right now. Try again in a moment."
    return Response({"error": {"message": message, "type": "store_unavailable"}}, status_code=503)


def limiter_policy(s: Settings) -> LimiterPolicy:
    return LimiterPolicy(
        enabled=s.rate_limiter,
        user_per_minute=s.rate_limit_user_per_minute,
        user_per_hour=s.rate_limit_user_per_hour,
        user_ban_after=s.rate_limit_user_ban_after,
        anon_per_minute=s.rate_limit_anon_per_minute,
        anon_per_hour=s.rate_limit_anon_per_hour,
        anon_ban_after=s.rate_limit_anon_ban_after,
        minute_block_sec=s.rate_limit_minute_block_sec,
        hour_block_sec=s.rate_limit_hour_block_sec,
        image_per_minute=s.image_model_rate_limit,
    )


def create_app(settings: Settings | None = None) -> PoolgateApp:
    """The app; without settings (uvicorn's factory, in each worker process of `--workers N`), from the environment,
    with logging set up as the command line sets it up in a single process."""
    if settings is None:
        settings = Settings.from_env()
        if not logging.getLogger().handlers:
            configure_logging(settings)
    return PoolgateApp(settings)
