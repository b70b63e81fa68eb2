"""The offline image source: Debian's cloud kernel package and busybox-static.

Works wherever Debian's archive is reachable (this project's CI and dev
machines): ``apt-get download linux-image-<ver>-cloud-<arch>`` (or a ``.deb``
given by path), ``dpkg-deb -x`` to unpack it, then

* ``vmlinux``: the bzImage's payload, decompressed (``kernel.py``);
* ``initrd.img``: busybox + the virtio modules (``initramfs.py``), because the
  cloud kernel builds ``virtio_mmio``/``virtio_blk`` as modules;
* ``rootfs.ext4``: busybox with applet links, the fc-macos ``/init`` and the guest
  agent.

Busybox must be a static build for the guest's architecture (``busybox-static``
installs one at ``/bin/busybox``), so this source builds for the host's own
architecture unless another busybox is given.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
import time
from pathlib import Path

from fc_macos import image_names
from fc_macos.errors import ImageError
from fc_macos.images.elf import EM_AARCH64, EM_X86_64, ElfFile
from fc_macos.images.initramfs import OPTIONAL_MODULES, REQUIRED_MODULES, build_initramfs, load_order
from fc_macos.images.kernel import prepare_kernel
from fc_macos.images.arch import debian_arch
from fc_macos.images.rootfs import make_ext4, populate_busybox_tree
from fc_macos.progress import NullProgress, Progress

DEFAULT_BUSYBOX = Path("/bin/busybox")
ROOTFS_SIZE_MIB = 64
WATCH_S = 0.25  # how often a download's file size is looked at


def _run(command: list[str], what: str, *, cwd: Path | None = None, hint: str) -> str:
    if shutil.which(command[0]) is None:
        raise ImageError(f"{what}: '{command[0]}' is not installed", hint=hint)
    proc = subprocess.run(command, cwd=cwd, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise ImageError(f"{what} failed: {(proc.stderr or proc.stdout).strip()}", hint=hint)
    return proc.stdout


def kernel_package(arch: str) -> str:
    """The versioned kernel package that ``linux-image-cloud-<arch>`` depends on now."""
    meta = f"linux-image-cloud-{debian_arch(arch)}"
    out = _run(["apt-cache", "depends", meta], f"apt-cache depends {meta}", hint="run 'apt-get update' (Debian only)")
    for line in out.splitlines():
        key, _, value = line.strip().partition(": ")
        if key == "Depends" and value.startswith("linux-image-"):
            return value
    raise ImageError(f"{meta} depends on no kernel package", hint="run 'apt-get update' and try again")


def download_kernel_deb(dest_dir: Path, arch: str, progress: Progress | None = None) -> Path:
    """Download the current Debian cloud kernel package for ``arch`` into ``dest_dir``
    with ``apt-get download``; reuse one already there. Returns the .deb path. The
    download's bytes are reported through ``progress.transfer`` (the file as apt writes
    it, against the size ``apt-get download --print-uris`` announces)."""
    package = kernel_package(arch)
    existing = sorted(dest_dir.glob(f"{package}_*.deb"))
    if existing:
        return existing[-1]
    dest_dir.mkdir(parents=True, exist_ok=True)
    what, hint = f"apt-get download {package}", "check that Debian's archive is reachable, or pass --kernel-deb PATH"
    name, size = _announced(_run(["apt-get", "download", "--print-uris", "-q", package], what, hint=hint),
                            f"{package}.deb")
    _watch_download(["apt-get", "download", "-q", package], dest_dir / name, size, progress or NullProgress(),
                    what=what, hint=hint)
    found = sorted(dest_dir.glob(f"{package}_*.deb"))
    if not found:
        raise ImageError(f"apt-get download left no {package} .deb in {dest_dir}", hint="pass --kernel-deb PATH")
    return found[-1]


def _announced(print_uris: str, fallback: str) -> tuple[str, int | None]:
    """The file name and size in ``apt-get download --print-uris``'s line
    (``'URL' FILE SIZE SHA256:...``), else ``(fallback, None)``."""
    for line in print_uris.splitlines():
        fields = line.split()
        if len(fields) >= 3 and fields[0].startswith("'") and fields[2].isdigit():
            return Path(fields[1]).name, int(fields[2])
    return fallback, None


def _watch_download(command: list[str], file: Path, size: int | None, progress: Progress, *,
                    what: str, hint: str) -> None:
    """Run ``command`` in ``file``'s directory, telling ``progress`` how big ``file`` is
    (apt writes it in place) every :data:`WATCH_S` until it exits; ImageError on failure."""
    if shutil.which(command[0]) is None:
        raise ImageError(f"{what}: '{command[0]}' is not installed", hint=hint)
    with tempfile.TemporaryFile() as output:
        proc = subprocess.Popen(command, cwd=file.parent, stdout=output, stderr=subprocess.STDOUT)
        try:
            while proc.poll() is None:
                if file.is_file():
                    progress.transfer(file.name, file.stat().st_size, size)
                time.sleep(WATCH_S)
        except BaseException:
            proc.kill()
            proc.wait()
            raise
        if proc.returncode != 0:
            output.seek(0)
            raise ImageError(f"{what} failed: {output.read().decode(errors='replace').strip()}", hint=hint)
    if file.is_file():
        got = file.stat().st_size
        progress.transfer(file.name, got, got)


def unpack_deb(deb: Path, dest: Path) -> None:
    """``dpkg-deb -x deb dest``."""
    if not deb.is_file():
        raise ImageError(f"kernel package {deb} does not exist", hint="run scripts/fetch-test-kernel or pass --kernel-deb PATH")
    _run(["dpkg-deb", "-x", str(deb), str(dest)], f"unpacking {deb.name}", hint="apt-get install dpkg; check the .deb")


def _only(paths: list[Path], what: str, deb: Path) -> Path:
    if len(paths) != 1:
        raise ImageError(f"{deb.name} holds {len(paths)} {what} (expected one)", hint="pass a linux-image-*-cloud-* package")
    return paths[0]


def check_busybox_arch(busybox: Path, arch: str) -> None:
    """``ImageError`` unless ``busybox`` is an executable for ``arch``."""
    try:
        machine = ElfFile(busybox.read_bytes(), what=str(busybox)).machine
    except OSError as exc:
        raise ImageError(f"cannot read {busybox}: {exc}", hint="apt-get install busybox-static") from exc
    if machine != {"x86_64": EM_X86_64, "aarch64": EM_AARCH64}[arch]:
        raise ImageError(
            f"{busybox} is not built for {arch}: the debian source builds for this machine's architecture",
            hint=f"use --source online for {arch} guests",
        )


def build_from_deb(deb: Path, out: Path, progress: Progress, *, arch: str,
                   busybox: Path = DEFAULT_BUSYBOX, guest_agent: Path | None = None) -> str:
    """Write ``vmlinux``, ``initrd.img`` and ``rootfs.ext4`` into ``out`` from the kernel
    package ``deb`` for ``arch``; return the kernel format (``"elf"`` or ``"arm64-image"``).
    ``busybox`` (static) must be built for ``arch``; ``guest_agent`` (the binary for
    ``arch``; ``build_images`` always gives it) goes to ``/sbin/fc-guest-agent``."""
    check_busybox_arch(busybox, arch)
    with tempfile.TemporaryDirectory(prefix="fc-debian-") as tmp:
        unpacked, tree = Path(tmp) / "deb", Path(tmp) / "rootfs"
        progress.step("unpack-kernel", f"unpacking {deb.name}")
        unpack_deb(deb, unpacked)
        vmlinuz = _only(sorted((unpacked / "boot").glob("vmlinuz-*")), "kernels", deb)
        modules_dir = _only(sorted((unpacked / "lib" / "modules").glob("*")), "module trees", deb)
        progress.done("unpack-kernel", vmlinuz.name)

        progress.step("kernel", "extracting the uncompressed kernel")
        kernel_format = prepare_kernel(vmlinuz, out / image_names.KERNEL)
        progress.done("kernel", kernel_format)

        progress.step("initrd", "building the initramfs (busybox + virtio modules)")
        modules = load_order(modules_dir, REQUIRED_MODULES, OPTIONAL_MODULES)
        build_initramfs(busybox, modules, out / image_names.INITRD)
        progress.done("initrd", " ".join(m.name for m in modules))

        progress.step("rootfs", "building the ext4 root file system")
        populate_busybox_tree(tree, busybox, guest_agent=guest_agent)
        make_ext4(tree, out / image_names.ROOTFS, size_mib=ROOTFS_SIZE_MIB)
        progress.done("rootfs", f"{ROOTFS_SIZE_MIB} MiB")
    return kernel_format
