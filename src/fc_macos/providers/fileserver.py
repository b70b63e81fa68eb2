"""A short-lived HTTP server that hands setup's files to the Linux VM.

Files never travel through ``tart exec``'s stdin (unreliable for binary data).
Instead setup starts a :class:`FileServer` on the host address that faces the
VM (the VM's default gateway; 192.168.64.1 on Tart's shared network), registers
the files it needs, and has the VM fetch them with ``curl`` and check their
SHA-256. The server:

* listens only on that one address (never 0.0.0.0), on a free port;
* serves only the registered files, under an unguessable path prefix
  (``secrets.token_urlsafe``); everything else is 404;
* reports the bytes it sends of each file through ``progress.transfer`` (named
  as registered; from the server's thread, while setup waits for the fetch);
* stops when the ``with`` block (setup) ends.

Usage::

    with FileServer("192.168.64.1") as server:
        served = server.add(Path("fc_macos-0.1.0-py3-none-any.whl"))
        vm.run(["curl", "-fsSL", "-o", "/tmp/x.whl", served.url])
"""

from __future__ import annotations

import secrets
import threading
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import quote, unquote

from fc_macos.errors import ProviderError
from fc_macos.fsutil import copy_reporting
from fc_macos.images.digest import sha256_file
from fc_macos.progress import NullProgress, Progress


@dataclass(frozen=True)
class ServedFile:
    name: str
    path: Path
    url: str
    sha256: str
    size: int


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    files: dict[str, tuple[Path, str]]  # URL path -> (file, name)
    progress: Progress


class _Handler(BaseHTTPRequestHandler):
    server: _Server

    def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
        self._serve(body=True)

    def do_HEAD(self) -> None:  # noqa: N802
        self._serve(body=False)

    def _serve(self, *, body: bool) -> None:
        found = self.server.files.get(unquote(self.path.split("?", 1)[0]))
        if found is None:
            self.send_error(404)
            return
        path, name = found
        try:
            fh = open(path, "rb")
        except OSError:
            self.send_error(404)
            return
        with fh:
            size = path.stat().st_size
            self.send_response(200)
            self.send_header("Content-Type", "application/octet-stream")
            self.send_header("Content-Length", str(size))
            self.end_headers()
            if body:
                copy_reporting(fh, self.wfile, name=name, total=size, progress=self.server.progress)

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002
        """Quiet: the library never prints."""


class FileServer:
    """Serves registered files to the VM; see the module docstring. Not reusable
    after :meth:`stop`; :meth:`stop` is idempotent."""

    def __init__(self, host: str, port: int = 0, progress: Progress | None = None) -> None:
        self.host = host
        self._prefix = "/" + secrets.token_urlsafe(24)
        try:
            self._server = _Server((host, port), _Handler)
        except OSError as exc:
            raise ProviderError(
                f"cannot serve files on {host}:{port}: {exc}",
                hint=f"{host} must be an address of this machine that the VM can reach (its gateway)",
            ) from exc
        self._server.files = {}
        self._server.progress = progress or NullProgress()
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    def add(self, path: Path, name: str | None = None) -> ServedFile:
        """Serve ``path`` (as ``name``, default its file name); returns its URL and digest."""
        path = Path(path).resolve()
        name = name or path.name
        if not path.is_file():
            raise ProviderError(f"cannot serve {path}: not a file", hint="check the path you gave to setup")
        url_path = f"{self._prefix}/{quote(name)}"
        self._server.files[unquote(url_path)] = (path, name)
        return ServedFile(name=name, path=path, url=f"http://{self.host}:{self.port}{url_path}",
                          sha256=sha256_file(path), size=path.stat().st_size)

    def start(self) -> FileServer:
        if self._thread is None:
            self._thread = threading.Thread(target=self._server.serve_forever, name="fc-macos-fileserver",
                                            daemon=True)
            self._thread.start()
        return self

    def stop(self) -> None:
        """Stop accepting, finish the thread, close the socket."""
        if self._thread is not None:
            self._server.shutdown()
            self._thread.join()
            self._thread = None
        self._server.server_close()

    def __enter__(self) -> FileServer:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()
