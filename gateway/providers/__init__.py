"""Upstream providers: one module each, one small protocol (`base.Provider`)."""

from gateway.providers.anthropic import AnthropicProvider
from gateway.providers.base import KeyVerdict, Provider, scrub_secret
from gateway.providers.openai import OpenAIProvider
from gateway.providers.scrub import SecretScrubber, scrubber_for

__all__ = [
    "AnthropicProvider", "KeyVerdict", "OpenAIProvider", "Provider", "SecretScrubber", "scrub_secret", "scrubber_for"
]
