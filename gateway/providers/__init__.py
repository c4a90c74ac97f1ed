"""Upstream providers: one module each, one small protocol (`base.Provider`)."""

from gateway.providers.anthropic import AnthropicProvider
from gateway.providers.base import KeyVerdict, Provider, scrub_secret
from gateway.providers.openai import OpenAIProvider

__all__ = ["AnthropicProvider", "KeyVerdict", "OpenAIProvider", "Provider", "scrub_secret"]
