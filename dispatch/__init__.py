"""Dispatch: where a waiting request meets a free key (lease, wake, claim the head, reap)."""

from dispatch.dispatcher import Dispatcher, NoKeyAvailable, SettleMoney
from dispatch.schema import DispatchSchema

__all__ = ["DispatchSchema", "Dispatcher", "NoKeyAvailable", "SettleMoney"]
