"""The life of a proxied request, top to bottom.

Each stage is a module of its own, with a docstring saying what it decides:

    1. route         gateway.routing          which provider, which upstream path
    2. filter        gateway.endpoint_filter  only generation endpoints go through
    3. authenticate  gateway.gatekeeper       who is asking; may they use the proxy
    4. validate      gateway.validation       model, family, stream; the body parsed once
    5. admit         gateway.admission        limits, quotas, budgets (reserved)
    6. lease         queues.waiting           a healthy key for the family at once, or a fair place in line
    7. relay         gateway.relay            upstream with the real key; other keys on failure
                     gateway.delivery         the reply to the client, whole or streamed
    8. settle        gateway.settlement       the key back, usage recorded
"""

from __future__ import annotations

import contextlib
import logging
from typing import Any
from urllib.parse import parse_qsl, urlencode

from redis.exceptions import RedisError

from gateway.admission import AdmissionStage
from gateway.client_link import ClientLink
from gateway.delivery import deliver_read, deliver_stream, deliver_whole
from gateway.endpoint_filter import EndpointFilter
from gateway.errors import GatewayError, refusal_error
from gateway.gatekeeper import Gatekeeper
from gateway.metrics import note_call
from gateway.policy import RequestPolicy
from gateway.relay import Relay
from gateway.routing import Route
from gateway.validation import validate_request
from queues.waiting import ClientGone, QueueRefusal

log = logging.getLogger("poolgate.pipeline")


class ProxyPipeline:
    def __init__(
        self,
        *,
        endpoint_filter: EndpointFilter,
        gatekeeper: Gatekeeper,
        admission: AdmissionStage,
        relay: Relay,
        max_request_bytes: int,
        proxy_route: str,
        allowed_families: frozenset[str] = frozenset(),
        stalled_client_sec: float = 30.0,
        policy: RequestPolicy | None = None,
        model_aliases: dict[str, str] | None = None,
        translate_on_provider_routes: bool = False,
    ) -> None:
        self._filter = endpoint_filter
        self._gatekeeper = gatekeeper
        self._admission = admission
        self._relay = relay
        self._max_request_bytes = max_request_bytes
        self._proxy_route = proxy_route
        self._allowed_families = allowed_families
        self._stalled_client_sec = stalled_client_sec
        self._policy = policy
        self._aliases = model_aliases or {}
        self._translate_on_provider_routes = translate_on_provider_routes

    async def handle(self, route: Route, scope: dict[str, Any], receive: Any, send: Any) -> None:
        """Serve one proxied request (stage 1, routing, already chose `route`)."""
        link = ClientLink(send, receive, route.dialect, self._stalled_client_sec)
        try:
            method = scope["method"]
            headers = dict(scope["headers"])
            query, query_key = _split_query(scope["query_string"])
            allowed = self._filter.check(route, route.provider, method)
            identity = self._gatekeeper.authenticate(headers, query_key, _client_ip(scope))
            body = await _read_body(receive, headers, self._max_request_bytes)
            call = validate_request(
                allowed, route.provider, method, query, body, by_model=route.by_model, proxy_route=self._proxy_route,
                allowed_families=self._allowed_families, content_type=headers.get(b"content-type", b""),
                aliases=self._aliases, translate=self._translate_on_provider_routes or not route.provider_route,
            )
            call.identity = identity.id
            if self._policy is not None:  # token count, prompt filter, caps (gateway/policy.py)
                await self._policy.check(call, reserving=self._admission.asks_store(identity))
            note_call(call.family, call.endpoint)  # for /metrics and the failed-request log line
            if call.endpoint == "responses":
                link.speak_responses_api(call.model)
            provider = self._relay.provider(call.provider)
            # Everything from here on is cancelled the moment the client hangs up or stops reading:
            # no key is held, and no upstream call runs, for a client that is not there.
            # The quota reservation is held by `admit`, the reply's lease by `open`; each is returned
            # (or corrected by settlement) exactly once when this block ends.
            async with self._admission.admit(call, identity):
                RequestPolicy.after_admission(call)  # the caps admission exempted undone, or the context cap said
                async with link.while_present(), self._relay.open(call, headers, link) as reply:
                    if reply.response is None:
                        await deliver_read(reply, link, call)
                    elif call.stream:
                        await deliver_stream(reply, call, provider, link)
                    else:
                        await deliver_whole(reply, call, provider, link)
        except GatewayError as error:
            await link.send_error(error)
        except QueueRefusal as refusal:
            await link.send_error(refusal_error(refusal))
        except ClientGone:
            pass  # it hung up or stopped reading: whatever served it was cancelled and given back
        except RedisError as error:  # after the reply has gone out, settlement logs this itself
            log.error("the store did not answer: %s", type(error).__name__)  # never the URL: it may hold a password
            await link.send_error(GatewayError(
                "store_unavailable", "The gateway cannot reach its store right now. Try again in a moment."))
        except Exception as error:  # anything unforeseen: a 502 in the route's dialect, never a traceback
            log.error("proxied request failed: %s", type(error).__name__)
            with contextlib.suppress(Exception):  # the reply may already have gone out whole
                await link.send_error(GatewayError(
                    "upstream_failed", "The gateway could not relay upstream's reply. Try again in a moment."))
        finally:
            link.close()


def _split_query(query_string: bytes) -> tuple[str, str | None]:
    """The query to forward, and the client's credential if it came as `?key=`, which is never forwarded."""
    if not query_string:
        return "", None
    pairs = parse_qsl(query_string.decode("latin-1"), keep_blank_values=True)
    key = next((value for name, value in pairs if name == "key"), None)
    if key is None:
        return query_string.decode("latin-1"), None
    return urlencode([(n, v) for n, v in pairs if n != "key"]), key


def _client_ip(scope: dict[str, Any]) -> str:
    client = scope.get("client")
    return client[0] if client else "unknown"


async def _read_body(receive: Any, headers: dict[bytes, bytes], limit: int) -> bytes:
    declared = headers.get(b"content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise _too_large(limit)
    chunks = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise GatewayError("invalid_request", "The client went away before sending the whole body.")
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise _too_large(limit)
        chunks.append(chunk)
        if not message.get("more_body", False):
            return chunks[0] if len(chunks) == 1 else b"".join(chunks)


def _too_large(limit: int) -> GatewayError:
    return GatewayError("too_large", f"The request body is larger than this proxy accepts ({limit} bytes).")
