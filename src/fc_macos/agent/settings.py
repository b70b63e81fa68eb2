"""fc-agent's settings: where it listens, its token, state and image directories.

One frozen value built by :mod:`fc_macos.agent.main` from the command line (or
by tests directly) and handed to :func:`fc_macos.agent.app.create_app`.
"""

from __future__ import annotations

import os
import platform
from dataclasses import dataclass, field
from pathlib import Path

DEFAULT_LISTEN = "0.0.0.0:8080"
DEFAULT_TOKEN_FILE = Path("/etc/fc-agent/token")
DEFAULT_STATE_DIR = Path("/var/lib/fc-agent")
DEFAULT_FIRECRACKER_BIN = "firecracker"
#: Largest request body the agent reads (413 beyond it).
MAX_BODY_BYTES = 1024 * 1024


@dataclass(frozen=True)
class AgentSettings:
    """Everything fc-agent needs to run.

    ``image_dirs`` are the extra ``--image-dir`` directories; the agent always
    serves ``<state_dir>/images`` first (see :attr:`all_image_dirs`). ``arch``
    is the machine's architecture (``x86_64``/``aarch64``) and decides how a
    microVM is stopped gracefully. ``nat``: masquerade microVM networks out of the
    default-route interface when nft or iptables is installed (see
    :mod:`fc_macos.agent.nat`); off, guests reach only the agent's machine.
    """

    token: str
    state_dir: Path = DEFAULT_STATE_DIR
    firecracker_bin: str = DEFAULT_FIRECRACKER_BIN
    image_dirs: tuple[Path, ...] = ()
    arch: str = field(default_factory=platform.machine)
    max_body_bytes: int = MAX_BODY_BYTES
    nat: bool = True

    @property
    def installed_firecracker(self) -> Path:
        """Where ``PUT /v1/firecracker`` installs a Firecracker binary: ``<state_dir>/bin/firecracker``."""
        return self.state_dir / "bin" / "firecracker"

    @property
    def firecracker(self) -> str:
        """The Firecracker binary new microVMs run: :attr:`installed_firecracker`
        while it exists (an installed one wins over ``--firecracker-bin``, also
        after a restart), else ``firecracker_bin``."""
        installed = self.installed_firecracker
        return str(installed) if installed.is_file() else self.firecracker_bin

    @property
    def firecracker_source(self) -> str:
        """Where :attr:`firecracker` comes from: ``installed`` or ``option`` (``--firecracker-bin``)."""
        return "installed" if self.installed_firecracker.is_file() else "option"

    @property
    def images_dir(self) -> Path:
        return self.state_dir / "images"

    @property
    def snapshots_dir(self) -> Path:
        """Where snapshots live: relative snapshot paths resolve here (absolute, normalized)."""
        return Path(os.path.normpath(os.path.abspath(self.state_dir / "snapshots")))

    @property
    def microvms_dir(self) -> Path:
        return self.state_dir / "microvms"

    @property
    def state_file(self) -> Path:
        return self.state_dir / "state.json"

    @property
    def all_image_dirs(self) -> tuple[Path, ...]:
        dirs = [self.images_dir, *self.image_dirs]
        out: list[Path] = []
        for d in dirs:
            d = Path(os.path.normpath(os.path.abspath(d)))
            if d not in out:
                out.append(d)
        return tuple(out)


def parse_listen(value: str) -> tuple[str, int]:
    """``HOST:PORT`` (``[v6]:PORT`` too) -> ``(host, port)``; ValueError if malformed."""
    host, sep, port = value.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError(f"expected HOST:PORT, got {value!r}")
    return host.strip("[]") or "0.0.0.0", int(port)
