"""Putting the guest agent into a microVM's private rootfs copy before it boots.

fc-agent's boot step ``install_guest_agent`` (after ``prepare_workdir``) calls
:func:`install_guest_agent` with the work directory's copy of the rootfs, the
agent's own ``fc-guest-agent`` for the guest's architecture
(``fc_macos.guest.binary_path(arch)``) and the microVM's boot arguments, and
boots with the boot arguments it returns:

* The binary is written to ``/sbin/fc-guest-agent`` (mode 0755, owner root)
  with e2fsprogs' ``debugfs -w``: no root, no mounts. ``/sbin`` is created when
  missing (a symlink such as merged-/usr's ``/sbin -> usr/sbin`` is followed);
  an existing file there is replaced. The new file is written under a temporary
  name in ``/`` and linked into place only once it is complete, so a full image
  keeps what it had.
* An fc-macos image (it has the marker ``/etc/fc-macos-image``: its ``/init``
  starts the agent itself) keeps its boot arguments. Any other rootfs gets the
  agent as its init shim: ``init=/sbin/fc-guest-agent`` plus, when the user gave
  an ``init=``, ``fc_macos.init=<that value>`` (see :func:`shim_boot_args`); the
  shim starts the agent's supervisor and then execs the real init.
* It never fails the boot: when the agent cannot be installed (not an ext2/3/4
  image, no ``debugfs``, an image that cannot be written, is full, or needs a
  journal recovery ...) the result says so (``installed=False`` and a
  ``reason`` for ``MicroVMInfo.guest_agent.reason``) and the boot arguments are
  the given ones. Only the file it is given is touched, never the user's
  original image (the caller passes the copy).

It runs ``debugfs`` three times as asyncio subprocesses (write and read back,
link, drop the temporary name: about 10 ms each for the images fc-macos builds);
the event loop is never blocked.
"""

from __future__ import annotations

import asyncio
import os
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path

from fc_macos.errors import FcMacosError
from fc_macos.images.digest import sha256_file
from fc_macos.images.rootfs import GUEST_AGENT_PATH, MARKER_PATH, find_e2fs_tool

AGENT_PATH = GUEST_AGENT_PATH
SHIM_PARAM = "fc_macos.init"
_TMP_PATH = "/.fc-guest-agent.new"
DEBUGFS_TIMEOUT_S = 60.0

_EXT_MAGIC = 0xEF53
_INCOMPAT_RECOVER = 0x0004
_INCOMPAT_JOURNAL_DEV = 0x0008


@dataclass(frozen=True)
class GuestAgentInstall:
    """What :func:`install_guest_agent` did to a rootfs copy.

    ``boot_args``: the boot arguments to boot with (the given ones, or with the
    shim's ``init=``). ``installed``: ``/sbin/fc-guest-agent`` in the copy is now
    the given binary. ``shim``: ``boot_args`` start it as the init shim (the image
    has no marker); False for an fc-macos image, whose ``/init`` starts it.
    ``fc_macos_image``: the marker ``/etc/fc-macos-image`` was found (None when
    the image could not be read). ``reason``: None when installed, else why not,
    as a sentence that says what to do (for ``guest_agent.reason``; the guest
    agent is then ``absent``)."""

    boot_args: str
    installed: bool
    shim: bool = False
    fc_macos_image: bool | None = None
    reason: str | None = None

    @classmethod
    def absent(cls, boot_args: str, reason: str) -> GuestAgentInstall:
        """Nothing installed, boot arguments unchanged (also for the boot step's own
        reasons: ``vsock: false``, no binary for the guest's architecture ...)."""
        return cls(boot_args=boot_args, installed=False, reason=reason)


# --- boot arguments ------------------------------------------------------------------


def _split_cmdline(cmdline: str) -> list[str]:
    """The kernel's tokens: whitespace-separated, double quotes keep spaces."""
    tokens, current, quoted, started = [], [], False, False
    for ch in cmdline:
        if ch == '"':
            quoted = not quoted
            current.append(ch)
            started = True
        elif ch.isspace() and not quoted:
            if started:
                tokens.append("".join(current))
            current, started = [], False
        else:
            current.append(ch)
            started = True
    if started:
        tokens.append("".join(current))
    return tokens


def _value(token: str) -> str:
    value = token.split("=", 1)[1]
    return value[1:-1] if len(value) >= 2 and value[0] == value[-1] == '"' else value


def _param(name: str, value: str) -> str:
    return f'{name}="{value}"' if any(c.isspace() for c in value) else f"{name}={value}"


def shim_boot_args(boot_args: str) -> str:
    """``boot_args`` starting the guest agent as init: every kernel ``init=`` (those
    before a ``--``, after which the words are the init's arguments) is dropped, and
    ``init=/sbin/fc-guest-agent`` added, with ``fc_macos.init=<the last dropped
    value>`` when there was one (an ``fc_macos.init=`` already there is then
    replaced). Everything else stays, in order. Idempotent: boot arguments that
    already start the shim come back unchanged."""
    tokens = _split_cmdline(boot_args)
    end = tokens.index("--") if "--" in tokens else len(tokens)
    kernel, init_args = tokens[:end], tokens[end:]
    inits = [_value(t) for t in kernel if t.startswith("init=")]
    if inits and inits[-1] == AGENT_PATH:
        return boot_args
    user_init = inits[-1] if inits else None
    kept = [t for t in kernel if not t.startswith("init=")]
    if user_init is not None:
        kept = [t for t in kept if not t.startswith(SHIM_PARAM + "=")] + [_param(SHIM_PARAM, user_init)]
    kept.insert(len(kept) - (user_init is not None), f"init={AGENT_PATH}")
    return " ".join(kept + init_args)


# --- the image -------------------------------------------------------------------


def _superblock_problem(rootfs: Path) -> str | None:
    """Why ``rootfs`` cannot take the agent, judged from its ext superblock, or None."""
    try:
        with rootfs.open("rb") as fh:
            fh.seek(1024)
            sb = fh.read(1024)
    except OSError as exc:
        return f"the rootfs copy {rootfs} cannot be read ({exc.strerror or exc})"
    if len(sb) < 100 or int.from_bytes(sb[0x38:0x3A], "little") != _EXT_MAGIC:
        return ("the rootfs is not an ext4 file system, and the guest agent is only installed into ext4 images: "
                "use an ext4 rootfs, or install /sbin/fc-guest-agent in the image and start it yourself")
    incompat = int.from_bytes(sb[0x60:0x64], "little")
    if incompat & _INCOMPAT_JOURNAL_DEV:
        return "the rootfs is an ext4 journal device, not a file system: give a file system image as the rootfs"
    if incompat & _INCOMPAT_RECOVER:
        return ("the rootfs's journal needs recovery (it was not unmounted cleanly), so it is not changed before boot: "
                "run 'e2fsck -fy' on the image (with no microVM using it)")
    return None


def _ss_quote(word: str) -> str:
    """``word`` for debugfs's command parser (double quotes; a quote inside is doubled)."""
    return word if word and not re.search(r'[\s"]', word) else '"' + word.replace('"', '""') + '"'


def _find_debugfs() -> tuple[str | None, str | None]:
    try:
        return find_e2fs_tool("debugfs"), None
    except FcMacosError as exc:
        return None, f"{exc.message} on the agent's machine, so the guest agent cannot be put into the rootfs: {exc.hint}"


async def _debugfs(tool: str, rootfs: Path, requests: list[str]) -> tuple[dict[str, str], str]:
    """Run ``requests`` in one ``debugfs -w``; return the stdout of each ``# name``
    section (the requests after a ``# name`` line) and stderr."""
    script = "".join(line + "\n" for line in requests).encode()
    env = {**os.environ, "DEBUGFS_PAGER": "__none__", "PAGER": "__none__"}
    proc = await asyncio.create_subprocess_exec(
        tool, "-w", "-f", "-", str(rootfs),
        stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env=env,
    )
    try:
        out, err = await asyncio.wait_for(proc.communicate(script), DEBUGFS_TIMEOUT_S)
    except BaseException:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
        raise
    sections: dict[str, str] = {}
    name = ""
    for line in out.decode(errors="replace").splitlines(keepends=True):
        if line.startswith("# "):
            name = line[2:].strip()
            sections[name] = ""
        elif name:
            sections[name] += line
    return sections, err.decode(errors="replace")


@dataclass(frozen=True)
class _Inode:
    type: str
    mode: int
    uid: int
    gid: int
    size: int


def _inode(stat_output: str) -> _Inode | None:
    """The inode that a debugfs ``stat`` printed, or None (it printed nothing: not found)."""
    kind = re.search(r"Type: (\S+)\s+Mode:\s+([0-7]+)", stat_output)
    owner = re.search(r"User:\s+(\d+)\s+Group:\s+(\d+)", stat_output)
    size = re.search(r"Size: (\d+)", stat_output)
    if not (kind and owner and size):
        return None
    return _Inode(kind.group(1), int(kind.group(2), 8), int(owner.group(1)), int(owner.group(2)), int(size.group(1)))


def _debugfs_error(stderr: str) -> str:
    """The first line of debugfs's complaints that says something (not its banner)."""
    for line in stderr.splitlines():
        line = line.strip()
        if line and not line.startswith("debugfs ") and "mkdir" not in line and ": File not found" not in line:
            return line
    return "debugfs reported no error"


def _open_problem(stderr: str) -> str | None:
    """Why debugfs could not open the image for writing, if it could not."""
    for line in stderr.splitlines():
        if "while trying to open" in line or "while opening filesystem" in line:
            if any(e in line for e in ("Read-only file system", "Permission denied", "Operation not permitted")):
                return f"the rootfs copy cannot be written ({line.strip()}): put the state directory on a writable file system"
            return f"debugfs cannot open the rootfs ({line.strip()}): check the image with 'e2fsck -fn'"
    return None


async def install_guest_agent(rootfs: Path, binary: Path, boot_args: str, *,
                              debugfs: str | None = None) -> GuestAgentInstall:
    """Write ``binary`` into the ext4 image ``rootfs`` (a microVM's private copy) as
    ``/sbin/fc-guest-agent`` and return the boot arguments to boot it with (see the
    module docstring). ``debugfs`` is the program to use (default: e2fsprogs'
    ``debugfs`` from ``PATH`` or the usual sbin directories). Never raises for the
    image, the tools or the binary: a problem comes back as ``installed=False`` with
    the reason and ``boot_args`` unchanged. Callable again on the same copy (the file
    is replaced; boot arguments that already start the shim are kept as they are)."""
    rootfs, binary = Path(rootfs), Path(binary)
    try:
        size = binary.stat().st_size
    except OSError as exc:
        return GuestAgentInstall.absent(
            boot_args, f"the guest agent binary {binary} is missing ({exc.strerror or exc}): "
            "build it with 'python -m fc_macos.guest.build', or reinstall fc-macos")
    problem = _superblock_problem(rootfs)
    if problem is None and not os.access(rootfs, os.W_OK):
        problem = f"the rootfs copy {rootfs} is read-only: put the state directory on a writable file system"
    if problem is not None:
        return GuestAgentInstall.absent(boot_args, problem)
    if debugfs is None:
        debugfs, problem = _find_debugfs()
        if debugfs is None:
            return GuestAgentInstall.absent(boot_args, problem or "debugfs is missing")
    try:
        return await _install(debugfs, rootfs, binary, size, boot_args)
    except OSError as exc:
        return GuestAgentInstall.absent(boot_args, f"cannot run {debugfs} ({exc.strerror or exc}): "
                                        "install e2fsprogs on the agent's machine")
    except asyncio.TimeoutError:
        return GuestAgentInstall.absent(boot_args, f"debugfs took over {DEBUGFS_TIMEOUT_S:.0f} s on the rootfs "
                                        "and was stopped: check the image with 'e2fsck -fn'")


async def _install(debugfs: str, rootfs: Path, binary: Path, size: int, boot_args: str) -> GuestAgentInstall:
    sbin = os.path.dirname(AGENT_PATH)
    # "/sbin/." makes debugfs follow a symlinked /sbin (it follows only inner components).
    in_sbin = f"{sbin}/./{os.path.basename(AGENT_PATH)}"
    # Step 1: the new file under a temporary name in / (debugfs writes only into its
    # current directory), read back to compare, plus what is there now.
    with tempfile.TemporaryDirectory(prefix="fc-guest-install-") as tmp:
        readback = Path(tmp) / "readback"
        sections, err = await _debugfs(debugfs, rootfs, [
            f"mkdir {sbin}", "cd /", f"rm {_TMP_PATH}",
            f"write {_ss_quote(str(binary))} {os.path.basename(_TMP_PATH)}",
            f"sif {_TMP_PATH} mode 0100755", f"sif {_TMP_PATH} uid 0", f"sif {_TMP_PATH} gid 0",
            f"dump {_TMP_PATH} {_ss_quote(str(readback))}",
            "# new", f"stat {_TMP_PATH}",
            "# dir", f"stat {sbin}/.",
            "# old", f"stat {in_sbin}",
            "# marker", f"stat {MARKER_PATH}",
        ])
        intact = readback.is_file() and sha256_file(readback) == sha256_file(binary)
    opened = _open_problem(err)
    if opened is not None:
        return GuestAgentInstall.absent(boot_args, opened)
    marker = _inode(sections.get("marker", "")) is not None
    new, directory, old = (_inode(sections.get(k, "")) for k in ("new", "dir", "old"))
    failure = None
    if not intact or new is None or (new.type, new.mode, new.uid, new.gid, new.size) != ("regular", 0o755, 0, 0, size):
        full = "allocate" in err or "No space" in err or "no free" in err.lower()
        failure = (f"the rootfs has no room for the guest agent ({size} bytes): make the image larger (resize2fs)"
                   if full else f"writing the guest agent into the rootfs failed: {_debugfs_error(err)}")
    elif directory is None or directory.type != "directory":
        failure = f"{sbin} in the rootfs is not a directory, so {AGENT_PATH} cannot be written there"
    elif old is not None and old.type == "directory":
        failure = f"{AGENT_PATH} in the rootfs is a directory: remove it from the image"
    if failure is None:
        # Step 2: link it into place (replacing the old one); the temporary name goes
        # only once that worked (debugfs's ln neither counts links nor grows a full
        # directory, so a failed ln must not be followed by the unlink).
        link = [f"ln {_TMP_PATH} {in_sbin}", "# agent", f"stat {in_sbin}"]
        sections, err = await _debugfs(debugfs, rootfs, [*([f"rm {in_sbin}"] if old is not None else []), *link])
        if "No free space in the directory" in err:
            sections, err = await _debugfs(debugfs, rootfs, [f"expand_dir {sbin}/.", *link])
        placed = _inode(sections.get("agent", ""))
        if placed is not None and (placed.type, placed.mode, placed.size) == ("regular", 0o755, size):
            sections, err = await _debugfs(debugfs, rootfs, [f"unlink {_TMP_PATH}", "# tmp", f"stat {_TMP_PATH}"])
            if _inode(sections.get("tmp", "")) is None:
                return GuestAgentInstall(
                    boot_args=boot_args if marker else shim_boot_args(boot_args),
                    installed=True, shim=not marker, fc_macos_image=marker,
                )
            failure = f"removing the guest agent's temporary file {_TMP_PATH} failed: {_debugfs_error(err)}"
            return GuestAgentInstall(boot_args=boot_args, installed=False, fc_macos_image=marker, reason=failure)
        failure = f"linking the guest agent into {sbin} failed: {_debugfs_error(err)}"
    await _debugfs(debugfs, rootfs, [f"rm {_TMP_PATH}"])
    return GuestAgentInstall(boot_args=boot_args, installed=False, fc_macos_image=marker, reason=failure)


__all__ = ["AGENT_PATH", "MARKER_PATH", "GuestAgentInstall", "install_guest_agent", "shim_boot_args"]
