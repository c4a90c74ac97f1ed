"""The `/login` page in headless Chromium: Google's button hands the page a credential, the page trades it at
`/token` and shows the person their token.

Google is never called: Chromium is told that accounts.google.com is a localhost HTTPS server of ours, whose
`/gsi/client` plays Google's button (it calls the page's `data-callback` with an ID token signed by the fake
Google's key). So the page's own script, its CSP (which admits only Google's script and its own nonce) and
the sign-in route are what is tested. Skipped (saying why) when Chromium is not installed.
"""

from __future__ import annotations

import datetime
import os
import ssl
import subprocess
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from signin_support import GOOGLE_CLIENT_ID, JWT_SECRET, fake_google
from test_status_page_browser import CHROMIUM, QUIET_FLAGS

# Google's button, played: hand the page's callback a credential, as Google's script does after a sign-in.
BUTTON = """(function () {
  var onload = document.getElementById("g_id_onload");
  if (onload.getAttribute("data-client_id") !== "CLIENT_ID") { return; }
  window[onload.getAttribute("data-callback")]({credential: "CREDENTIAL", select_by: "btn"});
})();"""


@pytest.fixture
def chromium() -> str:
    if CHROMIUM is None:
        if os.environ.get("POOLGATE_REQUIRE_CHROMIUM") == "1":
            pytest.fail("POOLGATE_REQUIRE_CHROMIUM=1 but chromium is not installed")
        pytest.skip("chromium is not installed here (apt-get install chromium); CI runs this test")
    return CHROMIUM


@pytest.fixture
def google_script_host(tmp_path: Path) -> Iterator[tuple[int, dict[str, str]]]:
    """An HTTPS server standing in for accounts.google.com: (its port, {"script": what /gsi/client serves})."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "accounts.google.com")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName("accounts.google.com")]), critical=False)
            .sign(key, hashes.SHA256()))
    (tmp_path / "cert.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (tmp_path / "key.pem").write_bytes(key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    served = {"script": ""}

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = served["script"].encode() if self.path.startswith("/gsi/client") else b""
            self.send_response(200 if body else 404)
            self.send_header("content-type", "text/javascript")
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(tmp_path / "cert.pem", tmp_path / "key.pem")
    server.socket = context.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server.server_address[1], served
    server.shutdown()
    server.server_close()


def test_the_login_page_trades_googles_credential_for_a_token_and_shows_it(
        start_gateway, chromium, google_script_host, tmp_path):
    port, served = google_script_host
    with fake_google() as google:
        gateway = start_gateway(OPENAI_KEY="sk-real-openai-key-1234", GATEKEEPER="google", JWT_SECRET=JWT_SECRET,
                                GOOGLE_CLIENT_ID=GOOGLE_CLIENT_ID, GOOGLE_CERTS_URL=google.certs_url,
                                GOOGLE_ALLOWED_DOMAINS="school.example")
        served["script"] = BUTTON.replace("CLIENT_ID", GOOGLE_CLIENT_ID).replace(
            "CREDENTIAL", google.id_token(email="ada@school.example"))
        result = subprocess.run(
            [chromium, *QUIET_FLAGS, f"--user-data-dir={tmp_path / 'profile'}", "--ignore-certificate-errors",
             f"--host-resolver-rules=MAP accounts.google.com:443 127.0.0.1:{port}", "--virtual-time-budget=15000",
             "--dump-dom", gateway.url + "/login"],
            capture_output=True, text=True, timeout=90,
        )
    dom = result.stdout
    assert 'id="email">ada@school.example</strong>' in dom, result.stderr[-2000:]
    assert '<section id="token-box">' in dom  # shown: no longer hidden
    assert '<p id="problem" class="bad" role="alert" hidden="">' in dom  # and no error
    assert "/proxy/openai" in dom
