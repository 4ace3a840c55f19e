"""Queue commands: `tally queue status|logs|kill|stop|remove|retry|start`.

Entries are added with `tally run --queue` (cli/experiments.py); each command here
parses, calls one function of the queue modules (cas/queue/directory.py, queue_status.py,
queue_workers.py) or cas/workers/supervisor.py, and renders.
"""

from __future__ import annotations

import sys
import time
from typing import List, Optional

import typer

from .main import app
from .output import EXIT_CODES, emit_json, err, out, table

queue_app = typer.Typer(
    name="queue", no_args_is_help=True, rich_markup_mode=None,
    help="Queued experiments: status, logs, kill, stop, remove, retry, start workers.\n\n"
         "Add entries with `tally run --queue [-S ...]` (sweeps queue the full grid); "
         "run them with `tally queue start -j N` (background) or `tally run --run-all -j N`.")
app.add_typer(queue_app, name="queue")

JSON = typer.Option(False, "--json", help="Machine-readable output on stdout.")


def _project():
    from cas.workspace.project import open_project
    return open_project()


def _when(t: float | None) -> str:
    if not t:
        return "-"
    return time.strftime("%m-%d %H:%M:%S", time.localtime(t))


def _took(a: float | None, b: float | None) -> str:
    if not a:
        return "-"
    secs = (b or time.time()) - a
    return f"{secs:.1f}s" if secs < 120 else f"{secs / 60:.1f}m"


@queue_app.command("status", epilog=EXIT_CODES)
def status(json_out: bool = JSON) -> None:
    """List queued, running, done and failed entries, with times and worker pids.

    Running entries whose worker died are marked failed ("worker died") first.
    """
    from cas.queue import status as queue_status

    st = queue_status.status(_project())
    if json_out:
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


@queue_app.command("logs", epilog=EXIT_CODES)
def logs(name: str = typer.Argument(..., help="Entry name or id prefix."),
         follow: bool = typer.Option(False, "-f", "--follow",
                                     help="Keep printing until the run has finished.")) -> None:
    """Print the captured stdout+stderr of an entry (every attempt; kept for failed runs)."""
    from cas.queue import entries
    from cas.queue import status as queue_status

    project = _project()
    item = entries.find(project, name)
    w = sys.stdout.buffer
    for chunk in queue_status.follow_log(project, item, follow=follow):
        w.write(chunk)
        w.flush()


@queue_app.command("kill", epilog=EXIT_CODES)
def kill(names: List[str] = typer.Argument(..., help="Running entries (names or id prefixes).")) -> None:
    """Kill running entries (SIGTERM to the run, SIGKILL 15 s later); they end failed
    and can be retried. The worker goes on with the next entry."""
    from cas.queue import workers as queue_workers

    project = _project()
    for n in names:
        it = queue_workers.request_kill(project, n)
        out(f"kill requested for {it.name}")


@queue_app.command("stop", epilog=EXIT_CODES)
def stop(kill_runs: bool = typer.Option(False, "--kill",
                                        help="Also kill what the workers are running now.")) -> None:
    """Ask the running workers to stop after their current runs (or at once, --kill).

    Workers started after this command are not affected.
    """
    from cas.queue import workers as queue_workers

    workers = queue_workers.request_stop(_project(), kill=kill_runs)
    if workers:
        out(f"asked {len(workers)} worker(s) to stop: pids "
            + ", ".join(str(w.pid) for w in workers))
    else:
        out("no worker is running")


@queue_app.command("remove", epilog=EXIT_CODES)
def remove(names: Optional[List[str]] = typer.Argument(None, help="Entries (names or id prefixes)."),
           all_: bool = typer.Option(False, "--all", help="Every entry that is not running."),
           queued: bool = typer.Option(False, "--queued", help="Every pending entry."),
           failed: bool = typer.Option(False, "--failed", help="Every failed entry."),
           done: bool = typer.Option(False, "--done", help="Every finished entry."),
           json_out: bool = JSON) -> None:
    """Remove entries and their logs from the queue. Recorded experiments are kept
    (remove those with `tally remove`); running entries must be killed first."""
    from cas.queue import entries
    from cas.core.errors import UsageError

    states = ["pending", "done", "failed"] if all_ else \
        [s for s, on in (("pending", queued), ("failed", failed), ("done", done)) if on]
    if not names and not states:
        raise UsageError("nothing to remove", hint="name entries, or use --all, --queued, --failed, --done")
    removed = entries.remove(_project(), keys=names or (), states=states)
    if json_out:
        emit_json([{"name": it.name, "id": it.id, "state": it.state} for it in removed])
        return
    for it in removed:
        out(f"removed {it.name} ({it.state})")
    if not removed:
        err("nothing matched")


@queue_app.command("retry", epilog=EXIT_CODES)
def retry(names: Optional[List[str]] = typer.Argument(None, help="Failed entries (names or id prefixes)."),
          failed: bool = typer.Option(False, "--failed", help="Every failed entry."),
          json_out: bool = JSON) -> None:
    """Queue failed entries again (same snapshot, same overrides, at the end of the queue)."""
    from cas.queue import entries
    from cas.core.errors import UsageError

    if not names and not failed:
        raise UsageError("nothing to retry", hint="name entries, or use --failed")
    items = entries.retry(_project(), keys=names or (), all_failed=failed)
    if json_out:
        emit_json([{"name": it.name, "id": it.id} for it in items])
        return
    for it in items:
        out(f"queued {it.name} again")
    if not items:
        err("no failed entry to retry")
    else:
        err("start workers with `tally queue start -j N`, or run them with `tally run --run-all`")


@queue_app.command("start", epilog=EXIT_CODES)
def start(jobs: int = typer.Option(1, "-j", "--jobs", help="Workers to have running (never fewer than now)."),
          keep_alive: bool = typer.Option(False, "--keep-alive",
                                          help="Keep waiting for new entries until `tally queue stop`."),
          json_out: bool = JSON) -> None:
    """Start detached workers that outlive this terminal and run the queue in the
    background; each exits when the queue is empty (unless --keep-alive)."""
    from cas.workers import supervisor as worker

    from .worker import LAUNCHER

    res = worker.start(_project(), jobs=jobs, launcher=LAUNCHER, keep_alive=keep_alive)
    if json_out:
        emit_json(res)
        return
    if res["started"]:
        out(f"started {len(res['started'])} worker(s): pids {', '.join(map(str, res['started']))}")
    if res["running"]:
        err(f"{len(res['running'])} worker(s) already running")
    if not res["started"] and not res["pending"] and not keep_alive:
        err("the queue is empty: nothing to start (add runs with `tally run --queue`)")
    err("follow with `tally queue status` and `tally queue logs NAME -f`")


# `tally run --queue/--run-all/--resume/--dry-run` lives in cli/queue_run.py, which
# does not import Typer (`tally run` is dispatched without it); kept importable here.
from .queue_run import run_options  # noqa: E402,F401
