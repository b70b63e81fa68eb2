"""The checksum of file transfers (``get`` and ``put``): ``"crc32"`` or ``"sha256"``.

The checksum guards the transfer (relays, framing, truncation), not against the guest,
which writes the content itself. CRC-32 (IEEE, exactly :func:`zlib.crc32`) is the
standard check for that and costs a guest CPU without hash instructions (an emulated one
above all) a small fraction of SHA-256, so fc-macos asks for it by default
(:data:`DEFAULT_CHECKSUM`). A guest agent that predates the choice ignores the request
field and answers without ``checksum``: then the transfer is sha256, as it always was.
See ``docs/guest-agent-protocol.md`` (get, put).
"""

from __future__ import annotations

import hashlib
import zlib
from collections.abc import Mapping
from typing import Any, Protocol

from fc_macos.errors import ValidationError

from .errors import GuestProtocolError

CHECKSUMS = ("crc32", "sha256")
"""The algorithms of the protocol, as named on the wire (request, RES, FILE_END key)."""

DEFAULT_CHECKSUM = "crc32"
"""What this package's clients ask for."""

ABSENT = "sha256"
"""What a get/put RES without ``checksum`` (an older guest agent) means."""


class Checksum(Protocol):
    """A running checksum: feed bytes, read the lowercase hex (hashlib's shape)."""

    def update(self, data: bytes, /) -> None: ...

    def hexdigest(self) -> str: ...


class Crc32:
    """CRC-32 as :class:`Checksum`: ``hexdigest`` is the 8 lowercase hex digits of
    :func:`zlib.crc32` over everything fed."""

    def __init__(self) -> None:
        self._crc = 0

    def update(self, data: bytes, /) -> None:
        self._crc = zlib.crc32(data, self._crc)

    def hexdigest(self) -> str:
        return f"{self._crc:08x}"


def require_known(name: str) -> str:
    """``name`` if it is one of :data:`CHECKSUMS`, else ValidationError (before anything
    is sent: an older guest agent would silently use sha256 instead)."""
    if name not in CHECKSUMS:
        raise ValidationError(f"unknown transfer checksum {name!r}",
                              hint=f"use one of {', '.join(CHECKSUMS)} (default {DEFAULT_CHECKSUM})")
    return name


def answered(res: Mapping[str, Any]) -> str:
    """The checksum a get/put RES names (:data:`ABSENT` when it names none); a name this
    package does not know is a GuestProtocolError."""
    name = res.get("checksum", ABSENT)
    if name not in CHECKSUMS:
        raise GuestProtocolError(f"the guest agent answered with an unknown checksum {name!r}")
    return str(name)


def new_checksum(name: str) -> Checksum:
    """A fresh running checksum of algorithm ``name`` (one of :data:`CHECKSUMS`)."""
    return Crc32() if require_known(name) == "crc32" else hashlib.sha256()


__all__ = ["ABSENT", "CHECKSUMS", "DEFAULT_CHECKSUM", "Checksum", "Crc32", "answered", "new_checksum",
           "require_known"]
