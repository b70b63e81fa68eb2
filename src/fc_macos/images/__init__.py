"""Guest images for Firecracker microVMs.

Public surface: :func:`build_images` makes (or reuses) an image set in a
directory and returns an :class:`ImageSet`; :func:`verify_images` checks an
existing one against its ``manifest.json``. Sources: ``"online"`` (Firecracker's
CI kernel + Alpine minirootfs, pinned and sha256-checked) and ``"debian"``
(Debian's cloud kernel package + busybox-static; works offline from a .deb).
The modules below are the building blocks: ``kernel`` (bzImage -> ELF vmlinux),
``initramfs`` (newc cpio with the virtio modules), ``rootfs`` (ext4 with the
fc-macos ``/init``), ``debian`` and ``online`` (the sources), ``builder``.
"""

from fc_macos.images.builder import SOURCES, ImageSet, build_images, read_manifest, verify_images

__all__ = ["SOURCES", "ImageSet", "build_images", "read_manifest", "verify_images"]
