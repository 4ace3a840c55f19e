"""The bench workload generator is deterministic and has the advertised shape.

No timings here: benchmarks are not tests.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from bench.workload import FileSet, file_bytes, generate, sets, tree_size, write_pipeline

KIB = 1024


def _digest(root: Path) -> str:
    h = hashlib.sha256()
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        h.update(str(path.relative_to(root)).encode() + b"\0" + path.read_bytes())
    return h.hexdigest()


def test_same_spec_same_bytes(tmp_path: Path) -> None:
    fs = FileSet("S", "small", 40, 4, 1 * KIB, 4 * KIB, seed=2)
    a = generate(fs, tmp_path / "a")
    b = generate(fs, tmp_path / "b")
    assert _digest(a) == _digest(b)
    # the in-memory path yields the same bytes as the chunked writer
    for i, rel in enumerate(fs.relpaths()):
        assert (a / rel).read_bytes() == file_bytes(fs, i)


def test_other_seed_other_bytes(tmp_path: Path) -> None:
    one = FileSet("S", "small", 10, 2, 1 * KIB, 4 * KIB, seed=2)
    two = FileSet("S", "small", 10, 2, 1 * KIB, 4 * KIB, seed=3)
    assert _digest(generate(one, tmp_path / "1")) != _digest(generate(two, tmp_path / "2"))


def test_small_set_shape(tmp_path: Path) -> None:
    fs = FileSet("S", "small", 100, 10, 1 * KIB, 4 * KIB, seed=2)
    root = generate(fs, tmp_path)
    count, total = tree_size(root)
    assert count == 100
    assert len([d for d in root.iterdir() if d.is_dir()]) == 10
    sizes = [(root / rel).stat().st_size for rel in fs.relpaths()]
    assert all(1 * KIB <= s <= 4 * KIB for s in sizes)
    assert total == sum(sizes)
    kinds = [rel.rsplit(".", 1)[1] for rel in fs.relpaths()]
    assert kinds.count("csv") == kinds.count("bin") == 50  # half text, half random


def test_text_is_csv_like_and_random_is_not_text(tmp_path: Path) -> None:
    fs = FileSet("L", "large", 2, 0, 64 * KIB, 64 * KIB, seed=1)
    root = generate(fs, tmp_path)
    text = (root / "part-0.csv").read_bytes()
    assert set(text) <= set(b"0123456789,.-\n") and text.endswith(b"\n")
    assert b"\n" in text and b"," in text
    assert len(set((root / "part-1.bin").read_bytes())) > 200  # uniform bytes


def test_large_file_written_in_chunks_matches_whole(tmp_path: Path, monkeypatch) -> None:
    import bench.workload as w

    monkeypatch.setattr(w, "CHUNK", 1000)  # force many chunks, uneven last one
    fs = FileSet("L", "large", 2, 0, 10_500, 10_500, seed=1)
    root = generate(fs, tmp_path)
    for i, rel in enumerate(fs.relpaths()):
        assert (root / rel).read_bytes() == file_bytes(fs, i)


def test_generate_reuses_a_complete_set(tmp_path: Path) -> None:
    fs = FileSet("S", "small", 5, 1, 1 * KIB, 1 * KIB, seed=9)
    root = generate(fs, tmp_path)
    marker = root / fs.relpaths()[0]
    before = marker.stat().st_mtime_ns
    assert generate(fs, tmp_path) == root
    assert marker.stat().st_mtime_ns == before


@pytest.mark.parametrize("quick,files,size", [(True, 5_000, 16 << 20),
                                               (False, 50_000, 256 << 20)])
def test_run_sets(quick: bool, files: int, size: int) -> None:
    s = sets(quick=quick, scale=True)
    assert s["L"].files == 4 and s["L"].min_size == s["L"].max_size == size
    assert s["S"].files == files
    assert (s["S"].min_size, s["S"].max_size) == (1 * KIB, 4 * KIB)
    assert s["X"].files == 1_000_000 and (s["X"].min_size, s["X"].max_size) == (0, 2 * KIB)
    assert "X" not in sets(quick=quick, scale=False)


def test_pipeline_files(tmp_path: Path) -> None:
    write_pipeline(tmp_path, out_mib=2, python="/usr/bin/python3")
    assert "out_mib: 2" in (tmp_path / "params.yaml").read_text()
    assert "cmd: /usr/bin/python3 train.py" in (tmp_path / "dvc.yaml").read_text()
    assert (tmp_path / "train.py").exists()
