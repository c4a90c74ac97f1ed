"""REJECT_PHRASES: refused prompts get 403 after a growing delay kept in the store; hostile patterns cannot stall."""

from __future__ import annotations

import threading
import time

import anthropic
import httpx
import openai
import pytest

from gateway.prompt_filter import MAX_DELAY_SEC, PhraseError, parse_phrases, refusal_delay_sec

PHRASES = r'forbidden\s+word, "alpha, beta", (x+x+)+y'
MESSAGE = "Not here, friend."


@pytest.fixture
def filtered(start_gateway):
    return start_gateway(OPENAI_KEY="sk-test-filter-aaaa1111", ANTHROPIC_KEY="sk-ant-test-filter-bbbb",
                         REJECT_PHRASES=PHRASES, REJECT_MESSAGE=MESSAGE)


def test_a_prompt_matching_a_phrase_is_refused_with_the_message_and_never_sent(filtered, upstream):
    client = openai.OpenAI(base_url=filtered.url + "/v1", api_key="unused", max_retries=0)
    with pytest.raises(openai.PermissionDeniedError) as refused:
        client.chat.completions.create(model="gpt-4o-mini", messages=[
            {"role": "system", "content": "be nice"},
            {"role": "user", "content": [{"type": "text", "text": "Say the FORBIDDEN   Word"}]}])
    assert refused.value.status_code == 403
    assert refused.value.body["message"] == MESSAGE
    assert not [r for r in upstream.requests if r["path"].endswith("/chat/completions")]


def test_a_quoted_phrase_may_hold_a_comma_and_anthropic_prompts_are_read_too(filtered, upstream):
    client = anthropic.Anthropic(base_url=filtered.url + "/proxy/anthropic", api_key="unused", max_retries=0)
    with pytest.raises(anthropic.PermissionDeniedError) as refused:
        client.messages.create(model="claude-haiku-4-5", max_tokens=10, system="ALPHA, BETA",
                               messages=[{"role": "user", "content": "hi"}])
    assert refused.value.body["error"]["message"] == MESSAGE
    reply = client.messages.create(model="claude-haiku-4-5", max_tokens=10,
                                   messages=[{"role": "user", "content": "alpha beta, no comma between"}])
    assert reply.content


def test_a_pattern_that_backtracks_forever_cannot_stall_the_gateway(filtered, upstream):
    # (x+x+)+y against a long run of x never ends without the time limit; it is taken as no match.
    reply = httpx.post(filtered.url + "/v1/chat/completions", timeout=30, json={
        "model": "gpt-4o-mini", "messages": [{"role": "user", "content": "x" * 5000}]})
    assert reply.status_code == 200


def test_repeated_refusals_are_delayed_exponentially_across_processes(start_gateway, store_url):
    if not store_url.startswith("redis"):
        pytest.skip("two gateways share the count only through a real Redis; the embedded store is one process's")
    first = start_gateway(OPENAI_KEY="sk-test-filter-aaaa1111", REJECT_PHRASES=PHRASES)
    second = start_gateway(OPENAI_KEY="sk-test-filter-aaaa1111", REJECT_PHRASES=PHRASES)
    body = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "forbidden word"}]}
    waits = []
    for gateway in (first, second, first):
        started = time.monotonic()
        reply = httpx.post(gateway.url + "/v1/chat/completions", json=body, timeout=30)
        waits.append(time.monotonic() - started)
        assert reply.status_code == 403
    # 2^(n-1) s for the n-th refusal of the same address, whichever process refused the earlier ones
    assert waits[0] >= 1.0 and waits[1] >= 2.0 and waits[2] >= 4.0


def test_the_delay_doubles_and_stops_at_a_minute() -> None:
    assert [refusal_delay_sec(n) for n in (1, 2, 3, 4, 7, 8, 50)] == [1, 2, 4, 8, 60, 60, 60]
    assert MAX_DELAY_SEC == 60


def test_phrases_parse_quoted_entries_and_refuse_broken_patterns() -> None:
    assert [p.pattern for p in parse_phrases('one, "two, three" ,four')] == ["one", "two, three", "four"]
    with pytest.raises(PhraseError):
        parse_phrases("fine, (unclosed")


def test_a_broken_pattern_stops_start_up_with_one_clear_line() -> None:
    from gateway.settings import ConfigError, Settings

    with pytest.raises(ConfigError) as error:
        Settings.from_env({"REJECT_PHRASES": "ok, [broken"}, env_file=None)
    assert any(problem.startswith("REJECT_PHRASES: '[broken'") for problem in error.value.problems)


def test_while_a_huge_prompt_is_counted_other_requests_are_answered(start_gateway, upstream, monkeypatch):
    import gateway.policy as policy
    from catalog.tokens import count_prompt

    counting_huge = threading.Event()
    release = threading.Event()

    def count_slowly_when_huge(provider, model, prompt):
        tokens = count_prompt(provider, model, prompt)
        if tokens > 100_000:  # the huge prompt: hold it until the small request has been answered
            counting_huge.set()
            assert release.wait(30)
        return tokens

    monkeypatch.setattr(policy, "count_prompt", count_slowly_when_huge)
    gateway = start_gateway(OPENAI_KEY="sk-test-filter-aaaa1111")
    huge = {"model": "gpt-4.1", "messages": [{"role": "user", "content": "lorem ipsum dolor sit amet " * 40_000}]}
    results: dict[str, int] = {}
    sender = threading.Thread(target=lambda: results.update(
        huge=httpx.post(gateway.url + "/v1/chat/completions", json=huge, timeout=60).status_code))
    sender.start()
    try:
        assert counting_huge.wait(30), "the huge prompt was never counted"
        small = httpx.post(gateway.url + "/v1/chat/completions", timeout=10, json={
            "model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]})
        assert small.status_code == 200  # answered while the huge prompt is still being counted
    finally:
        release.set()
        sender.join(60)
    assert results["huge"] == 200
