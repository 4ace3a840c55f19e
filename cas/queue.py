"""The experiment queue: one file per entry under `.tally/queue/`, claimed by rename.

    .tally/queue/
      seq                       next sequence number (text), bumped under the `queue` lock
      pending/<seq>-<id>        queued entries; FIFO is the order of <seq>
      running/<seq>-<id>.<wid>  claimed by worker <wid> (the rename is the claim)
      done/<seq>-<id>           finished with success
      failed/<seq>-<id>         failed, killed, or its worker died; retryable
      outcomes/<id>.json        how the last attempt ended (written before the move)
      workers/<wid>.json        one per live worker: pid, host, heartbeat, current runs
      kill/<id>                 a request to kill that running entry
      stop                      a request for the workers started before it to stop
      logs/<id>.log             stdout+stderr of every attempt, always kept

An entry file holds the queue-time facts (envelope kind b"Q", spec/queue.md) and never
changes; its id is the BLAKE3 of its bytes. Where it is says what state it is in, and
a rename moves it, so at every instant an entry is in exactly one state: a crash can
leave it in the old state or the new one, never in none or two. rename(2) of a pending
file succeeds for exactly one of the workers racing for it; the others get ENOENT and
try the next. The claimer's worker id is part of the new name, so "who runs it" is
published by the same atomic step as "it runs".

A running entry whose worker is gone (its worker file is missing; or, on this host,
its pid is dead or reused; or, from another host, its heartbeat is older than
STALE_AFTER) is moved to failed/ with reason "worker died" by whoever looks: status,
start, retry; to done/ instead if its experiment was recorded before the worker died
(the ref is published before the outcome is written). See spec/queue.md for the
write ordering and the crash argument.
"""

from __future__ import annotations

import json
import os
import socket
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Iterator

from . import hashing
from .errors import Conflict, FormatError, NotFound, UsageError
from .fsops import atomic_write, fsync_dir
from .liveness import boot_id, worker_alive
from .queue_entry import Entry, decode, encode  # noqa: F401

QUEUE_DIR = "queue"
STATES = ("pending", "running", "done", "failed")
SEQ_DIGITS = 12  # 10^12 entries: zero-padded so names sort as numbers
LOCK_NAME = "queue"
LOCK_TIMEOUT = 30.0  # seconds: the lock is held for a counter bump and a few renames


# ---------------------------------------------------------------- paths and items

def queue_dir(project) -> Path:
    return project.store_dir / QUEUE_DIR


def _dirs(project) -> dict[str, Path]:
    q = queue_dir(project)
    return {s: q / s for s in (*STATES, "outcomes", "workers", "kill", "logs")}


def ensure_dirs(project) -> None:
    for d in _dirs(project).values():
        d.mkdir(parents=True, exist_ok=True)


def log_path(project, entry_id: str) -> Path:
    return queue_dir(project) / "logs" / f"{entry_id}.log"


def run_dir(project, entry_id: str) -> Path:
    """Where the entry runs: `.tally/tmp/run-<id>/` (same filesystem as the objects)."""
    return project.store_dir / "tmp" / f"run-{entry_id[:16]}"


def checkpoints_path(project, entry_id: str) -> Path:
    """The file the run's checkpoints are appended to (outside the run's workspace)."""
    return project.store_dir / "tmp" / f"run-{entry_id[:16]}.checkpoints"


@dataclass
class Item:
    """One entry as found on disk: where it is, and what is known about its run."""

    id: str
    seq: int
    state: str  # pending | running | done | failed
    entry: Entry
    path: Path
    wid: str | None = None  # the claiming worker (running)
    worker: dict[str, Any] | None = None  # its worker file, when readable
    outcome: dict[str, Any] | None = None  # how the last attempt ended
    error: str | None = None  # the entry file is damaged (it is listed, never run)

    @property
    def name(self) -> str:
        return self.entry.name

    @property
    def started(self) -> float | None:
        if self.state == "running" and self.worker:
            cur = self.worker.get("current", {}).get(self.id)
            if isinstance(cur, dict):
                return cur.get("started")
        return (self.outcome or {}).get("started")

    def to_json(self) -> dict[str, Any]:
        w = self.worker or {}
        o = self.outcome or {}
        return {"id": self.id, "seq": self.seq, "name": self.name, "state": self.state,
                "queued": self.entry.queued / 1e9, "started": self.started,
                "finished": o.get("finished") if self.state in ("done", "failed") else None,
                "worker_pid": w.get("pid") if self.state == "running" else o.get("pid"),
                "worker_host": w.get("host") if self.state == "running" else o.get("host"),
                "reason": o.get("reason") if self.state == "failed" else None,
                "note": o.get("note") if self.state in ("done", "failed") else None,
                "exit_code": o.get("exit_code"), "record": o.get("record"),
                "attempt": o.get("attempt", 0) + (1 if self.state == "running" else 0),
                "entry": self.entry.to_json()}


def _parse_name(state: str, fname: str) -> tuple[int, str, str | None] | None:
    """(seq, id, wid) from a queue file name, or None for anything else (temp files)."""
    seq, sep, rest = fname.partition("-")
    if not sep or len(seq) != SEQ_DIGITS or not seq.isdigit():
        return None
    wid = None
    if state == "running":
        rest, sep, wid = rest.partition(".")
        if not sep or not wid:
            return None
    if not hashing.is_oid(rest):
        return None
    return int(seq), rest, wid


def _file_name(seq: int, entry_id: str) -> str:
    return f"{seq:0{SEQ_DIGITS}d}-{entry_id}"


def _scan(project, states: Iterable[str] = STATES) -> Iterator[tuple[str, int, str, str | None, Path]]:
    dirs = _dirs(project)
    for state in states:
        try:
            names = os.listdir(dirs[state])
        except FileNotFoundError:
            continue
        for fname in sorted(names):
            parsed = _parse_name(state, fname)
            if parsed is not None:
                yield state, parsed[0], parsed[1], parsed[2], dirs[state] / fname


def _read_entry(path: Path, entry_id: str) -> Entry:
    data = path.read_bytes()
    if hashing.hash_bytes(data) != entry_id:
        raise FormatError(f"queue entry {path.name} does not hash to its id", path=path,
                          hint="remove it with `tally queue remove`")
    return decode(data)


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        doc = json.loads(path.read_bytes())
    except (OSError, ValueError):
        return None
    return doc if isinstance(doc, dict) else None


def read_outcome(project, entry_id: str) -> dict[str, Any] | None:
    return _read_json(queue_dir(project) / "outcomes" / f"{entry_id}.json")


def write_outcome(project, entry_id: str, outcome: dict[str, Any]) -> None:
    atomic_write(queue_dir(project) / "outcomes" / f"{entry_id}.json",
                 json.dumps(outcome, sort_keys=True).encode())


def read_worker(project, wid: str) -> dict[str, Any] | None:
    return _read_json(queue_dir(project) / "workers" / f"{wid}.json")


def items(project, *, states: Iterable[str] = STATES, reap_dead: bool = True) -> list[Item]:
    """Every entry, in queue order within each state (pending, running, done, failed).

    With `reap_dead`, running entries whose worker is gone are first moved to failed/
    (see reap). Entries that vanish while listed (claimed, finished) are skipped.
    """
    if reap_dead:
        reap(project)
    out: list[Item] = []
    workers: dict[str, dict[str, Any] | None] = {}
    for state, seq, eid, wid, path in _scan(project, states):
        try:
            entry = _read_entry(path, eid)
            error = None
        except FileNotFoundError:
            continue
        except (FormatError, OSError) as exc:
            # Listed, so it can be seen and removed; never run (claim fails it).
            entry = Entry(name=f"damaged-{eid[:12]}", baseline="0" * 40, workspace=eid)
            error = str(exc)
        item = Item(eid, seq, state, entry, path, wid=wid, error=error)
        if wid is not None:
            if wid not in workers:
                workers[wid] = read_worker(project, wid)
            item.worker = workers[wid]
        if state != "pending":
            item.outcome = read_outcome(project, eid)
        out.append(item)
    return out


def find(project, key: str, *, states: Iterable[str] = STATES) -> Item:
    """The entry named `key`, or whose id starts with `key` (at least 6 hex digits).

    Raises:
        NotFound: no such entry. UsageError: an id prefix matching several entries.
    """
    hits = [it for it in items(project, states=states) if it.name == key]
    if not hits and len(key) >= 6 and not key.strip("0123456789abcdef"):
        hits = [it for it in items(project, states=states, reap_dead=False) if it.id.startswith(key)]
    if not hits:
        raise NotFound(f"no queue entry named {key!r}", hint="see `tally queue status`")
    if len(hits) > 1:
        raise UsageError(f"{key!r} matches {len(hits)} queue entries",
                         hint="give the full name or a longer id prefix")
    return hits[0]


# ---------------------------------------------------------------- queueing

def _lock(project):
    return project.lock(LOCK_NAME, timeout=LOCK_TIMEOUT, purpose="updating the experiment queue")


def _next_seq(project, count: int = 1) -> int:
    """Allocate `count` consecutive sequence numbers; return the first. Call with the
    queue lock held."""
    p = queue_dir(project) / "seq"
    try:
        seq = int(p.read_text().strip() or "1")
    except FileNotFoundError:
        seq = 1
    except ValueError:
        # A damaged counter: restart above every number in use, which keeps FIFO.
        seq = 1 + max((s for _, s, *_ in _scan(project)), default=0)
    atomic_write(p, f"{seq + count}\n".encode())
    return seq


def names_in_queue(project) -> set[str]:
    return {it.name for it in items(project, reap_dead=False)}


def enqueue(project, entries: list[Entry]) -> list[Item]:
    """Add `entries` to the end of the queue, in order.

    Names must be unique among queue entries and free as experiment refs of their
    baseline; the check and the sequence numbers are taken under the queue lock, so
    two `run --queue` at once never hand out one number or one name twice.
    Raises:
        Conflict: a name already queued or already an experiment. LockBusy.
    """
    from . import refs

    ensure_dirs(project)
    dirs = _dirs(project)
    out = []
    with _lock(project):
        taken = names_in_queue(project)
        for e in entries:
            refs.check_name(e.name)
            if e.name in taken:
                raise Conflict(f"an entry named {e.name!r} is already in the queue",
                               hint="choose another name, or `tally queue remove` it first")
            if refs.read(project, e.baseline, e.name) is not None:
                raise Conflict(f"experiment {e.name!r} already exists for baseline {e.baseline[:12]}",
                               hint="choose another name (-n)")
            taken.add(e.name)
        # Every entry is written under a temp name and fsync'ed, then all are renamed
        # into place (a worker never sees a torn or not-yet-durable entry), then the
        # directory is synced once. Not syncfs(2): on a busy shared disk it waits for
        # everyone's dirty data (0.9 s measured here), an fsync only for ours.
        first = _next_seq(project, len(entries))
        staged = []
        try:
            for i, e in enumerate(entries):
                data = encode(e)
                eid = hashing.hash_bytes(data)
                path = dirs["pending"] / _file_name(first + i, eid)
                tmp = dirs["pending"] / f".{path.name}.tmp-{os.getpid()}"
                fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
                try:
                    view = memoryview(data)
                    while view:
                        view = view[os.write(fd, view):]
                    os.fsync(fd)
                finally:
                    os.close(fd)
                staged.append((tmp, path))
                out.append(Item(eid, first + i, "pending", e, path))
            for tmp, path in staged:
                os.rename(tmp, path)
            staged = []
        finally:
            for tmp, _ in staged:
                try:
                    os.unlink(tmp)
                except FileNotFoundError:
                    pass
        fsync_dir(dirs["pending"])
    return out


# ---------------------------------------------------------------- claiming and finishing

def claim(project, wid: str) -> Item | None:
    """Claim the oldest pending entry for worker `wid`; None when there is none.

    The rename pending/<seq>-<id> -> running/<seq>-<id>.<wid> succeeds for exactly one
    claimer; a loser sees ENOENT and moves on to the next entry.
    """
    dirs = _dirs(project)
    for state, seq, eid, _, path in _scan(project, ("pending",)):
        dest = dirs["running"] / f"{_file_name(seq, eid)}.{wid}"
        try:
            os.rename(path, dest)
        except FileNotFoundError:
            continue  # another worker won it, or it was removed
        try:
            entry = _read_entry(dest, eid)
        except (FormatError, OSError) as exc:
            # A damaged entry cannot run: fail it with the reason instead of looping on it.
            bad = Entry(name=f"damaged-{eid[:12]}", baseline="0" * 40, workspace=eid)
            finish(project, Item(eid, seq, "running", bad, dest, wid=wid),
                   {"status": "failed", "finished": time.time(), "reason": f"unreadable entry: {exc}"})
            continue
        return Item(eid, seq, "running", entry, dest, wid=wid)
    return None


def complete_outcome(project, entry_id: str, outcome: dict[str, Any]) -> dict[str, Any]:
    """Write `outcome` as the final word on the current attempt; return it as written.

    The attempt number continues from a retried entry's non-final outcome.
    """
    prev = read_outcome(project, entry_id) or {}
    attempt = int(prev.get("attempt", 0)) + (0 if prev.get("final") else 1)
    outcome = {**outcome, "attempt": attempt, "final": True}
    write_outcome(project, entry_id, outcome)
    return outcome


def finish(project, item: Item, outcome: dict[str, Any]) -> Item | None:
    """End a running entry: write its outcome, then move it to done/ or failed/.

    The outcome is written first, so a crash between the two leaves a running entry
    whose outcome already says how it ended; reap() then completes the move. Returns
    the moved item, or None when the entry was no longer in running/ (reaped).
    """
    return move_by_outcome(project, item, complete_outcome(project, item.id, outcome))


def move_by_outcome(project, item: Item, outcome: dict[str, Any]) -> Item | None:
    """Move a running entry to where its (final) outcome says: done/ or failed/."""
    state = "done" if outcome.get("status") == "success" else "failed"
    dest = _dirs(project)[state] / _file_name(item.seq, item.id)
    try:
        os.rename(item.path, dest)
    except FileNotFoundError:
        return None  # someone else completed the move (a reaper that saw the outcome)
    fsync_dir(dest.parent)
    item.state, item.path, item.outcome = state, dest, outcome
    return item


# ---------------------------------------------------------------- reaping

def published(project, entry: Entry, *, since: float) -> dict[str, Any] | None:
    """The experiment an attempt of `entry` recorded, as outcome fields; None if none.

    For an attempt that ended without a final outcome (its executor was killed, or
    crashed, or could not write it): did it get as far as publishing? The ref
    `<baseline>/<name>` is read and counts only if its record was created at or after
    `since` (unix seconds, when the attempt started), so a record of an earlier
    attempt or of whatever held the name before never does. Queue names are unique
    and free as refs when queued (enqueue), and a run that finds its name taken fails
    with Conflict before recording anything, so such a record is the attempt's own
    (unless someone ran `tally run -n <name>` by hand during the attempt).

    Returns {"status", "reason", "exit_code", "record", "name"}: status "success" if
    the record's is, else "failed" with reason "run <record status>". Never raises:
    a ref or record that cannot be read counts as not published.
    """
    from . import record, refs
    from .errors import TallyError

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
    return {"status": "success" if ok else "failed", "reason": "" if ok else f"run {rec.status}",
            "exit_code": rec.exit_code, "record": oid, "name": entry.name}



def reap(project) -> list[Item]:
    """Move every running entry whose worker is gone to failed/ ("worker died").

    An entry whose executor still runs on this host (it outlived its worker and is
    shutting down: the kernel sent it SIGTERM) is left until it has exited, so a
    retry never runs beside the last attempt. An entry whose outcome is already final
    (written by its executor, or before its worker died) goes where that outcome says;
    one without, whose experiment was recorded anyway (see published), goes to done/.
    Safe to call from any number of processes at once: each move is one rename.
    """
    reaped = []
    cache: dict[str, dict[str, Any] | None] = {}
    for _, seq, eid, wid, path in _scan(project, ("running",)):
        assert wid is not None
        if wid not in cache:
            cache[wid] = read_worker(project, wid)
        info = cache[wid]
        if worker_alive(info):
            continue
        if not path.exists():
            continue
        # Re-read after deciding: a worker file written just now (a slow start) wins.
        info = read_worker(project, wid)
        if worker_alive(info):
            cache[wid] = info
            continue
        if _executor_alive(info, eid):
            continue
        damaged = False
        try:
            entry = _read_entry(path, eid)
        except FileNotFoundError:
            continue
        except (FormatError, OSError):
            entry = Entry(name=f"damaged-{eid[:12]}", baseline="0" * 40, workspace=eid)
            damaged = True
        item = Item(eid, seq, "running", entry, path, wid=wid, worker=info)
        outcome = read_outcome(project, eid)
        if outcome and outcome.get("final"):
            moved = move_by_outcome(project, item, outcome)
        else:
            cur = ((info or {}).get("current") or {}).get(eid) or {}
            started = cur.get("started")
            fields: dict[str, Any] = {"status": "failed", "reason": "worker died",
                                      "exit_code": None, "record": None}
            # Worker and executor gone without a final outcome: if the experiment was
            # recorded (the ref is published before the outcome is written), the entry
            # is done. Without the attempt's start (a worker that died before listing
            # it), any success recorded under the name since the entry was queued counts.
            since = started if isinstance(started, (int, float)) else entry.queued / 1e9
            pub = None if damaged else published(project, entry, since=since)
            if pub and pub["status"] == "success":
                fields = {**pub, "note": "the worker died after the experiment was recorded"}
            moved = finish(project, item, {
                **fields, "pid": (info or {}).get("pid"), "host": (info or {}).get("host"),
                "wid": wid, "started": started, "finished": time.time()})
        if moved is not None:
            reaped.append(moved)
    return reaped


def _executor_alive(info: dict[str, Any] | None, eid: str) -> bool:
    """Does the process that ran `eid` for this (dead) worker still exist on this host?"""
    from .liveness import pid_alive, process_start

    if not info or info.get("host") != socket.gethostname() or info.get("boot_id") != boot_id():
        return False
    cur = (info.get("current") or {}).get(eid) or {}
    pid = cur.get("pgid")
    if type(pid) is not int or pid <= 1 or not pid_alive(pid):
        return False
    want = cur.get("pstart")
    return not want or process_start(pid) in ("", want)


# ---------------------------------------------------------------- requests

def request_kill(project, key: str) -> Item:
    """Ask the worker running entry `key` to kill it (its whole process group).

    Raises:
        NotFound: no such entry. Conflict: the entry is not running.
    """
    it = find(project, key)
    if it.state != "running":
        raise Conflict(f"{it.name} is {it.state}, not running",
                       hint="`tally queue remove` drops a pending entry")
    p = _dirs(project)["kill"] / it.id
    atomic_write(p, f"{time.time()}\n".encode(), durable=False)
    return it


def kill_requested(project, entry_id: str) -> bool:
    return (_dirs(project)["kill"] / entry_id).exists()


def clear_kill(project, entry_id: str) -> None:
    try:
        os.unlink(_dirs(project)["kill"] / entry_id)
    except FileNotFoundError:
        pass


def request_stop(project, *, kill: bool = False) -> list[dict[str, Any]]:
    """Ask every worker started before now to stop claiming (and, with kill, to kill
    what it runs). Workers started later are not affected. Returns the live workers."""
    ensure_dirs(project)
    atomic_write(queue_dir(project) / "stop",
                 json.dumps({"time": time.time_ns(), "kill": kill}).encode())
    return live_workers(project)


def stop_request(project) -> dict[str, Any] | None:
    return _read_json(queue_dir(project) / "stop")


def live_workers(project) -> list[dict[str, Any]]:
    """Worker files of workers that are alive, oldest first."""
    d = _dirs(project)["workers"]
    out = []
    try:
        names = os.listdir(d)
    except FileNotFoundError:
        return []
    for n in names:
        if n.endswith(".json") and not n.startswith("."):
            info = _read_json(d / n)
            if info and worker_alive(info):
                out.append(info)
    return sorted(out, key=lambda i: i.get("started", 0))


WORKER_LOG_KEEP = 7 * 24 * 3600  # seconds: detached workers' own logs are kept a week


def prune_worker_files(project) -> int:
    """Remove the worker files of dead workers that no running entry names, and
    detached workers' logs older than WORKER_LOG_KEEP."""
    d = _dirs(project)["workers"]
    named = {wid for _, _, _, wid, _ in _scan(project, ("running",))}
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
        if not worker_alive(_read_json(d / n)):
            try:
                os.unlink(d / n)
                removed += 1
            except FileNotFoundError:
                pass
    # Cached baseline indexes (cas/rundir.py) unused for as long as worker logs are kept.
    idx = queue_dir(project) / "index"
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
    # Run directories a dead worker had discarded but not yet deleted (cas/worker.py).
    try:
        trashes = [e for e in os.listdir(project.store_dir / "tmp") if e.startswith("trash-")]
    except FileNotFoundError:
        trashes = []
    for t in trashes:
        if not worker_alive(read_worker(project, t[len("trash-"):])):
            from .rundir import remove_tree
            remove_tree(project.store_dir / "tmp" / t)
    return removed


# ---------------------------------------------------------------- remove and retry

def remove(project, *, keys: Iterable[str] = (), states: Iterable[str] = ()) -> list[Item]:
    """Drop entries by name/id, or every entry in `states` (pending, done, failed).

    Running entries are refused (kill them first). The entry file, its outcome and
    its log are deleted; experiments already recorded are not touched.
    Raises:
        NotFound: a key that names nothing. Conflict: a key naming a running entry.
    """
    targets: list[Item] = []
    for k in keys:
        it = find(project, k)
        if it.state == "running":
            raise Conflict(f"{it.name} is running", hint=f"`tally queue kill {it.name}` first")
        targets.append(it)
    states = [s for s in states]
    for s in states:
        if s == "running":
            raise UsageError("running entries cannot be removed; kill them first")
    if states:
        targets.extend(items(project, states=states))
    removed = []
    seen = set()
    for it in targets:
        if it.id in seen:
            continue
        seen.add(it.id)
        try:
            os.unlink(it.path)  # races a claim: exactly one of unlink and rename wins
        except FileNotFoundError:
            continue
        for p in (queue_dir(project) / "outcomes" / f"{it.id}.json", log_path(project, it.id),
                  checkpoints_path(project, it.id)):
            try:
                os.unlink(p)
            except FileNotFoundError:
                pass
        from .rundir import cleanup
        cleanup(project, it.id[:16])  # a failed run's directory, kept for inspection
        removed.append(it)
    return removed


def retry(project, *, keys: Iterable[str] = (), all_failed: bool = False) -> list[Item]:
    """Queue failed entries again, at the end of the queue; their logs grow, not reset.

    Raises:
        NotFound: a key that names nothing. Conflict: a key naming an entry not failed.
    """
    targets: list[Item] = []
    for k in keys:
        it = find(project, k)
        if it.state != "failed":
            raise Conflict(f"{it.name} is {it.state}; only failed entries can be retried")
        targets.append(it)
    if all_failed:
        targets.extend(it for it in items(project, states=("failed",)) if it not in targets)
    out = []
    dirs = _dirs(project)
    with _lock(project):
        for it in targets:
            seq = _next_seq(project)
            dest = dirs["pending"] / _file_name(seq, it.id)
            outcome = read_outcome(project, it.id)
            if outcome is not None:
                # Keep the attempt count; the next attempt's end replaces the rest.
                write_outcome(project, it.id, {"attempt": outcome.get("attempt", 1), "final": False,
                                               "previous": outcome.get("reason")})
            try:
                os.rename(it.path, dest)
            except FileNotFoundError:
                continue
            out.append(Item(it.id, seq, "pending", it.entry, dest))
    return out


def live_values(project, item: Item) -> dict[str, Any]:
    """Live metrics of a running entry, read from its run directory (cas.live)."""
    from .live import read_live
    return read_live(run_dir(project, item.id), checkpoints=checkpoints_path(project, item.id))


def running_live(project) -> list[dict[str, Any]]:
    """One row per running queued experiment with its live values, for `tally show`.

    Each row: {"name", "id", "baseline", "run_dir", "worker_pid", "worker_host",
    "started", "live": cas.live.read_live(...)}; the live dict carries "step",
    "updated", "metrics" ({file: summary}), "params" and "checkpoints".
    """
    out = []
    for it in items(project, states=("running",)):
        w = it.worker or {}
        out.append({"name": it.name, "id": it.id, "baseline": it.entry.baseline,
                    "run_dir": os.fspath(run_dir(project, it.id)), "worker_pid": w.get("pid"),
                    "worker_host": w.get("host"), "started": it.started,
                    "live": live_values(project, it)})
    return out


def status(project) -> dict[str, Any]:
    """Everything `tally queue status` shows: entries (dead workers' runs reaped
    first), live values of running ones, and the live workers."""
    entries = []
    for it in items(project):
        row = it.to_json()
        if it.state == "running":
            row["live"] = live_values(project, it)
        if it.error:
            row["error"] = it.error
        entries.append(row)
    prune_worker_files(project)
    workers = [{"pid": w.get("pid"), "host": w.get("host"), "wid": w.get("wid"),
                "started": w.get("started"), "heartbeat": w.get("heartbeat"),
                "running": sorted(v.get("name", "") for v in (w.get("current") or {}).values()),
                "stopping": bool(w.get("stopping"))} for w in live_workers(project)]
    return {"entries": entries, "workers": workers}


def follow_log(project, item: Item, *, follow: bool = False, poll: float = 0.2) -> Iterator[bytes]:
    """The log of `item` in chunks; with `follow`, keep reading until it has finished
    (waiting for a pending entry to start)."""
    path = log_path(project, item.id)
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


def _state_of(project, item: Item) -> str | None:
    """Where the entry is now (None once removed)."""
    reap(project)
    for state, _, eid, _, _ in _scan(project):
        if eid == item.id:
            return state
    return None


# ---------------------------------------------------------------- gc and fsck roots

def roots(project) -> Iterator[tuple[str, str, bool]]:
    """What queued, running and failed (retryable) entries need kept: their workspace
    snapshots, the checkpoints they resume from, and running entries' checkpoints."""
    from .live import read_checkpoints

    for it in items(project, states=("pending", "running", "failed"), reap_dead=False):
        if it.error:
            continue
        label = f"queue {it.state} {it.name}"
        yield label, it.entry.workspace, True
        if it.entry.checkpoint:
            yield f"{label} (resumed checkpoint)", it.entry.checkpoint, True
        if it.state == "running":
            for step, oid in read_checkpoints(checkpoints_path(project, it.id)):
                yield f"{label} checkpoint {step}", oid, True


roots.root_kind = "queue"  # type: ignore[attr-defined]


def _register() -> None:
    from . import fsck
    fsck.register_roots(roots)


_register()


__all__ = ["Entry", "Item", "encode", "decode", "enqueue", "claim", "finish", "reap", "items",
           "find", "remove", "retry", "published", "request_kill", "request_stop", "live_workers", "roots",
           "queue_dir", "log_path", "run_dir", "checkpoints_path", "worker_alive"]
