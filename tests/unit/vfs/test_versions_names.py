"""Names of the files under `.versions`: sortable by time, with the device, unique, and
never over 255 bytes."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from mountfs.transport.versions import RemoteVersion
from mountfs.vfs.versions import VIRTUAL_BASE, named_versions, version_name

T0 = datetime(2026, 11, 24, 10, 15, 2, 123456, tzinfo=UTC)


def version(n: int, at: datetime, device: str = "laptop", kind: str = "content") -> RemoteVersion:
    return RemoteVersion(f"rev-{n}", kind, n, 0, at, f"dev-{device}", device, False, False)


def test_name_says_time_device_and_file() -> None:
    assert version_name(T0, "laptop", "report.pdf") == "2026-11-24T10-15-02Z (laptop) report.pdf"
    assert version_name(T0, "a/b", "x", 2) == "2026-11-24T10-15-02Z-2 (a_b) x"


def test_long_names_are_cut_to_255_bytes_keeping_the_extension() -> None:
    name = version_name(T0, "ü" * 100, "é" * 120 + ".tar.gz")
    assert len(name.encode()) <= 255
    assert name.startswith("2026-11-24T10-15-02Z (")
    assert name.endswith(".gz")


def test_versions_of_one_second_are_numbered_and_sort_by_time() -> None:
    versions = [
        version(3, T0 + timedelta(seconds=1)),
        version(1, T0),
        version(2, T0 + timedelta(milliseconds=500)),
        version(4, T0, device="phone"),
        version(5, T0 + timedelta(seconds=2), kind="tombstone"),
    ]
    named = named_versions(versions, "a.txt")
    names = [name for name, _ in named]
    assert [v.revision_id for _, v in named] == ["rev-1", "rev-4", "rev-2", "rev-3"]
    assert names[0] == "2026-11-24T10-15-02Z (laptop) a.txt"
    assert names[2] == "2026-11-24T10-15-02Z-2 (laptop) a.txt"
    assert len(set(names)) == 4
    assert sorted(names[:1] + names[2:]) == names[:1] + names[2:]  # one device: time order


def test_virtual_numbers_are_far_above_sqlite_rowids() -> None:
    assert VIRTUAL_BASE > 2**62 - 1
