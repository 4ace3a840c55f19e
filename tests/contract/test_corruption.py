"""Damage a real object file, assert the exact diagnostic (git t1450-fsck, borg's
corrupt_chunk_on_disk): flipped bytes, truncation, decompression bombs, and a checkout
that must not materialize what it cannot vouch for."""

from __future__ import annotations

import os
import random
import shutil
import struct
from pathlib import Path

import pytest

from support import helpers
from cas.workspace import checkout as co
from cas.store import config
from cas.core import hashing
from cas.objects import pointer
from cas.workspace import tracking
from cas.objects import tree
from cas.core.errors import Corruption, CorruptObject
from cas.workspace.project import open_project
from cas.store.objectstore import FileStore, StoreOptions

TEXT = b"".join(b"line %d of some text\n" % i for i in range(3000))
RANDOM = random.Random(5).randbytes(3000)
# Incompressible and above writer.RAW_MAX, so `zstd` stores it in the zstd form.
RANDOM_BIG = random.Random(6).randbytes(3 * 4096)


def store(tmp_path: Path, compression: str) -> FileStore:
    return FileStore(tmp_path / "store", options=StoreOptions(compression=compression))


def assert_corrupt(s: FileStore, oid: str, detail: str, *, calls=("get", "verify")) -> None:
    """Every read path refuses the object with `object <oid> is corrupt: <detail>...`."""
    for call in calls:
        with pytest.raises(CorruptObject) as ei:
            getattr(s, call)(oid)
        e = ei.value
        assert e.oid == oid
        assert str(e).startswith(f"object {oid} is corrupt: {detail}"), (call, str(e))
        assert e.path == str(s.info(oid).path)
        assert e.exit_code == 5 and isinstance(e, Corruption)
        assert e.hint and "fsck" in e.hint


# -- raw objects ----------------------------------------------------------------------------

@pytest.mark.parametrize("offset", [0, 1500, -1])
def test_flipped_byte_in_a_raw_object(tmp_path: Path, offset: int) -> None:
    s = store(tmp_path, "none")
    oid = s.put_bytes(RANDOM)
    helpers.flip_byte(s.raw_path(oid), offset)
    assert_corrupt(s, oid, "content does not hash to its id")


@pytest.mark.parametrize("keep", [0, 1, 2999])
def test_truncated_raw_object(tmp_path: Path, keep: int) -> None:
    s = store(tmp_path, "none")
    oid = s.put_bytes(RANDOM)
    helpers.truncate(s.raw_path(oid), keep)
    assert_corrupt(s, oid, "content does not hash to its id")


def test_extended_raw_object(tmp_path: Path) -> None:
    s = store(tmp_path, "none")
    oid = s.put_bytes(RANDOM)
    helpers.rewrite(s.raw_path(oid), lambda b: b + b"\0")
    assert_corrupt(s, oid, "content does not hash to its id")
    with pytest.raises(CorruptObject, match="exceeds the expected 3000"):
        s.get(oid, max_size=len(RANDOM))


def test_large_raw_object_flip_is_found_by_the_mmap_path(tmp_path: Path) -> None:
    s = store(tmp_path, "none")
    data = random.Random(2).randbytes(4 * hashing.MMAP_THRESHOLD)
    oid = s.put_bytes(data)
    helpers.flip_byte(s.raw_path(oid), 3 * hashing.MMAP_THRESHOLD + 5)
    assert_corrupt(s, oid, "content does not hash to its id")


def test_swapped_objects(tmp_path: Path) -> None:
    """Valid content under the wrong name is as corrupt as garbage."""
    s = store(tmp_path, "none")
    a, b = s.put_bytes(b"object a"), s.put_bytes(b"object b")
    helpers.rewrite(s.raw_path(a), lambda _: b"object b")
    assert_corrupt(s, a, "content does not hash to its id")
    s.verify(b)


# -- zstd objects ---------------------------------------------------------------------------

def test_flipped_literal_byte_in_a_zst_object(tmp_path: Path) -> None:
    """Incompressible data sits in a raw zstd block: a flip changes the content."""
    s = store(tmp_path, "zstd")
    oid = s.put_bytes(RANDOM_BIG)
    helpers.flip_byte(s.zst_path(oid), -10)
    assert_corrupt(s, oid, "content does not hash to its id")


def test_flipped_byte_in_a_compressed_block(tmp_path: Path) -> None:
    s = store(tmp_path, "zstd")
    oid = s.put_bytes(TEXT)
    size = os.path.getsize(s.zst_path(oid))
    helpers.flip_byte(s.zst_path(oid), size // 2)
    assert_corrupt(s, oid, "")  # a bad frame or a bad hash, never the wrong bytes


def test_flipped_frame_magic(tmp_path: Path) -> None:
    s = store(tmp_path, "zstd")
    oid = s.put_bytes(TEXT)
    helpers.flip_byte(s.zst_path(oid), 0)
    assert_corrupt(s, oid, "bad zstd frame: ")


@pytest.mark.parametrize("keep", [0, 4, "half", -1])
def test_truncated_zst_object(tmp_path: Path, keep) -> None:
    s = store(tmp_path, "zstd")
    oid = s.put_bytes(TEXT)
    size = os.path.getsize(s.zst_path(oid))
    helpers.truncate(s.zst_path(oid), size // 2 if keep == "half" else keep % size)
    with pytest.raises(CorruptObject, match=f"^object {oid} is corrupt: bad zstd frame: "):
        s.get(oid)
    assert_corrupt(s, oid, "", calls=("verify",))


def zstd_frame(declared: int, block: bytes, *, rle_count: int = 0) -> bytes:
    """A hand-made zstd frame: header with an 8-byte content size, then one last block,
    raw (`block`) or RLE (`block` repeated `rle_count` times)."""
    header = struct.pack("<I", 0xFD2FB528) + bytes([3 << 6, 0x50]) + struct.pack("<Q", declared)
    if rle_count:
        return header + (1 | 1 << 1 | rle_count << 3).to_bytes(3, "little") + block[:1]
    return header + (1 | len(block) << 3).to_bytes(3, "little") + block


@pytest.mark.parametrize("declared", [1 << 50, 64 << 30, 2 << 30])
def test_frame_declaring_a_huge_size_is_refused_not_allocated(tmp_path: Path, declared: int) -> None:
    s = store(tmp_path, "zstd")
    oid = s.put_bytes(TEXT)
    helpers.rewrite(s.zst_path(oid), lambda _: zstd_frame(declared, b"hello"))
    assert_corrupt(s, oid, "")  # CorruptObject, never MemoryError
    with pytest.raises(CorruptObject, match=f"frame declares {declared} bytes, more than "
                                             f"the expected {len(TEXT)}"):
        s.get(oid, max_size=len(TEXT))


def test_frame_expanding_beyond_its_declared_size(tmp_path: Path) -> None:
    s = store(tmp_path, "zstd")
    oid = s.put_bytes(TEXT)
    helpers.rewrite(s.zst_path(oid), lambda _: zstd_frame(10, b"a", rle_count=100_000))
    assert_corrupt(s, oid, "bad zstd frame: ")


def test_frame_without_a_size_that_expands_too_far(tmp_path: Path) -> None:
    """A bomb that declares nothing is cut off at the caller's limit, not at its end."""
    import zstandard
    s = store(tmp_path, "zstd")
    oid = s.put_bytes(TEXT)
    bomb = zstandard.ZstdCompressor(write_content_size=False).compress(b"\0" * (4 << 20))
    assert len(bomb) < 1024
    helpers.rewrite(s.zst_path(oid), lambda _: bomb)
    with pytest.raises(CorruptObject, match="frame expands beyond the expected 1000 bytes"):
        s.get(oid, max_size=1000)
    assert_corrupt(s, oid, "content does not hash to its id")


def test_valid_frame_of_other_content(tmp_path: Path) -> None:
    import zstandard
    s = store(tmp_path, "zstd")
    oid = s.put_bytes(TEXT)
    helpers.rewrite(s.zst_path(oid), lambda _: zstandard.ZstdCompressor().compress(TEXT[:-1]))
    assert_corrupt(s, oid, "content does not hash to its id")


# -- every object of a real project ---------------------------------------------------------

def test_verify_finds_a_flipped_byte_in_any_object(project, tmp_path: Path) -> None:
    """The fsck guarantee: whichever object is damaged, re-hashing names it."""
    helpers.write_tree(project.root / "data", {**helpers.rich_spec(), "more.txt": TEXT})
    tracking.add(project, [str(project.root / "data")])  # more.txt: > RAW_MAX, compressible
    s = project.store
    oids = list(s.iter_oids())
    assert len(oids) >= 10
    forms = {s.info(o).compressed for o in oids}
    assert forms == {True, False}, "the project should hold both physical forms"
    for oid in oids:
        path = s.info(oid).path
        saved = path.read_bytes()
        if saved:
            helpers.flip_byte(path, len(saved) // 2)
        else:
            helpers.rewrite(path, lambda _: b"\0")
        with pytest.raises(CorruptObject) as ei:
            s.verify(oid)
        assert ei.value.oid == oid
        helpers.rewrite(path, lambda _: saved)
        s.verify(oid)


# -- checkout refuses what it cannot vouch for ----------------------------------------------

def _project_with(project, compression: str, spec: dict):
    config.set_value(project.store_dir / "config", "cache.compression", compression)
    config.set_value(project.store_dir / "config", "cache.type", "copy")
    proj = open_project(project.root)
    data = project.root / "data"
    helpers.write_tree(data, spec)
    ptr = tracking.add(proj, [str(data)])[0].pointer
    return proj, data, ptr


def _blob_of(proj, ptr, rel: str) -> str:
    load = lambda oid: tree.decode(proj.store.get(oid))  # noqa: E731
    return dict(tree.walk(ptr.oid, load))[rel].oid


def _leftovers(root: Path) -> list[str]:
    return [p for p in helpers.listing(root) if co.TMP_PREFIX in p]


@pytest.mark.parametrize("damage", ["flip", "truncate"])
def test_checkout_refuses_a_corrupt_zst_object(project, damage: str) -> None:
    spec = {"good.txt": TEXT[:5000], "bad.txt": TEXT, "sub/other.txt": TEXT[100:900]}
    proj, data, ptr = _project_with(project, "zstd", spec)
    bad = _blob_of(proj, ptr, "bad.txt")
    path = proj.store.info(bad).path
    if damage == "flip":
        helpers.flip_byte(path, len(path.read_bytes()) // 2)
    else:
        helpers.truncate(path, len(path.read_bytes()) // 2)
    shutil.rmtree(data)
    with pytest.raises(CorruptObject) as ei:
        tracking.checkout(proj)
    assert ei.value.oid == bad
    assert not (data / "bad.txt").exists()
    assert _leftovers(project.root) == []


@pytest.mark.parametrize("damage", ["truncate", "extend"])
@pytest.mark.parametrize("links", [("copy",), ("hardlink", "copy"), ("symlink", "copy")])
def test_checkout_refuses_a_raw_object_of_the_wrong_size(tmp_path: Path, project, damage: str,
                                                          links: tuple) -> None:
    proj, data, ptr = _project_with(project, "none", {"a.bin": RANDOM, "b.bin": RANDOM[::-1]})
    bad = _blob_of(proj, ptr, "b.bin")
    if damage == "truncate":
        helpers.truncate(proj.store.raw_path(bad), 100)
    else:
        helpers.rewrite(proj.store.raw_path(bad), lambda b: b + b"more")
    shutil.rmtree(data)
    with pytest.raises(CorruptObject) as ei:
        co.checkout(proj.store, co.Target(ptr.oid, True), data, links=links,
                    statcache=proj.statcache)
    assert ei.value.oid == bad
    assert not os.path.lexists(data / "b.bin")
    assert _leftovers(project.root) == []


def test_checkout_refuses_a_corrupt_tree_and_writes_nothing(project) -> None:
    proj, data, ptr = _project_with(project, "auto", {"a.txt": TEXT, "sub/b.txt": b"b\n"})
    sub_tree = tree.decode(proj.store.get(ptr.oid)).get("sub").oid
    helpers.flip_byte(proj.store.info(sub_tree).path, -2)
    shutil.rmtree(data)
    with pytest.raises(CorruptObject) as ei:
        tracking.checkout(proj)
    assert ei.value.oid == sub_tree
    assert not data.exists()


def test_a_corrupt_pointer_object_id_is_not_trusted(project) -> None:
    """A pointer whose tree object was replaced by other valid bytes is refused."""
    proj, data, ptr = _project_with(project, "zstd", {"a.txt": TEXT})
    import zstandard
    other = tree.encode(tree.make([], subtree_files={}))
    helpers.rewrite(proj.store.info(ptr.oid).path, lambda _: zstandard.ZstdCompressor().compress(other))
    assert pointer.read(proj.root, "data").oid == ptr.oid
    shutil.rmtree(data)
    with pytest.raises(CorruptObject, match="content does not hash to its id"):
        tracking.checkout(proj)
    assert not data.exists()
