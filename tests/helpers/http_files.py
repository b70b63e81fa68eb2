"""``serving(root)``: an HTTP server on 127.0.0.1 for the files under ``root`` (a
mirror or download host for tests that must not reach the internet).

    with serving(tmp_path / "www") as base_url:
        download(f"{base_url}/a/file", ...)
"""

from __future__ import annotations

import http.server
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any


@contextmanager
def serving(root: Path) -> Iterator[str]:
    """Serve ``root`` over HTTP until the block ends; yields the base URL (no trailing slash)."""

    class Handler(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, directory=str(root), **kwargs)

        def log_message(self, *args: object) -> None:
            pass

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}"
    finally:
        httpd.shutdown()
        httpd.server_close()
