"""The queue's workers, as the queue sees them: who is alive, what they are asked, and
what becomes of the runs of those that died.

    .tally/queue/
      workers/<wid>.json        one per live worker: pid, host, boot id, heartbeat,
                                current runs (written only by that worker, cas/workers/supervisor.py)
      workers/worker-*.log      detached workers' own output, kept WORKER_LOG_KEEP
      kill/<id>                 a request to kill that running entry (request_kill)
      stop                      {"time": <unix ns>, "kill": bool}: a request for the
                                workers started before `time` to stop (request_stop)

Reaping: a running entry whose worker is gone (its worker file is missing; or, on this
host, its pid is dead or reused; or, from another host, its heartbeat is older than
liveness.STALE_AFTER) is moved to failed/ with reason "worker died" by whoever looks
(`reap`: listing the queue with cas/queue/directory.py's items, `queue status`, `queue start`,
a worker starting), unless its executor still runs on this host (then it is left
until that exits), its outcome is already final (it goes where that says), or its
experiment was recorded before the worker died (`published`: it goes to done/).
Every move is one rename, so any number of reapers may run at once. See
spec/queue.md, "Write ordering" and "Worker liveness".
"""

from __future__ import annotations

import json
import os
import socket
import time
from typing import TYPE_CHECKING, Any

from cas.queue import directory as queue
from cas.queue.outcome import Outcome
from cas.queue.workerfile import WorkerInfo
from cas.core.errors import Conflict, FormatError
from cas.core.fsops import atomic_write
from cas.queue.liveness import boot_id, worker_alive

if TYPE_CHECKING:
    from cas.workspace.project import Project

WORKER_LOG_KEEP = 7 * 24 * 3600  # seconds: detached workers' own logs are kept a week


# ---------------------------------------------------------------- reaping

def published(project: Project, entry: queue.QueueEntry, *, since: float) -> Outcome | None:
    """The experiment an attempt of `entry` recorded, as outcome fields; None if none.

    For an attempt that ended without a final outcome (its executor was killed, or
    crashed, or could not write it): did it get as far as publishing? The ref
    `<baseline>/<name>` is read and counts only if its record was created at or after
    `since` (unix seconds, when the attempt started), so a record of an earlier
    attempt or of whatever held the name before never does. Queue names are unique
    and free as refs when queued (enqueue), and a run that finds its name taken fails
    with Conflict before recording anything, so such a record is the attempt's own
    (unless someone ran `tally run -n <name>` by hand during the attempt).

    Returns an Outcome with status, reason, exit_code, record and name: "success" if
    the record's status is, else "failed" with reason "run <record status>". Never
    raises: a ref or record that cannot be read counts as not published.
    """
    from cas.objects import record
    from cas.store import refs
    from cas.core.errors import TallyError

    try:
        oid = refs.read(project, entry.baseline, entry.name)
        if oid is None:
            return None
        rec = record.load(project.store, oid)
    except (TallyError, OSError, ValueError):
        return None
    if rec.created < int(since * 1e9):
        return None
    ok = rec.status == "success"
    return Outcome(status="success" if ok else "failed", reason="" if ok else f"run {rec.status}",
                   exit_code=rec.exit_code, record=oid, name=entry.name)



def reap(project: Project) -> list[queue.Item]:
    """Move every running entry whose worker is gone to failed/ ("worker died").

    An entry whose executor still runs on this host (it outlived its worker and is
    shutting down: the kernel sent it SIGTERM) is left until it has exited, so a
    retry never runs beside the last attempt. An entry whose outcome is already final
    (written by its executor, or before its worker died) goes where that outcome says;
    one without, whose experiment was recorded anyway (see published), goes to done/.
    Safe to call from any number of processes at once: each move is one rename.
    """
    reaped = []
    cache: dict[str, WorkerInfo | None] = {}
    for _, seq, eid, wid, path in queue.scan(project, ("running",)):
        assert wid is not None
        if wid not in cache:
            cache[wid] = queue.read_worker(project, wid)
        info = cache[wid]
        if worker_alive(info):
            continue
        if not path.exists():
            continue
        # Re-read after deciding: a worker file written just now (a slow start) wins.
        info = queue.read_worker(project, wid)
        if worker_alive(info):
            cache[wid] = info
            continue
        if _executor_alive(info, eid):
            continue
        damaged = False
        try:
            entry = queue.read_entry(path, eid)
        except FileNotFoundError:
            continue
        except (FormatError, OSError):
            entry = queue.QueueEntry(name=f"damaged-{eid[:12]}", baseline="0" * 40, workspace=eid)
            damaged = True
        item = queue.Item(eid, seq, "running", entry, path, wid=wid, worker=info)
        outcome = queue.read_outcome(project, eid)
        if outcome is not None and outcome.final:
            moved = queue.move_by_outcome(project, item, outcome)
        else:
            cur = info.current.get(eid) if info is not None else None
            started = cur.started if cur is not None else None
            verdict = Outcome(status="failed", reason="worker died")
            # Worker and executor gone without a final outcome: if the experiment was
            # recorded (the ref is published before the outcome is written), the entry
            # is done. Without the attempt's start (a worker that died before listing
            # it), any success recorded under the name since the entry was queued counts.
            since = started if started is not None else entry.queued / 1e9
            pub = None if damaged else published(project, entry, since=since)
            if pub is not None and pub.ok:
                verdict = pub._replace(note="the worker died after the experiment was recorded")
            moved = queue.finish(project, item, verdict._replace(
                pid=info.pid if info else None, host=info.host if info else None,
                wid=wid, started=started, finished=time.time()))
        if moved is not None:
            reaped.append(moved)
    return reaped


def _executor_alive(info: WorkerInfo | None, eid: str) -> bool:
    """Does the process that ran `eid` for this (dead) worker still exist on this host?"""
    from cas.queue.liveness import pid_alive, process_start

    if not info or info.host != socket.gethostname() or info.boot_id != boot_id():
        return False
    cur = info.current.get(eid)
    pid = cur.pgid if cur is not None else None
    if pid is None or pid <= 1 or not pid_alive(pid):
        return False
    want = cur.pstart
    return not want or process_start(pid) in ("", want)


# ---------------------------------------------------------------- requests and worker files

def request_kill(project: Project, key: str) -> queue.Item:
    """Ask the worker running entry `key` to kill it (its whole process group).

    Raises:
        NotFound: no such entry. Conflict: the entry is not running.
    """
    reap(project)
    it = queue.find(project, key)
    if it.state != "running":
        raise Conflict(f"{it.name} is {it.state}, not running",
                       hint="`tally queue remove` drops a pending entry")
    p = queue.subdirs(project)["kill"] / it.id
    atomic_write(p, f"{time.time()}\n".encode(), durable=False)
    return it


def kill_requested(project: Project, entry_id: str) -> bool:
    return (queue.subdirs(project)["kill"] / entry_id).exists()


def clear_kill(project: Project, entry_id: str) -> None:
    try:
        os.unlink(queue.subdirs(project)["kill"] / entry_id)
    except FileNotFoundError:
        pass


def request_stop(project: Project, *, kill: bool = False) -> list[WorkerInfo]:
    """Ask every worker started before now to stop claiming (and, with kill, to kill
    what it runs). Workers started later are not affected. Returns the live workers."""
    queue.ensure_dirs(project)
    atomic_write(queue.queue_dir(project) / "stop",
                 json.dumps({"time": time.time_ns(), "kill": kill}).encode())
    return live_workers(project)


def stop_request(project: Project) -> dict[str, Any] | None:
    return queue.read_json(queue.queue_dir(project) / "stop")


def live_workers(project: Project) -> list[WorkerInfo]:
    """Worker files of workers that are alive, oldest first."""
    d = queue.subdirs(project)["workers"]
    out = []
    try:
        names = os.listdir(d)
    except FileNotFoundError:
        return []
    for n in names:
        if n.endswith(".json") and not n.startswith("."):
            try:
                info = WorkerInfo.loads((d / n).read_bytes())
            except OSError:
                continue
            if info and worker_alive(info):
                out.append(info)
    return sorted(out, key=lambda i: i.started or 0)



def prune_worker_files(project: Project) -> int:
    """Remove the worker files of dead workers that no running entry names, and
    detached workers' logs older than WORKER_LOG_KEEP."""
    d = queue.subdirs(project)["workers"]
    named = {wid for _, _, _, wid, _ in queue.scan(project, ("running",))}
    removed = 0
    try:
        names = os.listdir(d)
    except FileNotFoundError:
        return 0
    now = time.time()
    for n in names:
        if n.startswith("worker-") and n.endswith(".log"):
            try:
                if now - os.stat(d / n).st_mtime > WORKER_LOG_KEEP:
                    os.unlink(d / n)
            except FileNotFoundError:
                pass
            continue
        if not n.endswith(".json") or n.startswith(".") or n[:-5] in named:
            continue
        if not worker_alive(queue.read_worker(project, n[:-len(".json")])):
            try:
                os.unlink(d / n)
                removed += 1
            except FileNotFoundError:
                pass
    # Cached baseline indexes (cas/workers/rundir.py) unused for as long as worker logs are kept.
    idx = queue.queue_dir(project) / "index"
    try:
        for n in os.listdir(idx):
            try:
                if now - os.stat(idx / n).st_atime > WORKER_LOG_KEEP and \
                        now - os.stat(idx / n).st_mtime > WORKER_LOG_KEEP:
                    os.unlink(idx / n)
            except FileNotFoundError:
                pass
    except FileNotFoundError:
        pass
    # Run directories a dead worker had discarded but not yet deleted (cas/workers/supervisor.py).
    try:
        trashes = [e for e in os.listdir(project.store_dir / "tmp") if e.startswith("trash-")]
    except FileNotFoundError:
        trashes = []
    for t in trashes:
        if not worker_alive(queue.read_worker(project, t[len("trash-"):])):
            from cas.core.fsops import remove_tree
            remove_tree(project.store_dir / "tmp" / t)
    return removed


__all__ = ["WORKER_LOG_KEEP", "clear_kill", "kill_requested", "live_workers", "prune_worker_files",
           "published", "reap", "request_kill", "request_stop", "stop_request"]
