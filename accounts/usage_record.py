"""A request's bill: how it is priced, and the usage event its settlement appends.

Made when the request is admitted (gateway/admission.py) with the model's rates
(`catalog.prices`), carried to settlement by the lease's hold, and read back by
delivery for the reply's `cost` / `monthlyCost` / `monthlyRequests` figures.
Pricing is integer arithmetic on rates looked up once per model: nothing here
asks the store; the cost and the event join settlement's one store call.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from accounts.reservation import Reservation
from catalog.prices import Rates
from dispatch import SettleMoney
from keypool import Usage

# The fields of a usage event, in the order the mover writes them (accounts/usage_store.py).
EVENT_FIELDS = (
    "time", "user", "model", "family", "key", "input_tokens", "output_tokens", "cached_tokens",
    "cache_write_tokens", "cost", "status", "latency_ms", "queue_ms", "estimated",
)


@dataclass(slots=True)
class Bill:
    model: str
    family: str
    rates: Rates | None  # None: no known price (UNKNOWN_MODEL_POLICY=refuse), charged nothing
    tz_offset: int = 0
    started: float = 0.0  # monotonic, when the request was admitted
    cost: int = -1  # micro-dollars, once settled
    month_cost: int = -1  # the month's spend of whoever was served, once settled (or as admitted)
    month_requests: int = -1

    @classmethod
    def start(cls, model: str, family: str, rates: Rates | None, tz_offset: int) -> Bill:
        return cls(model, family, rates, tz_offset, time.monotonic())

    def price(self, usage: Usage) -> int:
        if self.rates is None:
            return 0
        return self.rates.cost_micro(usage.input_tokens, usage.output_tokens, usage.cache_read_tokens,
                                     usage.cache_write_tokens)

    def money(
        self, usage: Usage, *, identity: str, key_id: str, estimated: bool, waited_ms: int,
        reservation: Reservation | None, status: int = 200,
    ) -> SettleMoney:
        """What settlement records for this usage (cost, the cost reservation it replaces, the event)."""
        cost = self.price(usage)
        event = [  # field, value, ...: as XADD takes them (the store adds `time`)
            "user", identity, "model", self.model, "family", self.family, "key", key_id,
            "input_tokens", str(usage.input_tokens), "output_tokens", str(usage.output_tokens),
            "cached_tokens", str(usage.cache_read_tokens), "cache_write_tokens", str(usage.cache_write_tokens),
            "cost", str(cost), "status", str(status),
            "latency_ms", str(int((time.monotonic() - self.started) * 1000)), "queue_ms", str(waited_ms),
            "estimated", "1" if estimated else "0",
        ]
        if reservation is None or not reservation.hold:
            return SettleMoney(cost, event, self.tz_offset)
        return SettleMoney(cost, event, self.tz_offset, reservation.holds_key, reservation.hold)

    def settled(self, money: SettleMoney) -> None:
        self.cost, self.month_cost, self.month_requests = money.cost, money.month_cost, money.month_requests

    def headers(self) -> list[tuple[bytes, bytes]]:
        """AI Proxy's reply headers: this request's cost (once known) and the month so far (USD)."""
        out = []
        if self.cost >= 0:
            out.append((b"cost", _usd(self.cost)))
        if self.month_cost >= 0:
            out.append((b"monthlycost", _usd(self.month_cost)))
            out.append((b"monthlyrequests", str(self.month_requests).encode()))
        return out

    def stream_comment(self) -> bytes:
        """A streamed reply's figures, after its last event: its headers went out before the cost was known."""
        if self.cost < 0:
            return b""
        month = f" monthlyCost={_usd(self.month_cost).decode()} monthlyRequests={self.month_requests}" \
            if self.month_cost >= 0 else ""
        return f": poolgate: cost={_usd(self.cost).decode()}{month}\n\n".encode()


def _usd(micro: int) -> bytes:
    """Micro-dollars as dollars, exactly, without trailing zeros (integer arithmetic): 1500 is b"0.0015"."""
    if micro < 0:
        return b"-" + _usd(-micro)
    dollars, fraction = divmod(micro, 1_000_000)
    return (b"%d.%06d" % (dollars, fraction)).rstrip(b"0") if fraction else b"%d" % dollars
