"""fc-agent's certificate (made with the openssl program) and ``--tls`` on the command line."""

from __future__ import annotations

import ipaddress
import ssl
import subprocess
from pathlib import Path

import pytest

from fc_macos.agent import tls
from fc_macos.agent.main import main
from fc_macos.errors import ConfigError
from fc_macos.tls_pin import fingerprint_of_pem


def san_of(cert: Path) -> set[str]:
    """The certificate's subject alternative names as openssl reads them (addresses normalized)."""
    text = subprocess.run(["openssl", "x509", "-in", str(cert), "-noout", "-ext", "subjectAltName"],
                          capture_output=True, text=True, check=True).stdout
    names = set()
    for entry in text.splitlines()[1].split(","):
        kind, _, value = entry.strip().partition(":")
        names.add(str(ipaddress.ip_address(value)) if kind == "IP Address" else value)
    return names


def test_first_start_makes_a_certificate_for_this_host_and_keeps_it(tmp_path: Path) -> None:
    made = tls.load_or_create(tmp_path, extra_names=("lab.example", "203.0.113.7"))
    assert made.created and made.cert == tmp_path / "tls" / "cert.pem"
    assert made.key.stat().st_mode & 0o777 == 0o600
    assert (tmp_path / "tls").stat().st_mode & 0o077 == 0
    assert made.fingerprint == fingerprint_of_pem(made.cert.read_text())
    san = san_of(made.cert)
    assert san == {*tls.host_names(), "lab.example", "203.0.113.7"}
    assert {"localhost", "127.0.0.1", "::1"} <= san
    assert not [p for p in (tmp_path / "tls").iterdir() if p.name.startswith(".")]  # no temporary left
    again = tls.load_or_create(tmp_path)
    assert not again.created and again.fingerprint == made.fingerprint
    context = tls.server_context(again)
    assert context.minimum_version == ssl.TLSVersion.TLSv1_2


def test_host_names_have_the_host_name_and_every_interface_address() -> None:
    names = tls.host_names()
    assert names[0] and "127.0.0.1" in names and "localhost" in names and len(names) == len(set(names))
    routes = subprocess.run(["ip", "-4", "-o", "addr", "show"], capture_output=True, text=True, check=True).stdout
    for line in routes.splitlines():
        address = line.split()[3].split("/")[0]
        assert address in names


def test_given_cert_and_key_are_used_and_checked(tmp_path: Path) -> None:
    made = tls.load_or_create(tmp_path / "a")
    own = tls.load_or_create(tmp_path / "x", cert=made.cert, key=made.key)
    assert own.fingerprint == made.fingerprint and not (tmp_path / "x").exists()
    other = tls.load_or_create(tmp_path / "b")
    with pytest.raises(ConfigError, match="cannot use the certificate") as caught:
        tls.server_context(tls.Certificate(made.cert, other.key, made.fingerprint))
    assert caught.value.hint
    with pytest.raises(ConfigError, match="go together"):
        tls.load_or_create(tmp_path, cert=made.cert)
    with pytest.raises(ConfigError, match="does not exist"):
        tls.load_or_create(tmp_path, cert=tmp_path / "none.pem", key=made.key)


def test_a_lone_key_is_not_replaced_silently(tmp_path: Path) -> None:
    made = tls.load_or_create(tmp_path)
    made.cert.unlink()
    with pytest.raises(ConfigError, match="without its partner") as caught:
        tls.load_or_create(tmp_path)
    assert "pin it again" in (caught.value.hint or "")


def test_without_openssl_the_error_says_what_to_do(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    with pytest.raises(ConfigError, match="needs the 'openssl' program") as caught:
        tls.load_or_create(tmp_path / "s")
    assert "--cert" in (caught.value.hint or "")
    assert not (tmp_path / "s" / "tls" / "key.pem").exists()


def test_cert_without_tls_is_a_usage_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as caught:
        main(["--cert", str(tmp_path / "c.pem"), "--key", str(tmp_path / "k.pem")])
    assert caught.value.code == 2 and "need --tls" in capsys.readouterr().err


def test_fingerprint_command_prints_the_pinned_form(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["fingerprint", "--state-dir", str(tmp_path)]) == 1
    assert "fc-agent --tls" in capsys.readouterr().err
    made = tls.load_or_create(tmp_path)
    assert main(["fingerprint", "--state-dir", str(tmp_path)]) == 0
    printed = capsys.readouterr().out.strip()
    assert printed == made.fingerprint
    openssl = subprocess.run(f"openssl x509 -in {made.cert} -outform DER | openssl dgst -sha256 -binary | base64",
                             shell=True, capture_output=True, text=True, check=True).stdout.strip()
    assert printed == "SHA256:" + openssl.rstrip("=")
