"""Fixtures shared by every test package."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest


@pytest.fixture
def short_tmp() -> Iterator[Path]:
    """A fresh directory with a short path under /tmp, removed afterwards: Unix
    socket paths are limited to about 104 bytes, which pytest's tmp_path exceeds."""
    path = Path(tempfile.mkdtemp(prefix="fct-", dir="/tmp"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


# The Tart double's fixtures (tart_double, tart_double_root) and the shared booted
# guest of the host-side tests (guest_world) for every test package.
pytest_plugins = ["tests.doubles.tart_double.fixtures", "tests.helpers.guest_world"]
