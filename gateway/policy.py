"""Stage 4, validate (request policy): what a well-formed request may ask, counted before anything leaves.

Once the body is parsed (gateway/validation.py), this stage

  1. counts the prompt's tokens (`catalog.tokens.count_prompt`), kept on
     the call as `prompt_tokens` for admission's reservations, when something
     reads the count: admission reserves against a quota or a limit, or the
     context check cannot pass on the body's size alone (a short prompt far
     below the window is not counted: ~15 µs of a request's ~300);
  2. matches the prompt against REJECT_PHRASES (gateway/prompt_filter.py):
     403 after the identity's growing delay;
  3. clamps the requested output and checks the context (gateway/caps.py),
     unless the caller exempts the request (`special` users): 400
     `context_length_exceeded`; a clamped body is re-encoded.

Counting and matching are CPU work on the whole prompt. Below
`ON_LOOP_BYTES` of body they run on the event loop (a thread hop costs more
than counting a few kilobytes); above it, in a thread, so a megabyte-sized
prompt never stalls the other clients of the process.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

import msgspec

from catalog.prompts import read_prompt
from catalog.tokens import count_prompt
from gateway.caps import Caps, check_context, clamp_output, context_limit
from gateway.errors import GatewayError
from gateway.prompt_filter import PromptFilter
from gateway.validation import UpstreamCall, max_output_of

ON_LOOP_BYTES = 32 * 1024  # ~8k tokens: counted in well under a millisecond
# Endpoints whose body is a prompt. count_tokens is relayed as it is: counting is what it asks upstream for.
_PROMPT_ENDPOINTS = frozenset({"chat/completions", "completions", "embeddings", "responses", "messages"})
_encode = msgspec.json.Encoder().encode


@dataclass(frozen=True, slots=True)
class PromptReading:
    tokens: int
    rejected: bool


class RequestPolicy:
    def __init__(self, *, caps: dict[str, Caps], prompt_filter: PromptFilter, count_tokens: bool = True) -> None:
        self._caps = caps  # per provider
        self._filter = prompt_filter
        self._count = count_tokens

    async def check(self, call: UpstreamCall, *, exempt_from_caps: bool = False, reserving: bool = True) -> None:
        """Count, filter and cap `call` in place; a GatewayError when it may not go out.

        `reserving`: admission will reserve against a quota or limit, and reads the count. Without
        it, the prompt is counted only when the context check needs the number (`_fits_by_size`).
        """
        payload = call.payload
        if payload is None or call.endpoint not in _PROMPT_ENDPOINTS:
            return
        if not self._count and not self._filter.active:
            return
        caps = self._caps[call.provider]
        changed, requested = False, 0
        capping = self._count and not exempt_from_caps
        if capping:  # the output cap needs no count; it also tells the context check the output asked for
            changed, requested = clamp_output(call.provider, call.endpoint, payload, caps)
        counting = self._count and (reserving or exempt_from_caps or not self._fits_by_size(call, requested, caps))
        if counting or self._filter.active:
            if len(call.body) > ON_LOOP_BYTES:
                reading = await asyncio.to_thread(self._read, call.provider, call.model, payload, counting)
            else:
                reading = self._read(call.provider, call.model, payload, counting)
            if reading.rejected:
                raise await self._filter.refuse(call.identity)
            call.prompt_tokens = reading.tokens
        if not capping:
            return
        # Capped now, so the quota reservation counts the clamped output; undone or said by `after_admission`.
        if counting:
            try:
                check_context(call.provider, call.endpoint, call.model, call.prompt_tokens, requested, caps)
            except GatewayError as over_context:
                call.caps_refusal = over_context
                return
        if changed:
            call.uncapped_body = call.body
            try:
                call.body = _encode(payload)
            except RecursionError:  # parsed at that depth, so this cannot happen; never a 500 if it does
                raise GatewayError("invalid_request", "The request body is nested too deeply.") from None
            call.max_output = max_output_of(payload)

    @staticmethod
    def after_admission(call: UpstreamCall) -> None:
        """The caps for a user admission exempted (`special`, the admin key) undone; for anyone else, a
        request over the context cap refused."""
        if call.exempt_from_caps:
            if call.uncapped_body is not None:
                call.body = call.uncapped_body
            return
        if call.caps_refusal is not None:
            raise call.caps_refusal

    def _read(self, provider: str, model: str | None, payload: dict[str, Any], counting: bool) -> PromptReading:
        prompt = read_prompt(payload)  # one walk of the body, for the count and the filter
        tokens = count_prompt(provider, model, prompt) if counting else 0
        rejected = self._filter.active and self._filter.matches(prompt.text())
        return PromptReading(tokens, rejected)

    @staticmethod
    def _fits_by_size(call: UpstreamCall, requested: int, caps: Caps) -> bool:
        """Whether the context check would pass whatever the count, judged from the body's size alone.

        A token is at least one byte of its text, every text is a JSON string of the body at least
        as long, and a message's framing (3 tokens, 1 more for a `name`) has its own braces and keys
        in the body: `catalog.tokens` never counts more than twice the body's bytes, plus 3 priming
        the reply. Not for images or tools, which cost more than their bytes, nor for a body with
        `\\u` escapes, which could spell an image's type without the word in it.
        """
        limit = context_limit(call.provider, call.endpoint, call.model, caps)
        if limit is None:
            return True
        body = call.body
        if 2 * len(body) + 3 + requested > limit or b"image" in body or b"\\u" in body:
            return False
        payload = call.payload
        return payload is not None and "tools" not in payload and "functions" not in payload
