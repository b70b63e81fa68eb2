"""The image directory's part of :class:`~fc_macos.agent.client.AgentClient`
(``/v1/images``, ``/v1/microvms/{name}/drives/{id}``) and the Firecracker
binary's (``/v1/firecracker``), as a mixin.

Uploads stream the file from disk (never whole in memory) after hashing it,
and report bytes through :meth:`fc_macos.progress.Progress.transfer`; content
the agent already has (under any name) is not sent again.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

import aiohttp

from fc_macos.agent.image_store import check_name
from fc_macos.image_names import safe_name
from fc_macos.errors import AgentError, FcMacosError
from fc_macos.progress import NullProgress, Progress

CHUNK = 1024 * 1024


@dataclass(frozen=True)
class LocalFile:
    """A file on this machine with its size and sha256."""

    path: Path
    size: int
    sha256: str


def hash_local(path: Path, progress: Progress | None = None) -> LocalFile:
    """``path``'s size and sha256 (reported as transfer ``hash NAME``)."""
    size = path.stat().st_size
    digest = hashlib.sha256()
    done = 0
    with path.open("rb") as fh:
        while chunk := fh.read(CHUNK):
            digest.update(chunk)
            done += len(chunk)
            if progress is not None:
                progress.transfer(f"hash {path.name}", done, size)
    if progress is not None and size == 0:
        progress.transfer(f"hash {path.name}", 0, 0)
    return LocalFile(path, size, digest.hexdigest())


def _octets(local: LocalFile) -> dict[str, str]:
    return {"Content-Type": "application/octet-stream", "Content-Length": str(local.size)}


async def _file_body(path: Path, local: LocalFile, label: str, progress: Progress) -> AsyncIterator[bytes]:
    """``path``'s bytes (``local`` says its size), read as they are sent, reported as transfer ``label``."""
    done = 0
    with path.open("rb") as fh:
        while chunk := await asyncio.to_thread(fh.read, CHUNK):
            done += len(chunk)
            progress.transfer(label, min(done, local.size), local.size)
            yield chunk
    if local.size == 0:
        progress.transfer(label, 0, 0)


def _image_path(name: str) -> str:
    return "/v1/images/" + quote(name, safe="")


class ImagesMixin:
    """``AgentClient`` methods for the agent's image directory."""

    if TYPE_CHECKING:  # provided by AgentClient
        url: str

        async def _json(self, method: str, path: str, **kwargs: Any) -> Any: ...
        async def _request(self, method: str, path: str, **kwargs: Any) -> Any: ...
        def _need_session(self) -> aiohttp.ClientSession: ...
        def _error(self, status: int, text: str) -> FcMacosError: ...
        def _connection_error(self, exc: BaseException) -> AgentError: ...
        @staticmethod
        def _vm_path(name: str) -> str: ...

    async def list_images(self) -> dict[str, Any]:
        """``GET /v1/images``: ``{"directory", "free_bytes", "images": [{"name",
        "path", "size", "sha256"}]}`` (sha256 null while the agent has not hashed a file)."""
        return await self._json("GET", "/v1/images")

    async def find_image(self, sha256: str, size: int) -> list[dict[str, Any]]:
        """The agent's files holding exactly this content (any name)."""
        data = await self._json("GET", "/v1/images", params={"sha256": sha256, "size": str(size)})
        return list(data.get("images", []))

    async def upload_image(self, path: Path, name: str | None = None, *, replace: bool = False,
                           progress: Progress | None = None, known: LocalFile | None = None) -> dict[str, Any]:
        """Put local file ``path`` into the agent's image directory as ``name``
        (default: its file name, other characters than letters, digits and ``._+-`` made '-'). Returns the agent's answer: ``outcome`` is
        ``uploaded``, ``present`` (already there under that name) or
        ``linked`` (there under ``linked_from``: not sent again). ConflictError
        ``image_exists`` for other content under that name (unless
        ``replace``); the agent's 413 ``no_space`` says how much
        is free. Idempotent."""
        progress = progress or NullProgress()
        # Checked here, to say it in the words of a file name; a local file's own name made fit.
        name = check_name(name) if name is not None else safe_name(path.name)
        local = known if known is not None else await asyncio.to_thread(hash_local, path, progress)
        params = {"size": str(local.size), "sha256": local.sha256}
        if replace:
            params["replace"] = "true"
        if await self.find_image(local.sha256, local.size):  # there already: the agent links it, no bytes sent
            return await self._json("PUT", _image_path(name), params=params, data=b"")
        body = _file_body(path, local, f"upload {name}", progress)
        return await self._json("PUT", _image_path(name), params=params, data=body, headers=_octets(local))

    async def firecracker_binary(self) -> dict[str, Any]:
        """``GET /v1/firecracker``: the binary new microVMs run, ``{"path",
        "source" (installed or option), "size", "sha256", "version"}`` (nulls
        when it is not found or does not answer as Firecracker)."""
        return await self._json("GET", "/v1/firecracker")

    async def install_firecracker(self, path: Path, progress: Progress | None = None, *,
                                  known: LocalFile | None = None) -> dict[str, Any]:
        """Install local file ``path`` as the Firecracker new microVMs run
        (``PUT /v1/firecracker``, streamed; the agent keeps it only if its
        ``--version`` answers as Firecracker there: else AgentRequestError
        ``firecracker_unusable``, and nothing changes). Returns what
        :meth:`firecracker_binary` returns, with ``outcome``: ``installed``, or
        ``present`` when the agent already runs this content (installed or
        its ``--firecracker-bin``): then nothing is sent. Idempotent."""
        progress = progress or NullProgress()
        local = known if known is not None else await asyncio.to_thread(hash_local, path, progress)
        params = {"size": str(local.size), "sha256": local.sha256}
        current = await self.firecracker_binary()
        if current.get("sha256") == local.sha256:
            return {**current, "outcome": "present"}
        body = _file_body(path, local, f"upload {path.name}", progress)
        answer = await self._json("PUT", "/v1/firecracker", params=params, data=body, headers=_octets(local))
        return {**answer, "outcome": "installed"}

    async def delete_image(self, name: str) -> None:
        """Delete ``name`` from the agent's image directory; ConflictError
        ``image_in_use`` while a microVM names it, NotFoundError ``image_not_found``."""
        await self._request("DELETE", _image_path(name))

    async def attach_drive(self, name: str, drive_id: str, path: str, *, read_only: bool = False,
                           root: bool = False) -> dict[str, Any]:
        """Attach drive ``drive_id`` backed by ``path`` (a name in the agent's
        image directories, or a path inside them) to microVM ``name``, whose
        VMM runs. A writable drive is a private copy of the image; the answer's
        ``path`` says where it lives (``{"id", "path", "source", "read_only", "root"}``)."""
        body = {"path": path, "read_only": read_only, "root": root}
        return await self._json("PUT", f"{self._vm_path(name)}/drives/{quote(drive_id, safe='')}", body=body)

    async def download_drive(self, name: str, drive_id: str, out: Path, *,
                             progress: Progress | None = None) -> dict[str, Any]:
        """Save drive ``drive_id`` (``rootfs`` for the root drive) of microVM
        ``name`` as local file ``out`` (written to ``out.part`` then renamed);
        returns ``{"path": the file on the agent's machine, "size"}``.
        ConflictError ``microvm_running`` while the guest runs."""
        progress = progress or NullProgress()
        session = self._need_session()
        part = out.with_name(out.name + ".part")
        url = self.url + self._vm_path(name) + "/drives/" + quote(drive_id, safe="")
        try:
            async with session.get(url) as resp:
                if resp.status >= 400:
                    raise self._error(resp.status, await resp.text())
                total = resp.content_length
                done = 0
                with part.open("wb") as fh:
                    async for chunk in resp.content.iter_chunked(CHUNK):
                        await asyncio.to_thread(fh.write, chunk)
                        done += len(chunk)
                        progress.transfer(f"download {drive_id}", done, total)
                if total is not None and done != total:
                    raise AgentError(f"the download of drive {drive_id!r} of {name!r} ended after {done} of "
                                     f"{total} bytes", hint="try again")  # fmt: skip
                os.replace(part, out)
                return {"path": resp.headers.get("Fc-Drive-Path"), "size": done}
        except FcMacosError:
            raise
        except aiohttp.ClientPayloadError as exc:
            raise AgentError(f"the download of drive {drive_id!r} of {name!r} broke off: {exc}",
                             hint="try again") from exc  # fmt: skip
        except (aiohttp.ClientError, asyncio.TimeoutError) as exc:
            raise self._connection_error(exc) from exc
        except OSError as exc:
            raise FcMacosError(f"cannot write {out}: {exc.strerror}", hint="pick another --out") from exc
        finally:
            part.unlink(missing_ok=True)


__all__ = ["ImagesMixin", "LocalFile", "hash_local"]
