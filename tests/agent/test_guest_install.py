"""install_guest_agent against real ext4 images (mkfs.ext4 + debugfs, no root, no mounts):
the file lands at /sbin/fc-guest-agent (0755, root) in every layout, the boot arguments
start the shim only without the fc-macos marker, and every problem leaves the image
as it was and says why. One real boot (marked ``guest``): a busybox rootfs that has
never heard of fc-macos runs its own init and, beside it, the agent the shim started."""

from __future__ import annotations

import asyncio
import hashlib
import os
import re
import shutil
import subprocess
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from fc_macos.agent.guest_install import AGENT_PATH, GuestAgentInstall, install_guest_agent, shim_boot_args
from fc_macos.agent.settings import AgentSettings
from fc_macos.errors import FcMacosError
from fc_macos.images import rootfs as rootfs_module
from fc_macos.images.rootfs import MARKER_TEXT, make_ext4
from tests.agent.conftest import AUTH, GUEST_BOOT_ARGS, ConsoleReader, kill_recorded_vmms, serve
from tests.helpers.foreign_rootfs import FOREIGN_PROMPT, INITTAB_BANNER, build_foreign_rootfs
from tests.helpers.guest_images import build_test_images, guest_agent_binary

BOOT_ARGS = "console=ttyS0 reboot=k panic=1"


def tool(name: str) -> str:
    found = shutil.which(name) or shutil.which(name, path="/sbin:/usr/sbin")
    if found is None:
        pytest.skip(f"{name} is missing: apt-get install e2fsprogs")
    return found


def debugfs(image: Path, request: str) -> str:
    return subprocess.run([tool("debugfs"), "-R", request, str(image)], capture_output=True, text=True, check=True).stdout


def read_file(image: Path, path: str, dest: Path) -> bytes:
    dest.unlink(missing_ok=True)
    subprocess.run([tool("debugfs"), "-R", f"dump {path} {dest}", str(image)], capture_output=True, check=True)
    return dest.read_bytes() if dest.exists() else b""


def fsck_clean(image: Path) -> None:
    proc = subprocess.run([tool("e2fsck"), "-fn", str(image)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture
def binary(tmp_path: Path) -> Path:
    path = tmp_path / "fc-guest-agent"
    path.write_bytes(b"\x7fELF" + os.urandom(150_000))
    path.chmod(0o644)  # the mode in the image does not come from the host file
    return path


def image(tmp_path: Path, layout: dict[str, bytes | str | None], *, size_mib: int = 8, name: str = "rootfs.ext4") -> Path:
    """An ext4 image of a tree: bytes are files, str symlinks, None directories."""
    tree = tmp_path / f"tree-{name}"
    tree.mkdir()
    for rel, content in layout.items():
        path = tree / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        if content is None:
            path.mkdir(exist_ok=True)
        elif isinstance(content, str):
            path.symlink_to(content)
        else:
            path.write_bytes(content)
    dest = tmp_path / name
    make_ext4(tree, dest, size_mib=size_mib)
    return dest


async def test_foreign_image_gets_the_binary_and_the_shim(tmp_path: Path, binary: Path) -> None:
    rootfs = image(tmp_path, {"etc/inittab": b"::sysinit:/bin/true\n", "bin": None})  # no /sbin at all
    result = await install_guest_agent(rootfs, binary, BOOT_ARGS)
    assert result == GuestAgentInstall(boot_args=f"{BOOT_ARGS} init={AGENT_PATH}", installed=True, shim=True,
                                       fc_macos_image=False, reason=None)
    stat = debugfs(rootfs, f"stat {AGENT_PATH}")
    assert "Type: regular" in stat and "Mode:  0755" in stat
    assert "User:     0   Group:     0" in stat
    assert read_file(rootfs, AGENT_PATH, tmp_path / "back") == binary.read_bytes()
    assert "Mode:  0755" in debugfs(rootfs, "stat /sbin")
    assert ".fc-guest-agent.new" not in debugfs(rootfs, "ls /")
    fsck_clean(rootfs)


async def test_fc_macos_image_keeps_its_boot_args_and_gets_the_new_binary(tmp_path: Path, binary: Path) -> None:
    rootfs = image(tmp_path, {"etc/fc-macos-image": MARKER_TEXT.encode(), "sbin/fc-guest-agent": b"old agent\n"})
    args = BOOT_ARGS + " init=/init"
    result = await install_guest_agent(rootfs, binary, args)
    assert result.installed and not result.shim and result.fc_macos_image
    assert result.boot_args == args
    assert read_file(rootfs, AGENT_PATH, tmp_path / "back") == binary.read_bytes()
    # Called again on the same copy: replaced again, still consistent.
    assert (await install_guest_agent(rootfs, binary, args)).installed
    fsck_clean(rootfs)


async def test_merged_usr_sbin_symlink_is_followed_and_an_old_symlink_replaced(tmp_path: Path, binary: Path) -> None:
    rootfs = image(tmp_path, {"usr/sbin/fc-guest-agent": "/bin/false", "sbin": "usr/sbin", "bin/false": b"x"})
    result = await install_guest_agent(rootfs, binary, BOOT_ARGS + " init=/lib/systemd/systemd")
    assert result.installed and result.shim
    assert result.boot_args == f"{BOOT_ARGS} init={AGENT_PATH} fc_macos.init=/lib/systemd/systemd"
    assert read_file(rootfs, "/usr/sbin/fc-guest-agent", tmp_path / "back") == binary.read_bytes()
    assert "Type: symlink" in debugfs(rootfs, "stat /sbin")
    fsck_clean(rootfs)


async def test_a_full_sbin_directory_is_grown(tmp_path: Path, binary: Path) -> None:
    # 61 entries fill the first 1 KiB block of /sbin exactly (debugfs's ln alone would fail).
    tree = tmp_path / "tree"
    (tree / "sbin").mkdir(parents=True)
    for i in range(61):
        (tree / "sbin" / f"f{i:05d}").touch()
    rootfs = tmp_path / "rootfs.ext4"
    subprocess.run([tool("mkfs.ext4"), "-q", "-F", "-b", "1024", "-d", str(tree), str(rootfs), "8M"], check=True)
    assert (await install_guest_agent(rootfs, binary, BOOT_ARGS)).installed
    assert read_file(rootfs, AGENT_PATH, tmp_path / "back") == binary.read_bytes()
    fsck_clean(rootfs)


async def test_several_copies_at_once(tmp_path: Path, binary: Path) -> None:
    copies = [image(tmp_path, {"bin": None}, name=f"r{i}.ext4") for i in range(4)]
    results = await asyncio.gather(*(install_guest_agent(c, binary, BOOT_ARGS) for c in copies))
    assert all(r.installed for r in results)
    for copy in copies:
        fsck_clean(copy)


async def test_not_ext4_is_left_alone(tmp_path: Path, binary: Path) -> None:
    rootfs = tmp_path / "rootfs.img"
    rootfs.write_bytes(os.urandom(1 << 20))
    before = sha(rootfs)
    result = await install_guest_agent(rootfs, binary, BOOT_ARGS)
    assert not result.installed and result.boot_args == BOOT_ARGS
    assert result.reason and "not an ext4 file system" in result.reason
    assert sha(rootfs) == before


async def test_full_image_keeps_its_old_agent(tmp_path: Path) -> None:
    rootfs = image(tmp_path, {"etc/fc-macos-image": b"", "sbin/fc-guest-agent": b"old agent\n"}, size_mib=4)
    big = tmp_path / "big-agent"
    big.write_bytes(os.urandom(6 << 20))
    result = await install_guest_agent(rootfs, big, BOOT_ARGS)
    assert not result.installed and result.boot_args == BOOT_ARGS
    assert result.reason and "no room" in result.reason and "resize2fs" in result.reason
    assert read_file(rootfs, AGENT_PATH, tmp_path / "back") == b"old agent\n"
    assert ".fc-guest-agent.new" not in debugfs(rootfs, "ls /")
    fsck_clean(rootfs)


async def test_journal_that_needs_recovery_is_not_touched(tmp_path: Path, binary: Path) -> None:
    rootfs = image(tmp_path, {"bin": None})
    debugfs_w = subprocess.run([tool("debugfs"), "-w", "-R", "feature needs_recovery", str(rootfs)], capture_output=True)
    assert debugfs_w.returncode == 0
    before = sha(rootfs)
    result = await install_guest_agent(rootfs, binary, BOOT_ARGS)
    assert not result.installed and "e2fsck -fy" in (result.reason or "")
    assert sha(rootfs) == before


async def test_read_only_image(tmp_path: Path, binary: Path) -> None:
    rootfs = image(tmp_path, {"bin": None})
    if subprocess.run(["chattr", "+i", str(rootfs)], capture_output=True).returncode != 0:
        pytest.skip("chattr +i is not possible here (needs root and a file system with immutable files)")
    try:
        result = await install_guest_agent(rootfs, binary, BOOT_ARGS)
    finally:
        subprocess.run(["chattr", "-i", str(rootfs)], check=True)
    assert not result.installed and result.boot_args == BOOT_ARGS
    assert "read-only" in (result.reason or "")


async def test_agent_path_taken_by_a_directory(tmp_path: Path, binary: Path) -> None:
    rootfs = image(tmp_path, {"sbin/fc-guest-agent/x": b"", "etc/fc-macos-image": b""})
    result = await install_guest_agent(rootfs, binary, BOOT_ARGS)
    assert not result.installed and "is a directory" in (result.reason or "")
    assert result.fc_macos_image is True
    assert ".fc-guest-agent.new" not in debugfs(rootfs, "ls /")
    fsck_clean(rootfs)


async def test_missing_binary_and_missing_debugfs(tmp_path: Path, binary: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    rootfs = image(tmp_path, {"bin": None})
    before = sha(rootfs)
    result = await install_guest_agent(rootfs, tmp_path / "nothing", BOOT_ARGS)
    assert not result.installed and "python -m fc_macos.guest.build" in (result.reason or "")
    result = await install_guest_agent(rootfs, binary, BOOT_ARGS, debugfs=str(tmp_path / "no-debugfs"))
    assert not result.installed and "e2fsprogs" in (result.reason or "")
    empty = tmp_path / "empty-path"
    empty.mkdir()
    monkeypatch.setenv("PATH", str(empty))
    monkeypatch.setattr(rootfs_module, "E2FS_DIRS", ())
    result = await install_guest_agent(rootfs, binary, BOOT_ARGS)
    assert not result.installed and result.boot_args == BOOT_ARGS
    assert "'debugfs' (e2fsprogs) is not installed" in (result.reason or "")
    assert "apt-get install e2fsprogs" in (result.reason or "")
    assert sha(rootfs) == before


@pytest.mark.parametrize(("given", "expected"), [
    ("console=ttyS0", "console=ttyS0 init=/sbin/fc-guest-agent"),
    ("console=ttyS0 init=/sbin/init ro", "console=ttyS0 ro init=/sbin/fc-guest-agent fc_macos.init=/sbin/init"),
    ("init=/a init=/b quiet", "quiet init=/sbin/fc-guest-agent fc_macos.init=/b"),  # the kernel's last one wins
    ('x="a b" init="/my init"', 'x="a b" init=/sbin/fc-guest-agent fc_macos.init="/my init"'),
    ("fc_macos.init=/old init=/new", "init=/sbin/fc-guest-agent fc_macos.init=/new"),
    ("fc_macos.init=/kept", "fc_macos.init=/kept init=/sbin/fc-guest-agent"),
    ("console=ttyS0 -- init=/arg single", "console=ttyS0 init=/sbin/fc-guest-agent -- init=/arg single"),
    ("", "init=/sbin/fc-guest-agent"),
])
def test_shim_boot_args(given: str, expected: str) -> None:
    assert shim_boot_args(given) == expected
    assert shim_boot_args(expected) == expected  # idempotent


# --- a real boot -------------------------------------------------------------------


async def shell(reader: ConsoleReader, command: str) -> str:
    """Run ``command`` in the guest's serial shell; its output (what came after the
    typed line, up to the end marker)."""
    start = reader.cursor
    await reader.run(command)
    text = reader.seen[start:reader.cursor].decode(errors="replace").replace("\r", "")
    return text.split("\n", 1)[1] if "\n" in text else text


def agent_processes(ps_output: str) -> dict[int, int]:
    """``{pid: parent pid}`` of the fc-guest-agent processes listed as ``ga PID PPID`` lines."""
    return {int(pid): int(ppid) for pid, ppid in re.findall(r"^ga (\d+) (\d+)$", ps_output, re.M)}


LIST_AGENTS = "for p in $(pidof fc-guest-agent); do echo \"ga $p $(sed -n 's/^PPid:\\t*//p' /proc/$p/status)\"; done"


#: Prints "vsock-bound-2" when the guest's virtio-vsock driver has a device.
VSOCK_BOUND = "ls /sys/bus/virtio/drivers/vmw_vsock_virtio_transport 2>/dev/null | grep -q virtio && echo vsock-bound-$((1+1))"


async def give_vsock(client: TestClient, created: dict[str, Any], uds_path: str) -> str:
    """The microVM's vsock socket: the one fc-agent gave it, or one added now through the
    raw API (the microVM was created with ``start: false``)."""
    if created.get("vsock"):
        return str(created["vsock"]["uds_path"])
    resp = await client.put(f"/v1/microvms/{created['name']}/firecracker/vsock", headers=AUTH,
                            json={"guest_cid": 3, "uds_path": uds_path})
    assert resp.status == 204, await resp.text()
    return uds_path


async def exec_over_vsock(uds_path: str, argv: list[str]) -> bytes:
    """``argv``'s stdout, run by the guest agent through the hybrid vsock socket (the
    agent may still be starting: connections are retried for a while)."""
    from fc_macos.guest.protocol import open_hybrid_vsock

    for attempt in range(60):
        try:
            conn = await open_hybrid_vsock(uds_path)
        except FcMacosError:
            if attempt == 59:
                raise
            await asyncio.sleep(1)
            continue
        result = await conn.run(argv)
        assert result.exit_code == 0, result
        return result.stdout
    raise AssertionError("unreachable")


@pytest.mark.guest
@pytest.mark.timeout(900)
async def test_foreign_rootfs_runs_its_own_init_and_the_agent(settings: AgentSettings, short_tmp: Path) -> None:
    images = build_test_images()
    foreign_dir = short_tmp / "foreign"
    foreign_dir.mkdir()
    original = build_foreign_rootfs(foreign_dir / "original.ext4")
    before = sha(original)
    copy = foreign_dir / "copy.ext4"
    shutil.copyfile(original, copy)
    result = await install_guest_agent(copy, guest_agent_binary(), GUEST_BOOT_ARGS + " init=/sbin/init")
    assert result.installed and result.shim and result.fc_macos_image is False
    assert result.boot_args == f"{GUEST_BOOT_ARGS} init={AGENT_PATH} fc_macos.init=/sbin/init"
    assert sha(original) == before

    client = await serve(replace(settings, image_dirs=(images.kernel.parent, foreign_dir)))
    try:
        resp = await client.post("/v1/microvms", headers=AUTH, json={
            "name": "foreign", "memory_mib": 128, "kernel": str(images.kernel), "initrd": str(images.initrd),
            "rootfs": str(copy), "boot_args": result.boot_args, "start": False,
        })
        created = await resp.json()
        assert resp.status == 201, created
        uds_path = await give_vsock(client, created, str(short_tmp / "v.sock"))
        resp = await client.put("/v1/microvms/foreign/firecracker/actions", headers=AUTH, json={"action_type": "InstanceStart"})
        assert resp.status == 204, await resp.text()
        reader = ConsoleReader(await client.ws_connect("/v1/microvms/foreign/console", headers=AUTH))
        await reader.wait_for(INITTAB_BANNER.encode())
        await reader.wait_for(FOREIGN_PROMPT, poke=b"\n")

        # The image's own init is PID 1 (the shim exec'd it), with its own inittab shell.
        out = await shell(reader, "tr '\\0' ' ' </proc/1/cmdline; echo; readlink /proc/1/exe; "
                                  "ls /etc/fc-macos-image 2>&1; hostname")
        # (busybox init rewrites its command line to "init"; the shim's would be fc-guest-agent.)
        assert re.search(r"^init *\n/bin/busybox\n.*No such file.*\nforeign\n", out, re.M | re.S), out

        # The agent runs beside it: the supervisor (adopted by init) and its server.
        agents: dict[int, int] = {}
        for _ in range(30):
            agents = agent_processes(await shell(reader, LIST_AGENTS))
            if len(agents) == 2:
                break
            await asyncio.sleep(1)
        supervisor = next((pid for pid, ppid in agents.items() if ppid == 1), None)
        server = next((pid for pid, ppid in agents.items() if ppid == supervisor), None)
        assert supervisor and server, agents

        # kill -9 of the server: the supervisor starts another one.
        await shell(reader, f"kill -9 {server}")
        for _ in range(30):
            agents = agent_processes(await shell(reader, LIST_AGENTS))
            restarted = [pid for pid, ppid in agents.items() if ppid == supervisor and pid != server]
            if restarted:
                break
            await asyncio.sleep(1)
        assert restarted and server not in agents, agents

        # Where the test VMM gives the guest a real virtio-vsock device: exec through it.
        if "vsock-bound-2" in await shell(reader, VSOCK_BOUND):
            assert await exec_over_vsock(uds_path, ["cat", "/etc/hostname"]) == b"foreign\n"
        await reader.ws.close()
        assert (await client.delete("/v1/microvms/foreign?force=true", headers=AUTH)).status == 204
    finally:
        await client.close()
        kill_recorded_vmms(settings.state_dir)
    assert sha(original) == before
