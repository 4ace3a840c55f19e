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


# --- the gc workload (issue 5) ---------------------------------------------------------

def test_gc_spec_sizes() -> None:
    from bench.gcworkload import gc_spec

    full = gc_spec(quick=False)
    assert (full.experiments, full.files, full.keep) == (1_000, 50, 50)
    assert full.data_objects == 50_000  # issue 5: "1,000 experiments and 50,000 objects"
    assert full.dropped == 950 and full.clones == 999
    quick = gc_spec(quick=True)
    assert quick.data_objects < full.data_objects and quick.keep < quick.experiments


def test_gc_spec_rejects_nonsense() -> None:
    from bench.gcworkload import GcSpec

    with pytest.raises(ValueError):
        GcSpec(experiments=10, files=5, file_size=1024, keep=11)
    with pytest.raises(ValueError):
        GcSpec(experiments=10, files=0, file_size=1024, keep=1)


def test_gc_keep_best_is_real_plus_top_clones() -> None:
    from bench import gcworkload as g

    spec = g.GcSpec(experiments=20, files=3, file_size=64, keep=4)
    kept, dropped = g.kept_names(spec), g.dropped_names(spec)
    assert kept == [g.REAL, "gc-0016", "gc-0017", "gc-0018"]
    assert len(kept) == spec.keep and len(dropped) == spec.dropped
    assert not set(kept) & set(dropped)
    accs = [g.clone_acc(spec, i) for i in range(spec.clones)]
    assert len(set(accs)) == spec.clones  # distinct: "the best N" is unambiguous
    assert all(0.0 < a < g.REAL_ACC for a in accs)  # never the baseline's 0.0


def test_gc_files_are_distinct_objects() -> None:
    from bench import gcworkload as g

    spec = g.GcSpec(experiments=30, files=7, file_size=256, keep=3)
    blobs = {g.file_bytes(spec, i, j) for i in range(spec.clones) for j in range(spec.files)}
    assert len(blobs) == spec.clones * spec.files
    assert all(len(b) == spec.file_size for b in blobs)
    assert g.file_bytes(spec, 3, 2) == g.file_bytes(spec, 3, 2)  # deterministic
    assert len(set(g.file_names(spec))) == spec.files


def test_gc_dvc_dir_object_matches_dvc_format() -> None:
    import hashlib
    import json

    from bench import gcworkload as g

    h, data = g.dvc_dir_object([("f001.bin", "b" * 32), ("f000.bin", "a" * 32)])
    # dvc-data Tree.as_bytes(): sorted by relpath, keys sorted, default separators
    assert data == (b'[{"md5": "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa", "relpath": "f000.bin"}, '
                    b'{"md5": "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb", "relpath": "f001.bin"}]')
    assert h == hashlib.md5(data).hexdigest() + ".dir"
    assert json.loads(data)[0]["relpath"] == "f000.bin"
    assert g.dvc_cache_relpath(h) == f"files/md5/{h[:2]}/{h[2:]}"


def test_gc_pipeline_texts() -> None:
    from bench import gcworkload as g

    spec = g.GcSpec(experiments=10, files=4, file_size=512, keep=2)
    files = g.pipeline_files(spec, "/usr/bin/python3")
    assert files["params.yaml"] == "seed: 0\nacc: 0.0\nfiles: 4\n"
    assert "cmd: /usr/bin/python3 train.py" in files["dvc.yaml"]
    assert ".digest(512)" in files["train.py"]
    assert g.metrics_text(0.5) == '{"acc": 0.5}'
    p = g.clone_params(spec, 2)
    assert g.params_text(p) == f"seed: 1000002\nacc: {g.clone_acc(spec, 2)}\nfiles: 4\n"


def test_gc_clone_lock_param_substitution() -> None:
    from bench.tally_gcstore import _sub_param

    lock = "    params:\n      params.yaml:\n        acc: 1.0\n        files: 5\n        seed: 7\n"
    out = _sub_param(_sub_param(lock, "seed", 1000003), "acc", 0.25)
    assert "        seed: 1000003\n" in out and "        acc: 0.25\n" in out
    assert "        files: 5\n" in out


def test_catalogue_has_the_issue_rows() -> None:
    from bench.gcworkload import gc_spec
    from bench.rows import catalogue, selected

    rows = {r.id: r for r in catalogue(modes=("copy", "hardlink"), gc=gc_spec(quick=False))}
    for rid in ("exp-queue-100", "exp-restore-hardlink", "exp-restore-reflink",
                "gc", "gc-noop"):
        assert rid in rows
    assert rows["exp-restore-hardlink"].modes == ("hardlink",)
    assert rows["exp-restore-reflink"].goals["reflink"].max_seconds == 0.3
    assert "1,000 experiments" in rows["gc"].label
    # an exact id selects only itself, not the longer ids it prefixes
    assert [r.id for r in selected(list(rows.values()), ["exp-queue"])] == ["exp-queue"]
    assert [r.id for r in selected(list(rows.values()), ["gc"])] == ["gc"]


def test_dvc_states_counts_finished_failed_and_queued() -> None:
    from bench.experiments import dvc_states

    shown = [
        {"rev": "workspace", "experiments": None},
        {"rev": "abc", "experiments": [
            {"executor": None, "name": "a", "revs": [{"rev": "1" * 40, "error": None}]},
            {"executor": {"state": "success"}, "name": "b", "revs": [{"rev": "2" * 40}]},
            {"executor": {"state": "failed"}, "name": "c", "revs": [{"rev": "3" * 40}]},
            {"executor": {"state": "queued"}, "name": "d", "revs": [{"rev": "4" * 40}]},
            {"executor": None, "name": "e", "revs": [{"rev": "5" * 40,
                                                      "error": {"msg": "bad"}}]},
        ]},
    ]
    assert dvc_states(shown) == {"success": 2, "failed": 1, "queued": 1, "error": 1}


def test_report_as_section_demotes_headings() -> None:
    from bench.report import as_section

    text = "# tally benchmarks\n\n- Date: x\n\n## Experiments\n\n### Floors\n| a |\n"
    assert as_section(text, "2026-11-23: gc") == (
        "## 2026-11-23: gc\n\n- Date: x\n\n### Experiments\n\n#### Floors\n| a |\n")
