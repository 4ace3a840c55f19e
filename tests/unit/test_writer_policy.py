"""The writer's choice of form at the small-content boundary (spec/store.md,
"Compression policy"): content of at most writer.RAW_MAX bytes is raw whatever the
kind, `cache.compression` or the caller's `compress=`; one byte more and the policy
as before decides. And what a trivial project stores is all raw."""

from __future__ import annotations

import os
import random
import subprocess
import sys
from pathlib import Path

import pytest

from cas.objects import envelope
from cas.core import hashing
from cas.objects import record
from cas.store import refs
from cas.objects import tree
from cas.store import writer
from cas.workspace.project import open_project
from cas.store.objectstore import FileStore, StoreOptions

RAW_MAX = writer.RAW_MAX
COMPRESSIBLE = b"".join(b"line %05d of a compressible text\n" % i for i in range(400))
INCOMPRESSIBLE = random.Random(3).randbytes(2 * RAW_MAX)


def _expected(size: int, policy: str, compress: bool | None, data: bytes) -> bool:
    """Is content of `size` bytes stored zstd? The spec's rule, written out."""
    if size <= RAW_MAX:
        return False
    if compress is not None:
        return compress
    if policy == "none":
        return False
    if policy == "zstd":
        return True
    return data is COMPRESSIBLE  # auto: the trial compression decides


def _form(s: FileStore, oid: str) -> bool:
    info = s.info(oid)
    # Never both: a put writes one form.
    assert not (os.path.exists(s.raw_path(oid)) and os.path.exists(s.zst_path(oid)))
    return info.compressed


@pytest.mark.parametrize("source", [COMPRESSIBLE, INCOMPRESSIBLE], ids=["text", "random"])
@pytest.mark.parametrize("compress", [True, False, None])
@pytest.mark.parametrize("policy", ["auto", "zstd", "none"])
@pytest.mark.parametrize("size", [1, 63, 64, RAW_MAX - 1, RAW_MAX, RAW_MAX + 1, 2 * RAW_MAX])
def test_put_bytes_form_at_the_boundary(tmp_path: Path, policy: str, compress, size: int,
                                        source: bytes) -> None:
    s = FileStore(tmp_path / "store", options=StoreOptions(compression=policy))
    data = source[:size]
    oid = s.put_bytes(data, compress=compress)
    want = _expected(size, policy, compress, source)
    assert _form(s, oid) is want, (size, policy, compress)
    assert s.get(oid) == data
    if not want:
        assert Path(s.raw_path(oid)).read_bytes() == data  # raw is exactly the content


@pytest.mark.parametrize("compress", [True, False, None])
@pytest.mark.parametrize("policy", ["auto", "zstd", "none"])
@pytest.mark.parametrize("size", [RAW_MAX, RAW_MAX + 1])
@pytest.mark.parametrize("mmap", [False, True], ids=["in-memory", "streamed"])
def test_put_file_form_at_the_boundary(tmp_path: Path, monkeypatch, policy: str, compress,
                                       size: int, mmap: bool) -> None:
    """Both copy paths: a file read whole, and one streamed (above MMAP_THRESHOLD,
    lowered here so that a 4 KiB file takes it)."""
    if mmap:
        monkeypatch.setattr(hashing, "MMAP_THRESHOLD", 1024)
    s = FileStore(tmp_path / "store", options=StoreOptions(compression=policy))
    src = tmp_path / "data.txt"
    src.write_bytes(COMPRESSIBLE[:size])
    oid = s.put_file(src, compress=compress)
    assert _form(s, oid) is _expected(size, policy, compress, COMPRESSIBLE)
    assert s.get(oid) == COMPRESSIBLE[:size]


@pytest.mark.parametrize("policy", ["auto", "zstd"])
@pytest.mark.parametrize("size", [RAW_MAX, RAW_MAX + 1])
def test_a_compressed_format_suffix_stays_raw(tmp_path: Path, policy: str, size: int) -> None:
    """spec/store.md: under auto, and under zstd for a file below 4 MiB."""
    s = FileStore(tmp_path / "store", options=StoreOptions(compression=policy))
    src = tmp_path / "data.gz"
    src.write_bytes(COMPRESSIBLE[:size])
    assert not _form(s, s.put_file(src))


def test_a_compressed_format_suffix_of_4_mib_or_more_is_zstd_under_zstd(tmp_path: Path,
                                                                        monkeypatch) -> None:
    monkeypatch.setattr(hashing, "MMAP_THRESHOLD", 2 * RAW_MAX)  # "4 MiB", scaled down
    s = FileStore(tmp_path / "store", options=StoreOptions(compression="zstd"))
    src = tmp_path / "data.gz"
    src.write_bytes(COMPRESSIBLE[:3 * RAW_MAX])
    assert _form(s, s.put_file(src))


def test_a_structured_object_is_raw_up_to_the_boundary_and_zstd_above(tmp_path: Path) -> None:
    """Trees, the way every structured-object writer puts them (compress=True)."""
    s = FileStore(tmp_path / "store", options=StoreOptions(compression="none"))

    def tree_of(n: int) -> bytes:
        entries = [tree.Entry(f"f{i:04d}", tree.FILE, hashing.hash_bytes(b"%d" % i), 1, 0o644)
                   for i in range(n)]
        return tree.encode(tree.make(entries, subtree_files={}))

    n = 1
    while len(tree_of(n + 1)) <= RAW_MAX:
        n += 1
    small, big = tree_of(n), tree_of(n + 1)
    assert len(small) <= RAW_MAX < len(big)
    assert not _form(s, s.put_bytes(small, compress=True))
    assert _form(s, s.put_bytes(big, compress=True))


def test_a_trivial_project_stores_its_trees_and_records_raw(tmp_path: Path, monkeypatch) -> None:
    """`tally run` of a one-stage pipeline: record, workspace tree, run-cache entry,
    outputs and log are all small, so the store holds no .zst file at all."""
    root = tmp_path / "repo"
    root.mkdir()
    monkeypatch.setenv("PATH", f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}")
    (root / "dvc.yaml").write_text(
        "stages:\n  train:\n    cmd: cp params.yaml model.txt && cp params.yaml metrics.yaml\n"
        "    deps: [data.txt]\n    params: [lr]\n    outs: [model.txt]\n"
        "    metrics: [{metrics.yaml: {cache: false}}]\n")
    (root / "params.yaml").write_text("lr: 0.1\n")
    (root / "data.txt").write_text("some data\n")

    def sh(*args: str) -> None:
        subprocess.run(args, cwd=root, check=True, capture_output=True, timeout=120)
    sh("git", "init", "-q", "-b", "main")
    sh("git", "add", "-A")
    sh("git", "commit", "-q", "-m", "init")
    sh(sys.executable, "-m", "cli", "init")
    sh(sys.executable, "-m", "cli", "run", "-q")
    sh(sys.executable, "-m", "cli", "run", "-q", "-S", "lr=0.2")

    project = open_project(root)
    files = [p for p in (root / ".tally" / "objects").rglob("*") if p.is_file()]
    assert files and not [p for p in files if p.name.endswith(".zst")]
    kinds = {project.store.read_head(o, envelope.HEADER_SIZE)[3:4] for o in project.store.iter_oids()}
    assert {envelope.KIND_TREE, envelope.KIND_RECORD} <= kinds
    found = refs.list_refs(project)
    assert len(found) == 2
    for _, _, rid in found:
        assert not project.store.info(rid).compressed
        assert not project.store.info(record.load(project.store, rid).workspace).compressed


def test_publishing_over_a_hardlinked_object_leaves_its_mtime(tmp_path: Path) -> None:
    """A publish that meets an existing object (EEXIST: another writer got there first)
    freshens its mtime for gc's grace period, but never an object with a second link:
    that name is a user's hardlinked workspace file, and its mtime is theirs
    (spec/store.md, "Notes on the current implementation")."""
    store = FileStore(tmp_path / "store", options=StoreOptions(compression="none"))
    data = b"weights" * 1000
    src = tmp_path / "data.bin"
    src.write_bytes(data)
    old = 1_000_000_000 * 10**9  # 2001: far from now
    late = store.writer()
    oid = late.put_bytes(data)  # staged, not yet published
    with store.writer() as w:  # meanwhile another writer publishes it by hardlink
        assert w.put_file(src, ingest="hardlink") == oid
    assert os.stat(src).st_nlink == 2
    os.utime(src, ns=(old, old))
    late.flush()  # link(2): EEXIST
    late.close()
    assert os.stat(src).st_mtime_ns == old
    # A single-link object met the same way is freshened.
    late = store.writer()
    other = late.put_bytes(b"other")
    with store.writer() as w:
        w.put_bytes(b"other")
    os.utime(store.raw_path(other), ns=(old, old))
    late.flush()
    late.close()
    assert os.stat(store.raw_path(other)).st_mtime_ns > old
