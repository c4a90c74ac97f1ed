"""Apple's root certificates, shipped: what an App Store purchase's signing chain must end in.

`AppleRootCA-G3.cer` is Apple Root CA - G3 (DER), the root of StoreKit 2's signed transactions, as
published at https://www.apple.com/certificateauthority/ (SHA-256 63:34:3A:BF:B8:9A:6A:03:EB:B5:7E:9B:3F:5F:
A7:BE:7C:4F:5C:75:6F:30:17:B3:A8:C4:88:C3:65:3E:91:79). `APPLE_ROOT_CERTS_DIR` names another folder
(e.g. when Apple adds a root).
"""

from __future__ import annotations

from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

SHIPPED = Path(__file__).parent


def apple_root_certificates(folder: str | Path = "") -> list[bytes]:
    """The root certificates as DER: every `.cer`, `.der`, `.crt` or `.pem` file in `folder` (default: shipped)."""
    roots = []
    base = Path(folder or SHIPPED)
    if not base.is_dir():
        return []
    for path in sorted(base.iterdir()):
        if path.suffix.lower() not in (".cer", ".der", ".pem", ".crt") or not path.is_file():
            continue
        data = path.read_bytes()
        if b"-----BEGIN CERTIFICATE-----" in data:
            data = x509.load_pem_x509_certificate(data).public_bytes(Encoding.DER)
        roots.append(data)
    return roots
