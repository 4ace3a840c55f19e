"""The backend contract (cas/remote/backend.py), against a directory, fsspec's memory
filesystem and the moto S3 server: one suite, every backend."""

from __future__ import annotations

import os

import pytest

from support.remotelab import remote_kind, s3, tiny_packs  # noqa: F401 - fixtures

from cas.core.errors import FormatError, NotFound


@pytest.fixture
def backend(remote_kind):
    return remote_kind.open().backend


def test_write_read_list_delete(backend) -> None:
    backend.write("a/b/one", b"hello")
    backend.write("a/two", b"")
    assert backend.read("a/b/one", max_size=10) == b"hello"
    assert backend.read("a/two", max_size=10) == b""
    listed = backend.list("a/")
    assert [(e.key, e.size) for e in listed] == [("a/b/one", 5), ("a/two", 0)]
    assert all(e.mtime > 0 for e in listed)
    backend.write("a/b/one", b"again")  # overwrite (same-key rewrite is allowed)
    assert backend.read("a/b/one", max_size=10) == b"again"
    backend.delete("a/b/one")
    backend.delete("a/b/one")  # absent: not an error
    assert [e.key for e in backend.list("a/")] == ["a/two"]
    assert backend.list("nothing/") == []


def test_missing_key_is_not_found(backend) -> None:
    with pytest.raises(NotFound):
        backend.read("no/such", max_size=10)
    with pytest.raises(NotFound):
        backend.read_range("no/such", 0, 4)


def test_read_refuses_more_than_max_size(backend) -> None:
    backend.write("big", b"x" * 100)
    with pytest.raises(FormatError, match="more than"):
        backend.read("big", max_size=99)


def test_ranges_exact_and_truncated(backend) -> None:
    backend.write("r", bytes(range(200)))
    assert backend.read_range("r", 10, 5) == bytes(range(10, 15))
    assert backend.read_range("r", 0, 0) == b""
    with pytest.raises(FormatError, match="truncated"):
        backend.read_range("r", 190, 20)


def test_create_only_once(backend) -> None:
    assert backend.create("refs/x", b"1") is True
    assert backend.create("refs/x", b"2") is False
    assert backend.read("refs/x", max_size=10) == b"1"


def test_upload_and_download_files(backend, tmp_path) -> None:
    from cas.remote import backend as backend_mod
    src = tmp_path / "src.bin"
    data = os.urandom(11 * 1024 * 1024 + 17)
    src.write_bytes(data)
    old = backend_mod.PART_SIZE
    try:
        backend_mod.PART_SIZE = 5 * 1024 * 1024  # S3's least part: 3 parts each way
        import cas.remote.cloud as cloud
        cloud.PART_SIZE = backend_mod.PART_SIZE
        backend.upload("objects/big", os.fspath(src), jobs=3)
        dst = tmp_path / "dst.bin"
        backend.download("objects/big", os.fspath(dst), size=len(data), jobs=3)
        assert dst.read_bytes() == data
        with pytest.raises(FormatError):
            backend.download("objects/big", os.fspath(tmp_path / "d2"), size=len(data) + 5, jobs=2)
    finally:
        backend_mod.PART_SIZE = old
        cloud.PART_SIZE = old
