"""The key pool: keys and their state (health, cooldowns, pacing), filed as lease candidates."""

from keypool.keys import ConfiguredKey, mask_secret, parse_keys
from keypool.pool import (
    FAILED,
    OK,
    OVER_QUOTA,
    RATE_LIMITED,
    REVOKED,
    KeyLease,
    KeyPool,
    RateBudget,
    Usage,
)
from keypool.schema import PoolSchema

__all__ = [
    "FAILED",
    "OK",
    "OVER_QUOTA",
    "RATE_LIMITED",
    "REVOKED",
    "ConfiguredKey",
    "KeyLease",
    "KeyPool",
    "PoolSchema",
    "RateBudget",
    "Usage",
    "mask_secret",
    "parse_keys",
]
