"""Certificate fingerprints: one form shown, stored and accepted (``SHA256:`` + unpadded base64)."""

from __future__ import annotations

import base64
import hashlib

import pytest

from fc_macos import tls_pin
from fc_macos.errors import UsageError

DER = b"not really a certificate, but bytes to hash"
DIGEST = hashlib.sha256(DER).digest()


def test_the_form_is_ssh_s() -> None:
    shown = tls_pin.fingerprint_of(DER)
    assert shown == "SHA256:" + base64.b64encode(DIGEST).decode().rstrip("=") and len(shown) == 7 + 43
    assert tls_pin.parse(shown) == DIGEST
    assert tls_pin.normalize(f"  {shown}= ") == shown


@pytest.mark.parametrize("text", [
    DIGEST.hex(), ":".join(f"{b:02X}" for b in DIGEST), "SHA256:" + DIGEST.hex(), "SHA256:abc", "SHA256:@@@@",
    "MD5:" + base64.b64encode(DIGEST).decode(), "",
])
def test_anything_else_is_refused_with_the_form_in_the_hint(text: str) -> None:
    with pytest.raises(UsageError) as caught:
        tls_pin.parse(text)
    assert "SHA256:" in (caught.value.hint or "") and "fc-agent fingerprint" in (caught.value.hint or "")
