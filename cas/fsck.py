"""fsck: prove the store consistent, or list exactly what is wrong.

Three passes, each reported by kind:

1. objects: every object file re-hashed (both forms; a .zst must also be a valid
   frame); a name that is not an id, or a file in the wrong shard, is reported too;
2. reachability: from every root (pointer files in the workspace, plus any root
   providers registered by higher layers: experiment records, run-cache, queue),
   every tree decodes and every object a tree names is present;
3. leftovers: temp files older than an hour in `.tally/tmp/` (a crashed writer's);
   reported as notes, not problems, and removed by `gc`.

`repair=True` deletes corrupt objects (they can never be read correctly) and reports
which pointers/records are now incomplete, so the user knows what to re-add or re-run.
"""

from __future__ import annotations

import os
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Callable, Iterable

from . import pointer, tree
from .errors import CorruptObject, FormatError, ObjectMissing, UsageError
from .project import Project

STALE_TMP_AGE = 3600  # seconds: older temp files belong to a writer that died


@dataclass(frozen=True)
class Problem:
    """One thing fsck found wrong."""

    kind: str  # object | tree | pointer | missing | record | ref
    where: str  # an object id or a path
    detail: str

    def to_json(self) -> dict[str, str]:
        return {"kind": self.kind, "where": self.where, "detail": self.detail}


@dataclass
class Report:
    objects: int = 0
    trees: int = 0
    roots: int = 0
    problems: list[Problem] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    repaired: list[str] = field(default_factory=list)  # object ids deleted by --repair

    @property
    def ok(self) -> bool:
        return not self.problems

    def to_json(self) -> dict[str, object]:
        return {"ok": self.ok, "objects": self.objects, "trees": self.trees,
                "roots": self.roots, "problems": [p.to_json() for p in self.problems],
                "notes": self.notes, "repaired": self.repaired}


# A root provider yields (label, tree-or-blob id, is_dir) for everything it keeps alive.
RootProvider = Callable[[Project], Iterable[tuple[str, str, bool]]]
_providers: list[RootProvider] = []


def register_roots(provider: RootProvider) -> None:
    """Let a higher layer (experiments, run-cache, queue) add its roots to fsck and gc."""
    if provider not in _providers:
        _providers.append(provider)


# Modules that register root providers when imported (experiment refs, run-cache,
# queue). fsck and gc load them first, so their roots count even when nothing else in
# the process imported them.
PROVIDER_MODULES = ("cas.refs", "cas.runcache", "cas.queue")


def load_providers() -> list[RootProvider]:
    """Every root provider: pointers first, then those the provider modules register."""
    import importlib

    for name in PROVIDER_MODULES:
        try:
            importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name != name:
                raise
    return [pointer_roots, *_providers]


def pointer_roots(project: Project) -> Iterable[tuple[str, str, bool]]:
    for rel in pointer.find_all(project.root):
        ptr = pointer.read(project.root, rel)
        yield f"{rel}{pointer.SUFFIX}", ptr.oid, ptr.is_dir


def fsck(project: Project, *, repair: bool = False,
         progress: Callable[[int, int], None] | None = None) -> Report:
    """Check the whole store; see the module docstring for what is checked."""
    store = project.store
    report = Report()
    bad: set[str] = set()

    oids = list(store.iter_oids())
    report.objects = len(oids)

    def check(oid: str) -> Problem | None:
        try:
            store.verify(oid)
        except CorruptObject as exc:
            return Problem("object", oid, exc.message.split(": ", 1)[-1])
        except ObjectMissing:
            return None  # deleted while we looked (gc): not damage
        return None

    done = 0
    with ThreadPoolExecutor(max_workers=max(2, os.cpu_count() or 1)) as pool:
        for p in pool.map(check, oids):
            done += 1
            if progress and (done % 256 == 0 or done == len(oids)):
                progress(done, len(oids))
            if p is not None:
                report.problems.append(p)
                bad.add(p.where)

    # Reachability from every root.
    seen_trees: set[str] = set()
    incomplete: list[str] = []
    providers = load_providers()
    for provider in providers:
        try:
            roots = list(provider(project))
        except (UsageError, FormatError) as exc:
            report.problems.append(Problem("pointer", exc.path or "?", exc.message))
            continue
        for label, oid, is_dir in roots:
            report.roots += 1
            missing = _check_reachable(store, oid, is_dir, label, seen_trees, report, bad)
            if missing:
                incomplete.append(label)
    report.trees = len(seen_trees)

    # Leftover temp files from writers that died.
    now = time.time()
    try:
        for ent in os.scandir(store.tmp):
            try:
                if now - ent.stat(follow_symlinks=False).st_mtime > STALE_TMP_AGE:
                    report.notes.append(f"stale temp file {ent.name} (gc removes it)")
            except FileNotFoundError:
                continue
    except FileNotFoundError:
        pass

    if repair and bad:
        for oid in sorted(bad):
            store.delete(oid)
            report.repaired.append(oid)
        if incomplete:
            report.notes.append("now incomplete (re-add or re-run them): " + ", ".join(sorted(set(incomplete))))
    return report


def _check_reachable(store, oid: str, is_dir: bool, label: str, seen: set[str],
                     report: Report, bad: set[str]) -> bool:
    """Walk one root; record problems; return True if anything under it is missing or bad."""
    broken = False
    if not is_dir:
        if not store.has(oid):
            report.problems.append(Problem("missing", oid, f"named by {label}"))
            return True
        return oid in bad
    stack = [("", oid)]
    while stack:
        prefix, t_oid = stack.pop()
        if t_oid in seen:
            continue
        if t_oid in bad:
            broken = True
            continue
        try:
            t = tree.decode(store.get(t_oid))
        except ObjectMissing:
            report.problems.append(Problem("missing", t_oid, f"tree {prefix or '/'} of {label}"))
            broken = True
            continue
        except (FormatError, CorruptObject) as exc:
            report.problems.append(Problem("tree", t_oid, f"{exc.message} (in {label})"))
            bad.add(t_oid)
            broken = True
            continue
        seen.add(t_oid)
        for e in t.entries:
            if e.kind == tree.DIR:
                stack.append((f"{prefix}{e.name}/", e.oid))
            elif not store.has(e.oid):
                report.problems.append(Problem("missing", e.oid, f"{prefix}{e.name} in {label}"))
                broken = True
            elif e.oid in bad:
                broken = True
    return broken


__all__ = ["fsck", "Report", "Problem", "register_roots", "pointer_roots", "load_providers"]
