"""Data to and from a remote: `tally push`, `fetch`, `pull`, `status --remote`.

    push    every object the selected roots reach (cas/sync/selection.py) that the
            remote lacks: packs and large objects, then their index. Under the
            remote's shared lock (remote gc waits) and the local store's shared
            lock (local gc waits), from listing the remote to the index.
    fetch   every object they reach that the local store lacks, verified, published
            in the store's order (cas/remote/download.py).
    pull    fetch, then materialize each root in the work tree (`tally checkout`
            for pointers, and the outputs tally.lock names) at the work tree's
            roots only (history roots are fetched, not checked out).
    status  per root: complete here, complete on the remote, or missing objects.

Each returns a report; `raise_for_failures()` turns what could not be moved into
the error a command exits with (objects missing on both sides, damaged bytes).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

from cas.core.errors import NotFound, ObjectMissing, TallyError
from cas.remote import download, locking
from cas.remote.connect import Remote, open_remote
from cas.remote.progress import Callback, Meter
from cas.remote.upload import push_objects
from cas.sync import selection
from cas.sync.selection import TREE, Root

STORE_LOCK_WAIT_S = 60.0


@dataclass
class Report:
    """What a data command did (one kind for push and fetch)."""

    action: str  # push | fetch | pull
    remote: str
    roots: int
    objects: int  # objects the roots reach
    transferred: int
    transferred_bytes: int
    already: int  # present on the receiving side already
    failed: dict[str, str] = field(default_factory=dict)  # oid -> why
    checked_out: list[str] = field(default_factory=list)  # pull: data paths materialized
    seconds: float = 0.0
    first_error: TallyError | None = None

    def to_json(self) -> dict[str, Any]:
        return {"action": self.action, "remote": self.remote, "roots": self.roots,
                "objects": self.objects, "transferred": self.transferred,
                "transferred_bytes": self.transferred_bytes, "already": self.already,
                "failed": self.failed, "checked_out": self.checked_out,
                "seconds": round(self.seconds, 3)}

    def raise_for_failures(self) -> None:
        if not self.failed:
            return
        err = self.first_error
        n = len(self.failed)
        if err is not None and n == 1:
            raise err
        cls = type(err) if isinstance(err, TallyError) and not isinstance(err, ObjectMissing) \
            else NotFound
        raise cls(f"{n} object(s) could not be {'pushed' if self.action == 'push' else 'fetched'}"
                  f"; first: {next(iter(self.failed.items()))[1]}",
                  hint=getattr(err, "hint", None))


def _open(project, remote: str | Remote | None, jobs: int | None) -> Remote:
    return remote if isinstance(remote, Remote) else open_remote(project, remote, jobs=jobs)


def push(project, *, remote: str | Remote | None = None, paths: Sequence[str] | None = None,
         revs: Sequence[str] = (), all_branches: bool = False, all_tags: bool = False,
         all_commits: bool = False, jobs: int | None = None, progress: Callback | None = None,
         cwd: Path | None = None) -> Report:
    """Send the data the selected roots name. See the module docstring.

    Raises:
        NotFound: no such remote, or `paths` match nothing.
        RemoteError, RemoteDenied, RemoteUnreachable: the remote failed (nothing
            half-published: what was sent before is not indexed).
        LockBusy: a remote gc holds the remote.
    """
    import time
    t0 = time.monotonic()
    roots = selection.select(project, paths=paths, revs=revs, all_branches=all_branches,
                             all_tags=all_tags, all_commits=all_commits, cwd=cwd)
    r = _open(project, remote, jobs)
    meter = Meter(f"push {r.name}", progress)
    with project.lock("store", shared=True, timeout=STORE_LOCK_WAIT_S, purpose="tally push"):
        # Blobs are not stat'ed here: push_objects finds the missing ones among those it
        # sends (a no-op push of 50,000 files then costs no stat per file).
        closure = selection.local_closure(project.store, [(x.oid, x.kind) for x in roots],
                                          check_blobs=False)
        if not closure.oids:
            return Report("push", r.name, 0, 0, 0, 0, 0, seconds=time.monotonic() - t0)
        r.prepare_for_writing()
        with locking.RemoteLock(r.backend, exclusive=False, purpose="tally push"):
            r.catalog(refresh=True)
            wanted = [o for o in closure.oids if o not in closure.missing]
            pushed = push_objects(project.store, r, wanted, meter=meter)
    cat = r.catalog()
    failed: dict[str, str] = {}
    first: TallyError | None = None
    for oid, where in closure.missing.items():
        if not cat.has(oid):  # the remote has it: nothing to do, whoever sent it
            err = ObjectMissing(oid, hint=f"needed by {where}; not in this store nor on the remote")
            failed[oid] = err.message
            first = first or err
    for oid, err in pushed.failed.items():
        failed[oid] = err.message
        first = first or err
    return Report("push", r.name, len(roots), len(closure.oids), pushed.sent, pushed.sent_bytes,
                  pushed.present, failed, seconds=time.monotonic() - t0, first_error=first)


def fetch(project, *, remote: str | Remote | None = None, paths: Sequence[str] | None = None,
          revs: Sequence[str] = (), all_branches: bool = False, all_tags: bool = False,
          all_commits: bool = False, jobs: int | None = None, progress: Callback | None = None,
          cwd: Path | None = None, roots: list[Root] | None = None) -> Report:
    """Bring the data the selected roots name into the local store (verified)."""
    import time
    t0 = time.monotonic()
    if roots is None:
        roots = selection.select(project, paths=paths, revs=revs, all_branches=all_branches,
                                 all_tags=all_tags, all_commits=all_commits, cwd=cwd)
    r = _open(project, remote, jobs)
    got = fetch_roots(project, r, [(x.oid, x.kind) for x in roots], progress=progress)
    return _fetch_report("fetch", r, roots, got, time.monotonic() - t0)


def fetch_roots(project, r: Remote, roots: list[tuple[str, str]], *,
                progress: Callback | None = None) -> download.Fetched:
    """Fetch what (oid, kind) roots reach, under the store lock, published on return."""
    meter = Meter(f"fetch {r.name}", progress)
    with project.lock("store", shared=True, timeout=STORE_LOCK_WAIT_S, purpose="tally fetch"):
        with project.store.writer() as w:
            got = download.fetch_closure(project.store, r, roots, w, meter=meter)
    from cas.core.failpoints import failpoint
    failpoint("fetch:after-publish")
    return got


def _fetch_report(action: str, r: Remote, roots: list[Root], got: download.Fetched,
                  seconds: float) -> Report:
    failed = {o: e.message for o, e in got.failed.items()}
    first = next(iter(got.failed.values()), None)
    return Report(action, r.name, len(roots), got.received + got.present, got.received,
                  got.received_bytes, got.present, failed, seconds=seconds, first_error=first)


def pull(project, *, remote: str | Remote | None = None, paths: Sequence[str] | None = None,
         jobs: int | None = None, force: bool = False, progress: Callback | None = None,
         cwd: Path | None = None) -> Report:
    """Fetch the work tree's data, then check it out (only roots fetched whole).

    Raises:
        WouldOverwrite: checking out would destroy uncommitted changes (not `force`);
            the objects are fetched all the same.
    """
    import time
    from cas.workspace import checkout as co

    t0 = time.monotonic()
    roots = selection.workspace_roots(project, paths, cwd=cwd)
    r = _open(project, remote, jobs)
    got = fetch_roots(project, r, [(x.oid, x.kind) for x in roots], progress=progress)
    report = _fetch_report("pull", r, roots, got, 0.0)
    with project.lock("store", shared=True, timeout=STORE_LOCK_WAIT_S, purpose="tally pull"):
        for root in roots:
            if root.oid in got.incomplete or not project.store.has(root.oid):
                continue
            co.checkout(project.store, co.Target(root.oid, root.kind == TREE, root.mode, root.size),
                        project.root / root.path, links=project.config.link_order,
                        statcache=project.statcache, force=force)
            report.checked_out.append(root.path)
    report.seconds = time.monotonic() - t0
    return report


@dataclass
class RootStatus:
    path: str
    oid: str
    source: str
    local: str  # complete | missing N object(s)
    remote: str  # complete | missing N object(s) | unknown (not in the local store)

    def to_json(self) -> dict[str, Any]:
        return {"path": self.path, "oid": self.oid, "source": self.source, "local": self.local,
                "remote": self.remote}


def status(project, *, remote: str | Remote | None = None, paths: Sequence[str] | None = None,
           revs: Sequence[str] = (), all_branches: bool = False, all_tags: bool = False,
           all_commits: bool = False, cwd: Path | None = None) -> list[RootStatus]:
    """For each root: is its data complete locally, and on the remote?

    What the remote holds below a tree is known only through the tree, so a root
    whose tree is missing locally is judged on the remote by its top object alone.
    """
    roots = selection.select(project, paths=paths, revs=revs, all_branches=all_branches,
                             all_tags=all_tags, all_commits=all_commits, cwd=cwd)
    r = _open(project, remote, None)
    cat = r.catalog(refresh=True)
    out = []
    for root in roots:
        c = selection.local_closure(project.store, [(root.oid, root.kind)])
        local = "complete" if not c.missing else f"missing {len(c.missing)} object(s)"
        lacking = [o for o in c.oids if not cat.has(o)]
        if root.oid in c.missing and root.kind == TREE:
            # Not readable here: the remote's tree is the whole story we can tell.
            rem = "has the top tree (not checked below)" if cat.has(root.oid) else "missing"
        else:
            rem = "complete" if not lacking else f"missing {len(lacking)} object(s)"
        out.append(RootStatus(root.path, root.oid, root.source, local, rem))
    return out


__all__ = ["push", "fetch", "pull", "status", "Report", "RootStatus", "fetch_roots"]

