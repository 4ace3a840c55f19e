"""Where gc's roots come from: workspace pointers and tally.lock, registered providers
(experiments, run-cache, queue), and Git history (pointers, locks and commit trailers
at branches, tags or every commit).

Split from cas/gc/collect.py by noun: the algorithm lives there, its roots here.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from typing import Iterable

from cas.gc import fsck as fsck_mod
from cas.gc.providers import PROVIDERS, kind_hint
from cas.workspace import git
from cas.workspace import gitobjects
from cas.objects import pointer
from cas.store import inflight as inflight_mod
from cas.gc.report import INFLIGHT
from cas.gc.deletion import TMP_FLOOR_S
from cas.core.errors import TallyError, UsageError
from cas.workspace.project import Project
from cas.gc.reachability import BLOB, TREE


LOCK_NAMES = ("tally.lock",)
HISTORY_LOCK_RE = re.compile(r"(?:\A|/)tally\.lock\Z")
OID_TOKEN_RE = re.compile(r"(?<![0-9a-f])[0-9a-f]{64}(?![0-9a-f])")


@dataclass(frozen=True, slots=True)
class Root:
    kind: str  # workspace | experiments | run-cache | queue | history | ...
    label: str
    oid: str
    hint: str | None  # tree, blob, record, or None: the object's header decides
    required: bool = True


Problem = fsck_mod.Problem


def _lock_tokens(text: bytes) -> list[str]:
    """Object ids in a tally.lock, read leniently: every 64-hex token.

    A dep hashed but never stored (code Git tracks) is named there too, so these
    roots are optional: kept when present, ignored when absent.
    """
    return list(dict.fromkeys(OID_TOKEN_RE.findall(text.decode("utf-8", "replace"))))


def workspace_lock_roots(project: Project) -> list[Root]:
    roots = []
    for name in LOCK_NAMES:
        try:
            text = (project.root / name).read_bytes()
        except (FileNotFoundError, IsADirectoryError):
            continue
        roots.extend(Root("workspace", name, oid, None, required=False) for oid in _lock_tokens(text))
    return roots


def inflight_roots(project: Project, *, remove_dead: bool, now_s: float | None = None
                   ) -> tuple[list[Root], "inflight_mod.Scan"]:
    """The ids named by live writers' in-flight files, as optional roots (an id that is
    not present names nothing yet). `remove_dead` only under the exclusive store lock."""
    scan = inflight_mod.scan(project.store_dir, remove_dead=remove_dead, now_s=now_s,
                             stale_new_s=TMP_FLOOR_S)
    roots: list[Root] = []
    seen: set[str] = set()
    for name, oids in scan.live.items():
        for oid in oids:
            if oid not in seen:
                seen.add(oid)
                roots.append(Root(INFLIGHT, f"in-flight {name}", oid, None, required=False))
    return roots, scan


def provider_roots(project: Project, problems: list[Problem], *, skip: set[str]
                   ) -> tuple[list[Root], set[str]]:
    """Roots from every provider (pointers, refs, run-cache, queue, registered ones).

    Returns (roots, kinds of every provider). Providers of a kind in `skip` are not
    asked; one that fails adds a problem instead of roots.
    """
    roots: list[Root] = []
    kinds: set[str] = set()
    for provider in PROVIDERS:
        kind = provider.kind
        kinds.add(kind)
        if kind in skip:
            continue
        try:
            found = list(provider.roots(project))
        except TallyError as exc:
            what = "ref" if kind == "experiments" else "pointer" if kind == "workspace" else kind
            problems.append(Problem(what, exc.path or kind, exc.message))
            continue
        roots.extend(Root(kind, label, oid, kind_hint(k)) for label, oid, k in found)
    if "experiments" not in kinds:
        # Refs exist but no provider lists them as roots: sweeping would delete every
        # experiment. Never guess: stop.
        from cas.store import refs
        try:
            n = len(refs.list_refs(project))
        except TallyError as exc:
            problems.append(Problem("ref", exc.path or "refs", exc.message))
            n = 0
        if n:
            problems.append(Problem("ref", os.fspath(refs.refs_root(project)),
                                    f"{n} experiment ref(s) but no root provider covers them "
                                    "(is the experiments provider missing from "
                                    "cas/gc/providers.py?)"))
    return roots, kinds


def _history_path(path: str) -> bool:
    return path.endswith(pointer.SUFFIX) or bool(HISTORY_LOCK_RE.search(path))


class History:
    """Pointers and tally.lock files of Git commits, read once per commit and cached."""

    def __init__(self, project: Project) -> None:
        self.project = project
        self._reader: gitobjects.TreeReader | None = None
        self._files: dict[str, dict[str, bytes]] = {}

    def close(self) -> None:
        if self._reader is not None:
            self._reader.close()
            self._reader = None

    def files(self, commit: str) -> dict[str, bytes]:
        got = self._files.get(commit)
        if got is None:
            if self._reader is None:
                self._reader = gitobjects.TreeReader(self.project.root)
            got = self._files[commit] = self._reader.read_files(commit, _history_path)
        return got

    def roots(self, commits: Iterable[str], problems: list[Problem]) -> list[Root]:
        """One root per distinct (path, content) across `commits`."""
        seen: set[tuple[str, bytes]] = set()
        roots: list[Root] = []
        for c in commits:
            try:
                files = self.files(c)
            except TallyError as exc:
                problems.append(Problem("history", c, exc.message))
                continue
            for path, data in files.items():
                if (path, data) in seen:
                    continue
                seen.add((path, data))
                label = f"{path} at {c[:12]}"
                if not path.endswith(pointer.SUFFIX):
                    roots.extend(Root("history", label, o, None, required=False)
                                 for o in _lock_tokens(data))
                    continue
                try:
                    ptr = pointer.decode(data, path=path[:-len(pointer.SUFFIX)])
                except UsageError as exc:
                    problems.append(Problem("pointer", label, exc.message))
                    continue
                roots.append(Root("history", label, ptr.oid, TREE if ptr.is_dir else BLOB))
        return roots



# A `Tally-Record: <id>` line as cas/experiments/promote.py writes it: a trailer, or a
# line anywhere in the message (a squash merge keeps the line but not its paragraph).
_RECORD_TRAILER_RE = re.compile(rb"^Tally-Record:[ \t]*([0-9a-f]{64})[ \t]*$", re.MULTILINE)


def promoted_records(project: Project) -> set[str]:
    """The record ids some commit of any ref names in a `Tally-Record:` line (promotion).

    Only a record a commit points at counts: a committed `tally.lock` or pointer
    naming what a record also names (an upstream stage's output that every later
    experiment reuses) does not promote that record. No commit, or no Git: none.
    """
    try:
        out = git.output(project.root, ["log", "--all", "--format=%B"])
    except TallyError:
        return set()
    return {m.decode("ascii") for m in _RECORD_TRAILER_RE.findall(out)}

