"""Builders shared by tests (from the former tests/test_gc.py)."""

from __future__ import annotations

from __future__ import annotations
import shutil
from pathlib import Path
from support import helpers
from cas.objects import pointer
from cas.objects import record
from cas.store import refs
from cas.workspace import tracking
from cas.objects import tree


DAY = 86400


NS = 10**9


class Clock:
    """gc's view of time: `advance` ages every object; `age` ages chosen objects more."""

    def __init__(self) -> None:
        self.offset_s = 0.0
        self.extra: dict[str, float] = {}

    def advance(self, seconds: float) -> None:
        self.offset_s += seconds


def markers(monkeypatch) -> list:
    """Every gc Marker made from now on (one per gc run: cas/gc/collect.py's seam)."""
    from cas.gc import collect

    made: list = []

    class Capturing(collect.Marker):
        def __init__(self, *a, **kw) -> None:
            super().__init__(*a, **kw)
            made.append(self)
    monkeypatch.setattr(collect, "Marker", Capturing)
    return made


def deletion_log(monkeypatch) -> list[str]:
    """Every object gc deletes from now on, in the order it unlinks them (through
    cas/gc/deletion.py's seam `unlink_object`, in this process: small levels)."""
    from cas.gc import deletion as gcsweep

    order: list[str] = []
    real = gcsweep.unlink_object
    monkeypatch.setattr(gcsweep, "unlink_object",
                        lambda store, oid, forms: (order.append(oid), real(store, oid, forms))[1])
    return order


def add(project, rel: str, spec: helpers.Spec) -> pointer.Pointer:
    """Make `rel` hold exactly `spec` and `tally add` it."""
    if (project.root / rel).exists():
        helpers.make_writable(project.root / rel)
        shutil.rmtree(project.root / rel)
    helpers.write_tree(project.root / rel, spec)
    return tracking.add(project, [str(project.root / rel)])[0].pointer


def replace_file(project, rel: str, name: str, data: str) -> pointer.Pointer:
    p = project.root / rel / name
    p.write_text(data)
    return tracking.add(project, [str(project.root / rel)])[0].pointer


def closure(project, oid: str, is_dir: bool = True) -> set[str]:
    """Every id a pointer needs: the tree, its subtrees and blobs."""
    if not is_dir:
        return {oid}
    out = set()
    load = lambda o: tree.decode(project.store.get(o))  # noqa: E731
    for _, t in tree.walk_trees(oid, load):
        out.add(t)
    for _, e in tree.walk(oid, load):
        out.add(e.oid)
    return out


def oids(project) -> set[str]:
    return set(project.store.iter_oids())


def commit(root: Path, *paths: str, msg: str = "c") -> str:
    helpers.git(root, "add", "-f", *paths)
    helpers.git(root, "commit", "-q", "-m", msg)
    return helpers.git(root, "rev-parse", "HEAD").strip()


def baseline(project) -> str:
    return helpers.git(project.root, "rev-parse", "HEAD").strip()


def make_experiment(project, name: str, *, status: str = "success", created: int = 0,
                    metrics: dict | None = None, files: dict | None = None) -> tuple[str, str]:
    """Store an output tree and a record naming it, then its ref. Returns (record, tree)."""
    store = project.store
    with store.writer() as w:
        entries = [tree.Entry(n, tree.FILE, w.put_bytes(d.encode()), len(d), 0o644)
                   for n, d in (files or {f"{name}.txt": f"out of {name}\n"}).items()]
        t = tree.make(entries, subtree_files={})
        out_oid = w.put_bytes(tree.encode(t), compress=True)
        logs = w.put_bytes(f"log of {name}\n".encode())
        rec = record.Record(name=name, baseline=baseline(project), created=created or 1, status=status,
                            outs={"model": (out_oid, True)}, logs=logs,
                            metrics={"metrics.json": metrics or {}})
        rid = record.put(w, rec)
    refs.update(project, baseline(project), name, rid, None)
    return rid, out_oid

