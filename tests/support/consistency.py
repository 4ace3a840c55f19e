"""Builders shared by tests (from the former tests/test_gc_concurrency.py)."""

from __future__ import annotations

from __future__ import annotations
import os
import subprocess
import sys
from pathlib import Path
from cas.gc import fsck
from cas.store import refs
from cas.workspace.project import open_project
from cas.gc.reachability import BLOB, Walker


REPO = Path(__file__).resolve().parents[2]


def tally(cwd: Path, *args: str, env: dict | None = None, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "cli", *args], cwd=cwd, capture_output=True,
                          text=True, env={**os.environ, **(env or {})}, timeout=timeout)


def assert_consistent(root: Path) -> None:
    """fsck passes, every ref resolves, and the store is closed: every present tree and
    record names only present objects (what deleting parents first guarantees)."""
    p = open_project(root)
    report = fsck.fsck(p)
    assert report.ok, [x.to_json() for x in report.problems]
    problems: list = []
    w = Walker(p.store, lambda *a: problems.append(a))
    for b, n, oid in refs.list_refs(p):
        w.walk(oid, "record", label=f"ref {n}")
    for oid in p.store.iter_oids():
        k = w.kind(oid)
        if k != BLOB:
            for child, _ in w.edges(oid, k).required:
                if not p.store.has(child):
                    problems.append(("dangling", oid, child))
    assert not problems, problems

