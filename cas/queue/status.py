"""The queue seen from outside: what `tally queue status` and `tally queue logs` show,
and the running rows of `tally show`. Read-only, except that looking reaps the runs of
dead workers first (cas/queue/workers.py) and prunes dead workers' files, so what is
shown is never a run that nobody runs.

    status(project)              entries (queue order within each state), live values
                                 of the running ones, the live workers
    running_live(project)        one row per running entry with its live metrics
    follow_log(project, item)    the entry's log in chunks, optionally until it ends
"""

from __future__ import annotations

import os
import time
from typing import TYPE_CHECKING, Any, Iterator

from cas.queue import directory as queue
from cas.queue import entries as queue_entries
from cas.queue import workers as queue_workers

if TYPE_CHECKING:
    from cas.workspace.project import Project


def live_values(project: Project, item: queue.Item) -> dict[str, Any]:
    """Live metrics of a running entry, read from its run directory (cas.live)."""
    from cas.pipeline.livefiles import read_live
    return read_live(queue.run_dir(project, item.id), checkpoints=queue.checkpoints_path(project, item.id))


def running_live(project: Project) -> list[dict[str, Any]]:
    """One row per running queued experiment with its live values, for `tally show`.

    Each row: {"name", "id", "baseline", "run_dir", "worker_pid", "worker_host",
    "started", "live": cas.live.read_live(...)}; the live dict carries "step",
    "updated", "metrics" ({file: summary}), "params" and "checkpoints".
    """
    out = []
    for it in queue_entries.items(project, states=("running",)):
        w = it.worker
        out.append({"name": it.name, "id": it.id, "baseline": it.entry.baseline,
                    "run_dir": os.fspath(queue.run_dir(project, it.id)),
                    "worker_pid": w.pid if w else None, "worker_host": w.host if w else None,
                    "started": it.started,
                    "live": live_values(project, it)})
    return out


def status(project: Project) -> dict[str, Any]:
    """Everything `tally queue status` shows: entries (dead workers' runs reaped
    first), live values of running ones, and the live workers."""
    entries = []
    for it in queue_entries.items(project):
        row = it.to_json()
        if it.state == "running":
            row["live"] = live_values(project, it)
        if it.error:
            row["error"] = it.error
        entries.append(row)
    queue_workers.prune_worker_files(project)
    workers = [{"pid": w.pid, "host": w.host, "wid": w.wid, "started": w.started,
                "heartbeat": w.heartbeat, "running": sorted(r.name for r in w.current.values()),
                "stopping": w.stopping} for w in queue_workers.live_workers(project)]
    return {"entries": entries, "workers": workers}


def follow_log(project: Project, item: queue.Item, *, follow: bool = False, poll: float = 0.2) -> Iterator[bytes]:
    """The log of `item` in chunks; with `follow`, keep reading until it has finished
    (waiting for a pending entry to start)."""
    path = queue.log_path(project, item.id)
    f = None
    try:
        while True:
            if f is None:
                try:
                    f = open(path, "rb")
                except FileNotFoundError:
                    f = None
            chunk = f.read(1 << 16) if f is not None else b""
            if chunk:
                yield chunk
                continue
            if not follow:
                return
            if _state_of(project, item) in ("done", "failed", None):
                if f is not None:
                    rest = f.read()
                    if rest:
                        yield rest
                return
            time.sleep(poll)
    finally:
        if f is not None:
            f.close()


def _state_of(project: Project, item: queue.Item) -> str | None:
    """Where the entry is now (None once removed)."""
    queue_workers.reap(project)
    found = None
    for state, _, eid, _, _ in queue.scan(project):
        if eid == item.id:
            found = state  # the last sighting: see queue.items on moves while listing
    return found


__all__ = ["follow_log", "live_values", "running_live", "status"]
