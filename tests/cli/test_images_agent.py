"""``fc-macos images add|list|rm``, ``run --rootfs ./FILE``, ``drives add --path
./FILE`` and ``drives get``, in-process (CliRunner) against a real fc-agent
process with the test VMM. The microVMs here are only configured (--no-start:
no guest boots); booting a guest from an uploaded rootfs is the guest test at
the end."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from fc_macos.cli.main import cli
from fc_macos.config import AgentEndpoint
from tests.helpers.agent import GUEST_BOOT_ARGS, AgentProcess, agent_process


@pytest.fixture
def agent(short_tmp: Path) -> Iterator[AgentProcess]:
    """A real fc-agent whose extra image directory holds a fake kernel and rootfs
    (enough for microVMs that are configured but not started)."""
    images = short_tmp / "img"
    images.mkdir()
    (images / "vmlinux").write_bytes(b"not an ELF kernel\n")
    (images / "rootfs.ext4").write_bytes(b"\0" * 4096)
    with agent_process(short_tmp, (images,)) as running:
        AgentEndpoint(running.url, running.token).save(short_tmp / "home")
        yield running


def invoke(agent: AgentProcess, *args: str) -> Result:
    return CliRunner().invoke(cli, ["--home", str(agent.state_dir.parent / "home"), *args])


def test_add_list_rm(agent: AgentProcess, tmp_path: Path) -> None:
    disk = tmp_path / "my-disk.ext4"
    disk.write_bytes(os.urandom(5 * 1024 * 1024 + 3))
    digest = hashlib.sha256(disk.read_bytes()).hexdigest()
    images = agent.state_dir / "images"

    result = invoke(agent, "images", "add", str(disk))
    assert result.exit_code == 0, result.output
    assert result.stdout.strip() == f"Uploaded {disk} as my-disk.ext4 (5.0 MiB) to {images / 'my-disk.ext4'}."
    assert (images / "my-disk.ext4").read_bytes() == disk.read_bytes()

    again = invoke(agent, "images", "add", str(disk))
    assert "my-disk.ext4: already on the agent with this content (5.0 MiB), nothing sent." in again.stdout
    linked = invoke(agent, "images", "add", str(disk), "--name", "second.ext4", "--json")
    lines = [json.loads(line) for line in linked.stdout.splitlines()]
    assert lines[-1]["event"] == "result"
    assert [(i["name"], i["outcome"], i["linked_from"]) for i in lines[-1]["images"]] == [
        ("second.ext4", "linked", "my-disk.ext4")]
    hashed = [e for e in lines if e["event"] == "transfer"]
    assert hashed and hashed[-1] == {"event": "transfer", "name": "hash my-disk.ext4",
                                     "done": disk.stat().st_size, "total": disk.stat().st_size}

    listed = invoke(agent, "images", "list")
    assert listed.exit_code == 0, listed.output
    assert str(images) in listed.stdout.splitlines()[0] and "free)" in listed.stdout
    assert any(line.split()[:2] == ["my-disk.ext4", "5.0"] and digest[:16] in line for line in listed.stdout.splitlines())
    data = json.loads(invoke(agent, "images", "list", "--json").stdout)
    assert {i["name"]: i["sha256"] for i in data["images"]} == {"my-disk.ext4": digest, "second.ext4": digest}

    other = tmp_path / "other" / "my-disk.ext4"
    other.parent.mkdir()
    other.write_bytes(b"different")
    clash = invoke(agent, "images", "add", str(other))
    assert clash.exit_code == 1 and "other content already exists" in clash.stderr and "--replace" in clash.stderr

    removed = invoke(agent, "images", "rm", "second.ext4", "my-disk.ext4")
    assert removed.exit_code == 0 and "Removed my-disk.ext4." in removed.stdout
    assert sorted(os.listdir(images)) in ([], [".sha256.json"])
    missing = invoke(agent, "images", "rm", "my-disk.ext4")
    assert missing.exit_code == 1 and "no image named 'my-disk.ext4'" in missing.stderr
    assert "fc-macos images list" in missing.stderr


def test_a_terminal_sees_the_upload_progress(agent: AgentProcess, tmp_path: Path) -> None:
    from tests.cli.terminal import Terminal

    big = tmp_path / "big.img"
    big.write_bytes(os.urandom(24 * 1024 * 1024))  # above the bar's 4 MiB threshold
    term = Terminal([sys.executable, "-m", "fc_macos.cli.main", "--home", str(agent.state_dir.parent / "home"),
                     "images", "add", str(big)])
    try:
        term.read_until(b"Uploaded " + str(big).encode(), timeout=120)
        assert term.wait() == 0
    finally:
        term.close()
    shown = term.output.decode(errors="replace")
    assert "upload big.img 100% [" in shown and "24.0 MiB / 24.0 MiB" in shown and "/s" in shown
    assert "hash big.img" in shown


def test_names_that_are_paths_are_refused(agent: AgentProcess, tmp_path: Path) -> None:
    disk = tmp_path / "d.img"
    disk.write_bytes(b"x")
    result = invoke(agent, "images", "add", str(disk), "--name", ".secret")
    assert result.exit_code == 2 and "not a plain file name" in result.stderr and "Hint:" in result.stderr  # bad input


def test_run_and_drives_add_upload_local_files_and_drives_get_returns_the_copy(
        agent: AgentProcess, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    Path("local.ext4").write_bytes(os.urandom(64 * 1024))
    Path("data.img").write_bytes(os.urandom(32 * 1024))
    images = agent.state_dir / "images"

    run = invoke(agent, "run", "--name", "up", "--rootfs", "./local.ext4", "--no-start", "--no-vsock", "--json")
    assert run.exit_code == 0, run.output
    info = json.loads(run.stdout)
    assert info["spec"]["rootfs"] == str(images / "local.ext4")
    assert info["local_files"] == [{"kind": "rootfs", "given": "./local.ext4", "path": str(images / "local.ext4"),
                                    "outcome": "uploaded", "local": str(tmp_path / "local.ext4")}]
    assert f"Uploaded rootfs {tmp_path / 'local.ext4'} to the agent as {images / 'local.ext4'}." in run.stderr

    again = invoke(agent, "run", "--name", "up2", "--rootfs", "local.ext4", "--no-start", "--no-vsock")
    assert again.exit_code == 0, again.output
    assert "it already had this content" in again.stderr  # exists here: checked by content, not sent again

    added = invoke(agent, "drives", "add", "--name", "up", "--id", "data", "--path", "data.img")
    assert added.exit_code == 0, added.output
    copy = agent.state_dir / "microvms" / "up" / "drive-data.img"
    assert f"up writes its own copy at {copy}" in added.stdout
    assert "fc-macos drives get --name up --id data --out FILE" in added.stdout
    assert copy.read_bytes() == Path("data.img").read_bytes()
    assert (images / "data.img").read_bytes() == Path("data.img").read_bytes()

    got = invoke(agent, "drives", "get", "--name", "up", "--id", "data", "--out", "back.img")
    assert got.exit_code == 0, got.output
    assert Path("back.img").read_bytes() == Path("data.img").read_bytes()
    assert f"from {copy}) to back.img." in got.stdout
    rootfs = invoke(agent, "drives", "get", "--name", "up", "--id", "rootfs", "--out", "root.img", "--json")
    assert json.loads(rootfs.stdout)["size"] == 64 * 1024 and Path("root.img").read_bytes() == Path("local.ext4").read_bytes()

    in_use = invoke(agent, "images", "rm", "local.ext4")
    assert in_use.exit_code == 1 and "used by microVM(s) up, up2" in in_use.stderr
    bad = invoke(agent, "drives", "add", "--name", "up", "--id", "x", "--path", "not-anywhere.img")
    assert bad.exit_code == 1 and "drive x file 'not-anywhere.img' not found in" in bad.stderr
    served = agent.state_dir.parent / "img" / "vmlinux"  # a file the agent serves already (it runs here)
    as_is = invoke(agent, "run", "--name", "up4", "--kernel", str(served), "--no-start", "--no-vsock", "--json")
    assert as_is.exit_code == 0, as_is.output
    assert json.loads(as_is.stdout)["spec"]["kernel"] == str(served) and "local_files" not in json.loads(as_is.stdout)
    assert not (images / "vmlinux").exists() and as_is.stderr == ""
    Path("rootfs.ext4").write_bytes(b"my own root" * 100)  # named like the default: must not become it
    own = invoke(agent, "run", "--name", "up5", "--rootfs", "rootfs.ext4", "--no-start", "--no-vsock", "--json")
    digest = hashlib.sha256(Path("rootfs.ext4").read_bytes()).hexdigest()
    assert json.loads(own.stdout)["spec"]["rootfs"] == str(images / f"rootfs-{digest[:12]}.ext4"), own.output
    assert not (images / "rootfs.ext4").exists()
    typo = invoke(agent, "run", "--name", "up3", "--rootfs", "./typo.ext4", "--no-start")
    assert typo.exit_code == 1 and "./typo.ext4 is not a file on this machine" in typo.stderr
    assert not list(Path(".").glob("*.part"))


@pytest.mark.guest
@pytest.mark.timeout(600)
def test_run_boots_a_guest_from_an_uploaded_rootfs(short_tmp: Path, tmp_path: Path) -> None:
    """The offline guest image's rootfs, copied here under another name: 'run
    --rootfs ./mine.ext4' uploads it, the guest boots from it with its guest
    agent, the drive download is refused while it runs and works once stopped."""
    from tests.helpers.guest_images import build_test_images

    built = build_test_images()
    mine = tmp_path / "mine.ext4"
    mine.write_bytes(built.rootfs.read_bytes())
    with agent_process(short_tmp, (built.kernel.parent,)) as running:
        AgentEndpoint(running.url, running.token).save(short_tmp / "home")
        run = invoke(running, "run", "--name", "own", "--rootfs", str(mine), "--memory", "128",
                     "--boot-args", GUEST_BOOT_ARGS, "--background", "--json", "--wait-timeout", "300")
        assert run.exit_code == 0, run.output
        info = json.loads(run.stdout)
        assert info["state"] == "running" and info["guest_agent"]["state"] == "ready", info
        assert info["local_files"][0]["outcome"] == "uploaded"
        assert info["spec"]["rootfs"] == str(running.state_dir / "images" / "mine.ext4")
        shown = subprocess.run([sys.executable, "-m", "fc_macos.cli.main", "--home", str(short_tmp / "home"), "exec",
                                "--name", "own", "--", "cat", "/proc/cmdline"], capture_output=True, text=True,
                               timeout=120)  # exec drives a real terminal's streams: a process of its own
        assert shown.returncode == 0 and "tsc_early_khz" in shown.stdout, (shown.stdout, shown.stderr)

        refused = invoke(running, "drives", "get", "--name", "own", "--id", "rootfs", "--out", str(tmp_path / "r"))
        assert refused.exit_code == 1 and "is running" in refused.stderr and "microvm stop" in refused.stderr
        assert invoke(running, "microvm", "stop", "--name", "own", "--force").exit_code == 0
        got = invoke(running, "drives", "get", "--name", "own", "--id", "rootfs", "--out", str(tmp_path / "r"))
        assert got.exit_code == 0, got.output
        assert (tmp_path / "r").stat().st_size == mine.stat().st_size
