"""fc-agent's HTTPS: its certificate, made once, and the server's TLS context.

``fc-agent --tls`` without ``--cert``/``--key`` uses ``<state-dir>/tls/cert.pem``
and ``key.pem``; at first start they are made, self-signed (ECDSA P-256, ten
years), for this host's names and addresses (:func:`host_names`: host name,
FQDN, every interface address, localhost, 127.0.0.1, ::1, plus ``--san``).
The key is 0600 from the start. Clients pin the certificate's fingerprint
(:mod:`fc_macos.tls_pin`), so the names are for other tools (``curl --cacert``)
and the certificate is never replaced on its own: a new one would break every
pin. Delete both files to make a new one.

The certificate is made with the ``openssl`` program, which every Linux server
and the Tart VM image have, rather than the ``cryptography`` package: that one
is compiled (a wheel per architecture and libc), and fc-agent installs in the
Tart VM from the pure-Python wheels the host ships (:mod:`fc_macos.providers.wheels`).
"""

from __future__ import annotations

import fcntl
import ipaddress
import os
import shutil
import socket
import ssl
import struct
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

from fc_macos.errors import ConfigError
from fc_macos.tls_pin import fingerprint_of_pem

DAYS = 3650
SIOCGIFADDR = 0x8915


@dataclass(frozen=True)
class Certificate:
    """The certificate fc-agent serves: its files, its fingerprint, and whether
    this start made it."""

    cert: Path
    key: Path
    fingerprint: str
    created: bool = False


def default_paths(state_dir: Path) -> tuple[Path, Path]:
    """(certificate, key) in the state directory."""
    return state_dir / "tls" / "cert.pem", state_dir / "tls" / "key.pem"


def load_or_create(state_dir: Path, *, cert: Path | None = None, key: Path | None = None,
                   extra_names: tuple[str, ...] = ()) -> Certificate:
    """The certificate to serve. With ``cert`` and ``key`` (both or neither)
    those files, which must exist; otherwise the state directory's, made on
    first use. ConfigError (with a hint) for missing, unreadable or mismatched files."""
    if (cert is None) != (key is None):
        raise ConfigError("--cert and --key go together", hint="give both, or neither for a self-signed certificate")
    if cert is not None and key is not None:
        for path in (cert, key):
            if not path.is_file():
                raise ConfigError(f"{path} does not exist", hint="give existing PEM files to --cert/--key")
        return Certificate(cert, key, fingerprint_of_file(cert))
    cert, key = default_paths(state_dir)
    if cert.exists() and key.exists():
        return Certificate(cert, key, fingerprint_of_file(cert))
    if cert.exists() or key.exists():
        present = cert if cert.exists() else key
        raise ConfigError(f"{present} exists without its partner in {present.parent}",
                          hint=f"remove {present.parent} to make a new certificate (clients must pin it again)")
    generate(cert, key, host_names(extra_names))
    return Certificate(cert, key, fingerprint_of_file(cert), created=True)


def fingerprint_of_file(cert: Path) -> str:
    """The fingerprint of the PEM certificate in ``cert`` (ConfigError if unreadable)."""
    try:
        return fingerprint_of_pem(cert.read_text())
    except (OSError, ValueError) as exc:
        raise ConfigError(f"cannot read the certificate {cert}: {exc}", hint="give a PEM certificate") from exc


def generate(cert: Path, key: Path, names: list[str]) -> None:
    """Make a self-signed certificate for ``names`` (DNS names and IP addresses)
    with ``openssl``; both files appear together or not at all."""
    openssl = shutil.which("openssl")
    if openssl is None:
        raise ConfigError("fc-agent --tls needs the 'openssl' program to make its certificate",
                          hint="install it (apt-get install openssl), or give your own --cert and --key")
    cert.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    work = Path(tempfile.mkdtemp(prefix=".tls-", dir=cert.parent))
    try:
        new_key = work / "key.pem"
        new_key.touch(mode=0o600)  # openssl writes into it, never widening the mode
        new_cert = work / "cert.pem"
        argv = [openssl, "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
                "-nodes", "-keyout", str(new_key), "-out", str(new_cert), "-days", str(DAYS),
                "-subj", f"/CN={names[0]}/O=fc-agent", "-addext", "subjectAltName=" + subject_alt_names(names),
                "-addext", "basicConstraints=critical,CA:FALSE", "-addext", "extendedKeyUsage=serverAuth"]
        done = subprocess.run(argv, capture_output=True, text=True, check=False, timeout=60)
        if done.returncode != 0:
            raise ConfigError(f"openssl could not make the certificate: {done.stderr.strip()[-500:]}",
                              hint="give your own --cert and --key, or update openssl (1.1.1 or later)")
        os.chmod(new_key, 0o600)
        os.replace(new_key, key)
        os.replace(new_cert, cert)
    except OSError as exc:
        raise ConfigError(f"cannot write the certificate in {cert.parent}: {exc}",
                          hint="pass a writable --state-dir (or run fc-agent as root)") from exc
    finally:
        shutil.rmtree(work, ignore_errors=True)


def subject_alt_names(names: list[str]) -> str:
    """openssl's subjectAltName value: ``IP:`` for addresses, ``DNS:`` for the rest."""
    out = []
    for name in names:
        try:
            out.append(f"IP:{ipaddress.ip_address(name)}")
        except ValueError:
            out.append(f"DNS:{name}")
    return ",".join(out)


def host_names(extra: tuple[str, ...] = ()) -> list[str]:
    """This host's names and addresses, unique, host name first, then ``extra``."""
    names = [socket.gethostname(), socket.getfqdn(), *interface_addresses(), "localhost", "127.0.0.1", "::1", *extra]
    seen: list[str] = []
    for name in names:
        if name and name not in seen:
            seen.append(name)
    return seen


def interface_addresses() -> list[str]:
    """Every IPv4 and IPv6 address of this host's interfaces (Linux), link-local ones left out."""
    found: list[str] = []
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        for _index, name in socket.if_nameindex():
            try:
                answer = fcntl.ioctl(sock.fileno(), SIOCGIFADDR, struct.pack("256s", name.encode()[:15]))
            except OSError:
                continue  # no IPv4 address on it
            found.append(socket.inet_ntoa(answer[20:24]))
    try:
        lines = Path("/proc/net/if_inet6").read_text().splitlines()
    except OSError:
        lines = []
    for line in lines:
        address = ipaddress.ip_address(bytes.fromhex(line.split()[0]))
        if not address.is_link_local:
            found.append(str(address))
    return found


def server_context(certificate: Certificate) -> ssl.SSLContext:
    """The TLS context fc-agent serves with (TLS 1.2 or later)."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        context.load_cert_chain(certificate.cert, certificate.key)
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(f"cannot use the certificate {certificate.cert} with the key {certificate.key}: {exc}",
                          hint="check that the key belongs to the certificate and both are PEM") from exc
    return context
