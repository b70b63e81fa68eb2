"""Certificate fingerprints, SSH-style, shared by fc-agent and its clients.

A fingerprint is ``SHA256:`` + the unpadded base64 of the SHA-256 of the
certificate's DER bytes (the form ``ssh-keygen -l`` shows for keys). fc-agent
prints it at start; ``fc-macos context add --fingerprint`` takes it and pins it:
the client then trusts exactly that certificate, with no CA and no host name
check. The same text on the server::

    openssl x509 -in cert.pem -outform DER | openssl dgst -sha256 -binary | base64 | tr -d =

:func:`peer_certificate` asks a server for its certificate without trusting it
(to show the fingerprint before pinning). Standard library only: the CLI
imports this module on its start path.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import socket
import ssl

from fc_macos.errors import AgentTLSError, AgentUnreachable, UsageError

PREFIX = "SHA256:"
PROBE_TIMEOUT_S = 5.0
FORMAT_HINT = ("give it as fc-agent prints it at start: 'SHA256:' and 43 base64 characters "
               "(on the server: 'fc-agent fingerprint')")


def fingerprint_of(der: bytes) -> str:
    """The fingerprint of a certificate given as DER bytes."""
    return fingerprint_of_digest(hashlib.sha256(der).digest())


def fingerprint_of_digest(digest: bytes) -> str:
    """The fingerprint for a certificate's SHA-256 digest (what aiohttp reports)."""
    return PREFIX + base64.b64encode(digest).decode().rstrip("=")


def fingerprint_of_pem(pem: str) -> str:
    """The fingerprint of a PEM certificate (the first one in ``pem``)."""
    return fingerprint_of(ssl.PEM_cert_to_DER_cert(pem))


def parse(text: str) -> bytes:
    """The 32-byte SHA-256 digest a fingerprint stands for; UsageError (with
    the expected form) for anything else, hex included."""
    value = text.strip()
    if not value.startswith(PREFIX):
        raise UsageError(f"{text!r} is not a certificate fingerprint", hint=FORMAT_HINT)
    body = value[len(PREFIX):].rstrip("=")
    try:
        digest = base64.b64decode(body + "=" * (-len(body) % 4), validate=True)
    except (binascii.Error, ValueError):
        digest = b""
    if len(digest) != 32:
        raise UsageError(f"{text!r} is not a SHA-256 certificate fingerprint", hint=FORMAT_HINT)
    return digest


def normalize(text: str) -> str:
    """``text`` in the one form fc-macos shows and stores (UsageError if malformed)."""
    return fingerprint_of_digest(parse(text))


def unverified_client_context() -> ssl.SSLContext:
    """A client TLS context that checks neither the chain nor the host name:
    what stands in for both is the pinned fingerprint, checked after the handshake."""
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    return context


def peer_certificate(host: str, port: int, *, timeout: float = PROBE_TIMEOUT_S) -> bytes:
    """The DER certificate the TLS server at ``host:port`` presents (not trusted,
    not checked). AgentUnreachable when there is no connection, AgentTLSError
    when the server does not speak TLS there."""
    where = f"{host}:{port}"
    try:
        raw = socket.create_connection((host, port), timeout=timeout)
    except socket.gaierror as exc:
        raise AgentUnreachable(f"cannot reach {where}: cannot resolve the host name {host!r}",
                               hint="check the host in --url") from exc
    except OSError as exc:
        reason = "no answer in time" if isinstance(exc, TimeoutError) else (exc.strerror or str(exc)).lower()
        raise AgentUnreachable(f"cannot reach {where}: {reason}",
                               hint=f"is fc-agent running there and port {port} open? "
                               "(on that host: 'systemctl status fc-agent')") from exc
    try:
        with unverified_client_context().wrap_socket(raw, server_hostname=host) as tls:
            der = tls.getpeercert(binary_form=True)
    except (ssl.SSLError, OSError) as exc:
        raw.close()
        raise AgentTLSError(f"{where} does not speak TLS ({_ssl_reason(exc)}): it is not an fc-agent started "
                            "with --tls", hint="start it on that host with 'fc-agent --tls', "
                            "or check the port in --url") from exc
    if not der:
        raise AgentTLSError(f"{where} presented no certificate", hint="is it fc-agent --tls?")
    return der


def _ssl_reason(exc: BaseException) -> str:
    if isinstance(exc, ssl.SSLError) and exc.reason:
        return exc.reason.lower().replace("_", " ")
    return str(exc) or type(exc).__name__


__all__ = ["PREFIX", "fingerprint_of", "fingerprint_of_digest", "fingerprint_of_pem", "normalize", "parse", "peer_certificate",
           "unverified_client_context"]
