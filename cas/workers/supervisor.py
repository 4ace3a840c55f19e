"""Queue workers: claim entries, run each in an isolated directory, always keep the logs.

A worker is one supervisor process with `slots` runs at a time. For each claimed
entry it forks an executor (a copy of itself with every module already imported, so
a run starts in about a millisecond instead of a fresh interpreter's ~150 ms):

    supervisor (worker file, heartbeat, claims, kill/stop requests, never runs a stage)
      └─ executor (cas/workers/executor.py), own process group, stdout+stderr -> .tally/queue/logs/<id>.log
           materializes .tally/tmp/run-<id16>/ (cas/workers/rundir.py), runs the experiment
           there (cas.experiments.runs.run), writes the outcome, exits
             └─ stage commands (their own process groups, run by cas.pipeline.runner)

The supervisor is single-threaded (fork with threads is unsafe); it wakes when an
executor exits (SIGCHLD through a wakeup pipe) and otherwise every POLL seconds. It is the only writer of its worker file; the executor is the only writer
of its entry's outcome, written before the supervisor moves the entry to done/ or
failed/. An executor that dies without an outcome gets one from the supervisor:
success if the experiment was recorded anyway (its ref is published before the
outcome is written: queue_workers.published), else "killed by signal 9", "exited with code
70"; spec/queue.md, "Write ordering". A supervisor that dies is noticed by
anyone listing the queue (cas/queue/workers.py, reap); its executors get SIGTERM from the
kernel (PR_SET_PDEATHSIG), which the runner forwards to the stage, so no orphaned
stage keeps running.

`spawn` starts detached workers (`tally queue start -j N`, each `python -m cli.worker`,
whose log lines are the worker's stdout): new sessions, stdio to
`.tally/queue/workers/*.log`, so they outlive the terminal. A worker stops when the
queue is empty (unless keep_alive), or when a stop request newer than its own start
appears (`tally queue stop`; workers started later ignore it, so a stale request can
never stop them: DVC's stale-shutdown-message bug).
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Sequence

from cas.workers import executor
from cas.queue import liveness
from cas.queue import directory as queue
from cas.queue import workers as queue_workers
from cas.queue.outcome import Outcome
from cas.queue.workerfile import CurrentRun, WorkerInfo
from cas.core.fsops import atomic_write

if TYPE_CHECKING:
    from cas.workspace.project import Project

POLL = 0.05  # seconds between supervisor checks while runs are going (an executor's
# exit wakes it at once through SIGCHLD; the poll only paces kill/stop requests)
IDLE_POLL = 0.5  # seconds between looks at an empty queue (keep_alive)
KILL_GRACE = 15.0  # seconds between SIGTERM and SIGKILL of a killed run: longer than
# cas.pipeline.stageproc.KILL_GRACE (10 s), so the runner, which forwards SIGTERM to the stage's own
# process group, always gets to SIGKILL the stage before we SIGKILL the runner

Notify = Callable[[str], None]


@dataclass
class _Run:
    item: queue.Item
    pid: int  # the executor; also its process group id
    started: float
    pstart: str = ""  # the executor's start time (/proc), to tell a reused pid apart
    kill_at: float | None = None  # when SIGKILL follows the SIGTERM already sent
    reason: str | None = None  # why it was killed, when it was


@dataclass
class Stats:
    done: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)
    interrupted: int | None = None  # the signal that stopped the worker, if one did


class Worker:
    """One supervisor; see the module docstring. Use run() once."""

    def __init__(self, project: Project, *, slots: int = 1, keep_alive: bool = False,
                 notify: Notify | None = None) -> None:
        if slots < 1:
            raise ValueError("a worker needs at least one slot")
        self.project = project
        self.slots = slots
        self.keep_alive = keep_alive
        self.notify = notify or (lambda msg: None)
        self.wid = f"{os.getpid()}-{os.urandom(4).hex()}"
        self.started_ns = time.time_ns()
        self.runs: dict[int, _Run] = {}
        self.stats = Stats()
        self._stopping = False
        self._kill_reason: str | None = None
        self._last_beat = 0.0
        self._info_path = queue.queue_dir(project) / "workers" / f"{self.wid}.json"
        self._common_dir: Path | None = None
        self._wake = self._wake_w = -1  # the signal wakeup pipe, while run() is going
        # Successful runs' directories are renamed here by their executors and deleted
        # by the supervisor while other runs go on (deleting takes ~20 ms per run).
        self.trash = project.store_dir / "tmp" / f"trash-{self.wid}"

    # -- the loop ------------------------------------------------------------------------
    def run(self) -> Stats:
        """Run until the queue is empty (or stopped); returns what finished."""
        from cas.workers import rundir

        queue.ensure_dirs(self.project)
        self._common_dir = rundir.git_common_dir(self.project.root)
        executor.preload()
        old = {s: signal.signal(s, self._on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
        wake_r, wake_w = os.pipe()
        os.set_blocking(wake_r, False)
        os.set_blocking(wake_w, False)
        old[signal.SIGCHLD] = signal.signal(signal.SIGCHLD, lambda *_: None)
        old_wakeup = signal.set_wakeup_fd(wake_w)
        self._wake, self._wake_w = wake_r, wake_w
        self._beat(force=True)  # the worker file exists before the first claim
        try:
            queue_workers.reap(self.project)
            while True:
                self._check_stop()
                self._reap_children()
                self._handle_kills()
                claimed = False
                while not self._stopping and len(self.runs) < self.slots:
                    item = queue.claim(self.project, self.wid)
                    if item is None:
                        break
                    self._start(item)
                    claimed = True
                self._beat()
                if not claimed:
                    self._empty_trash(one=bool(self.runs))
                if not self.runs and not claimed:
                    if self._stopping or not self.keep_alive:
                        break
                    time.sleep(IDLE_POLL)
                elif not claimed:
                    self._sleep(POLL)
        finally:
            self._shutdown()
            signal.set_wakeup_fd(old_wakeup)
            for s, h in old.items():
                signal.signal(s, h)
            os.close(wake_r)
            os.close(wake_w)
        return self.stats

    def _sleep(self, seconds: float) -> None:
        """Wait up to `seconds`, or until a signal (an executor exiting) arrives."""
        import select

        try:
            ready, _, _ = select.select([self._wake], [], [], seconds)
        except InterruptedError:
            ready = []
        if ready:
            try:
                while os.read(self._wake, 512):
                    pass
            except BlockingIOError:
                pass

    def _empty_trash(self, *, one: bool) -> None:
        """Delete discarded run directories: one per call while runs go on, else all."""
        from cas.core.errors import TallyError
        from cas.core.fsops import remove_tree

        try:
            names = sorted(os.listdir(self.trash))
        except FileNotFoundError:
            return
        for n in names[:1] if one else names:
            try:
                remove_tree(self.trash / n)
            except (OSError, TallyError) as exc:
                # Never worth stopping the worker (and killing its runs) for; a dead
                # worker's trash is removed by prune_worker_files.
                self.notify(f"cannot delete {self.trash / n}: {exc}")
                return
        if not one or len(names) <= 1:
            try:
                os.rmdir(self.trash)
            except OSError:
                pass

    def _on_signal(self, signum: int, frame: object) -> None:
        self._stopping = True
        self.stats.interrupted = signum
        self._kill_all(f"worker interrupted by signal {signum}")

    def _check_stop(self) -> None:
        req = queue_workers.stop_request(self.project)
        if req and isinstance(req.get("time"), int) and req["time"] > self.started_ns:
            if not self._stopping:
                self.notify("stop requested: finishing what runs, claiming nothing new")
            self._stopping = True
            if req.get("kill"):
                self._kill_all("killed by `tally queue stop --kill`")

    def _start(self, item: queue.Item) -> None:
        log = queue.log_path(self.project, item.id)
        header = (f"=== {item.name} ({item.id[:12]}) started {time.strftime('%Y-%m-%d %H:%M:%S')} "
                  f"by worker pid {os.getpid()} on {socket.gethostname()} ===\n")
        fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        os.write(fd, header.encode())
        for f in (sys.stdout, sys.stderr):
            try:
                f.flush()  # or the child would print our buffered text a second time
            except (OSError, ValueError):
                pass
        parent = os.getpid()
        # Signals are blocked across fork: the child must not run the supervisor's
        # handler (it would kill the sibling runs its copy still lists) before it has
        # reset them; the parent gets what arrived meanwhile as soon as it unblocks.
        caught = {signal.SIGINT, signal.SIGTERM, signal.SIGCHLD}
        mask = signal.pthread_sigmask(signal.SIG_BLOCK, caught)
        # Taken before the fork: a record created at or after it is this attempt's
        # (queue_workers.published), so it must not be later than anything the executor does.
        now = time.time()
        pid = os.fork()
        if pid != 0:
            signal.pthread_sigmask(signal.SIG_SETMASK, mask)
        if pid == 0:  # executor
            try:
                for s in caught:
                    signal.signal(s, signal.SIG_DFL)
                self.runs.clear()
                signal.pthread_sigmask(signal.SIG_SETMASK, mask)
                os.setpgid(0, 0)
                signal.set_wakeup_fd(-1)
                for wfd in (self._wake, self._wake_w):
                    if wfd >= 0:
                        os.close(wfd)
                executor.child_setup(parent, fd)
                code = executor.execute(self.project, item, self.wid, self._common_dir, self.trash)
            except BaseException:  # noqa: BLE001 - the child must never return into the loop
                try:
                    traceback.print_exc()
                    sys.stderr.flush()
                except BaseException:  # noqa: BLE001
                    pass
                code = executor.EXIT_EXECUTOR_ERROR
            os._exit(code)
        os.close(fd)
        try:
            os.setpgid(pid, pid)  # also from here: no window where a kill misses the group
        except (ProcessLookupError, PermissionError):
            pass  # already exec'd setpgid itself, or already gone
        self.runs[pid] = _Run(item, pid, now, pstart=liveness.process_start(pid))
        self.notify(f"started {item.name} (pid {pid})")
        self._beat(force=True)

    def _reap_children(self) -> None:
        for pid in list(self.runs):
            try:
                got, status = os.waitpid(pid, os.WNOHANG)
            except ChildProcessError:
                got, status = pid, 0
            if got == 0:
                run = self.runs[pid]
                if run.kill_at is not None and time.time() >= run.kill_at:
                    _killpg(pid, signal.SIGKILL)
                    run.kill_at = None
                continue
            run = self.runs.pop(pid)
            self._complete(run, status)
        if not self.runs:
            return

    def _complete(self, run: _Run, status: int) -> None:
        item = run.item
        queue_workers.clear_kill(self.project, item.id)
        outcome = queue.read_outcome(self.project, item.id)
        if outcome is None or not outcome.final:
            if os.WIFSIGNALED(status):
                why = f"killed by signal {os.WTERMSIG(status)}"
            else:
                why = f"executor exited with code {os.waitstatus_to_exitcode(status)} (see the log)"
            why = run.reason or why
            # The executor publishes the experiment's ref before it writes the outcome:
            # one killed or failing in between leaves a recorded experiment and no
            # outcome. The verdict follows what was published, not how the process ended.
            pub = queue_workers.published(self.project, item.entry, since=run.started)
            if pub is not None and pub.ok:
                verdict = pub._replace(note=f"{why} after the experiment was recorded")
            else:
                verdict = Outcome(status="failed", reason=why,
                                  record=pub.record if pub else None, name=pub.name if pub else None)
            outcome = self._outcome(run, verdict._replace(executor_pid=run.pid))
            moved = self._finish(item, outcome)
        else:
            if run.reason and not outcome.ok:
                outcome = outcome._replace(reason=run.reason)
                try:
                    queue.write_outcome(self.project, item.id, outcome)
                except OSError as exc:
                    self.notify(f"{item.name}: cannot record the kill's reason ({exc.strerror})")
            moved = queue.move_by_outcome(self.project, item, outcome)
        ok = outcome.ok
        (self.stats.done if ok else self.stats.failed).append(item.name)
        if moved is None:
            self.notify(f"{item.name}: already moved by another process")
        elif ok:
            self.notify(f"done {item.name}")
        else:
            self.notify(f"failed {item.name}: {outcome.reason or 'see the log'}")
        self._beat(force=True)

    def _finish(self, item: queue.Item, outcome: Outcome) -> queue.Item | None:
        """queue.finish; if the outcome cannot be written (a full disk), move the entry
        by its verdict all the same: a supervisor that raised here would stop every run."""
        try:
            return queue.finish(self.project, item, outcome)
        except OSError as exc:
            self.notify(f"{item.name}: cannot write its outcome ({exc.strerror}); moved without it")
            return queue.move_by_outcome(self.project, item, outcome)

    def _outcome(self, run: _Run, verdict: Outcome) -> Outcome:
        return verdict._replace(pid=os.getpid(), host=socket.gethostname(), wid=self.wid,
                                started=run.started, finished=time.time())

    def _handle_kills(self) -> None:
        for run in self.runs.values():
            if run.reason is None and queue_workers.kill_requested(self.project, run.item.id):
                self._kill(run, "killed by `tally queue kill`")

    def _kill_all(self, reason: str) -> None:
        for run in self.runs.values():
            if run.reason is None:
                self._kill(run, reason)

    def _kill(self, run: _Run, reason: str) -> None:
        run.reason = reason
        run.kill_at = time.time() + KILL_GRACE
        # SIGTERM first: the runner forwards it to the stage and still records the run
        # as interrupted; SIGKILL follows after KILL_GRACE if it has not exited.
        _killpg(run.pid, signal.SIGTERM)
        self.notify(f"killing {run.item.name}: {reason}")

    def _beat(self, *, force: bool = False) -> None:
        now = time.time()
        if not force and now - self._last_beat < liveness.HEARTBEAT:
            return
        self._last_beat = now
        info = WorkerInfo(
            wid=self.wid, pid=os.getpid(), host=socket.gethostname(), boot_id=liveness.boot_id(),
            pstart=liveness.process_start(os.getpid()), started=self.started_ns / 1e9,
            started_ns=self.started_ns, heartbeat=now, slots=self.slots,
            keep_alive=self.keep_alive, stopping=self._stopping,
            current={r.item.id: CurrentRun(name=r.item.name, pgid=r.pid, pstart=r.pstart,
                                           started=r.started) for r in self.runs.values()})
        atomic_write(self._info_path, info.dumps(), durable=False)

    def _shutdown(self) -> None:
        """Stop what still runs (an exception or signal got us here), then unregister."""
        if self.runs:
            self._kill_all(self._kill_reason or "worker stopped")
            deadline = time.time() + KILL_GRACE + 1
            while self.runs and time.time() < deadline:
                self._reap_children()
                self._sleep(POLL)
            for pid in list(self.runs):
                _killpg(pid, signal.SIGKILL)
                try:
                    _, status = os.waitpid(pid, 0)
                except ChildProcessError:
                    status = 0
                self._complete(self.runs.pop(pid), status)
        self._empty_trash(one=False)
        # Last: no running entry names this worker any more, so nothing is orphaned.
        try:
            os.unlink(self._info_path)
        except FileNotFoundError:
            pass


# ---------------------------------------------------------------- detached workers

def spawn(project: Project, *, count: int, launcher: Sequence[str], keep_alive: bool = False) -> list[int]:
    """Start `count` detached workers (new sessions, stdio to log files); their pids.

    `launcher` is the command that runs one Worker given `--root ROOT [--keep-alive]`
    (the CLI's `python -m cli.worker`: the entry point lives with the other commands).
    They outlive the calling terminal; each exits when the queue is empty (or, with
    keep_alive, when `tally queue stop` asks).
    """
    queue.ensure_dirs(project)
    wdir = queue.queue_dir(project) / "workers"
    pids = []
    stamp = time.strftime("%Y%m%d-%H%M%S")
    for i in range(count):
        log = wdir / f"worker-{stamp}-{os.getpid()}-{i}.log"
        args = [*launcher, "--root", os.fspath(project.root)]
        if keep_alive:
            args.append("--keep-alive")
        with open(log, "ab") as out:
            proc = subprocess.Popen(args, cwd=project.root, stdin=subprocess.DEVNULL, stdout=out,
                                    stderr=subprocess.STDOUT, start_new_session=True,
                                    close_fds=True)
        pids.append(proc.pid)
    return pids


def start(project: Project, *, jobs: int, launcher: Sequence[str],
          keep_alive: bool = False) -> dict[str, Any]:
    """`tally queue start -j N`: make sure N workers run (never fewer than already do).

    Dead workers' entries are reaped first. Returns {"started": [pids], "running":
    [pids of workers already alive], "pending": entries waiting}.
    """
    if jobs < 1:
        from cas.core.errors import UsageError
        raise UsageError("-j must be at least 1")
    queue_workers.reap(project)
    queue_workers.prune_worker_files(project)
    alive = [w.pid for w in queue_workers.live_workers(project) if not w.stopping]
    pending = len(queue.items(project, states=("pending",)))
    want = max(0, jobs - len(alive))
    if not keep_alive:
        want = min(want, pending)  # a worker with nothing to claim would exit at once
    pids = spawn(project, count=want, launcher=launcher, keep_alive=keep_alive) if want else []
    return {"started": pids, "running": alive, "pending": pending}


def run_all(project: Project, *, jobs: int = 1, notify: Notify | None = None) -> Stats:
    """`tally run --run-all -j N`: run the queue in this process until it is empty."""
    queue_workers.reap(project)
    return Worker(project, slots=jobs, notify=notify).run()


def _killpg(pgid: int, sig: int) -> None:
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        pass
