"""`tally queue status|logs|kill|stop|remove|retry|start`: the experiment queue.

Entries are added with `tally run --queue` (cli/commands/run.py); each command here
parses, calls one function of cas/queue (directory, status, workers) or
cas/workers/supervisor.py, and renders.
"""

from __future__ import annotations

import sys
import time

from ..flags import ALL, FAILED, FOLLOW, JOBS, JSON
from ..output import emit_json, err, out, table
from ..spec import ANY, FLAG, REQUIRED, SOME, Arg, Command, Group, Opt


def _project():
    from cas.workspace.project import open_project
    return open_project()


def _when(t: float | None) -> str:
    return time.strftime("%m-%d %H:%M:%S", time.localtime(t)) if t else "-"


def _took(a: float | None, b: float | None) -> str:
    if not a:
        return "-"
    secs = (b or time.time()) - a
    return f"{secs:.1f}s" if secs < 120 else f"{secs / 60:.1f}m"


def status(a) -> None:
    from cas.queue import status as queue_status

    st = queue_status.status(_project())
    if a.json:
        emit_json(st)
        return
    rows = []
    for e in st["entries"]:
        worker = f"{e['worker_pid']}" if e["worker_pid"] else "-"
        note = e.get("reason") or e.get("note") or ""  # note: a verdict reconciled with the record
        live = e.get("live") or {}
        if e["state"] == "running" and live.get("step") is not None:
            note = f"step {live['step']}"
        if e["attempt"] and e["attempt"] > 1:
            note = f"{note} (attempt {e['attempt']})".strip()
        rows.append([e["name"], e["id"][:12], e["state"], _when(e["queued"]), _when(e["started"]),
                     _took(e["started"], e["finished"]) if e["state"] != "pending" else "-",
                     worker, note])
    if rows:
        out(table(["NAME", "ID", "STATE", "QUEUED", "STARTED", "TOOK", "WORKER", "NOTE"], rows))
    else:
        out("The queue is empty (add runs with `tally run --queue`).")
    counts = {s: sum(1 for e in st["entries"] if e["state"] == s)
              for s in ("pending", "running", "done", "failed")}
    ws = st["workers"]
    err(f"{counts['pending']} queued, {counts['running']} running, {counts['done']} done, "
        f"{counts['failed']} failed; workers: {len(ws)} alive"
        + (f" (pids {', '.join(str(w['pid']) for w in ws)})" if ws else ""))


def logs(a) -> None:
    from cas.queue import entries
    from cas.queue import status as queue_status

    project = _project()
    item = entries.find(project, a.name)
    w = sys.stdout.buffer
    for chunk in queue_status.follow_log(project, item, follow=a.follow):
        w.write(chunk)
        w.flush()


def kill(a) -> None:
    from cas.queue import workers as queue_workers

    project = _project()
    for n in a.names:
        out(f"kill requested for {queue_workers.request_kill(project, n).name}")


def stop(a) -> None:
    from cas.queue import workers as queue_workers

    workers = queue_workers.request_stop(_project(), kill=a.kill)
    if workers:
        out(f"asked {len(workers)} worker(s) to stop: pids " + ", ".join(str(w.pid) for w in workers))
    else:
        out("no worker is running")


def remove(a) -> None:
    from cas.core.errors import UsageError
    from cas.queue import entries

    states = ["pending", "done", "failed"] if a.all else \
        [s for s, on in (("pending", a.queued), ("failed", a.failed), ("done", a.done)) if on]
    if not a.names and not states:
        raise UsageError("tally queue remove: nothing to remove",
                         hint="name entries, or use --all, --queued, --failed, --done")
    removed = entries.remove(_project(), keys=a.names, states=states)
    if a.json:
        emit_json([{"name": it.name, "id": it.id, "state": it.state} for it in removed])
        return
    for it in removed:
        out(f"removed {it.name} ({it.state})")
    if not removed:
        err("nothing matched")


def retry(a) -> None:
    from cas.core.errors import UsageError
    from cas.queue import entries

    if not a.names and not a.failed:
        raise UsageError("tally queue retry: nothing to retry", hint="name entries, or use --failed")
    items = entries.retry(_project(), keys=a.names, all_failed=a.failed)
    if a.json:
        emit_json([{"name": it.name, "id": it.id} for it in items])
        return
    for it in items:
        out(f"queued {it.name} again")
    if not items:
        err("no failed entry to retry")
    else:
        err("start workers with `tally queue start -j N`, or run them with `tally run --run-all`")


def start(a) -> None:
    from cas.workers import supervisor as worker

    from ..worker import LAUNCHER

    res = worker.start(_project(), jobs=a.jobs, launcher=LAUNCHER, keep_alive=a.keep_alive)
    if a.json:
        emit_json(res)
        return
    if res["started"]:
        out(f"started {len(res['started'])} worker(s): pids {', '.join(map(str, res['started']))}")
    if res["running"]:
        err(f"{len(res['running'])} worker(s) already running")
    if not res["started"] and not res["pending"] and not a.keep_alive:
        err("the queue is empty: nothing to start (add runs with `tally run --queue`)")
    err("follow with `tally queue status` and `tally logs NAME --follow`")


ENTRY = "Entry name or id prefix (at least 6 hex digits)."
NO_ENTRY = (3, "no such queue entry")

GROUP = Group(
    "queue",
    "Queued experiments: status, logs, kill, stop, remove, retry, start workers.\n\n"
    "Add entries with `tally run --queue [-S ...]` (sweeps queue the full grid); run them "
    "with `tally queue start -j N` (background) or `tally run --run-all -j N`.",
    (
        Command("queue status",
                "List queued, running, done and failed entries, with times and worker pids.\n\n"
                "Running entries whose worker died are marked failed (\"worker died\") first.",
                status, opts=(JSON,)),
        Command("queue logs",
                "Print the captured stdout+stderr of an entry (every attempt; kept for failed "
                "runs). `tally logs NAME` also finds recorded experiments.",
                logs, args=(Arg("name", "NAME", REQUIRED, ENTRY),), opts=(FOLLOW,),
                exits=((2, "bad usage, or an id prefix matching several entries"), NO_ENTRY)),
        Command("queue kill",
                "Kill running entries (SIGTERM to the run, SIGKILL 15 s later); they end failed "
                "and can be retried. The worker goes on with the next entry.",
                kill, args=(Arg("names", "NAME", SOME, "Running entries (names or id prefixes)."),),
                exits=((2, "bad usage, or an id prefix matching several entries"), NO_ENTRY,
                       (4, "an entry is not running"))),
        Command("queue stop",
                "Ask the running workers to stop after their current runs (or at once, --kill).\n\n"
                "Workers started after this command are not affected.",
                stop, opts=(Opt(("--kill",), "kill", FLAG, "Also kill what the workers are running now."),)),
        Command("queue remove",
                "Remove entries and their logs from the queue. Recorded experiments are kept "
                "(remove those with `tally remove`); running entries must be killed first.",
                remove, args=(Arg("names", "NAME", ANY, "Entries (names or id prefixes)."),),
                opts=(ALL._replace(help="Every entry that is not running."),
                      Opt(("--queued",), "queued", FLAG, "Every pending entry."),
                      FAILED._replace(help="Every failed entry."),
                      Opt(("--done",), "done", FLAG, "Every finished entry."),
                      JSON),
                exits=((2, "bad usage: nothing named or selected"), NO_ENTRY,
                       (4, "an entry is running (kill it first)"))),
        Command("queue retry",
                "Queue failed entries again (same snapshot, same overrides, at the end of the queue).",
                retry, args=(Arg("names", "NAME", ANY, "Failed entries (names or id prefixes)."),),
                opts=(FAILED._replace(help="Every failed entry."), JSON),
                exits=((2, "bad usage: nothing named or selected"), NO_ENTRY,
                       (4, "an entry has not failed"))),
        Command("queue start",
                "Start detached workers that outlive this terminal and run the queue in the "
                "background; each exits when the queue is empty (unless --keep-alive).",
                start,
                opts=(JOBS._replace(help="Workers to have running (never fewer than now; default 1)."),
                      Opt(("--keep-alive",), "keep_alive", FLAG,
                          "Keep waiting for new entries until `tally queue stop`."),
                      JSON)),
    ))
