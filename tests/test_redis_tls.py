"""poolgate on `rediss://`: a real redis-server that speaks only TLS, with a certificate from a CA of the test's
own, named to the gateway by `?ssl_ca_certs=`. Both of poolgate's lines to Redis must take it: redis-py's pool
(queues, admin, usage) and the hot path's own script link (gateway/script_link.py)."""

from __future__ import annotations

import datetime
import ipaddress
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import openai
import pytest
from conftest import REQUIRE_REDIS
from processes import free_port, wait_until_listening

from fake_upstream import run_mock_upstream_in_thread
from gateway.cli import render_config_reference

KEY = "sk-tls-Aa01Bb"
PASSWORD = "tls-secret-Pw9"


@dataclass
class TlsRedis:
    port: int
    ca: Path
    password: str

    def url(self, db: int = 0, *, password: bool = False, ca: bool = True) -> str:
        credentials = f":{self.password}@" if password else ""
        query = f"?ssl_ca_certs={self.ca}" if ca else ""
        return f"rediss://{credentials}127.0.0.1:{self.port}/{db}{query}"

    def client(self, db: int = 0) -> object:
        import redis

        return redis.Redis.from_url(self.url(db, password=True))


def _certificates(directory: Path) -> tuple[Path, Path, Path]:
    """A CA, and a certificate for 127.0.0.1 it signed: (ca.pem, server.pem, server.key)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "poolgate test CA")])
    ca = (
        x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name).public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(x509.KeyUsage(digital_signature=True, content_commitment=False, key_encipherment=False,
                                     data_encipherment=False, key_agreement=False, key_cert_sign=True,
                                     crl_sign=True, encipher_only=False, decipher_only=False), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    server_key = ec.generate_private_key(ec.SECP256R1())
    server = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])).issuer_name(ca_name)
        .public_key(server_key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
                                                    x509.DNSName("localhost")]), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    paths = directory / "ca.pem", directory / "server.pem", directory / "server.key"
    paths[0].write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    paths[1].write_bytes(server.public_bytes(serialization.Encoding.PEM))
    paths[2].write_bytes(server_key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                                  serialization.NoEncryption()))
    return paths


@pytest.fixture
def tls_redis(tmp_path: Path) -> Iterator[TlsRedis]:
    """A redis-server with TLS only (`--port 0`), asking for a password, its certificate from the test's CA."""
    binary = shutil.which("redis-server")
    if binary is None:
        if REQUIRE_REDIS:
            pytest.fail("POOLGATE_REQUIRE_REDIS=1 but redis-server is not installed")
        pytest.skip("redis-server is not installed here (apt-get install redis-server); CI runs this test")
    try:
        import cryptography  # noqa: F401
    except ImportError:
        pytest.skip("the test makes its certificates with `cryptography`, which is not installed here")
    ca, cert, key = _certificates(tmp_path)
    port = free_port()
    process = subprocess.Popen(
        [binary, "--port", "0", "--tls-port", str(port), "--bind", "127.0.0.1", "--tls-cert-file", str(cert),
         "--tls-key-file", str(key), "--tls-ca-cert-file", str(ca), "--tls-auth-clients", "no",
         "--requirepass", PASSWORD, "--save", "", "--appendonly", "no", "--dir", str(tmp_path)],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    server = TlsRedis(port, ca, PASSWORD)
    deadline = time.monotonic() + 10
    while True:
        if process.poll() is not None:
            output = process.stdout.read() if process.stdout else ""
            if "TLS" in output and ("not supported" in output or "Unrecognized" in output):
                pytest.skip(f"this redis-server was built without TLS: {output.strip()[-200:]}")
            raise AssertionError(f"the TLS redis-server exited: {output[-500:]}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            if server.client().ping():  # type: ignore[attr-defined]
                break
        except Exception:
            if time.monotonic() > deadline:
                process.kill()
                raise
            time.sleep(0.05)
    yield server
    process.kill()
    process.communicate(timeout=10)


def _environment(**extra: str) -> dict[str, str]:
    names = {row.split("=")[0] for row in render_config_reference("env").splitlines() if not row.startswith("#")}
    return {**{k: v for k, v in os.environ.items() if k not in names}, **extra}


@pytest.fixture
def serve(tmp_path: Path) -> Iterator:
    """`poolgate serve` as a real process with the environment given; yields its URL, then stops it."""
    upstream = run_mock_upstream_in_thread()
    processes: list[subprocess.Popen[str]] = []

    def start(**env: str) -> tuple[str, subprocess.Popen[str]]:
        port = free_port()
        process = subprocess.Popen(
            [sys.executable, "-m", "gateway.cli", "serve", "--host", "127.0.0.1", "--port", str(port)],
            env=_environment(OPENAI_KEY=KEY, OPENAI_BASE_URL=upstream.url, CHECK_KEYS="false", **env),
            cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
        )
        processes.append(process)
        wait_until_listening(f"http://127.0.0.1:{port}/health", process)
        return f"http://127.0.0.1:{port}", process

    yield start
    for process in processes:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
        try:
            process.communicate(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.communicate(timeout=10)
    upstream.stop()


def _chat_through_the_sdk(url: str) -> None:
    client = openai.OpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0, timeout=20)
    reply = client.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "hi"}])
    assert reply.choices[0].message.content


@pytest.mark.parametrize("db", [0, 3])
def test_a_chat_is_served_over_rediss_and_its_usage_lands_in_that_store(tls_redis, serve, db):
    prefix = f"tls-{uuid.uuid4().hex[:8]}:"
    url, process = serve(REDIS_URL=tls_redis.url(db, password=True), REDIS_PREFIX=prefix)
    for _ in range(3):
        _chat_through_the_sdk(url)
    totals = tls_redis.client(db).hgetall(f"{prefix}usage:total")  # type: ignore[attr-defined]
    assert int(totals[b"prompts"]) == 3, "usage was counted in the TLS store, in the database the URL names"
    assert tls_redis.client(db).zcard(f"{prefix}leases") == 0  # type: ignore[attr-defined]
    process.send_signal(signal.SIGTERM)
    stderr = process.communicate(timeout=20)[1]
    assert PASSWORD not in stderr, "the Redis URL's password never appears in a log line"
    assert "Traceback" not in stderr


def test_a_server_certificate_from_an_unknown_ca_is_refused_without_showing_the_password(tls_redis):
    """Without `ssl_ca_certs` the system's CAs do not know the test's CA: poolgate must refuse to start (not talk
    to a Redis it cannot verify), say why in one line, and not print the URL's password."""
    proc = subprocess.run(
        [sys.executable, "-m", "gateway.cli", "serve", "--host", "127.0.0.1", "--port", str(free_port())],
        env=_environment(OPENAI_KEY=KEY, REDIS_URL=tls_redis.url(password=True, ca=False), CHECK_KEYS="false"),
        capture_output=True, text=True, timeout=30, cwd="/",
    )
    assert proc.returncode != 0
    assert "cannot use REDIS_URL" in proc.stderr and "certificate verify failed" in proc.stderr, proc.stderr
    assert PASSWORD not in proc.stderr + proc.stdout
