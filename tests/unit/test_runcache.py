"""cas.pipeline.runcache: the key, entries, the index, lookups and roots."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from cas.pipeline import runcache
from cas.core.errors import FormatError

OID = "ab" * 32
OID2 = "cd" * 32


def entry() -> runcache.CacheEntry:
    return runcache.CacheEntry(cmd=("python train.py",), wdir=".", deps={"a": OID, "b": OID2},
                          params={"params.yaml": {"train.lr": 0.1, "train.n": 3}},
                          outs={"model.pkl": (OID, False), "eval": (OID2, True)}, created=7)


def test_key_is_canonical():
    k = runcache.key(["c"], ".", {"a": OID, "b": OID2}, {"p.yaml": {"x": 1, "y": 0.5}}, ["o2", "o1"])
    assert k == runcache.key(["c"], ".", {"b": OID2, "a": OID}, {"p.yaml": {"y": 0.5, "x": 1}}, ["o1", "o2"])
    # every input matters, and 1 and 1.0 are different values
    variants = [
        (["c2"], ".", {"a": OID, "b": OID2}, {"p.yaml": {"x": 1, "y": 0.5}}, ["o1", "o2"]),
        (["c"], "sub", {"a": OID, "b": OID2}, {"p.yaml": {"x": 1, "y": 0.5}}, ["o1", "o2"]),
        (["c"], ".", {"a": OID2, "b": OID}, {"p.yaml": {"x": 1, "y": 0.5}}, ["o1", "o2"]),
        (["c"], ".", {"a": OID, "b": OID2}, {"p.yaml": {"x": 1.0, "y": 0.5}}, ["o1", "o2"]),
        (["c"], ".", {"a": OID, "b": OID2}, {"p.yaml": {"x": 1, "y": 0.5}}, ["o1"]),
    ]
    assert len({k, *(runcache.key(*v) for v in variants)}) == 6


def test_entry_round_trip_and_key():
    e = entry()
    back = runcache.decode(runcache.encode(e))
    assert back == e
    assert runcache.entry_key(back) == runcache.key(e.cmd, e.wdir, e.deps, e.params, e.outs)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=120))
def test_decode_raises_only_format_error(data):
    try:
        runcache.decode(b"TLYC\x01" + data)
    except FormatError:
        pass


def test_save_lookup_and_roots(tmp_path):
    import subprocess
    from cas.workspace.project import init_project

    subprocess.run(["git", "init", "-q", str(tmp_path)], check=True)
    project = init_project(tmp_path)[0]
    blob = project.store.put_bytes(b"model")
    e = runcache.CacheEntry(cmd=("c",), wdir=".", deps={"a": OID}, params={}, outs={"m": (blob, False)}, created=1)
    k, oid = runcache.save(project, e)
    assert (project.store_dir / "runcache" / k[:2] / k).read_text() == oid + "\n"
    assert runcache.lookup(project, k) == (oid, e)
    assert runcache.lookup(project, "00" * 32) is None
    labels = [(label, o, d) for label, o, d in runcache.roots(project)]
    assert (f"run-cache {k[:12]}", oid, False) in labels
    assert (f"run-cache {k[:12]}:m", blob, False) in labels
    # an entry whose outputs left the store is a miss, not an error
    project.store.delete(blob)
    assert runcache.lookup(project, k) is None
    # a damaged index file is a miss too
    (project.store_dir / "runcache" / k[:2] / k).write_text("garbage\n")
    assert runcache.lookup(project, k) is None
