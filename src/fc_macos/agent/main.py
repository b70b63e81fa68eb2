"""``fc-agent``: the HTTP service inside the Linux VM that owns every microVM.

    fc-agent --listen HOST:PORT --token-file FILE --state-dir DIR
             --firecracker-bin PATH [--image-dir DIR ...] [--nat | --no-nat]

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
import sys
from pathlib import Path

from aiohttp import web

from fc_macos import __version__
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


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="fc-agent", description="Serve Firecracker microVMs over HTTP.")
    parser.add_argument("--listen", default=DEFAULT_LISTEN, help=f"HOST:PORT to listen on (default {DEFAULT_LISTEN})")
    parser.add_argument("--token-file", type=Path, default=DEFAULT_TOKEN_FILE,
                        help=f"bearer token file, created (0600) when missing (default {DEFAULT_TOKEN_FILE})")
    parser.add_argument("--state-dir", type=Path, default=DEFAULT_STATE_DIR,
                        help=f"state.json, images/ and microvms/ live here (default {DEFAULT_STATE_DIR})")
    parser.add_argument("--firecracker-bin", default=DEFAULT_FIRECRACKER_BIN,
                        help="the Firecracker binary (default: 'firecracker' on PATH)")
    parser.add_argument("--image-dir", type=Path, action="append", default=[],
                        help="another directory to serve kernels and root filesystems from (repeatable)")
    parser.add_argument("--nat", action=argparse.BooleanOptionalAction, default=True,
                        help="masquerade microVM networks out of the default route with nft/iptables "
                        "(default: on; --no-nat: guests reach only this machine)")
    parser.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    parser.add_argument("--version", action="version", version=f"fc-agent {__version__}")
    return parser.parse_args(argv)  # fmt: skip


async def serve(settings: AgentSettings, host: str, port: int) -> None:
    """Run until SIGTERM/SIGINT, then shut down in the documented order."""
    app = create_app(settings)
    runner = AgentRunner(app, shutdown_timeout=SHUTDOWN_TIMEOUT_S, access_log=None)
    try:
        await runner.setup()  # starts the manager: reads state.json, reattaches
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
        site = web.TCPSite(runner, host, port)
        try:
            await site.start()
        except OSError as exc:
            raise ConfigError(
                f"cannot listen on {host}:{port}: {exc.strerror or exc}",
                hint="is another fc-agent running? Stop it, or pick another --listen HOST:PORT",
            ) from exc
        log.info("fc-agent %s listening on %s:%d (state in %s)", __version__, host, port, settings.state_dir)
        await stop.wait()
        log.info("shutting down; microVMs keep running")
    finally:
        await runner.cleanup()


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=args.log_level, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    try:
        host, port = parse_listen(args.listen)
    except ValueError as exc:
        print(f"fc-agent: --listen: {exc}", file=sys.stderr)
        return 2
    try:
        token = load_or_create_token(args.token_file)
        settings = AgentSettings(
            token=token,
            state_dir=args.state_dir.absolute(),
            firecracker_bin=args.firecracker_bin,
            image_dirs=tuple(args.image_dir),
            nat=args.nat,
        )
        asyncio.run(serve(settings, host, port))
    except FcMacosError as exc:
        print(f"fc-agent: {exc}", file=sys.stderr)
        return exc.exit_code
    return 0


if __name__ == "__main__":
    sys.exit(main())
