"""The hot path's script link to a real redis-server: same answers and errors as redis-py, and it recovers."""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis.asyncio as aioredis
from processes import OwnRedis, free_port
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from gateway import script_link
from gateway.script_link import ScriptLink, open_script_runner
from keypool import parse_keys

ECHO = "redis.call('SET', KEYS[1], ARGV[1]); return {KEYS[1], tonumber(ARGV[2]) + 1, redis.call('GET', KEYS[1])}"


@pytest.fixture
def real_redis(redis_server: str | None) -> str:
    if redis_server is None:
        pytest.skip("redis-server is not installed here (apt-get install redis-server); CI runs these")
    return redis_server


@pytest.fixture
async def plain(real_redis: str) -> AsyncIterator[aioredis.Redis]:
    client = aioredis.Redis.from_url(real_redis)
    yield client
    await client.aclose()


async def test_a_script_answers_as_through_redis_py(real_redis: str, plain: aioredis.Redis) -> None:
    link = ScriptLink(real_redis)
    try:
        mine = await link.register_script(ECHO)(keys=["link:a"], args=["value", 41])
        theirs = await plain.register_script(ECHO)(keys=["link:a"], args=["value", 41])
        assert mine == theirs == [b"link:a", 42, b"value"]
    finally:
        await link.aclose()


async def test_many_calls_at_once_each_get_their_own_answer(real_redis: str) -> None:
    link = ScriptLink(real_redis)
    script = link.register_script("return tonumber(ARGV[1]) * 2")
    try:
        answers = await asyncio.gather(*(script(args=[n]) for n in range(500)))
        assert answers == [n * 2 for n in range(500)]
    finally:
        await link.aclose()


async def test_a_script_error_reaches_only_its_caller(real_redis: str) -> None:
    link = ScriptLink(real_redis)
    failing = link.register_script("return redis.error_reply('ERR no such luck')")
    fine = link.register_script("return 'fine'")
    try:
        outcomes = await asyncio.gather(fine(), failing(), fine(), return_exceptions=True)
        assert outcomes[0] == outcomes[2] == b"fine"
        assert isinstance(outcomes[1], ResponseError) and "no such luck" in str(outcomes[1])
    finally:
        await link.aclose()


async def test_scripts_forgotten_by_redis_are_sent_again(real_redis: str, plain: aioredis.Redis) -> None:
    link = ScriptLink(real_redis)
    script = link.register_script("return 'remembered'")
    try:
        assert await script() == b"remembered"
        await plain.script_flush()  # what a Redis restart or failover does
        assert await script() == b"remembered"
    finally:
        await link.aclose()


async def test_a_forgotten_script_still_runs_for_a_caller_that_left(real_redis: str, plain: aioredis.Redis) -> None:
    """A settlement is sent before its caller awaits: if Redis forgot the script meanwhile, the link sends its
    text again even when the caller was cancelled, and the calls sent after it keep their own answers."""
    link = ScriptLink(real_redis)
    count = link.register_script("return redis.call('INCR', KEYS[1])")
    echo = link.register_script("return ARGV[1]")
    key = f"left-{time.monotonic_ns()}"
    try:
        assert await count([key]) == 1  # loaded
        await plain.script_flush()  # what a Redis restart or failover does
        answer = count.start([key])
        echoes = [echo.start([], [str(n)]) for n in range(20)]
        answer.cancel()  # the caller leaves before Redis has answered
        assert [await e for e in echoes] == [str(n).encode() for n in range(20)]
        assert await plain.get(key) == b"2", "the cancelled caller's call never ran"
    finally:
        await link.aclose()


@asynccontextmanager
async def link_to_a_broken_redis(
    serve: Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]],
) -> AsyncIterator[ScriptLink]:
    """A link to a loopback server that behaves as `serve` says instead of as Redis."""
    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    link = ScriptLink(f"redis://127.0.0.1:{server.sockets[0].getsockname()[1]}/0")
    try:
        yield link
    finally:
        await link.aclose()
        server.close()


async def test_a_dropped_connection_fails_the_calls_in_flight() -> None:
    async def hang_up_after_the_first_command(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read(1)
        writer.close()

    async with link_to_a_broken_redis(hang_up_after_the_first_command) as link:
        with pytest.raises(RedisConnectionError):
            await asyncio.wait_for(link.register_script("return 1")(), timeout=5)


async def test_a_redis_that_stops_answering_fails_the_calls_instead_of_hanging(monkeypatch: pytest.MonkeyPatch) -> None:
    async def never_answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read()  # holds the connection open and says nothing

    monkeypatch.setattr(script_link, "_STUCK_AFTER_SEC", 0.3)
    async with link_to_a_broken_redis(never_answer) as link:
        with pytest.raises(RedisTimeoutError):
            await asyncio.wait_for(link.register_script("return 1")(), timeout=5)


@pytest.fixture
def unix_socket_redis(tmp_path: Path) -> Iterator[Path]:
    binary = shutil.which("redis-server")
    if binary is None:
        pytest.skip("redis-server is not installed here (apt-get install redis-server); CI runs this")
    socket_path = tmp_path / "redis.sock"
    server = subprocess.Popen([binary, "--port", "0", "--unixsocket", str(socket_path), "--save", "",
                               "--dir", str(tmp_path)], stdout=subprocess.DEVNULL)
    deadline = time.monotonic() + 10
    while not socket_path.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    yield socket_path
    server.terminate()
    server.wait(timeout=10)


async def test_a_unix_socket_url_is_used(unix_socket_redis: Path) -> None:
    link = ScriptLink(f"unix://{unix_socket_redis}")
    try:
        assert await link.register_script("return 'over a socket'")() == b"over a socket"
    finally:
        await link.aclose()


async def test_the_next_call_after_a_dropped_connection_reconnects(real_redis: str, plain: aioredis.Redis) -> None:
    link = ScriptLink(real_redis)
    try:
        first = await link.call(b"CLIENT", b"ID")
        await plain.client_kill_filter(_id=first)
        await asyncio.sleep(0.1)  # the close reaches the link
        assert await link.call(b"CLIENT", b"ID") != first
    finally:
        await link.aclose()


async def test_a_password_user_and_database_in_the_url_are_used(real_redis: str, plain: aioredis.Redis) -> None:
    await plain.execute_command("ACL", "SETUSER", "linktest", "on", ">s3cret", "~*", "&*", "+@all")
    url = real_redis.replace("redis://", "redis://linktest:s3cret@").rsplit("/", 1)[0] + "/5"
    link = ScriptLink(url)
    try:
        assert await link.call(b"ACL", b"WHOAMI") == b"linktest"
        await link.register_script("return redis.call('SET', 'in-db-5', 1)")()
        database_5 = aioredis.Redis.from_url(real_redis.rsplit("/", 1)[0] + "/5")
        assert await database_5.get("in-db-5") == b"1"
        await database_5.delete("in-db-5")
        await database_5.aclose()
        wrong = ScriptLink(url.replace("s3cret", "wrong"))
        with pytest.raises(ResponseError):
            await wrong.register_script("return 1")()
        await wrong.aclose()
    finally:
        await link.aclose()
        await plain.execute_command("ACL", "DELUSER", "linktest")


@pytest.mark.parametrize("form", ["path", "query"])
async def test_the_database_and_password_are_read_from_the_url_as_redis_py_reads_them(
    real_redis: str, plain: aioredis.Redis, form: str
) -> None:
    """redis-py takes `?db=` and `?password=` as well as `/5` and `:pw@`: the scripts must write where it reads."""
    await plain.config_set("requirepass", "s3cret")
    try:
        base = real_redis.rsplit("/", 1)[0]
        url = (base.replace("redis://", "redis://:s3cret@") + "/5" if form == "path"
               else base + "/?db=5&password=s3cret")
        link = ScriptLink(url)
        reader = aioredis.Redis.from_url(url)
        try:
            await link.register_script("return redis.call('SET', 'written-by-the-link', 1)")()
            assert await reader.get("written-by-the-link") == b"1"
            await reader.delete("written-by-the-link")
        finally:
            await link.aclose()
            await reader.aclose()
    finally:
        admin = aioredis.Redis.from_url(base.replace("redis://", "redis://:s3cret@"))
        await admin.config_set("requirepass", "")
        await admin.aclose()


async def test_a_unix_socket_url_with_a_database_uses_it(unix_socket_redis: Path) -> None:
    url = f"unix://{unix_socket_redis}?db=3"
    link = ScriptLink(url)
    reader = aioredis.Redis.from_url(url)
    try:
        await link.register_script("return redis.call('SET', 'written-by-the-link', 1)")()
        assert await reader.get("written-by-the-link") == b"1"
    finally:
        await link.aclose()
        await reader.aclose()


async def test_no_redis_listening_is_a_connection_error(real_redis: str) -> None:
    link = ScriptLink(f"redis://127.0.0.1:{free_port()}/0")
    with pytest.raises(RedisConnectionError):
        await link.register_script("return 1")()


def test_the_embedded_store_runs_its_own_scripts() -> None:
    store = object()
    assert open_script_runner("", store) is store
    assert isinstance(open_script_runner("redis://127.0.0.1:6379/0", store), ScriptLink)



@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[OwnRedis]:
    binary = shutil.which("redis-server")
    if binary is None:
        pytest.skip("redis-server is not installed here (apt-get install redis-server); CI runs this")
    server = OwnRedis(binary, tmp_path)
    server.start()
    yield server
    server.kill()


@pytest.mark.parametrize("store_url", ["redis"], indirect=True)
def test_a_gateway_whose_redis_goes_away_answers_503_in_its_dialect_and_recovers(
    start_gateway: Callable[..., Any], own_redis: OwnRedis
) -> None:
    gateway = start_gateway(REDIS_URL=own_redis.url, OPENAI_KEY="sk-store-0001", ANTHROPIC_KEY="sk-ant-store-0002")
    chat = {"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}]}
    claude = {"model": "claude-haiku-4-5", "max_tokens": 8, "messages": [{"role": "user", "content": "hi"}]}
    with httpx.Client(base_url=gateway.url, timeout=10) as client:
        assert client.post("/v1/chat/completions", json=chat).status_code == 200

        own_redis.kill()
        openai_reply = client.post("/v1/chat/completions", json=chat)
        assert openai_reply.status_code == 503
        assert openai_reply.json()["error"]["code"] == "store_unavailable"
        anthropic_reply = client.post("/v1/messages", json=claude)
        assert anthropic_reply.status_code == 503
        assert anthropic_reply.json()["error"]["type"] == "api_error"
        for reply in (openai_reply, anthropic_reply):
            assert "store-000" not in reply.text and "redis://" not in reply.text

        own_redis.start()  # back, and empty, as a Redis without persistence comes back
        settings = gateway.app.settings
        configured = parse_keys("openai", settings.openai_keys) + parse_keys("anthropic", settings.anthropic_keys)
        gateway.run(gateway.app.pool.register_configured(configured))
        assert client.post("/v1/chat/completions", json=chat).status_code == 200


# --- the handshake: nothing but AUTH and SELECT goes out until they have been answered -----------------------

CONFIGURED_DB = 7
WRITE = "return redis.call('SET', KEYS[1], ARGV[1])"


@pytest.fixture(params=["password", "no-password"])
def handshake_redis(request: pytest.FixtureRequest, guarded_redis_server: str | None, real_redis: str) -> str:
    """The URL of a Redis on db 7: with a password (the link must AUTH first), or without (it must SELECT first)."""
    if request.param == "password":
        assert guarded_redis_server is not None  # there is a redis-server, or `real_redis` skipped
        return f"{guarded_redis_server}/{CONFIGURED_DB}"
    return f"{real_redis.rsplit('/', 1)[0]}/{CONFIGURED_DB}"


async def writes_landed(url: str, tag: str) -> tuple[int, int]:
    """How many `tag:*` keys are in the configured db and in db 0."""
    counts = []
    for db in (CONFIGURED_DB, 0):
        client = aioredis.Redis.from_url(f"{url.rsplit('/', 1)[0]}/{db}")
        counts.append(len(await client.keys(f"{tag}:*")))
        await client.delete(*await client.keys(f"{tag}:*") or [f"{tag}:none"])
        await client.aclose()
    return counts[0], counts[1]


async def burst_over_loop_turns(link: ScriptLink, tag: str, calls: int = 400) -> list[Any]:
    """`calls` script calls, the n-th made after n % 40 turns of the event loop, so they arrive all through a
    (re)connection: before it opens, between its opening and the handshake's answer, and after."""
    write = link.register_script(WRITE)

    async def write_after(turns: int, n: int) -> Any:
        for _ in range(turns):
            await asyncio.sleep(0)
        return await write(keys=[f"{tag}:{n}"], args=[n])

    return await asyncio.gather(*(write_after(n % 40, n) for n in range(calls)), return_exceptions=True)


async def test_calls_made_while_the_link_first_connects_wait_for_auth_and_select(handshake_redis: str) -> None:
    tag = f"handshake-{uuid.uuid4().hex[:8]}"
    link = ScriptLink(handshake_redis)
    try:
        outcomes = await burst_over_loop_turns(link, tag)
    finally:
        await link.aclose()
    assert [str(o) for o in outcomes if o != b"OK"] == []
    assert await writes_landed(handshake_redis, tag) == (400, 0)


async def test_calls_made_while_the_link_reconnects_wait_for_auth_and_select(handshake_redis: str) -> None:
    tag = f"rehandshake-{uuid.uuid4().hex[:8]}"
    link = ScriptLink(handshake_redis)
    admin = aioredis.Redis.from_url(handshake_redis)
    try:
        before = await link.call(b"CLIENT", b"ID")
        # Redis closes the killed connection before it answers CLIENT KILL, so by the answer the link has
        # been told its connection is gone, and the burst's calls all arrive while it connects again.
        await admin.client_kill_filter(_id=before)
        outcomes = await burst_over_loop_turns(link, tag)
        after = await link.call(b"CLIENT", b"ID")
    finally:
        await link.aclose()
        await admin.aclose()
    assert after != before
    assert [str(o) for o in outcomes if o != b"OK"] == []
    assert await writes_landed(handshake_redis, tag) == (400, 0)
