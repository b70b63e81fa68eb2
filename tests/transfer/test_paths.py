"""docker cp's destination rules (fc_macos.transfer.paths), as a table."""

from __future__ import annotations

import pytest

from fc_macos.errors import ConflictError, FcMacosError, NotFoundError, UsageError
from fc_macos.transfer.paths import LOCAL, Placement, Side, Source, destination

GUEST = Side("in microVM web", "fc-macos exec --name web -- mkdir -p {path}")


@pytest.mark.parametrize(("kind", "src", "dest", "dest_kind", "parent_kind", "expected"), [
    ("file", "/etc/hosts", "/tmp", "dir", "dir", Placement("/tmp", "hosts")),
    ("file", "/etc/hosts", "/tmp/", "dir", "dir", Placement("/tmp", "hosts")),
    ("file", "/etc/hosts", "/tmp/h2", None, "dir", Placement("/tmp", "h2")),
    ("file", "/etc/hosts", "/tmp/old", "file", "dir", Placement("/tmp", "old")),
    ("symlink", "/etc/link", "/tmp/l", None, "dir", Placement("/tmp", "l")),
    ("dir", "/srv/site", "/tmp", "dir", "dir", Placement("/tmp", "site")),
    ("dir", "/srv/site", "/tmp/new", None, "dir", Placement("/tmp", "new")),
    ("dir", "/srv/site", "/tmp/new/", None, "dir", Placement("/tmp", "new")),
    ("dir", "/srv/site/.", "/tmp/www", "dir", "dir", Placement("/tmp/www", None)),
    ("dir", "/srv/site/.", "/tmp/www", None, "dir", Placement("/tmp", "www")),
    ("file", "hosts", "out", None, "dir", Placement(".", "out")),
])
def test_where_a_copy_lands(kind: str, src: str, dest: str, dest_kind: str | None, parent_kind: str | None,
                            expected: Placement) -> None:
    assert destination(kind, Source.parse(src), dest, dest_kind, parent_kind, GUEST) == expected


def test_a_missing_destination_directory_is_named_with_the_fix() -> None:
    with pytest.raises(NotFoundError) as missing:
        destination("file", Source.parse("/etc/hosts"), "/no/such/dir/f", None, None, GUEST)
    assert missing.value.message == "the destination directory /no/such/dir does not exist in microVM web"
    assert missing.value.hint == "create it first: fc-macos exec --name web -- mkdir -p /no/such/dir"
    with pytest.raises(NotFoundError, match="the destination directory /tmp/nodir does not exist on this machine"):
        destination("file", Source.parse("/etc/hosts"), "/tmp/nodir/", None, "dir", LOCAL)
    with pytest.raises(NotFoundError, match="/tmp/f is not a directory"):
        destination("file", Source.parse("/etc/hosts"), "/tmp/f/x", None, "file", LOCAL)


def test_conflicts_and_misuse() -> None:
    with pytest.raises(ConflictError, match="cannot copy the directory /srv onto the file /tmp/f in microVM web"):
        destination("dir", Source.parse("/srv"), "/tmp/f", "file", "dir", GUEST)
    with pytest.raises(ConflictError, match="is not a directory"):
        destination("file", Source.parse("/etc/hosts"), "/tmp/f/", "file", "dir", GUEST)
    with pytest.raises(UsageError, match="is not a directory"):
        destination("file", Source.parse("/etc/hosts/."), "/tmp", "dir", "dir", GUEST)
    with pytest.raises(FcMacosError):
        Source.parse("")
