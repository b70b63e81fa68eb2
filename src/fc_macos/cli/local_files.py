"""Files of this machine named where the agent expects its own (``run
--kernel/--initrd/--rootfs``, ``drives add --path``): uploaded into the
agent's image directory first when the agent lacks them.

The rule, one value at a time (:func:`agent_file`):

- a value naming an existing file here (it contains a ``/``, or a file of
  that name is in the current directory) is this machine's file (``./``,
  ``../`` and ``~`` always mean this machine: missing, they are an error): unless it
  already lies in one of the agent's image directories (the agent runs on this
  machine), the agent gets it by content: when some file of the agent holds
  the same bytes (sha256) that one is used, else it is uploaded (under its
  file name, or ``NAME-<sha256 prefix>.EXT`` when the agent has other content
  under that name or the name is a default image's, which would become the
  default of every microVM) and the agent's path of it is used;
- anything else (a bare name, a path that does not exist here) is passed on
  unchanged: a file in the agent's image directory, or a path on its machine.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fc_macos import image_names
from fc_macos.image_names import safe_name
from fc_macos.errors import ConflictError, NotFoundError

if TYPE_CHECKING:
    from fc_macos.agent.client import AgentClient
    from fc_macos.agent.wire import MicroVMInfo, MicroVMSpec
    from fc_macos.progress import Progress

#: The spec fields that name files.
SPEC_FILES = ("kernel", "initrd", "rootfs")


@dataclass(frozen=True)
class Resolved:
    """What :func:`agent_file` made of a value: ``value`` goes into the request;
    ``outcome`` is ``as_given`` (passed on), ``uploaded``, or ``present`` /
    ``linked`` (the agent had the content)."""

    given: str
    value: str
    outcome: str
    local: str | None = None

    def note(self, kind: str) -> str | None:
        """A line for the user (None when nothing happened)."""
        if self.outcome == "uploaded":
            return f"Uploaded {kind} {self.local} to the agent as {self.value}."
        if self.outcome in ("present", "linked"):
            return f"Using the agent's copy of {kind} {self.local} ({self.value}): it already had this content."
        return None

    def to_dict(self) -> dict[str, Any]:
        return {"given": self.given, "path": self.value, "outcome": self.outcome, "local": self.local}


#: The agent's default images: a file of this name in its image directory is what every microVM boots.
DEFAULT_NAMES = frozenset(image_names.FILES)
#: Prefixes that can only mean this machine's files.
LOCAL_PREFIXES = ("./", "../", "~")


def local_file(value: str) -> Path | None:
    """``value`` as an existing file of this machine, if it names one.
    NotFoundError for ``./x``, ``../x`` or ``~/x`` that is not a file here."""
    path = Path(value).expanduser()
    if ("/" in value or value.startswith("~") or path.exists()) and path.is_file():
        return path.resolve()
    if value.startswith(LOCAL_PREFIXES):
        raise NotFoundError(f"{value} is not a file on this machine",
                            hint="check the path; a bare name means a file in the agent's image directory "
                            "('fc-macos images list')", code="file_not_found")  # fmt: skip
    return None


def _inside(path: str, dirs: list[str]) -> bool:
    return any(path == d or path.startswith(d.rstrip("/") + "/") for d in dirs)


def _fallback_name(path: Path, sha256: str) -> str:
    stem, ext = os.path.splitext(safe_name(path.name))
    return f"{stem}-{sha256[:12]}{ext}"


async def agent_file(client: AgentClient, value: str, progress: Progress | None = None) -> Resolved:
    """The value to send for ``value`` (see the module's rule), uploading the file first if needed."""
    from fc_macos.agent.client_images import hash_local

    path = local_file(value)
    if path is None:
        return Resolved(value, value, "as_given")
    info = await client.info()
    dirs = [str(d) for d in info.get("image_dirs") or []]
    if _inside(str(path), dirs):  # the agent runs on this machine and serves it already
        return Resolved(value, str(path), "as_given")
    local = hash_local(path, progress)
    name = _fallback_name(path, local.sha256) if path.name in DEFAULT_NAMES else safe_name(path.name)
    try:
        answer = await client.upload_image(path, name, progress=progress, known=local)
    except ConflictError as exc:
        if exc.code != "image_exists":
            raise
        answer = await client.upload_image(path, _fallback_name(path, local.sha256), progress=progress, known=local)
    return Resolved(value, str(answer["path"]), str(answer.get("outcome")), str(path))


async def create_microvm(client: AgentClient, spec: MicroVMSpec, *, progress: Progress | None,
                         say: Callable[[str], None], record: list[dict[str, Any]]) -> MicroVMInfo:
    """Create ``spec``'s microVM with its kernel, initrd and rootfs made the
    agent's first (:func:`agent_file`); ``say`` gets a line per file sent or
    found there, ``record`` one dict (``kind``, ``given``, ``path``,
    ``outcome``, ``local``) per file of this machine."""
    changes: dict[str, Any] = {}
    for kind in SPEC_FILES:
        value = getattr(spec, kind)
        if value is None:
            continue
        resolved = await agent_file(client, value, progress)
        if resolved.local is not None:
            changes[kind] = resolved.value
            record.append({"kind": kind, **resolved.to_dict()})
        if note := resolved.note(kind):
            say(note)
    return await client.create_microvm(replace(spec, **changes))


__all__ = ["Resolved", "SPEC_FILES", "agent_file", "create_microvm", "local_file"]
