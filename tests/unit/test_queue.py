"""The queue itself: entry codec, FIFO, names, claim races, liveness and reaping,
remove/retry, gc roots. No experiment runs here (tests/test_worker.py runs them)."""

from __future__ import annotations

import json
import multiprocessing
import os
import socket
import subprocess
import time
from pathlib import Path

import pytest

from cas.objects import envelope
from cas.core import hashing
from cas.queue import liveness
from cas.queue import directory as queue
from cas.queue import workers as queue_workers
from cas.experiments import enqueue as sweep
from cas.core.errors import Conflict, FormatError, NotFound, ParamError, UsageError
from cas.queue import entries
from cas.queue.outcome import Outcome
from cas.experiments.request import RunRequest

COMMIT = "a" * 40


def _git(cwd: Path, *args: str) -> str:
    return subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True, text=True).stdout


@pytest.fixture
def qproj(tmp_path: Path):
    """A committed Git repo with a trivial pipeline and a tally store."""
    from cas.workspace.project import init_project

    root = tmp_path / "qrepo"
    root.mkdir()
    _git(root, "init", "-q", "-b", "main")
    _git(root, "config", "user.email", "t@example.com")
    _git(root, "config", "user.name", "t")
    (root / "params.yaml").write_text("lr: 0.1\nepochs: 1\n")
    (root / "dvc.yaml").write_text("stages:\n  train:\n    cmd: sh train.sh\n"
                                   "    deps: [train.sh]\n    params: [lr, epochs]\n"
                                   "    outs: [out.txt]\n")
    (root / "train.sh").write_text("grep lr params.yaml > out.txt\n")
    (root / ".gitignore").write_text("out.txt\n")
    _git(root, "add", ".")
    _git(root, "commit", "-qm", "init")
    proj, _ = init_project(root.resolve())
    return proj


def entry(name: str = "exp-1", **kw) -> queue.QueueEntry:
    base = dict(name=name, baseline=COMMIT, workspace=hashing.hash_bytes(name.encode()),
                overrides=(("params.yaml", "set", "lr", 0.1),), targets=("train",),
                options={"force": True}, queued=1_700_000_000_000_000_000, host="h", user="u")
    base.update(kw)
    return queue.QueueEntry(**base)


# ---------------------------------------------------------------- codec

def test_entry_round_trip_and_id():
    e = entry(overrides=(("params.yaml", "set", "lr", 0.01), ("p.json", "delete", "x", None),
                         ("params.yaml", "force", "layers", [1, {"b": 2, "a": "s"}])),
              parent=hashing.hash_bytes(b"p"), checkpoint=hashing.hash_bytes(b"c"),
              options={"force": True, "resume_step": 3, "note": None}, message="m")
    data = queue.encode(e)
    assert data[:5] == b"TLYQ\x01"
    assert queue.decode(data) == e
    assert queue.encode(queue.decode(data)) == data  # canonical
    assert e.override_specs() == ['params.yaml:lr=0.01', 'p.json:~x',
                                  'params.yaml:++layers=[1, {"a": "s", "b": 2}]']


def test_override_specs_parse_back_to_the_same_values():
    from cas.pipeline import params

    vals = [0.1, 1e-5, 3, True, None, "text, with comma", "range(1,3)", [1, 2], {"a": [1]}, ""]
    e = entry(overrides=tuple(("params.yaml", "set", "k", v) for v in vals))
    for spec, v in zip(e.override_specs(), vals):
        (ov,) = params.parse_override(spec)
        assert ov.value == v and ov.key == "k" and ov.file == "params.yaml"


@pytest.mark.parametrize("damage", [
    lambda d: d[:4],  # truncated header
    lambda d: b"XXX" + d[3:],  # magic
    lambda d: d[:3] + b"T" + d[4:],  # another kind
    lambda d: d[:4] + b"\x09" + d[5:],  # unknown version
    lambda d: d[:-3],  # truncated body
    lambda d: envelope.encode(b"Q", 1, [1, 2, 3]),  # wrong shape
    lambda d: envelope.encode(b"Q", 1, ["n", b"x" * 20, b"y" * 31, [], [], [], 1, "", "", None, None, ""]),
    lambda d: envelope.encode(b"Q", 1, ["n", b"x" * 20, b"y" * 32, [["f", "bogus", "k", "1"]], [], [],
                                        1, "", "", None, None, ""]),
    lambda d: envelope.encode(b"Q", 1, ["n", b"x" * 20, b"y" * 32, [], [], [["b", 1], ["a", 2]],
                                        1, "", "", None, None, ""]),
])
def test_decode_raises_only_format_error(damage):
    with pytest.raises(FormatError):
        queue.decode(damage(queue.encode(entry())))


def test_encode_refuses_what_it_cannot_store():
    with pytest.raises(UsageError):
        queue.encode(entry(options={"x": 1.5}))
    with pytest.raises(UsageError):
        queue.encode(entry(overrides=(("p.yaml", "set", "k", float("nan")),)))
    with pytest.raises(UsageError):
        queue.encode(entry(baseline="HEAD"))


# ---------------------------------------------------------------- queueing

def test_enqueue_is_fifo_and_names_are_unique(qproj):
    items = queue.enqueue(qproj, [entry(f"e{i}") for i in range(5)])
    assert [it.seq for it in items] == [1, 2, 3, 4, 5]
    assert [it.name for it in entries.items(qproj)] == ["e0", "e1", "e2", "e3", "e4"]
    assert all(it.id == hashing.hash_bytes(it.path.read_bytes()) for it in items)
    with pytest.raises(Conflict):
        queue.enqueue(qproj, [entry("e2")])
    with pytest.raises(Conflict):  # duplicates inside one batch too
        queue.enqueue(qproj, [entry("x"), entry("x", queued=5)])
    with pytest.raises(UsageError):
        queue.enqueue(qproj, [entry("bad name")])
    assert len(entries.items(qproj)) == 5  # a refused batch adds nothing
    assert queue.claim(qproj, "w-1").name == "e0"
    assert queue.claim(qproj, "w-1").name == "e1"


def test_plan_expands_the_grid_and_dry_run_stores_nothing(qproj):
    objects_before = set(qproj.store.iter_oids())
    grid = sweep.plan(qproj, RunRequest(set_params=("lr=0.1,0.01,0.001", "epochs=range(1,4)")), dry_run=True)
    assert len(grid) == 9
    assert [dict((k, v) for _, _, k, v in e.overrides) for e in grid[:4]] == [
        {"lr": 0.1, "epochs": 1}, {"lr": 0.1, "epochs": 2}, {"lr": 0.1, "epochs": 3},
        {"lr": 0.01, "epochs": 1}]
    assert len({e.name for e in grid}) == 9
    assert set(qproj.store.iter_oids()) == objects_before and entries.items(qproj) == []
    named = sweep.plan(qproj, RunRequest(set_params=("lr=1,2",), name="sweep"), dry_run=True)
    assert [e.name for e in named] == ["sweep-1", "sweep-2"]
    with pytest.raises(ParamError):
        sweep.plan(qproj, RunRequest(set_params=("lr=1", "lr=2")), dry_run=True)


def test_plan_snapshot_is_stored_and_is_a_root(qproj):
    from cas.gc import fsck
    from cas.objects import tree

    (qproj.root / "untracked.txt").write_text("seen by git\n")
    (grid,) = [sweep.plan(qproj, RunRequest(set_params=("lr=0.5",)))]
    queue.enqueue(qproj, grid)
    t = tree.decode(qproj.store.get(grid[0].workspace))
    names = {e.name for e in t.entries}
    assert {"params.yaml", "dvc.yaml", "train.sh", "untracked.txt", ".gitignore"} <= names
    assert grid[0].baseline == _git(qproj.root, "rev-parse", "HEAD").strip()
    roots = list(queue.roots(qproj))
    assert [(oid, kind) for _, oid, kind in roots] == [(grid[0].workspace, True)]
    report = fsck.fsck(qproj)
    assert report.ok, report.problems


# ---------------------------------------------------------------- claiming

def _claimer(store_root: str, wid: str, out: str) -> None:
    from cas.workspace.project import open_project

    p = open_project(Path(store_root))
    got = []
    while True:
        it = queue.claim(p, wid)
        if it is None:
            break
        got.append(it.id)
    Path(out).write_text(json.dumps(got))


def test_claim_race_each_entry_exactly_once(qproj, tmp_path):
    n_entries, n_procs = 60, 6
    queue.enqueue(qproj, [entry(f"r{i}") for i in range(n_entries)])
    ctx = multiprocessing.get_context("fork")
    procs = [ctx.Process(target=_claimer, args=(str(qproj.root), f"{i}-w", str(tmp_path / f"c{i}.json")))
             for i in range(n_procs)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    claimed = [eid for i in range(n_procs) for eid in json.loads((tmp_path / f"c{i}.json").read_text())]
    assert len(claimed) == n_entries and len(set(claimed)) == n_entries
    running = queue.items(qproj)
    assert {it.state for it in running} == {"running"} and len(running) == n_entries
    # Each running file names the worker that won it.
    by_worker = {it.wid for it in running}
    assert by_worker <= {f"{i}-w" for i in range(n_procs)}


def test_running_entries_cannot_be_removed(qproj):
    queue.enqueue(qproj, [entry("a")])
    _worker_file(qproj, "1-w", pid=os.getpid(), host=socket.gethostname(), boot_id=liveness.boot_id())
    queue.claim(qproj, "1-w")
    with pytest.raises(Conflict):
        entries.remove(qproj, keys=["a"])
    with pytest.raises(UsageError):
        entries.remove(qproj, states=["running"])
    assert entries.find(qproj, "a").state == "running"


# ---------------------------------------------------------------- liveness and reaping

def _worker_file(proj, wid: str, **info) -> None:
    d = queue.queue_dir(proj) / "workers"
    d.mkdir(parents=True, exist_ok=True)
    (d / f"{wid}.json").write_text(json.dumps(info))


def _dead_pid() -> int:
    p = subprocess.Popen(["true"])
    p.wait()
    return p.pid


def test_running_entry_of_a_dead_worker_is_failed_by_whoever_looks(qproj):
    queue.enqueue(qproj, [entry("dead"), entry("alive"), entry("reused"), entry("remote-ok"),
                          entry("remote-stale"), entry("nofile"), entry("finished")])
    me = {"host": socket.gethostname(), "boot_id": liveness.boot_id()}
    _worker_file(qproj, "1-dead", pid=_dead_pid(), **me)
    _worker_file(qproj, "2-alive", pid=os.getpid(), pstart=liveness.process_start(os.getpid()), **me)
    _worker_file(qproj, "3-reused", pid=os.getpid(), pstart="1", **me)
    _worker_file(qproj, "4-remote", pid=1, host="elsewhere", boot_id="x", heartbeat=time.time())
    _worker_file(qproj, "5-remote", pid=1, host="elsewhere", boot_id="x", heartbeat=time.time() - 3600)
    _worker_file(qproj, "7-dead", pid=_dead_pid(), **me)
    for wid in ("1-dead", "2-alive", "3-reused", "4-remote", "5-remote", "6-nofile", "7-dead"):
        assert queue.claim(qproj, wid) is not None
    # "finished": its worker wrote a final outcome, then died before the move.
    fin = [it for it in queue.items(qproj) if it.name == "finished"][0]
    queue.complete_outcome(qproj, fin.id, Outcome(status="success"))
    states = {it.name: (it.state, it.outcome.reason if it.outcome else None) for it in entries.items(qproj)}
    assert states == {
        "dead": ("failed", "worker died"), "alive": ("running", None),
        "reused": ("failed", "worker died"), "remote-ok": ("running", None),
        "remote-stale": ("failed", "worker died"), "nofile": ("failed", "worker died"),
        "finished": ("done", None)}
    assert queue_workers.reap(qproj) == []  # idempotent


def test_retry_and_remove(qproj):
    queue.enqueue(qproj, [entry("a"), entry("b"), entry("c")])
    for wid in ("1-x", "2-x"):
        queue.claim(qproj, wid)  # a, b: their workers have no files: dead
    queue_workers.reap(qproj)
    with pytest.raises(Conflict):
        entries.retry(qproj, keys=["c"])  # pending, not failed
    got = entries.retry(qproj, keys=["a"])
    assert [it.name for it in got] == ["a"]
    assert [it.name for it in entries.items(qproj, states=("pending",))] == ["c", "a"]  # at the end
    it = queue.claim(qproj, "3-x")
    assert it.name == "c"
    it = queue.claim(qproj, "4-x")
    assert it.name == "a"
    queue_workers.reap(qproj)
    a = entries.find(qproj, "a")
    assert a.state == "failed" and a.outcome.attempt == 2
    entries.retry(qproj, all_failed=True)
    assert sorted(it.name for it in entries.items(qproj, states=("pending",))) == ["a", "b", "c"]
    removed = entries.remove(qproj, states=["pending"])
    assert sorted(it.name for it in removed) == ["a", "b", "c"] and entries.items(qproj) == []
    with pytest.raises(NotFound):
        entries.find(qproj, "a")


def test_find_by_id_prefix_and_ambiguity(qproj):
    items = queue.enqueue(qproj, [entry("a"), entry("b")])
    assert entries.find(qproj, items[1].id[:10]).name == "b"
    with pytest.raises(NotFound):
        entries.find(qproj, "nope")


def test_an_entry_moved_while_listed_is_listed_once_in_its_new_state(qproj, monkeypatch):
    """items() lists the state directories one after the other: an entry read in
    running/ and finished before failed/ was listed was seen in both, and `find` then
    said its name matched two entries (test_worker's kill test failed so, once)."""
    queue.enqueue(qproj, [entry("moving"), entry("staying")])
    claimed = queue.claim(qproj, "1-w")
    real = os.listdir

    def listdir(path):
        names = real(path)
        # done/ is listed after running/ (whose entries are read by then), before failed/.
        if os.path.basename(path) == "done" and claimed.path.exists():
            queue.finish(qproj, claimed, Outcome(status="failed", reason="killed"))
        return names

    monkeypatch.setattr(queue.os, "listdir", listdir)
    (found,) = [it for it in queue.items(qproj) if it.name == "moving"]
    assert found.state == "failed" and found.outcome.reason == "killed"
    monkeypatch.setattr(queue.os, "listdir", real)
    assert [(it.name, it.state) for it in entries.items(qproj)] == [("staying", "pending"), ("moving", "failed")]


def test_damaged_entry_is_listed_and_never_run(qproj):
    (it,) = queue.enqueue(qproj, [entry("a")])
    os.chmod(it.path, 0o644)
    it.path.write_bytes(it.path.read_bytes()[:-2] + b"zz")
    (listed,) = entries.items(qproj)
    assert listed.error and listed.name.startswith("damaged-")
    assert queue.claim(qproj, "1-w") is None  # failed with the reason instead
    (failed,) = entries.items(qproj)
    assert failed.state == "failed" and "unreadable entry" in failed.outcome.reason
    with pytest.raises(FormatError, match="is damaged"):  # its snapshot cannot be named: gc stops
        list(queue.roots(qproj))


def test_stop_request_only_for_older_workers(qproj):
    before = time.time_ns()
    queue_workers.request_stop(qproj, kill=True)
    req = queue_workers.stop_request(qproj)
    assert req["kill"] is True and req["time"] >= before


def test_entry_waits_for_its_executor_to_exit(qproj):
    (it,) = queue.enqueue(qproj, [entry("slow-exit")])
    me = {"host": socket.gethostname(), "boot_id": liveness.boot_id()}
    alive_exec = {it.id: {"pgid": os.getpid(), "pstart": liveness.process_start(os.getpid())}}
    _worker_file(qproj, "1-dead", pid=_dead_pid(), current=alive_exec, **me)
    queue.claim(qproj, "1-dead")
    assert entries.find(qproj, "slow-exit").state == "running"  # its executor still exits
    reused = {it.id: {"pgid": os.getpid(), "pstart": "1"}}  # that pid is someone else now
    _worker_file(qproj, "1-dead", pid=_dead_pid(), current=reused, **me)
    item = entries.find(qproj, "slow-exit")
    assert item.state == "failed" and item.outcome.reason == "worker died"


@pytest.mark.parametrize("text", [b"", b"[]", b"null", b'"x"', b"{", b'{"status": 1}',
                                  b'{"attempt": true, "final": "yes", "record": 5}'])
def test_an_outcome_file_is_a_report_never_trusted(text: bytes) -> None:
    """Damaged or hostile outcome and worker files read as absent or with fields missing,
    never raising: a field of the wrong type (bool for int included) is dropped."""
    from cas.queue.workerfile import WorkerInfo

    o = Outcome.loads(text)
    assert o is None or (isinstance(o.status, str) and type(o.attempt) is int
                         and o.final is False and o.record is None)
    w = WorkerInfo.loads(text)
    assert w is None or (w.pid is None and w.current == {})


def test_outcome_and_worker_files_round_trip() -> None:
    from cas.queue.workerfile import CurrentRun, WorkerInfo

    o = Outcome(status="success", reason="", exit_code=0, record="ab" * 32, name="n", pid=7,
                executor_pid=8, host="h", wid="w", started=1.5, finished=2.5, attempt=1, final=True)
    assert Outcome.loads(o.dumps()) == o and "note" not in o.to_json()
    w = WorkerInfo(wid="w", pid=3, host="h", boot_id="b", pstart="9", started=1.0, started_ns=10**9,
                   heartbeat=2.0, slots=2, keep_alive=True, stopping=False,
                   current={"e" * 64: CurrentRun("n", 11, "12", 3.0)})
    assert WorkerInfo.loads(w.dumps()) == w


def test_a_damaged_entry_stops_gc_and_fsck_names_it(qproj) -> None:
    """Issue 13, item 5: gc --grace 0 used to delete a damaged entry's snapshot (maybe
    uncommitted work that exists only there), and fsck reported nothing."""
    from cas.experiments import enqueue
    from cas.gc import fsck
    from cas.gc.collect import GcRefused, gc

    (it,) = queue.enqueue(qproj, enqueue.plan(qproj))
    snapshot = it.entry.workspace
    os.chmod(it.path, 0o644)
    it.path.write_bytes(it.path.read_bytes()[:-3] + b"zzz")
    with pytest.raises(GcRefused) as exc:
        gc(qproj, grace_s=0)
    assert it.path.name in exc.value.report.problems[0].where
    assert qproj.store.has(snapshot)
    report = fsck.fsck(qproj)
    assert not report.ok and any(it.path.name in p.where for p in report.problems)
    entries.remove(qproj, keys=[queue.items(qproj)[0].name])  # once removed, gc goes on
    gc(qproj, grace_s=0)
