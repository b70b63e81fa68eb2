"""``Guest``: shell work inside the Tart VM, through ``tart exec``.

Commands run as ``admin`` with the working directory ``/`` (Tart's contract);
anything outside admin's home goes through ``sudo`` (passwordless on the
cirruslabs images). Files come in over HTTP from the host's
:class:`~fc_macos.providers.fileserver.FileServer` and are checked against the
host's SHA-256 before they replace anything (never through ``exec``'s stdin).
Small texts (wrapper scripts, a systemd unit) travel as command arguments.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from fc_macos.errors import TartError
from fc_macos.providers.fileserver import ServedFile
from fc_macos.providers.tart_cli import CommandResult, TartCLI

# $1 mode, then (destination, URL, expected sha256) triples. Each file is
# downloaded next to its destination, checked, then renamed: a failed fetch
# never leaves a bad file behind.
_FETCH = r"""
set -e
mode=$1; shift
while [ $# -ge 3 ]; do
  dest=$1; url=$2; want=$3; shift 3
  mkdir -p "$(dirname "$dest")"
  tmp="$dest.part"
  rm -f "$tmp"
  (umask 077 && curl -fsSL --retry 3 --connect-timeout 10 -o "$tmp" "$url")
  got=$(sha256sum "$tmp" | cut -d' ' -f1)
  if [ "$got" != "$want" ]; then
    rm -f "$tmp"
    echo "checksum mismatch for $dest: got $got, expected $want" >&2
    exit 3
  fi
  chmod "$mode" "$tmp"
  mv -f "$tmp" "$dest"
done
"""

# $1 destination, $2 content, $3 mode.
_WRITE = r"""
set -e
mkdir -p "$(dirname "$1")"
printf '%s' "$2" > "$1.tmp"
chmod "$3" "$1.tmp"
mv -f "$1.tmp" "$1"
"""


class Guest:
    """One Tart VM, seen from inside. Every method needs the VM running."""

    def __init__(self, tart: TartCLI, name: str) -> None:
        self.tart = tart
        self.name = name

    def run(self, argv: Sequence[str], *, check: bool = True, timeout: float | None = 120.0) -> CommandResult:
        return self.tart.exec(self.name, argv, check=check, timeout=timeout)

    def sh(self, script: str, *args: str, sudo: bool = False, check: bool = True,
           timeout: float | None = 120.0) -> CommandResult:
        """``sh -c SCRIPT sh ARGS...`` (as root with ``sudo``)."""
        argv = [*(["sudo"] if sudo else []), "sh", "-c", script, "sh", *args]
        return self.run(argv, check=check, timeout=timeout)

    def ok(self, script: str, *args: str, sudo: bool = False) -> bool:
        """True if the script exits 0."""
        return self.sh(script, *args, sudo=sudo, check=False).returncode == 0

    def output(self, script: str, *args: str, sudo: bool = False) -> str:
        return self.sh(script, *args, sudo=sudo).stdout.strip()

    def sha256(self, path: str) -> str | None:
        """The file's SHA-256 in the VM, or None if it is not there."""
        out = self.sh('[ -f "$1" ] && sha256sum "$1" || true', path, sudo=True).stdout.split()
        return out[0] if out and re.fullmatch(r"[0-9a-f]{64}", out[0]) else None

    def fetch(self, served: ServedFile, dest: str, *, mode: str = "0644", timeout: float = 900.0) -> None:
        """Download ``served`` to ``dest`` (as root), verify its SHA-256, set ``mode``."""
        self.fetch_all([(served, dest)], mode=mode, timeout=timeout)

    def fetch_all(self, items: Sequence[tuple[ServedFile, str]], *, mode: str = "0644",
                  timeout: float = 900.0) -> None:
        """:meth:`fetch` for several (file, destination) pairs in one ``tart exec``."""
        args = [arg for served, dest in items for arg in (dest, served.url, served.sha256)]
        try:
            self.sh(_FETCH, mode, *args, sudo=True, timeout=timeout)
        except TartError as exc:
            names = ", ".join(served.name for served, _ in items)
            host = items[0][0].url.split("/", 3)[2] if items else "?"
            raise TartError(
                f"the VM could not fetch {names} from {host}: {exc.stderr.strip() or exc}",
                tart_exit_code=exc.tart_exit_code, stderr=exc.stderr,
                hint="the VM must reach this Mac's address on its network (a firewall may block it); "
                "check with 'fc-macos vm shell' and curl",
            ) from exc

    def ensure(self, served: ServedFile, dest: str, *, mode: str = "0644") -> bool:
        """Fetch ``served`` unless ``dest`` already has its contents; True if it changed."""
        if self.sha256(dest) == served.sha256:
            return False
        self.fetch(served, dest, mode=mode)
        return True

    def write_text(self, dest: str, content: str, *, mode: str = "0644") -> bool:
        """Write a small text file (as root) unless it already holds ``content``;
        True if it changed."""
        current = self.sh('cat "$1" 2>/dev/null || true', dest, sudo=True).stdout
        if current == content:
            return False
        self.sh(_WRITE, dest, content, mode, sudo=True)
        return True
