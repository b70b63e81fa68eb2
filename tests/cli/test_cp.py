"""``fc-macos cp`` against a real fc-agent and a real guest (the shared
``guest_world`` guest): big files both ways, trees with modes and symlinks,
docker cp's destination rules, missing directories, tar streams, and
interrupted copies that leave nothing behind."""

from __future__ import annotations

import hashlib
import io
import os
import signal
import subprocess
import tarfile
import time
from pathlib import Path

import pytest

from fc_macos.transfer.unpack import TEMP_PREFIX
from tests.cli.terminal import Terminal
from tests.helpers.guest_world import GuestWorld
from tests.transfer.test_pack_unpack import make_tree, snapshot

pytestmark = [pytest.mark.guest, pytest.mark.timeout(900)]


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_twenty_mib_in_and_out_with_equal_sha256(guest_world: GuestWorld, tmp_path: Path) -> None:
    big = tmp_path / "big.bin"
    big.write_bytes(os.urandom(20 * 1024 * 1024))
    guest_world.sh("rm -rf /tmp/cp-big && mkdir /tmp/cp-big")
    put = guest_world.fc("cp", str(big), f"{guest_world.name}:/tmp/cp-big/")
    assert put.stdout == b"Copied 1 entry (20.0 MiB) to box:/tmp/cp-big/big.bin\n"
    assert put.stderr == b""  # no progress bar without a terminal
    assert guest_world.sh("sha256sum /tmp/cp-big/big.bin").split()[0].decode() == sha256(big)
    guest_world.fc("cp", f"{guest_world.name}:/tmp/cp-big/big.bin", str(tmp_path / "back.bin"))
    assert sha256(tmp_path / "back.bin") == sha256(big)
    assert sorted(os.listdir(tmp_path)) == ["back.bin", "big.bin"]


def test_a_large_copy_on_a_terminal_shows_a_progress_bar(guest_world: GuestWorld, tmp_path: Path) -> None:
    big = tmp_path / "bar.bin"
    big.write_bytes(os.urandom(12 * 1024 * 1024))
    guest_world.sh("rm -rf /tmp/cp-bar && mkdir /tmp/cp-bar")
    remote = f"{guest_world.name}:/tmp/cp-bar/"
    into, out_of = (str(big), remote), (remote + "bar.bin", str(tmp_path / "back.bin"))
    for args in (into, out_of):
        term = Terminal(guest_world.argv("cp", *args))
        try:
            out = term.read_until(b"Copied 1 entry (12.0 MiB)", 120)
            assert term.wait() == 0
        finally:
            term.close()
        assert b"100% [" in out and b"12.0 MiB / 12.0 MiB" in out, out[-500:]
    assert sha256(tmp_path / "back.bin") == sha256(big)


def test_a_tree_with_modes_mtimes_and_symlinks_survives_the_round_trip(guest_world: GuestWorld, tmp_path: Path) -> None:
    tree = make_tree(tmp_path)
    guest_world.sh("rm -rf /tmp/cp-tree && mkdir /tmp/cp-tree")
    guest_world.fc("cp", str(tree), f"{guest_world.name}:/tmp/cp-tree")  # into an existing directory
    listing = guest_world.sh("cd /tmp/cp-tree/tree && stat -c '%n %a' run.sh sub/deeper sub/data.bin "
                             "&& readlink link && stat -c %Y sub/data.bin")
    assert listing.split() == [b"run.sh", b"4755", b"sub/deeper", b"1777", b"sub/data.bin", b"600",
                               b"sub/data.bin", b"1600000000"]
    out = tmp_path / "out"
    out.mkdir()
    guest_world.fc("cp", f"{guest_world.name}:/tmp/cp-tree/tree", str(out / "copy"))  # to a new name
    assert snapshot(out / "copy") == snapshot(tree)
    guest_world.fc("cp", f"{guest_world.name}:/tmp/cp-tree/tree/.", str(out))  # the contents, merged
    assert sorted(os.listdir(out)) == ["copy", "dangling", "link", "run.sh", "sub"]


def test_a_destination_directory_that_does_not_exist_is_a_clear_error(guest_world: GuestWorld, tmp_path: Path) -> None:
    local = tmp_path / "f.txt"
    local.write_text("x")
    into_guest = guest_world.fc("cp", str(local), f"{guest_world.name}:/no/such/dir/", check=False)
    assert into_guest.returncode == 1
    assert b"the destination directory /no/such/dir does not exist in microVM box" in into_guest.stderr
    assert b"Hint: create it first: fc-macos exec --name box -- mkdir -p /no/such/dir" in into_guest.stderr
    out_of_guest = guest_world.fc("cp", f"{guest_world.name}:/etc/hostname", str(tmp_path / "nodir" / "h"),
                                  check=False)
    assert out_of_guest.returncode == 1
    assert f"the destination directory {tmp_path / 'nodir'} does not exist on this machine".encode() in out_of_guest.stderr
    missing_source = guest_world.fc("cp", f"{guest_world.name}:/no/such/file", str(tmp_path), check=False)
    assert missing_source.returncode == 1 and b"/no/such/file does not exist in microVM box" in missing_source.stderr
    assert sorted(os.listdir(tmp_path)) == ["f.txt"]


def test_tar_streams_on_stdin_and_stdout(guest_world: GuestWorld, tmp_path: Path) -> None:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:  # what 'tar c streamed' writes
        top = tarfile.TarInfo("streamed")
        top.type, top.mode = tarfile.DIRTYPE, 0o755
        tar.addfile(top)
        info = tarfile.TarInfo("streamed/hello.txt")
        info.size, info.mode = 6, 0o640
        tar.addfile(info, io.BytesIO(b"hello\n"))
    guest_world.sh("rm -rf /tmp/cp-tar && mkdir /tmp/cp-tar")
    guest_world.fc("cp", "-", f"{guest_world.name}:/tmp/cp-tar", input=buf.getvalue())
    assert guest_world.sh("cat /tmp/cp-tar/streamed/hello.txt; stat -c %a /tmp/cp-tar/streamed/hello.txt") == b"hello\n640\n"
    out = guest_world.fc("cp", f"{guest_world.name}:/tmp/cp-tar/streamed", "-").stdout
    with tarfile.open(fileobj=io.BytesIO(out)) as tar:
        names = tar.getnames()
        member = tar.extractfile("streamed/hello.txt")
        assert member is not None and member.read() == b"hello\n"
    assert names == ["streamed", "streamed/hello.txt"]
    not_a_dir = guest_world.fc("cp", "-", f"{guest_world.name}:/tmp/cp-tar/none", input=buf.getvalue(), check=False)
    assert not_a_dir.returncode == 1 and b"does not exist in microVM box" in not_a_dir.stderr


def test_a_tar_of_bare_file_paths_gets_its_directories(guest_world: GuestWorld, tmp_path: Path) -> None:
    (tmp_path / "a" / "b" / "c").mkdir(parents=True)
    (tmp_path / "a" / "b" / "c" / "deep.txt").write_text("deep\n")
    (tmp_path / "a" / "top.txt").write_text("top\n")
    data = subprocess.run(["tar", "-C", str(tmp_path), "-cf", "-", "a/b/c/deep.txt", "a/top.txt"],
                          capture_output=True, check=True).stdout
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        assert tar.getnames() == ["a/b/c/deep.txt", "a/top.txt"]  # no directory members
    guest_world.sh("rm -rf /tmp/cp-bare && mkdir /tmp/cp-bare")
    guest_world.fc("cp", "-", f"{guest_world.name}:/tmp/cp-bare", input=data)
    listing = guest_world.sh("cd /tmp/cp-bare && cat a/b/c/deep.txt a/top.txt && stat -c '%n %a' a a/b a/b/c")
    assert listing.split() == [b"deep", b"top", b"a", b"755", b"a/b", b"755", b"a/b/c", b"755"]


def test_an_interrupted_copy_out_leaves_nothing_locally(guest_world: GuestWorld, tmp_path: Path) -> None:
    guest_world.sh("mkdir -p /tmp/cp-int && head -c 64000000 /dev/urandom > /tmp/cp-int/huge", timeout=300)
    proc = subprocess.Popen(guest_world.argv("cp", f"{guest_world.name}:/tmp/cp-int/huge", str(tmp_path / "huge")),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 60
        while not any(p.name.startswith(TEMP_PREFIX) for p in tmp_path.iterdir()):  # the copy is under way
            assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
            time.sleep(0.01)
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=60)
        assert proc.returncode == 130, err
        assert b"Interrupted: nothing was left at" in err
        assert os.listdir(tmp_path) == []
    finally:
        proc.kill()
        proc.wait()
    guest_world.sh("rm -rf /tmp/cp-int")


def test_an_interrupted_copy_in_leaves_nothing_in_the_guest(guest_world: GuestWorld) -> None:
    guest_world.sh("rm -rf /tmp/cp-cut && mkdir /tmp/cp-cut")
    info = tarfile.TarInfo("partial.bin")
    info.size = 8 * 1024 * 1024
    header = info.tobuf(format=tarfile.USTAR_FORMAT)
    proc = subprocess.Popen(guest_world.argv("cp", "-", f"{guest_world.name}:/tmp/cp-cut"),
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        assert proc.stdin is not None
        proc.stdin.write(header + os.urandom(3 * 1024 * 1024))  # the header and part of the data only
        proc.stdin.flush()
        time.sleep(3)  # it reaches the guest, which writes it under a temporary name
        proc.kill()  # no goodbye: the connection just ends
        proc.wait(30)
    finally:
        proc.kill()
        proc.wait()
    deadline = time.monotonic() + 30
    while (left := guest_world.sh("ls -A /tmp/cp-cut")) and time.monotonic() < deadline:
        time.sleep(0.5)  # the guest agent notices the cut and removes its temporary
    assert left == b""


def test_an_unknown_microvm_is_named_not_taken_for_a_missing_path(guest_world: GuestWorld, tmp_path: Path) -> None:
    local = tmp_path / "f.txt"
    local.write_text("x")
    for args, stdin in (((str(local), "ghost:/tmp"), None), (("ghost:/etc/hostname", str(tmp_path)), None),
                        (("-", "ghost:/tmp"), b""), (("ghost:/etc", "-"), None)):
        result = guest_world.fc("cp", *args, check=False, input=stdin)
        assert result.returncode == 1, (args, result.stderr)
        assert b"Error: no microVM named 'ghost'" in result.stderr, (args, result.stderr)
        assert b"does not exist" not in result.stderr and b"Hint: run 'fc-macos microvm list'" in result.stderr
    assert sorted(os.listdir(tmp_path)) == ["f.txt"]
