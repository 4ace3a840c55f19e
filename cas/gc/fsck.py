"""fsck: prove the store consistent, or list exactly what is wrong.

Three passes, each reported by kind:

1. objects: every object file re-hashed (both files of an id stored in both forms; a
   .zst must also be a valid frame); a name that is not an id, or a file in the wrong
   shard, is reported too;
2. reachability: from every root (the providers of cas/gc/providers.py: pointer
   files in the workspace, experiment refs, run-cache, queue), every
   tree and record decodes and every object it requires is present (the graph and
   its walker are cas/gc/reachability.py, shared with gc);
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
from typing import Callable

from cas.core.errors import CorruptObject, FormatError, ObjectMissing, UsageError
from cas.workspace.project import Project
from cas.gc.providers import PROVIDERS, kind_hint
from cas.gc.reachability import TREE, Walker

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
class FsckReport:
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


def fsck(project: Project, *, repair: bool = False,
         progress: Callable[[int, int], None] | None = None) -> FsckReport:
    """Check the whole store; see the module docstring for what is checked."""
    store = project.store
    report = FsckReport()
    bad: set[str] = set()

    # Every file, not every id: an id present in both forms (a crash between two
    # publishes) has two files, and either may be the damaged one.
    files = [(o.oid, o.path, o.compressed) for o in store.scan()]
    forms: dict[str, int] = {}
    for oid, _, _ in files:
        forms[oid] = forms.get(oid, 0) + 1
    report.objects = len(forms)

    def check(item: tuple[str, str, bool]) -> Problem | None:
        oid, path, compressed = item
        try:
            store.verify_file(oid, path, compressed)
        except CorruptObject as exc:
            detail = exc.message.split(": ", 1)[-1]
            if forms[oid] > 1:
                detail = f"{'zstd' if compressed else 'raw'} form: {detail}"
            return Problem("object", oid, detail)
        except ObjectMissing:
            return None  # deleted while we looked (gc): not damage
        return None

    damaged: dict[str, list[tuple[str, bool]]] = {}  # oid -> its damaged files
    done = 0
    with ThreadPoolExecutor(max_workers=max(2, os.cpu_count() or 1)) as pool:
        for item, p in zip(files, pool.map(check, files)):
            done += 1
            if progress and (done % 256 == 0 or done == len(files)):
                progress(done, len(files))
            if p is not None:
                report.problems.append(p)
                damaged.setdefault(item[0], []).append((item[1], item[2]))
    if damaged and (project.store_dir / "statcache.db").exists():
        # A workspace file hardlinked to a damaged raw object *is* that damage, and the
        # stat cache (its file rows, and the directory memo of every directory above)
        # still says it holds the object's id. Damage is rare and its reach unknown:
        # forget everything, so the next status or add hashes each file once and sees
        # what it really holds.
        project.statcache.clear()
        report.notes.append("the stat cache was cleared: the next status re-reads every file once")
    # Unreadable for the walker: the form a read takes (raw first) is damaged.
    bad.update(oid for oid, hurt in damaged.items()
               if forms[oid] == 1 or any(not compressed for _, compressed in hurt))

    # Reachability from every root.
    incomplete: list[str] = []

    def problem(kind: str, where: str, detail: str) -> None:
        report.problems.append(Problem(kind, where, detail))

    walker = Walker(store, problem, bad=bad)
    for provider in PROVIDERS:
        try:
            roots = list(provider.roots(project))
        except (UsageError, FormatError) as exc:
            what = "ref" if provider.kind == "experiments" else "pointer"
            report.problems.append(Problem(what, exc.path or "?", exc.message))
            continue
        for label, oid, kind in roots:
            report.roots += 1
            if walker.walk(oid, kind_hint(kind), label=label):
                incomplete.append(label)
    report.trees = sum(1 for k in walker.kinds.values() if k == TREE)

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

    if repair and damaged:
        # Deleting is gc's business: take the store lock exclusively, as gc does, so
        # no writer is mid-publish of an object we are about to remove. Only damaged
        # files go: a sound second form of the same id stays and is read from then on.
        with project.lock("store", shared=False, timeout=60, purpose="tally fsck --repair"):
            for oid in sorted(damaged):
                if len(damaged[oid]) == forms[oid]:
                    store.delete(oid)
                else:
                    for path, _ in damaged[oid]:
                        try:
                            os.unlink(path)
                        except FileNotFoundError:
                            pass
                report.repaired.append(oid)
        if incomplete:
            report.notes.append("now incomplete (re-add or re-run them): " + ", ".join(sorted(set(incomplete))))
    return report


__all__ = ["fsck", "FsckReport", "Problem"]
