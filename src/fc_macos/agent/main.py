"""``fc-agent``: the HTTP service that owns every microVM on its machine.

    fc-agent --listen HOST:PORT --token-file FILE --state-dir DIR
             --firecracker-bin PATH [--image-dir DIR ...] [--nat | --no-nat]
             [--tls [--cert FILE --key FILE] [--san NAME ...]]
    fc-agent install-service [the same options] [--print | --dry-run]
    fc-agent fingerprint [--state-dir DIR | --cert FILE]

``--tls`` serves HTTPS with a certificate clients pin (:mod:`fc_macos.agent.tls`);
without it, plain HTTP, for the host-only and loopback networks of the tart
and local providers. At start fc-agent prints (stderr) where it listens, the
certificate's fingerprint and where the token is.

Shutdown order on SIGTERM/SIGINT: stop accepting connections, end console
viewers and log streams (waiting at most :data:`SHUTDOWN_TIMEOUT_S`), detach
from the microVMs. The microVMs keep running and a new agent with the same
state directory takes them over.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import ssl
import sys
from pathlib import Path

from aiohttp import web

from fc_macos import __version__
from fc_macos.agent import service, tls
from fc_macos.agent.app import create_app
from fc_macos.agent.protocol_errors import AgentRunner
from fc_macos.agent.auth import load_or_create_token
from fc_macos.agent.settings import (
    DEFAULT_FIRECRACKER_BIN,
    DEFAULT_LISTEN,
    DEFAULT_STATE_DIR,
    DEFAULT_TOKEN_FILE,
    AgentSettings,
    parse_listen,
)
from fc_macos.errors import ConfigError, FcMacosError

log = logging.getLogger("fc_agent")

SHUTDOWN_TIMEOUT_S = 5.0
EPILOG = """\
commands:
  fc-agent [options]                  serve (the default)
  fc-agent install-service [options]  write and enable a systemd unit that serves with these options
  fc-agent fingerprint                print the TLS certificate's fingerprint

a server on the network (clients pin the certificate, like SSH known hosts):
  sudo fc-agent install-service --tls --listen 0.0.0.0:8443
  # on the client, with a copy of /etc/fc-agent/token:
  fc-macos context add lab --url https://HOST:8443 --token-file token --fingerprint SHA256:...
"""


def add_agent_options(parser: argparse.ArgumentParser) -> None:
    """The options that say how fc-agent serves (shared by serving and install-service)."""
    parser.add_argument("--listen", default=DEFAULT_LISTEN, help=f"HOST:PORT to listen on (default {DEFAULT_LISTEN})")
    parser.add_argument("--token-file", type=Path, default=DEFAULT_TOKEN_FILE,
                        help=f"bearer token file, created (0600) when missing (default {DEFAULT_TOKEN_FILE})")
    parser.add_argument("--state-dir", type=Path, default=DEFAULT_STATE_DIR,
                        help=f"state.json, images/ and microvms/ (one directory and record per microVM) live here (default {DEFAULT_STATE_DIR})")
    parser.add_argument("--firecracker-bin", default=DEFAULT_FIRECRACKER_BIN,
                        help="the Firecracker binary (default: 'firecracker' on PATH); one installed through "
                        "PUT /v1/firecracker (<state-dir>/bin/firecracker, 'fc-macos setup --firecracker-bin' on "
                        "a client) wins over it while it exists")
    parser.add_argument("--image-dir", type=Path, action="append", default=[],
                        help="another directory to serve kernels and root filesystems from (repeatable)")
    parser.add_argument("--nat", action=argparse.BooleanOptionalAction, default=True,
                        help="masquerade microVM networks out of the default route with nft/iptables "
                        "(default: on; --no-nat: guests reach only this machine)")
    parser.add_argument("--tls", action="store_true",
                        help="serve HTTPS (for a server on the network); the certificate is "
                        "<state-dir>/tls/cert.pem, self-signed and made at first start, unless --cert/--key")
    parser.add_argument("--cert", type=Path, help="with --tls: your own PEM certificate (with --key)")
    parser.add_argument("--key", type=Path, help="with --tls: the PEM private key of --cert")
    parser.add_argument("--san", action="append", default=[], metavar="NAME",
                        help="with --tls: another DNS name or address for the self-signed certificate, besides "
                        "this host's names and addresses (repeatable; used when the certificate is made)")
    parser.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"])


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="fc-agent", description="Serve Firecracker microVMs over HTTP(S).",
                                     epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_agent_options(parser)
    parser.add_argument("--version", action="version", version=f"fc-agent {__version__}")
    args = parser.parse_args(argv)
    _check_tls_options(parser, args)
    return args


def _check_tls_options(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    if not args.tls and (args.cert or args.key or args.san):
        parser.error("--cert, --key and --san need --tls")


def agent_args(args: argparse.Namespace) -> list[str]:
    """``args`` back as fc-agent options (absolute paths), for the service's command line."""
    out = ["--listen", args.listen, "--token-file", str(args.token_file.absolute()),
           "--state-dir", str(args.state_dir.absolute()), "--firecracker-bin", args.firecracker_bin]
    for image_dir in args.image_dir:
        out += ["--image-dir", str(image_dir.absolute())]
    if not args.nat:
        out.append("--no-nat")
    if args.tls:
        out.append("--tls")
        if args.cert and args.key:
            out += ["--cert", str(args.cert.absolute()), "--key", str(args.key.absolute())]
        for name in args.san:
            out += ["--san", name]
    if args.log_level != "INFO":
        out += ["--log-level", args.log_level]
    return out


async def serve(settings: AgentSettings, host: str, port: int, ssl_context: ssl.SSLContext | None = None) -> None:
    """Run until SIGTERM/SIGINT, then shut down in the documented order."""
    app = create_app(settings)
    runner = AgentRunner(app, shutdown_timeout=SHUTDOWN_TIMEOUT_S, access_log=None)
    try:
        await runner.setup()  # starts the manager: reads the microVM records, reattaches
    except OSError as exc:
        raise ConfigError(
            f"cannot use the state directory {settings.state_dir}: {exc}",
            hint="pass a writable --state-dir (or run fc-agent as root for /var/lib/fc-agent)",
        ) from exc
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        site = web.TCPSite(runner, host, port, ssl_context=ssl_context)
        try:
            await site.start()
        except OSError as exc:
            raise ConfigError(
                f"cannot listen on {host}:{port}: {exc.strerror or exc}",
                hint="is another fc-agent running? Stop it, or pick another --listen HOST:PORT",
            ) from exc
        log.info("fc-agent %s listening on %s:%d (%s, state in %s)", __version__, host, port,
                 "HTTPS" if ssl_context else "HTTP", settings.state_dir)
        await stop.wait()
        log.info("shutting down; microVMs keep running")
    finally:
        await runner.cleanup()


def banner(host: str, port: int, token_file: Path, certificate: tls.Certificate | None) -> str:
    """What fc-agent prints at start: where it listens, its certificate, its token."""
    scheme = "https" if certificate else "http"
    lines = [f"fc-agent {__version__} serves {scheme.upper()} on {host}:{port}",
             f"token: {token_file.absolute()} (copy it to the client)"]
    if certificate:
        made = "made now" if certificate.created else "kept from an earlier start"
        lines += [f"certificate: {certificate.cert} ({made})",
                  f"fingerprint: {certificate.fingerprint}",
                  "on a client: fc-macos context add NAME "
                  f"--url https://{tls.host_names()[0] if host in ('0.0.0.0', '::', '') else host}:{port} "
                  f"--token-file TOKEN-COPY --fingerprint {certificate.fingerprint}"]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args_list = sys.argv[1:] if argv is None else argv
    if args_list[:1] == ["install-service"]:
        return install_service_main(args_list[1:])
    if args_list[:1] == ["fingerprint"]:
        return fingerprint_main(args_list[1:])
    args = parse_args(args_list)
    logging.basicConfig(level=args.log_level, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    try:
        host, port = parse_listen(args.listen)
    except ValueError as exc:
        print(f"fc-agent: --listen: {exc}", file=sys.stderr)
        return 2
    try:
        token = load_or_create_token(args.token_file)
        state_dir = args.state_dir.absolute()
        certificate = None
        ssl_context = None
        if args.tls:
            certificate = tls.load_or_create(state_dir, cert=args.cert, key=args.key, extra_names=tuple(args.san))
            ssl_context = tls.server_context(certificate)
        settings = AgentSettings(
            token=token,
            state_dir=state_dir,
            firecracker_bin=args.firecracker_bin,
            image_dirs=tuple(args.image_dir),
            nat=args.nat,
        )
        print(banner(host, port, args.token_file, certificate), file=sys.stderr, flush=True)
        asyncio.run(serve(settings, host, port, ssl_context))
    except FcMacosError as exc:
        print(f"fc-agent: {exc}", file=sys.stderr)
        return exc.exit_code
    return 0


def install_service_main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="fc-agent install-service",
        description="Write a systemd unit that runs fc-agent with the options given, then enable and (re)start "
        "it. Stopping or restarting the service leaves the microVMs running.",
        epilog="examples:\n  sudo fc-agent install-service --tls --listen 0.0.0.0:8443\n"
        "  fc-agent install-service --tls --print        # the unit, nothing written",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    add_agent_options(parser)
    parser.add_argument("--unit-file", type=Path, default=service.UNIT_FILE,
                        help=f"where to write the unit (default {service.UNIT_FILE})")
    what = parser.add_mutually_exclusive_group()
    what.add_argument("--print", dest="print_only", action="store_true", help="print the unit; write nothing")
    what.add_argument("--dry-run", action="store_true", help="print the unit and what would be written and run")
    args = parser.parse_args(argv)
    _check_tls_options(parser, args)
    try:
        parse_listen(args.listen)
    except ValueError as exc:
        parser.error(f"--listen: {exc}")
    unit = service.unit_text(service.exec_start(agent_args(args)), tls=args.tls)
    if args.print_only:
        print(unit, end="")
        return 0
    try:
        done = service.install(unit, args.unit_file, dry_run=args.dry_run)
    except FcMacosError as exc:
        print(f"fc-agent: {exc}", file=sys.stderr)
        return exc.exit_code
    if args.dry_run:
        print(unit)
    print("\n".join(done))
    if not args.dry_run:
        print(f"see it with 'systemctl status {service.SERVICE}' and 'journalctl -u {service.SERVICE}' "
              "(it prints its fingerprint there)")
    return 0


def fingerprint_main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="fc-agent fingerprint",
                                     description="Print the fingerprint of fc-agent's TLS certificate, the one "
                                     "'fc-macos context add --fingerprint' takes.")
    parser.add_argument("--state-dir", type=Path, default=DEFAULT_STATE_DIR,
                        help=f"the agent's state directory (default {DEFAULT_STATE_DIR})")
    parser.add_argument("--cert", type=Path, help="a certificate of your own (fc-agent --cert)")
    args = parser.parse_args(argv)
    cert = args.cert or tls.default_paths(args.state_dir.absolute())[0]
    if not cert.is_file():
        print(f"fc-agent: no certificate at {cert}\nHint: start 'fc-agent --tls' once to make it "
              "(or pass the --state-dir / --cert it uses)", file=sys.stderr)
        return 1
    try:
        print(tls.fingerprint_of_file(cert))
    except FcMacosError as exc:
        print(f"fc-agent: {exc}", file=sys.stderr)
        return exc.exit_code
    return 0


if __name__ == "__main__":
    sys.exit(main())
