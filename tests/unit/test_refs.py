"""cas.store.refs: compare-and-swap refs, names, listing, generated names."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest

from support import helpers
from cas.store import refs
from cas.core.errors import Conflict, FormatError, NotFound, UsageError
from cas.workspace.project import init_project

A, B, C = "aa" * 32, "bb" * 32, "cc" * 32
BASE = "0123456789abcdef0123456789abcdef01234567"
BASE2 = "f" * 40


@pytest.fixture
def project(tmp_path):
    subprocess.run(["git", "init", "-q", str(tmp_path)], check=True)
    return init_project(tmp_path)[0]


def test_create_read_update_delete(project):
    assert refs.read(project, BASE, "exp1") is None
    refs.update(project, BASE, "exp1", A, None)
    assert refs.read(project, BASE, "exp1") == A
    p = refs.ref_path(project, BASE, "exp1")
    assert p.read_bytes() == (A + "\n").encode()
    with pytest.raises(Conflict, match="already exists"):
        refs.update(project, BASE, "exp1", B, None)
    with pytest.raises(Conflict, match="changed meanwhile"):
        refs.update(project, BASE, "exp1", B, C)
    refs.update(project, BASE, "exp1", B, A)
    assert refs.read(project, BASE, "exp1") == B
    with pytest.raises(NotFound):
        refs.update(project, BASE, "nope", B, A)
    with pytest.raises(Conflict):
        refs.delete(project, BASE, "exp1", A)
    refs.delete(project, BASE, "exp1", B)
    assert refs.read(project, BASE, "exp1") is None
    assert not p.parent.exists()
    with pytest.raises(NotFound):
        refs.delete(project, BASE, "exp1", B)


def test_list_and_find(project):
    refs.update(project, BASE, "b", B, None)
    refs.update(project, BASE, "a", A, None)
    refs.update(project, BASE2, "a", C, None)
    # a temp file left by a crashed writer is not a ref
    (refs.ref_path(project, BASE, "a").parent / ".a.tmp-1-xx").write_text("junk")
    assert refs.list_refs(project) == [(BASE, "a", A), (BASE, "b", B), (BASE2, "a", C)]
    assert refs.list_refs(project, BASE2) == [(BASE2, "a", C)]
    assert refs.list_refs(project, "e" * 40) == []
    assert refs.find(project, "a") == [(BASE, "a", A), (BASE2, "a", C)]
    assert refs.find(project, "a", baseline=BASE2) == [(BASE2, "a", C)]
    assert refs.list_baselines(project) == [BASE, BASE2]


def test_rename(project):
    refs.update(project, BASE, "old", A, None)
    refs.update(project, BASE, "taken", B, None)
    with pytest.raises(Conflict, match="already exists"):
        refs.rename(project, BASE, "old", "taken")
    with pytest.raises(NotFound):
        refs.rename(project, BASE, "ghost", "new")
    with pytest.raises(Conflict):
        refs.rename(project, BASE, "old", "new", oid=C)
    assert refs.rename(project, BASE, "old", "new") == A
    assert refs.read(project, BASE, "old") is None
    assert refs.read(project, BASE, "new") == A


@pytest.mark.parametrize("name", ["", "a/b", "..", "a..b", "a b", "-x", ".hidden", "x.lock",
                                  "tab\tname", "c\x01", "q?", "star*", "br[", "at@{", "@",
                                  "til~", "col:on", "x" * 201, "back\\slash"])
def test_bad_names(project, name):
    assert refs.name_problem(name)
    with pytest.raises(UsageError, match="invalid experiment name"):
        refs.update(project, BASE, name, A, None)


@pytest.mark.parametrize("name", ["exp-1", "lr_0.01", "Bold-Seal", "a@b", "été", "x" * 200])
def test_good_names(name):
    assert refs.name_problem(name) is None


def test_bad_baseline_and_oid(project):
    with pytest.raises(UsageError):
        refs.update(project, "HEAD", "x", A, None)
    with pytest.raises(UsageError):
        refs.update(project, BASE, "x", "nothex", None)


def test_damaged_ref_is_format_error(project):
    refs.update(project, BASE, "x", A, None)
    p = refs.ref_path(project, BASE, "x")
    os.chmod(p, 0o644)
    p.write_text("garbage\n")
    with pytest.raises(FormatError, match="not an object id"):
        refs.read(project, BASE, "x")
    with pytest.raises(FormatError):
        refs.list_refs(project)


def test_generated_names_are_deterministic_readable_and_unique(project):
    seed = "12" * 32
    first = refs.generate_name(project, BASE, seed)
    assert first == refs.candidate_name(seed, 0)
    assert refs.name_problem(first) is None and first.count("-") == 1
    refs.update(project, BASE, first, A, None)
    second = refs.generate_name(project, BASE, seed)
    assert second != first and second == refs.candidate_name(seed, 1)
    # other baselines do not collide
    assert refs.generate_name(project, BASE2, seed) == first
    names = {refs.candidate_name(seed, i) for i in range(64)}
    assert len(names) == 64


@pytest.mark.parametrize("n", [1000, helpers.slow_param(10_000)])
def test_list_many_refs_is_one_pass(project, n):
    d = refs.refs_root(project) / BASE
    d.mkdir(parents=True)
    for i in range(n):
        (d / f"e{i}").write_bytes((A + "\n").encode())
    t = time.perf_counter()
    out = refs.list_refs(project)
    elapsed = time.perf_counter() - t
    assert sorted(name for _, name, _ in out) == sorted(f"e{i}" for i in range(n))
    assert {oid for _, _, oid in out} == {A}
    print(f"list_refs {n}: {elapsed:.3f}s")


CAS_CHILD = """
import sys
from cas.workspace.project import open_project
from cas.store import refs
from cas.core.errors import Conflict
p = open_project()
won = 0
for i in range(50):
    try:
        refs.update(p, sys.argv[1], "race", sys.argv[2], None)
        won += 1
    except Conflict:
        pass
print(won)
"""


def test_concurrent_creates_exactly_one_wins(project):
    procs = [subprocess.Popen([sys.executable, "-c", CAS_CHILD, BASE, oid], cwd=project.root,
                              stdout=subprocess.PIPE, text=True) for oid in (A, B, C)]
    wins = [int(p.communicate()[0]) for p in procs]
    assert sum(wins) == 1
    assert refs.read(project, BASE, "race") in (A, B, C)
