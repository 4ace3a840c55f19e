"""Which data a push, fetch, pull or status is about, and every object it needs.

A data root is what a pointer (`PATH.tally`) or a stage output in `tally.lock`
names: a tree (a directory) or a blob (a file). Without history options the roots
are those of the work tree (as `tally checkout` sees them: committed or not); with
`revs`, `all_branches`, `all_tags` or `all_commits` they are those of the commits
(read from Git objects, one `git cat-file --batch` for all of them, as gc's history
roots are in cas/gc/roots.py). `paths` narrows either to the data at or under them.

`local_closure` lists every object the roots reach through the local store's trees
(each tree opened once); a tree missing locally is reported, not guessed through.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Iterable, NamedTuple, Sequence

from cas.core.errors import NotFound, ObjectMissing
from cas.objects import envelope, pointer, tree
from cas.pipeline import tallylock
from cas.workspace import git, gitobjects

TREE, BLOB = "tree", "blob"


class Root(NamedTuple):
    """One piece of data to move."""

    path: str  # the data path, relative to the project root
    oid: str
    kind: str  # tree | blob
    source: str  # "pointer", "tally.lock", or "<file> at <commit>"
    mode: int = 0o644
    size: int | None = None  # a file's size (pointers say it)


def _matches(path: str, wanted: Sequence[str]) -> bool:
    return not wanted or any(path == w or path.startswith(w.rstrip("/") + "/") for w in wanted)


def _wanted(project, paths: Sequence[str] | None, cwd: Path | None) -> list[str]:
    out = []
    for p in paths or ():
        rel = project.relpath(p, cwd=cwd)
        if rel.endswith(pointer.SUFFIX):
            rel = rel[: -len(pointer.SUFFIX)]
        out.append("" if rel == "." else rel)
    return [w for w in out if w] if all(out) else []


def workspace_roots(project, paths: Sequence[str] | None = None, *,
                    cwd: Path | None = None) -> list[Root]:
    """The roots of the work tree's pointers and its tally.lock's outputs.

    Raises:
        UsageError: a malformed pointer or tally.lock. NotFound: `paths` match nothing.
    """
    wanted = _wanted(project, paths, cwd)
    roots: list[Root] = []
    for rel in pointer.find_all(project.root):
        if _matches(rel, wanted):
            ptr = pointer.read(project.root, rel)
            roots.append(Root(rel, ptr.oid, TREE if ptr.is_dir else BLOB, "pointer",
                              ptr.mode, None if ptr.is_dir else ptr.size))
    for name, stage in sorted(tallylock.read(project.root).items()):
        roots.extend(_lock_outs(stage, wanted, "tally.lock", name))
    if wanted and not roots:
        raise NotFound(f"nothing tracked at {', '.join(wanted)}",
                       hint="name data that has a .tally pointer or is a stage output")
    return _dedup(roots)


def _lock_outs(stage: tallylock.StageLock, wanted: Sequence[str], source: str,
               stage_name: str) -> list[Root]:
    out = []
    wdir = "" if stage.wdir in (".", "") else stage.wdir.rstrip("/") + "/"
    for fs in stage.outs:
        path = os.path.normpath(wdir + fs.path).replace(os.sep, "/")
        if _matches(path, wanted):
            out.append(Root(path, fs.oid, TREE if fs.is_dir else BLOB, source, 0o644,
                            None if fs.is_dir else fs.size))
    return out


def _dedup(roots: Iterable[Root]) -> list[Root]:
    seen: set[tuple[str, str]] = set()
    out = []
    for r in roots:
        if (r.path, r.oid) not in seen:
            seen.add((r.path, r.oid))
            out.append(r)
    return out


def commits_of(project, *, revs: Sequence[str] = (), all_branches: bool = False,
               all_tags: bool = False, all_commits: bool = False) -> list[str]:
    """The commits the history options name (revisions resolved), no duplicates."""
    out: list[str] = []
    for rev in revs:
        git.check_rev(rev)
        code, text, err = git.run(project.root, ["rev-parse", "--verify", "--quiet",
                                                 f"{rev}^{{commit}}"], ok=(0, 1, 128))
        if code != 0:
            raise NotFound(f"no commit named {rev!r} in the Git repository")
        out.append(text.decode().strip())
    out += git.rev_list(project.root, all_branches=all_branches, all_tags=all_tags,
                        all_commits=all_commits)
    return list(dict.fromkeys(out))


def history_roots(project, commits: Sequence[str], paths: Sequence[str] | None = None, *,
                  cwd: Path | None = None) -> list[Root]:
    """The roots of the pointers and tally.lock files of `commits`."""
    wanted = _wanted(project, paths, cwd)
    roots: list[Root] = []

    def match(p: str) -> bool:
        return p.endswith(pointer.SUFFIX) or p == tallylock.LOCK_FILE or \
            p.endswith("/" + tallylock.LOCK_FILE)

    with gitobjects.TreeReader(project.root) as reader:
        for c in commits:
            for path, data in sorted(reader.read_files(c, match).items()):
                where = f"{path} at {c[:12]}"
                if path.endswith(pointer.SUFFIX):
                    rel = path[: -len(pointer.SUFFIX)]
                    if not _matches(rel, wanted):
                        continue
                    ptr = pointer.decode(data, path=rel)
                    roots.append(Root(rel, ptr.oid, TREE if ptr.is_dir else BLOB, where,
                                      ptr.mode, None if ptr.is_dir else ptr.size))
                else:
                    base = path[: -len(tallylock.LOCK_FILE)]
                    for name, stage in sorted(tallylock.loads(data.decode("utf-8", "replace"),
                                                              path=path).items()):
                        if base:
                            stage = stage._replace(wdir=base + stage.wdir)
                        roots.extend(_lock_outs(stage, wanted, where, name))
    return _dedup(roots)


def select(project, *, paths: Sequence[str] | None = None, revs: Sequence[str] = (),
           all_branches: bool = False, all_tags: bool = False, all_commits: bool = False,
           cwd: Path | None = None) -> list[Root]:
    """The roots a data command is about (see the module docstring)."""
    if revs or all_branches or all_tags or all_commits:
        commits = commits_of(project, revs=revs, all_branches=all_branches,
                              all_tags=all_tags, all_commits=all_commits)
        return history_roots(project, commits, paths, cwd=cwd)
    return workspace_roots(project, paths, cwd=cwd)


class Closure(NamedTuple):
    oids: list[str]  # every object reached, parents before children, no duplicates
    missing: dict[str, str]  # oid -> what needed it, for objects not in the local store
    trees: int  # trees opened


def local_closure(store, roots: Iterable[tuple[str, str]], *, check_blobs: bool = True) -> Closure:
    """Every object the (oid, kind) roots reach through the local store.

    A missing tree is in `missing` (and nothing below it: it cannot be read); so is a
    missing blob, with `check_blobs` (one stat each: a push leaves that to the
    objects it actually sends). A damaged tree raises CorruptObject / FormatError.
    """
    seen: set[str] = set()
    order: list[str] = []
    missing: dict[str, str] = {}
    opened = 0
    stack = [(oid, kind, oid[:12]) for oid, kind in roots]
    while stack:
        oid, kind, where = stack.pop()
        if oid in seen:
            continue
        seen.add(oid)
        order.append(oid)
        if kind == BLOB:
            continue
        try:
            t = tree.decode(store.get(oid, max_size=envelope.MAX_STRUCT_SIZE))
        except ObjectMissing:
            missing[oid] = where
            continue
        opened += 1
        for e in t.entries:
            if e.oid not in seen:
                stack.append((e.oid, TREE if e.kind == tree.DIR else BLOB, f"{where}/{e.name}"))
    if order and check_blobs:
        present = store.has
        for oid in order:
            if oid not in missing and not present(oid):
                missing[oid] = oid[:12]
    return Closure(order, missing, opened)


__all__ = ["Root", "select", "workspace_roots", "history_roots", "commits_of", "local_closure",
           "Closure", "TREE", "BLOB"]

