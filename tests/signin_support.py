"""Offline stand-ins for Apple and Google, so sign-in is tested end to end without calling either.

- An Apple-shaped certificate chain of our own (P-256 root -> intermediate -> leaf, with Apple's OIDs on
  the intermediate and the leaf, key identifiers, validity covering `signedDate`): transactions signed
  with it pass the App Store Server Library's `SignedDataVerifier` with its strict checks on, when the
  gateway is given our root (`APPLE_ROOT_CERTS_DIR`).
- A fake App Store Server API on localhost, for legacy receipts: it checks the App Store Connect JWT the
  library signs, and answers a transaction id with a signed transaction.
- A minimal app receipt (PKCS#7-shaped ASN.1) holding a transaction id.
- An RSA key whose certificate a localhost server serves as Google does, and ID tokens signed with it.
"""

from __future__ import annotations

import base64
import datetime
import json
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import asn1
import jwt
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID

BUNDLE_ID = "org.example.chat"
APPLE_ID = 1234567890
JWT_SECRET = "test-session-secret-0123456789-abcdefghij"
GOOGLE_CLIENT_ID = "1234-test.apps.googleusercontent.com"
_LEAF_OID = x509.ObjectIdentifier("1.2.840.113635.100.6.11.1")
_INTERMEDIATE_OID = x509.ObjectIdentifier("1.2.840.113635.100.6.2.1")


def _now_ms() -> int:
    return int(time.time() * 1000)


@dataclass
class AppleChain:
    root_der: bytes
    x5c: list[str]  # leaf, intermediate, root (base64 DER), as Apple's header carries them
    leaf_key: ec.EllipticCurvePrivateKey

    def write_root(self, folder: Path) -> str:
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "root.cer").write_bytes(self.root_der)
        return str(folder)

    def sign(self, **overrides: Any) -> str:
        """A signed transaction (JWS) of BUNDLE_ID in Sandbox, live for a month; `overrides` change its fields."""
        now = _now_ms()
        payload: dict[str, Any] = {
            "transactionId": "2000000" + uuid.uuid4().hex[:9], "originalTransactionId": "2000000111111111",
            "bundleId": BUNDLE_ID, "productId": "org.example.chat.monthly", "purchaseDate": now - 60_000,
            "originalPurchaseDate": now - 60_000, "expiresDate": now + 30 * 86_400_000, "quantity": 1,
            "type": "Auto-Renewable Subscription", "inAppOwnershipType": "PURCHASED", "signedDate": now,
            "environment": "Sandbox", "appAccountToken": str(uuid.uuid4()),
        }
        payload.update(overrides)
        payload = {k: v for k, v in payload.items() if v is not None}
        return jwt.encode(payload, self.leaf_key, algorithm="ES256", headers={"x5c": self.x5c})


def _cert(subject: str, key: Any, issuer: str, issuer_key: Any, *, ca: bool, oid: x509.ObjectIdentifier | None,
          not_before: datetime.datetime, not_after: datetime.datetime) -> x509.Certificate:
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)])
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, issuer)]))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=ca, path_length=0 if ca and oid else None), critical=True)
        .add_extension(x509.KeyUsage(
            digital_signature=not ca, content_commitment=False, key_encipherment=False, data_encipherment=False,
            key_agreement=False, key_cert_sign=ca, crl_sign=ca, encipher_only=False, decipher_only=False),
            critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
    )
    if issuer_key is not key:
        builder = builder.add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer_key.public_key()), critical=False)
    if oid is not None:
        builder = builder.add_extension(x509.UnrecognizedExtension(oid, b"\x05\x00"), critical=False)
    return builder.sign(issuer_key, hashes.SHA256())


def make_apple_chain(*, intermediate_oid: bool = True) -> AppleChain:
    """Our own root -> intermediate -> leaf, shaped as Apple's, valid from a day ago for a year."""
    now = datetime.datetime.now(datetime.UTC)
    start, end = now - datetime.timedelta(days=1), now + datetime.timedelta(days=365)
    root_key, inter_key, leaf_key = (ec.generate_private_key(ec.SECP256R1()) for _ in range(3))
    root = _cert("Test Root", root_key, "Test Root", root_key, ca=True, oid=None, not_before=start, not_after=end)
    inter = _cert("Test WWDR", inter_key, "Test Root", root_key, ca=True,
                  oid=_INTERMEDIATE_OID if intermediate_oid else None, not_before=start, not_after=end)
    leaf = _cert("Test StoreKit", leaf_key, "Test WWDR", inter_key, ca=False, oid=_LEAF_OID,
                 not_before=start, not_after=end)
    der = [c.public_bytes(serialization.Encoding.DER) for c in (leaf, inter, root)]
    return AppleChain(der[2], [base64.b64encode(d).decode() for d in der], leaf_key)


def make_app_receipt(transaction_id: str) -> str:
    """A legacy app receipt as far as Apple's ReceiptUtility reads it: PKCS#7 around an in-app purchase."""
    def octets(build: Any) -> bytes:
        encoder = asn1.Encoder()
        encoder.start()
        build(encoder)
        return encoder.output()

    def string(value: str) -> Any:
        return lambda e: e.write(value.encode(), asn1.Numbers.UTF8String)

    def attribute(kind: int, inner: bytes) -> Any:
        def build(e: Any) -> None:
            e.enter(asn1.Numbers.Sequence)
            e.write(kind, asn1.Numbers.Integer)
            e.write(1, asn1.Numbers.Integer)
            e.write(inner, asn1.Numbers.OctetString)
            e.leave()
        return build

    def set_of(*items: Any) -> Any:
        def build(e: Any) -> None:
            e.enter(asn1.Numbers.Set)
            for item in items:
                item(e)
            e.leave()
        return build

    in_app = octets(set_of(attribute(1703, octets(string(transaction_id)))))
    payload = octets(set_of(attribute(17, in_app)))

    def receipt(e: Any) -> None:
        e.enter(asn1.Numbers.Sequence)
        e.write("1.2.840.113549.1.7.2", asn1.Numbers.ObjectIdentifier)
        e.enter(0, asn1.Classes.Context)
        e.enter(asn1.Numbers.Sequence)
        e.write(1, asn1.Numbers.Integer)
        e.enter(asn1.Numbers.Set)
        e.leave()
        e.enter(asn1.Numbers.Sequence)
        e.write("1.2.840.113549.1.7.1", asn1.Numbers.ObjectIdentifier)
        e.enter(0, asn1.Classes.Context)
        e.write(payload, asn1.Numbers.OctetString)
        e.leave()
        e.leave()
        e.leave()
        e.leave()
        e.leave()

    return base64.b64encode(octets(receipt)).decode()


@dataclass
class FakeAppStoreApi:
    """The App Store Server API's Get Transaction Info, for the transactions it is given."""

    url: str
    transactions: dict[str, str]  # transaction id -> signed transaction
    private_key_pem: str
    key_id: str
    issuer_id: str
    requests_seen: list[str] = field(default_factory=list)


@contextmanager
def fake_app_store_api() -> Iterator[FakeAppStoreApi]:
    key = ec.generate_private_key(ec.SECP256R1())
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption()).decode()
    api = FakeAppStoreApi("", {}, pem, "KEY123ABCD", str(uuid.uuid4()))

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            api.requests_seen.append(self.path)
            bearer = self.headers.get("Authorization", "").removeprefix("Bearer ")
            try:
                claims = jwt.decode(bearer, key.public_key(), algorithms=["ES256"], audience="appstoreconnect-v1",
                                    issuer=api.issuer_id)
                assert jwt.get_unverified_header(bearer)["kid"] == api.key_id and claims["bid"] == BUNDLE_ID
            except Exception:
                return self._answer(401, {"errorCode": 4010000, "errorMessage": "unauthenticated"})
            transaction_id = self.path.rsplit("/", 1)[-1]
            if transaction_id not in api.transactions:
                return self._answer(404, {"errorCode": 4040010, "errorMessage": "Transaction id not found."})
            return self._answer(200, {"signedTransactionInfo": api.transactions[transaction_id]})

        def _answer(self, status: int, body: dict[str, Any]) -> None:
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args: Any) -> None:
            pass

    with _serving(Handler) as url:
        api.url = url
        yield api


@dataclass
class FakeGoogle:
    """Google's certificate endpoint on localhost, and ID tokens signed with its key."""

    certs_url: str
    key: rsa.RSAPrivateKey
    kid: str
    fetches: list[str] = field(default_factory=list)

    def id_token(self, key: rsa.RSAPrivateKey | None = None, **overrides: Any) -> str:
        now = int(time.time())
        claims: dict[str, Any] = {
            "iss": "https://accounts.google.com", "aud": GOOGLE_CLIENT_ID, "sub": "1098765",
            "email": "ada@school.example", "email_verified": True, "name": "Ada", "iat": now - 10, "exp": now + 3600,
        }
        claims.update(overrides)
        claims = {k: v for k, v in claims.items() if v is not None}
        return jwt.encode(claims, key or self.key, algorithm="RS256", headers={"kid": self.kid})


@contextmanager
def fake_google() -> Iterator[FakeGoogle]:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    now = datetime.datetime.now(datetime.UTC)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "google-test")])
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=2)).sign(key, hashes.SHA256()))
    google = FakeGoogle("", key, uuid.uuid4().hex)
    certs = json.dumps({google.kid: cert.public_bytes(serialization.Encoding.PEM).decode()}).encode()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            google.fetches.append(self.path)
            self.send_response(200)
            self.send_header("content-type", "application/json")
            self.send_header("cache-control", "public, max-age=21600")
            self.send_header("content-length", str(len(certs)))
            self.end_headers()
            self.wfile.write(certs)

        def log_message(self, *args: Any) -> None:
            pass

    with _serving(Handler) as url:
        google.certs_url = url + "/oauth2/v1/certs"
        yield google


@contextmanager
def _serving(handler: type[BaseHTTPRequestHandler]) -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
