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

A running entry whose worker is gone is moved to failed/ ("worker died"), or to done/
if its experiment was recorded before the worker died, by whoever looks: `items`
reaps first (cas/queue/workers.py, which also holds the workers' files and the kill
and stop requests). What `tally queue status` and `logs` show is cas/queue/status.py.
See spec/queue.md for the write ordering and the crash argument.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable, Iterator

from cas.core import hashing
from cas.core.errors import Conflict, FormatError, NotFound, UsageError
from cas.core.fsops import atomic_write, fsync_dir
from cas.objects.queue_entry import QueueEntry, decode, encode  # noqa: F401
from cas.queue.outcome import Outcome
from cas.queue.workerfile import WorkerInfo

if TYPE_CHECKING:
    from cas.workspace.project import Project

QUEUE_DIR = "queue"
STATES = ("pending", "running", "done", "failed")
SEQ_DIGITS = 12  # 10^12 entries: zero-padded so names sort as numbers
LOCK_NAME = "queue"
LOCK_TIMEOUT = 30.0  # seconds: the lock is held for a counter bump and a few renames


# ---------------------------------------------------------------- paths and items

def queue_dir(project: Project) -> Path:
    return project.store_dir / QUEUE_DIR


def subdirs(project: Project) -> dict[str, Path]:
    q = queue_dir(project)
    return {s: q / s for s in (*STATES, "outcomes", "workers", "kill", "logs")}


def ensure_dirs(project: Project) -> None:
    for d in subdirs(project).values():
        d.mkdir(parents=True, exist_ok=True)


def log_path(project: Project, entry_id: str) -> Path:
    return queue_dir(project) / "logs" / f"{entry_id}.log"


def run_dir(project: Project, entry_id: str) -> Path:
    """Where the entry runs: `.tally/tmp/run-<id>/` (same filesystem as the objects)."""
    return project.store_dir / "tmp" / f"run-{entry_id[:16]}"


def checkpoints_path(project: Project, entry_id: str) -> Path:
    """The file the run's checkpoints are appended to (outside the run's workspace)."""
    return project.store_dir / "tmp" / f"run-{entry_id[:16]}.checkpoints"


@dataclass
class Item:
    """One entry as found on disk: where it is, and what is known about its run."""

    id: str
    seq: int
    state: str  # pending | running | done | failed
    entry: QueueEntry
    path: Path
    wid: str | None = None  # the claiming worker (running)
    worker: WorkerInfo | None = None  # its worker file, when readable
    outcome: Outcome | None = None  # how the last attempt ended
    error: str | None = None  # the entry file is damaged (it is listed, never run)

    @property
    def name(self) -> str:
        return self.entry.name

    @property
    def started(self) -> float | None:
        if self.state == "running" and self.worker:
            cur = self.worker.current.get(self.id)
            if cur is not None:
                return cur.started
        return self.outcome.started if self.outcome is not None else None

    def to_json(self) -> dict[str, Any]:
        w = self.worker or WorkerInfo()
        o = self.outcome or Outcome()
        ended = self.state in ("done", "failed")
        return {"id": self.id, "seq": self.seq, "name": self.name, "state": self.state,
                "queued": self.entry.queued / 1e9, "started": self.started,
                "finished": o.finished if ended else None,
                "worker_pid": w.pid if self.state == "running" else o.pid,
                "worker_host": w.host if self.state == "running" else o.host,
                "reason": o.reason if self.state == "failed" else None,
                "note": o.note if ended else None,
                "exit_code": o.exit_code, "record": o.record,
                "attempt": o.attempt + (1 if self.state == "running" else 0),
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


def scan(project: Project, states: Iterable[str] = STATES) -> Iterator[tuple[str, int, str, str | None, Path]]:
    dirs = subdirs(project)
    for state in states:
        try:
            names = os.listdir(dirs[state])
        except FileNotFoundError:
            continue
        for fname in sorted(names):
            parsed = _parse_name(state, fname)
            if parsed is not None:
                yield state, parsed[0], parsed[1], parsed[2], dirs[state] / fname


def read_entry(path: Path, entry_id: str) -> QueueEntry:
    data = path.read_bytes()
    if hashing.hash_bytes(data) != entry_id:
        raise FormatError(f"queue entry {path.name} does not hash to its id", path=path,
                          hint="remove it with `tally queue remove`")
    return decode(data)


def read_json(path: Path) -> dict[str, Any] | None:
    try:
        doc = json.loads(path.read_bytes())
    except (OSError, ValueError):
        return None
    return doc if isinstance(doc, dict) else None


def read_outcome(project: Project, entry_id: str) -> Outcome | None:
    """The entry's outcome; None if there is none or it is not a JSON object."""
    try:
        data = (queue_dir(project) / "outcomes" / f"{entry_id}.json").read_bytes()
    except OSError:
        return None
    return Outcome.loads(data)


def write_outcome(project: Project, entry_id: str, outcome: Outcome) -> None:
    atomic_write(queue_dir(project) / "outcomes" / f"{entry_id}.json", outcome.dumps())


def read_worker(project: Project, wid: str) -> WorkerInfo | None:
    """A worker's file; None if it is absent or not a JSON object."""
    try:
        return WorkerInfo.loads((queue_dir(project) / "workers" / f"{wid}.json").read_bytes())
    except OSError:
        return None


def items(project: Project, *, states: Iterable[str] = STATES) -> list[Item]:
    """Every entry, in queue order within each state (pending, running, done, failed),
    as the files say: a running entry whose worker died is still listed running
    (cas/queue/entries.py reaps first). Entries that vanish while listed (claimed,
    finished) are skipped.
    """
    out: list[Item] = []
    workers: dict[str, WorkerInfo | None] = {}
    rows = list(scan(project, states))
    # An entry that moved on while the state directories were listed one after the
    # other (running/ -> failed/ by a kill or a finish) was seen in both: a move only
    # goes forward in the order they are listed, so its last sighting is the current one.
    last = {row[2]: i for i, row in enumerate(rows)}
    for i, (state, seq, eid, wid, path) in enumerate(rows):
        if last[eid] != i:
            continue
        try:
            entry = read_entry(path, eid)
            error = None
        except FileNotFoundError:
            continue
        except (FormatError, OSError) as exc:
            # Listed, so it can be seen and removed; never run (claim fails it).
            entry = QueueEntry(name=f"damaged-{eid[:12]}", baseline="0" * 40, workspace=eid)
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


def find(project: Project, key: str, *, states: Iterable[str] = STATES) -> Item:
    """The entry named `key`, or whose id starts with `key` (at least 6 hex digits).

    Raises:
        NotFound: no such entry. UsageError: an id prefix matching several entries.
    """
    hits = [it for it in items(project, states=states) if it.name == key]
    if not hits and len(key) >= 6 and not key.strip("0123456789abcdef"):
        hits = [it for it in items(project, states=states) if it.id.startswith(key)]
    if not hits:
        raise NotFound(f"no queue entry named {key!r}", hint="see `tally queue status`")
    if len(hits) > 1:
        raise UsageError(f"{key!r} matches {len(hits)} queue entries",
                         hint="give the full name or a longer id prefix")
    return hits[0]


# ---------------------------------------------------------------- queueing

def _lock(project: Project):
    return project.lock(LOCK_NAME, timeout=LOCK_TIMEOUT, purpose="updating the experiment queue")


def _next_seq(project: Project, count: int = 1) -> int:
    """Allocate `count` consecutive sequence numbers; return the first. Call with the
    queue lock held."""
    p = queue_dir(project) / "seq"
    try:
        seq = int(p.read_text().strip() or "1")
    except FileNotFoundError:
        seq = 1
    except ValueError:
        # A damaged counter: restart above every number in use, which keeps FIFO.
        seq = 1 + max((s for _, s, *_ in scan(project)), default=0)
    atomic_write(p, f"{seq + count}\n".encode())
    return seq


def names_in_queue(project: Project) -> set[str]:
    return {it.name for it in items(project)}


def enqueue(project: Project, entries: list[QueueEntry]) -> list[Item]:
    """Add `entries` to the end of the queue, in order.

    Names must be unique among queue entries and free as experiment refs of their
    baseline; the check and the sequence numbers are taken under the queue lock, so
    two `run --queue` at once never hand out one number or one name twice.
    Raises:
        Conflict: a name already queued or already an experiment. LockBusy.
    """
    from cas.store import refs

    ensure_dirs(project)
    dirs = subdirs(project)
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

def claim(project: Project, wid: str) -> Item | None:
    """Claim the oldest pending entry for worker `wid`; None when there is none.

    The rename pending/<seq>-<id> -> running/<seq>-<id>.<wid> succeeds for exactly one
    claimer; a loser sees ENOENT and moves on to the next entry.
    """
    dirs = subdirs(project)
    for state, seq, eid, _, path in scan(project, ("pending",)):
        dest = dirs["running"] / f"{_file_name(seq, eid)}.{wid}"
        try:
            os.rename(path, dest)
        except FileNotFoundError:
            continue  # another worker won it, or it was removed
        try:
            entry = read_entry(dest, eid)
        except (FormatError, OSError) as exc:
            # A damaged entry cannot run: fail it with the reason instead of looping on it.
            bad = QueueEntry(name=f"damaged-{eid[:12]}", baseline="0" * 40, workspace=eid)
            finish(project, Item(eid, seq, "running", bad, dest, wid=wid),
                   Outcome(status="failed", finished=time.time(), reason=f"unreadable entry: {exc}"))
            continue
        return Item(eid, seq, "running", entry, dest, wid=wid)
    return None


def complete_outcome(project: Project, entry_id: str, outcome: Outcome) -> Outcome:
    """Write `outcome` as the final word on the current attempt; return it as written.

    The attempt number continues from a retried entry's non-final outcome.
    """
    prev = read_outcome(project, entry_id) or Outcome()
    outcome = outcome._replace(attempt=prev.attempt + (0 if prev.final else 1), final=True)
    write_outcome(project, entry_id, outcome)
    return outcome


def finish(project: Project, item: Item, outcome: Outcome) -> Item | None:
    """End a running entry: write its outcome, then move it to done/ or failed/.

    The outcome is written first, so a crash between the two leaves a running entry
    whose outcome already says how it ended; queue_workers.reap completes the move. Returns
    the moved item, or None when the entry was no longer in running/ (reaped).
    """
    return move_by_outcome(project, item, complete_outcome(project, item.id, outcome))


def move_by_outcome(project: Project, item: Item, outcome: Outcome) -> Item | None:
    """Move a running entry to where its (final) outcome says: done/ or failed/."""
    state = "done" if outcome.ok else "failed"
    dest = subdirs(project)[state] / _file_name(item.seq, item.id)
    try:
        os.rename(item.path, dest)
    except FileNotFoundError:
        return None  # someone else completed the move (a reaper that saw the outcome)
    fsync_dir(dest.parent)
    item.state, item.path, item.outcome = state, dest, outcome
    return item


# ---------------------------------------------------------------- remove and retry

def remove(project: Project, *, keys: Iterable[str] = (), states: Iterable[str] = ()) -> list[Item]:
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
        from cas.queue.rundirs import cleanup
        cleanup(project, it.id[:16])  # a failed run's directory, kept for inspection
        removed.append(it)
    return removed


def retry(project: Project, *, keys: Iterable[str] = (), all_failed: bool = False) -> list[Item]:
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
    dirs = subdirs(project)
    with _lock(project):
        for it in targets:
            seq = _next_seq(project)
            dest = dirs["pending"] / _file_name(seq, it.id)
            outcome = read_outcome(project, it.id)
            if outcome is not None:
                # Keep the attempt count; the next attempt's end replaces the rest
                # (spec/queue.md: a retry leaves only these three keys).
                atomic_write(queue_dir(project) / "outcomes" / f"{it.id}.json", json.dumps(
                    {"attempt": outcome.attempt or 1, "final": False, "previous": outcome.reason},
                    sort_keys=True).encode())
            try:
                os.rename(it.path, dest)
            except FileNotFoundError:
                continue
            out.append(Item(it.id, seq, "pending", it.entry, dest))
    return out


# ---------------------------------------------------------------- gc and fsck roots

def roots(project: Project) -> Iterator[tuple[str, str, bool]]:
    """What queued, running and failed (retryable) entries need kept: their workspace
    snapshots, the checkpoints they resume from, and running entries' checkpoints.

    Raises:
        FormatError: an entry file that cannot be read. Its snapshot (which may hold
            uncommitted work that exists nowhere else) cannot be named, so gc must not
            sweep (spec/gc.md: a root that cannot be read stops gc) and fsck reports it.
    """
    from cas.pipeline.livefiles import read_checkpoints

    for it in items(project, states=("pending", "running", "failed")):
        if it.error:
            raise FormatError(f"queue entry {it.path.name} ({it.state}) is damaged: {it.error}",
                              path=it.path,
                              hint=f"`tally queue remove {it.name}` if it is not needed; "
                                   "until then gc keeps everything")
        label = f"queue {it.state} {it.name}"
        yield label, it.entry.workspace, True
        if it.entry.checkpoint:
            yield f"{label} (resumed checkpoint)", it.entry.checkpoint, True
        if it.state == "running":
            for step, oid in read_checkpoints(checkpoints_path(project, it.id)):
                yield f"{label} checkpoint {step}", oid, True




__all__ = ["QueueEntry", "Item", "encode", "decode", "enqueue", "claim", "complete_outcome", "finish",
           "move_by_outcome", "items", "find", "remove", "retry", "roots", "queue_dir", "subdirs",
           "scan", "read_entry", "read_json", "read_outcome", "write_outcome", "read_worker",
           "ensure_dirs", "log_path", "run_dir", "checkpoints_path"]
