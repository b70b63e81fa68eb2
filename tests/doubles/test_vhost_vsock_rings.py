"""The test VMM's virtqueue code against a concurrent reader, without QEMU.

The guest reads the rings while the back end writes them, from another CPU. A forked process
plays the guest here: it maps the same memfd the back end maps (through ``GuestMemory``, as
QEMU hands it over) and spins on ``used->idx`` while the back end returns buffers.
"""

from __future__ import annotations

import multiprocessing
import os
import struct
import sys
import time
from typing import Any

import pytest

from tests.doubles import firecracker_vmm as vmm

NUM = 256
DESC, AVAIL, USED = 0x0, 0x1000, 0x2000  # ring offsets in the region
UVA = 0x7F0000000000  # where "QEMU" says the region is mapped
SIZE = 0x4000


def used_index_reader(fd: int, ready: Any, stop: Any, result: Any) -> None:
    """The guest: read used->idx until told to stop; count the reads of 0 once it has moved.

    The writer only ever publishes 1..65535, so a 0 is a value nobody stored: a half-done
    write (what struct.pack_into's zero-then-store shows a concurrent reader).
    """
    import mmap as mmap_module

    ring = memoryview(mmap_module.mmap(fd, SIZE, mmap_module.MAP_SHARED, mmap_module.PROT_READ)).cast("H")
    at = (USED + 2) // 2
    zeros, reads, moved = 0, 0, False
    ready.set()
    while not stop.is_set():
        now = ring[at]
        reads += 1
        if now:
            moved = True
        elif moved:
            zeros += 1
    result.put((zeros, reads))


def mapped_queue() -> tuple[vmm.Virtqueue, vmm.GuestMemory, int]:
    fd = os.memfd_create("fct-ring")
    os.ftruncate(fd, SIZE)
    memory = vmm.GuestMemory()
    table = struct.pack("<II", 1, 0) + struct.pack("<QQQQ", 0, SIZE, UVA, 0)
    memory.set_table(table, [os.dup(fd)])  # set_table closes the fds it was given
    queue = vmm.Virtqueue(0)
    queue.num = NUM
    queue.addrs = (UVA + DESC, UVA + USED, UVA + AVAIL)
    queue.map(memory)
    return queue, memory, fd


@pytest.mark.skipif(sys.platform != "linux" or (os.cpu_count() or 1) < 2,
                    reason="needs Linux (memfd) and two CPUs for a truly concurrent reader")
def test_a_concurrent_reader_never_sees_a_half_written_used_index() -> None:
    queue, memory, fd = mapped_queue()
    context = multiprocessing.get_context("fork")
    ready, stop, result = context.Event(), context.Event(), context.Queue()
    reader = context.Process(target=used_index_reader, args=(fd, ready, stop, result))
    reader.start()
    try:
        assert ready.wait(30)
        deadline = time.monotonic() + 3
        returned = 0
        while time.monotonic() < deadline:
            for _ in range(1000):
                if queue.used_idx == 0xFFFF:
                    queue.used_idx = 0  # restart the count: the next value published is 1 again
                queue.last_avail = queue.used_idx  # as if the driver had made a buffer available
                queue.consume(returned % NUM, 4096)
                returned += 1
        stop.set()
        zeros, reads = result.get(timeout=30)
    finally:
        stop.set()
        reader.join(30)
        queue.unmap()
        memory.release()
        os.close(fd)
    assert reads > 1000 and returned > 10000, (reads, returned)  # the two really overlapped
    assert zeros == 0, f"the reader saw a used->idx nobody wrote (0) {zeros} times in {reads} reads"


def test_consume_publishes_the_element_then_the_index() -> None:
    queue, memory, fd = mapped_queue()
    try:
        queue.used_idx = NUM - 1  # the next element goes in the last slot, then the index wraps
        queue.consume(17, 4140)
        raw = memory.guest(USED, 6 + 8 * NUM)
        assert struct.unpack_from("<H", raw, 2)[0] == NUM
        assert struct.unpack_from("<II", raw, 4 + 8 * (NUM - 1)) == (17, 4140)
        assert queue.last_avail == 1
    finally:
        queue.unmap()
        memory.release()
        os.close(fd)
