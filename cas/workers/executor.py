"""The executor: one queued entry run in a process forked from its worker.

A worker (cas/workers/supervisor.py) forks one executor per claimed entry, after `preload` has
imported everything a run needs, so a run starts in about a millisecond. In the
child, `child_setup` ties it to its supervisor (SIGTERM when the supervisor dies,
PR_SET_PDEATHSIG) and points stdin at /dev/null and fds 1 and 2 at the entry's log;
`execute` then runs the entry and writes its outcome:

    execute(project, item, wid, common_dir, trash) -> exit code (0 success, 8 failed)

Contract (spec/queue.md, "Write ordering"): the experiment's record, then its ref,
then the run directory to the trash (best effort), then the final outcome (durable),
then the exit, which is what makes the supervisor look. Every failure becomes an
outcome; an error raised after the ref was published is reconciled with the
published record (queue_workers.published), except Conflict (the name is someone else's).
The outcome is written only while the entry is still in running/ under this claim.
Nothing here raises into the caller but what `run_entry` documents; the executor
process itself must `os._exit` with the returned code.

TALLY_FAILPOINT (tests only) SIGKILLs the executor, or its supervisor and then the
executor, at the points `started`, `published` and `outcome` (see `_failpoint`).
"""

from __future__ import annotations

import os
import signal
import socket
import sys
import time
import traceback
from pathlib import Path

from cas.core.failpoints import failpoint
from cas.queue import directory as queue
from cas.queue import workers as queue_workers
from cas.queue.outcome import Outcome

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from cas.workspace.project import Project

PR_SET_PDEATHSIG = 1  # <linux/prctl.h>
EXIT_EXECUTOR_ERROR = 70  # an executor that crashed before writing an outcome


def preload() -> None:
    """Import what a run needs once, in the supervisor, so every fork has it."""
    from cas.workspace import checkout  # noqa: F401
    from cas.experiments import runs as experiments  # noqa: F401
    from cas.pipeline import tallylock as lockfile  # noqa: F401
    from cas.pipeline import params  # noqa: F401
    from cas.pipeline import pipelinefile as pipeline  # noqa: F401
    from cas.objects import record  # noqa: F401
    from cas.store import refs  # noqa: F401
    from cas.pipeline import runcache  # noqa: F401
    from cas.workers import rundir  # noqa: F401
    from cas.pipeline import runner  # noqa: F401
    from cas.workspace import statcache  # noqa: F401
    from cas.workspace import fullsnapshot as worktree  # noqa: F401
    try:
        params._yaml_rt()  # ruamel's import and setup: ~40 ms saved per run
        import ruamel.yaml  # noqa: F401
    except Exception:  # noqa: BLE001 - only a warm-up
        pass


def child_setup(parent: int, log_fd: int) -> None:
    _set_pdeathsig(signal.SIGTERM)
    if os.getppid() != parent:  # the supervisor died before the prctl took effect
        os._exit(EXIT_EXECUTOR_ERROR)
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)
    os.close(devnull)
    os.dup2(log_fd, 1)
    os.dup2(log_fd, 2)
    os.close(log_fd)
    # sys.stdout/stderr may not write to fds 1 and 2 (a test runner's capture, an
    # embedding host): rebind them so everything the run prints lands in its log.
    sys.stdout = open(1, "w", buffering=1, encoding="utf-8", errors="replace", closefd=False)
    sys.stderr = open(2, "w", buffering=1, encoding="utf-8", errors="replace", closefd=False)


def _set_pdeathsig(sig: int) -> None:
    try:
        import ctypes
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, int(sig), 0, 0, 0)
    except (OSError, AttributeError):
        pass  # not Linux: the reaper's process-group kill is the fallback


def execute(project: Project, item: queue.Item, wid: str, common_dir: Path, trash: Path | None) -> int:
    """Run one entry (in the executor process); write its outcome; return an exit code.

    Order (spec/queue.md, "Write ordering"): the experiment's record, then its ref,
    then the run directory to the trash (best effort), then the outcome (durable),
    then exit, which is what makes the supervisor look. Nothing after the ref may turn
    the verdict: an error there is reconciled with what was published.
    """
    from cas.core.errors import Conflict, TallyError

    parent = os.getppid()
    started = time.time()
    where = {"pid": parent, "executor_pid": os.getpid(), "host": socket.gethostname(),
             "wid": wid, "started": started}
    _failpoint("started")
    try:
        outcome = run_entry(project, item, common_dir=common_dir, trash=trash)._replace(**where)
    except BaseException as exc:  # noqa: BLE001 - every failure becomes an outcome
        if isinstance(exc, TallyError):
            _log(f"tally: error: {exc.message}" + (f"\n  hint: {exc.hint}" if exc.hint else ""))
            reason = exc.message
        elif isinstance(exc, KeyboardInterrupt):
            reason = "interrupted"
        else:
            _log(traceback.format_exc().rstrip("\n"))
            reason = f"internal error: {type(exc).__name__}: {exc}"
        outcome = Outcome(status="failed", reason=reason, **where)
        # Raised after the experiment was recorded (releasing experiments.run's locks,
        # say): the record and ref stand, so the entry is done. Not on Conflict: then
        # another run holds the name, and the record under it is not ours.
        if not isinstance(exc, Conflict):
            pub = queue_workers.published(project, item.entry, since=started)
            if pub is not None and pub.ok:
                _log(f"recorded {pub.name} as {(pub.record or '')[:12]} before the error above")
                outcome = pub._replace(note=f"after the experiment was recorded: {reason}", **where)
    if os.getppid() != parent and not outcome.ok:
        outcome = outcome._replace(reason="worker died")
    outcome = outcome._replace(finished=time.time())
    for f in (sys.stdout, sys.stderr):
        try:
            f.flush()
        except (OSError, ValueError):
            pass  # a log that cannot be written (full disk) must not lose the outcome
    _failpoint("published")
    # Only while the entry is still ours: a reaper may have failed it meanwhile, and
    # a retry may already have queued it again.
    if item.path.exists():
        try:
            queue.complete_outcome(project, item.id, outcome)
        except OSError as exc:
            # The supervisor, finding no final outcome, decides from the published ref.
            _log(f"tally: cannot write the outcome: {exc}")
    _failpoint("outcome")
    return 0 if outcome.ok else 8


def _failpoint(point: str) -> None:
    """Crash injection for tests (cas/core/failpoints.py): TALLY_FAILPOINT=executor:<point>
    SIGKILLs the executor when it reaches <point>; worker:<point> SIGKILLs its
    supervisor first (both die, as in a machine crash). Points: started (nothing run
    yet), published (record, ref and run directory done; outcome not written), outcome
    (outcome written; not exited)."""
    failpoint(f"executor:{point}")
    failpoint(f"worker:{point}", parent=True)


def _log(line: str) -> None:
    """One line of the entry's log. In an executor, fds 1 and 2 *are* the log file
    (`child_setup`), which `tally queue logs` shows; nothing here is terminal UI.
    A line that cannot be written (full disk) is dropped: the log never decides a run."""
    try:
        sys.stdout.write(line + "\n")
        sys.stdout.flush()
    except (OSError, ValueError):
        pass


def run_entry(project: Project, item: queue.Item, *, common_dir: Path,
              trash: Path | None = None) -> Outcome:
    """Materialize, run and record one queued experiment; return its outcome (without
    the where and when, which execute() adds).

    Raises whatever the run raises before a record exists (bad pipeline, bad
    override, missing object); a run that fails *after* starting returns an outcome
    with status "failed" and the record id, as the runner records failed runs too.
    After a success the run directory is moved into `trash` (deleted now if None).
    """
    from cas.experiments import runs as experiments
    from cas.experiments.request import RunRequest
    from cas.pipeline import livefiles as live
    from cas.queue import rundirs
    from cas.workers import rundir
    from cas.core.errors import TallyError

    e = item.entry
    rid = item.id[:16]
    t0 = time.monotonic()
    rp = rundir.prepare(project, run_id=rid, workspace=e.workspace, baseline=e.baseline,
                        common_dir=common_dir, overlay=e.checkpoint)
    _log(f"materialized {e.workspace[:12]} into {rp.root} in {time.monotonic() - t0:.3f} s")
    ckpt = queue.checkpoints_path(project, item.id)
    ckpt.write_bytes(b"")
    env = {"TALLY_QUEUE_ID": item.id}
    resumed: list[str] = []
    if e.checkpoint is not None:
        from cas.experiments import checkpoints

        env[live.ENV_RESUME_STEP] = str(e.options.get("resume_step", ""))
        resumed = checkpoints.paths(project, e.checkpoint)  # overlaid: the stage continues from them
    _drop_failed_ref(project, e)
    request = RunRequest(stages=e.targets, set_params=tuple(e.override_specs()), name=e.name,
                         message=e.message, force=bool(e.options.get("force")),
                         no_run_cache=bool(e.options.get("no_run_cache")), parent=e.parent)
    exp = experiments.run(rp, request, echo=True, notify=_log, env=env, checkpoints_file=ckpt,
                          resumed=resumed)
    oid, rec = exp.oid, exp.record
    status = "success" if rec.status == "success" else "failed"
    if status == "success":
        # The experiment is recorded (record, then ref): from here on nothing may fail
        # the run. Cleaning up is best effort; what is left, prepare() (a retry) or
        # `tally queue remove` deletes.
        try:
            if trash is not None:
                rundirs.discard(project, rid, trash)
            else:
                rundirs.cleanup(project, rid)
            ckpt.unlink(missing_ok=True)
        except (OSError, TallyError) as exc:
            _log(f"warning: could not remove the run directory {rp.root}: {exc}")
    reason = exp.reason or ("" if status == "success" else f"run {rec.status}")
    _log(f"{'recorded' if status == 'success' else 'failed'} {exp.name} as {oid[:12]}"
          f" in {time.monotonic() - t0:.3f} s{': ' + reason if reason else ''}")
    # remote.auto_push (cas/sync/autopush.py): after the ref, never failing the run.
    from cas.sync import autopush
    autopush.after_run(project, rec.baseline, exp.name, notify=_log)
    return Outcome(status=status, reason=reason, exit_code=rec.exit_code, record=oid, name=exp.name)


def _drop_failed_ref(project: Project, e: queue.QueueEntry) -> None:
    """A retry reuses its name: drop the ref an earlier failed attempt of it left."""
    from cas.objects import record
    from cas.store import refs

    oid = refs.read(project, e.baseline, e.name)
    if oid is None:
        return
    try:
        rec = record.load(project.store, oid)
    except Exception:  # noqa: BLE001 - unreadable: leave it, the run reports the conflict
        return
    if rec.status != "success" and rec.workspace is not None:
        refs.delete(project, e.baseline, e.name, oid)


__all__ = ["EXIT_EXECUTOR_ERROR", "child_setup", "execute", "preload", "run_entry"]
