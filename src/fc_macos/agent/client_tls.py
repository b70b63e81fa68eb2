"""TLS for :class:`~fc_macos.agent.client.AgentClient`: the pinned connector and the
errors of a connection that cannot be trusted or made.

A context's endpoint pins the agent's certificate: the session's connector
gets ``ssl=aiohttp.Fingerprint(digest)``, with which aiohttp skips chain and
host name checks and compares the SHA-256 of the certificate the server sent
with the pin after the handshake (pin only, like SSH's known hosts).
:func:`tls_error` turns aiohttp's TLS failures into :class:`AgentTLSError`
with the fingerprints and the command that fixes it; :func:`plain_http_to_tls`
finds out, after a plain-HTTP connection was dropped, whether the port speaks
TLS (the agent runs with ``--tls``).
"""

from __future__ import annotations

import asyncio
import ssl
from urllib.parse import urlsplit

import aiohttp

from fc_macos.errors import AgentTLSError
from fc_macos.tls_pin import fingerprint_of, fingerprint_of_digest, parse, unverified_client_context

PROBE_TIMEOUT_S = 3.0


def connector_ssl(fingerprint: str | None) -> aiohttp.Fingerprint | bool:
    """The connector's ``ssl``: the pin, or the default checks without one."""
    return aiohttp.Fingerprint(parse(fingerprint)) if fingerprint else True


def _where(url: str) -> tuple[str, int, str]:
    parts = urlsplit(url)
    host = parts.hostname or "?"
    port = parts.port or (443 if parts.scheme == "https" else 80)
    return host, port, f"{host}:{port}"


def _context_fix(context: str | None, url: str, fingerprint: str) -> str:
    name = context or "NAME"
    return (f"fc-macos context add {name} --url {url} --token-file TOKEN-FILE --fingerprint {fingerprint}"
            + (" --force" if context else ""))


def tls_error(exc: BaseException, url: str, context: str | None) -> AgentTLSError | None:
    """The AgentTLSError ``exc`` stands for, or None when it is no TLS failure."""
    host, port, where = _where(url)
    if isinstance(exc, aiohttp.ServerFingerprintMismatch):
        got = fingerprint_of_digest(exc.got)
        pinned = fingerprint_of_digest(exc.expected)
        owner = f"context '{context}'" if context else "endpoint"
        return AgentTLSError(
            f"the certificate of {where} is not the pinned one: it is {got}, the {owner} pins {pinned}. "
            "Another machine may be answering there (or intercepting), or the agent made a new certificate",
            hint="on that host, 'fc-agent fingerprint' prints the agent's own; if it is the new one, pin it: "
            + _context_fix(context, url, got), code="certificate_mismatch")
    if isinstance(exc, aiohttp.ClientConnectorCertificateError):
        return AgentTLSError(f"the certificate of {where} cannot be verified: {exc.certificate_error}",
                             hint="pin it instead: " + _context_fix(context, url, "SHA256:..."))
    if isinstance(exc, (aiohttp.ClientConnectorSSLError, aiohttp.ClientSSLError)) or isinstance(
            getattr(exc, "os_error", None), ssl.SSLError):
        reason = getattr(getattr(exc, "os_error", None), "reason", None) or "handshake failed"
        return AgentTLSError(
            f"{where} does not speak HTTPS (the TLS handshake failed: {str(reason).lower().replace('_', ' ')}): "
            "it may be an fc-agent serving plain HTTP, started without --tls",
            hint=f"on {host}, start it with 'fc-agent --tls' (or 'fc-agent install-service --tls'), "
            "then pin the fingerprint it prints", code="tls_required")
    return None


async def plain_http_to_tls(exc: BaseException, url: str) -> AgentTLSError | None:
    """After ``exc`` on a plain ``http://`` URL: AgentTLSError if that port
    speaks TLS (a plain request to ``fc-agent --tls``), else None."""
    if urlsplit(url).scheme != "http" or not isinstance(
            exc, (aiohttp.ServerDisconnectedError, aiohttp.ClientOSError)):
        return None
    host, port, where = _where(url)
    try:
        _reader, writer = await asyncio.wait_for(
            asyncio.open_connection(host, port, ssl=unverified_client_context(), server_hostname=host),
            PROBE_TIMEOUT_S)
    except (OSError, asyncio.TimeoutError, ssl.SSLError):
        return None
    try:
        sslobj = writer.get_extra_info("ssl_object")
        der = sslobj.getpeercert(binary_form=True) if sslobj is not None else None
    finally:
        writer.close()
    if not der:
        return None
    fingerprint = fingerprint_of(der)
    https_url = f"https://{host}:{port}"
    return AgentTLSError(
        f"{where} serves HTTPS (fc-agent --tls), not plain HTTP; its certificate is {fingerprint}",
        hint=f"use {https_url} with the certificate pinned: fc-macos context add NAME --url {https_url} "
        f"--token-file TOKEN-FILE --fingerprint {fingerprint} (check it on that host with 'fc-agent fingerprint')",
        code="tls_required")
