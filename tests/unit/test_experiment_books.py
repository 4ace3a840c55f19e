"""cas/experiments/lookup.py, listing.py, compare.py, index.py, removal.py, restore.py: list, show, diff, rename, remove, restore.

Experiments are made the way the runner makes them, through the record and refs
API: a workspace tree snapshotted into the store, a record naming it, a ref naming
the record. `Lab` is shared with test_promote.py and test_cli_books.py.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

import pytest

from cas.experiments import compare
from cas.experiments import listing
from cas.experiments import lookup
from cas.experiments import index as expindex
from cas.objects import pointer
from cas.experiments import table as query
from cas.objects import record
from cas.store import refs
from cas.experiments import removal
from cas.experiments import restore
from cas.workspace import tracking
from cas.workspace import snapshot as workspace
from cas.core.errors import Conflict, NotFound, ObjectMissing, UsageError, WouldOverwrite
from support import helpers
from support.lab import T0, Exe, Lab, M, P, sh, tree_lookup













def names(exps: list[listing.ExperimentRow]) -> list[str]:
    return [e.name for e in exps]






@pytest.fixture
def three(lab: Lab) -> Lab:
    lab.exp("alpha", params=P(0.1), metrics=M(0.9, 0.2), workspace_tree=False)
    lab.exp("beta", params=P(0.01), metrics=M(0.8, 0.3), status="failed", workspace_tree=False)
    lab.exp("gamma", params=P(0.001, 20), metrics=M(None, 0.5), workspace_tree=False)
    return lab


# -- listing and show ---------------------------------------------------------------------

def test_list_newest_first_with_values(three: Lab) -> None:
    exps = listing.list_experiments(three.project)
    assert names(exps) == ["gamma", "beta", "alpha"]
    a = exps[2]
    assert a.status == "success" and a.baseline == three.head()
    assert a.metrics == {"metrics.json:acc": 0.9, "metrics.json:loss": 0.2}
    assert a.params == {"params.yaml:train.epochs": 10, "params.yaml:train.lr": 0.1}
    assert a.oid == refs.read(three.project, a.baseline, "alpha")


def test_show_columns_filter_sort_limit(three: Lab) -> None:
    tab = listing.show(three.project)
    assert [c.name for c in tab.columns] == [
        "name", "created", "status", "metrics.json:acc", "metrics.json:loss",
        "params.yaml:train.epochs", "params.yaml:train.lr", "deps"]
    assert tab.total == 3
    tab = listing.show(three.project, filter="metrics.acc > 0.5 and params.train.lr <= 0.01")
    assert names(tab.experiments) == ["beta"]
    tab = listing.show(three.project, sort_by="metrics.acc:desc")
    assert names(tab.experiments) == ["alpha", "beta", "gamma"]  # missing last
    tab = listing.show(three.project, sort_by="acc")
    assert names(tab.experiments) == ["beta", "alpha", "gamma"]  # missing last either way
    tab = listing.show(three.project, sort_by="loss:desc", limit=2)
    assert names(tab.experiments) == ["gamma", "beta"] and tab.total == 3
    tab = listing.show(three.project, filter='status == "failed" or name ~ "g*"')
    assert names(tab.experiments) == ["gamma", "beta"]
    tab = listing.show(three.project, filter='created > "2023-11-14T22:13:21Z"')
    assert names(tab.experiments) == ["gamma", "beta"]


def test_show_only_changed_keep_drop(three: Lab) -> None:
    tab = listing.show(three.project, filter="epochs == 10", only_changed=True)
    ids = [c.id for c in tab.columns]
    assert "params:params.yaml:train.epochs" not in ids  # 10 in both rows shown
    assert "params:params.yaml:train.lr" in ids
    tab = listing.show(three.project, drop=["params.yaml:*"], keep=["train.lr"])
    assert [c.name for c in tab.columns if c.group == "params"] == ["params.yaml:train.lr"]


def test_show_bad_filter_and_sort_are_usage_errors(three: Lab) -> None:
    with pytest.raises(query.FilterError) as exc:
        listing.show(three.project, filter="metrics.acc >")
    assert exc.value.exit_code == 2 and "^" in exc.value.message
    with pytest.raises(query.FilterError, match="unknown key") as exc:
        listing.show(three.project, sort_by="metrics.acu")
    assert "metrics.acc" in (exc.value.hint or "")


def test_show_with_no_experiments_still_checks_syntax(lab: Lab) -> None:
    assert listing.show(lab.project, filter="anything > 1").experiments == []
    with pytest.raises(query.FilterError):
        listing.show(lab.project, filter="anything >")


def test_all_baselines_and_the_current_one(three: Lab) -> None:
    first = three.head()
    three.write({"train.py": "print('v2')\n"})
    second = three.commit("v2")
    three.exp("delta", params=P(0.5), metrics=M(0.7), workspace_tree=False)
    assert names(listing.list_experiments(three.project)) == ["delta"]
    every = listing.list_experiments(three.project, all_baselines=True)
    assert sorted(names(every)) == ["alpha", "beta", "delta", "gamma"]
    assert {e.baseline for e in every} == {first, second}
    tab = listing.show(three.project, all_baselines=True, filter=f'baseline ~ "{first[:8]}*"')
    assert sorted(names(tab.experiments)) == ["alpha", "beta", "gamma"]
    assert [c.id for c in tab.columns][:2] == ["name", "baseline"]


def test_unreadable_record_is_listed_not_fatal(three: Lab) -> None:
    p = three.project
    refs.update(p, three.head(), "broken", "ab" * 32, None)  # names no object
    exps = listing.list_experiments(p)
    broken = next(e for e in exps if e.name == "broken")
    assert broken.status == listing.UNREADABLE and "missing" in (broken.problem or "")
    assert len(exps) == 4


def test_changed_deps_against_the_baseline_lock(lab: Lab) -> None:
    """A dep Git does not have (an earlier stage's output) is compared with the lock."""
    from cas.core import hashing
    from cas.pipeline import tallylock as lockfile
    state = lockfile.FileState
    code = hashing.hash_bytes((lab.root / "train.py").read_bytes())
    lock = {"train": lockfile.StageLock(cmd=("python train.py",),
                                        deps=(state("data.csv", "1a" * 32, 3), state("train.py", code, 5)))}
    (lab.root / "tally.lock").write_text(lockfile.dumps(lock))
    lab.commit("lock")
    lab.exp("same", deps={"data.csv": "1a" * 32, "train.py": code}, workspace_tree=False)
    lab.exp("newdata", deps={"data.csv": "3c" * 32, "train.py": code}, workspace_tree=False)
    by = {e.name: e for e in listing.list_experiments(lab.project)}
    assert by["same"].changed_deps == ()
    assert by["newdata"].changed_deps == ("data.csv",)
    tab = listing.show(lab.project, filter='deps ~ "*data.csv*"')
    assert names(tab.experiments) == ["newdata"]
    tab = listing.show(lab.project, filter=f'deps.data.csv == "{"3c" * 32}"')
    assert names(tab.experiments) == ["newdata"]
    assert listing.show(lab.project, filter="deps == null").experiments[0].name == "same"


def test_changed_deps_from_the_baseline_files_without_a_lock(lab: Lab) -> None:
    from cas.core import hashing
    lab.write({"data/a.csv": "1\n", "src/util.py": "u\n"})
    tracking.add(lab.project, ["data"])
    lab.commit("data")
    data_id = pointer.read(lab.root, "data").oid
    train_id = hashing.hash_bytes((lab.root / "train.py").read_bytes())
    lab.exp("same", deps={"data": data_id, "train.py": train_id, "src": "4d" * 32}, workspace_tree=False)
    lab.exp("code", deps={"data": data_id, "train.py": "5e" * 32, "gen/out": "6f" * 32},
            workspace_tree=False)
    by = {e.name: e for e in listing.list_experiments(lab.project)}
    assert by["same"].changed_deps == ()  # src/ is a Git directory: not claimed either way
    assert by["code"].changed_deps == ("gen/out", "train.py")  # gen/out: not at the baseline
    time.sleep(0.05)
    assert {e.name: e.changed_deps for e in listing.list_experiments(lab.project)} == \
        {"same": (), "code": ("gen/out", "train.py")}  # the same from the index


def test_changed_deps_on_a_dvc_baseline(lab: Lab) -> None:
    """A DVC baseline (dvc.lock, `dvc add`-ed data; no tally.lock) names its data by MD5:
    those deps are not claimed changed; a Git file that did change still is."""
    from cas.core import hashing
    lab.write({"data/data.xml": "<rows/>\n", "data/.gitignore": "/data.xml\n",
               "data/data.xml.dvc": "outs:\n- md5: 2a9a4e1b\n  size: 8\n  path: data.xml\n",
               "dvc.lock": "schema: '2.0'\nstages:\n  prepare:\n    cmd: python prepare.py\n"
                           "    deps:\n    - path: data/data.xml\n      md5: 2a9a4e1b\n"
                           "    outs:\n    - path: 'data/prepared'\n      md5: 77aa.dir\n"
                           "  train:\n    deps:\n    - path: data/prepared\n    - path: train.py\n"})
    lab.commit("a DVC project")
    train_id = hashing.hash_bytes((lab.root / "train.py").read_bytes())
    lab.exp("same", deps={"data/data.xml": "1a" * 32, "data/prepared": "2b" * 32,
                          "data/prepared/train.tsv": "3c" * 32, "train.py": train_id},
            workspace_tree=False)
    lab.exp("code", deps={"data/data.xml": "1a" * 32, "train.py": "5e" * 32, "new/dep": "6f" * 32},
            workspace_tree=False)
    by = {e.name: e.changed_deps for e in listing.list_experiments(lab.project)}
    assert by == {"same": (), "code": ("new/dep", "train.py")}


# -- the summary index --------------------------------------------------------------------

def test_index_is_used_and_never_stale(three: Lab, monkeypatch: pytest.MonkeyPatch) -> None:
    p = three.project
    first = listing.list_experiments(p)
    assert (p.store_dir / "index" / "exps.msgpack").is_file()
    loads = []
    real = record.load
    monkeypatch.setattr(record, "load", lambda s, o: loads.append(o) or real(s, o))
    time.sleep(0.05)  # past the racy window of the first listing's clock
    listing.list_experiments(p)
    again = listing.list_experiments(p)
    assert loads == [] and again == first  # nothing decoded: all from the index
    # Every change to the refs shows at once.
    oid = three.exp("delta", params=P(0.2), metrics=M(0.95), workspace_tree=False)
    assert "delta" in names(listing.list_experiments(p)) and loads == [oid]
    lookup.rename(p, "delta", "epsilon")
    assert "epsilon" in names(listing.list_experiments(p)) and "delta" not in names(listing.list_experiments(p))
    removal.remove(p, names=["epsilon"])
    assert names(listing.list_experiments(p)) == names(first)
    # A ref rewritten in place (same inode, by hand) is seen too.
    alpha = refs.ref_path(p, three.head(), "alpha")
    beta_oid = refs.read(p, three.head(), "beta")
    time.sleep(0.05)
    with open(alpha, "r+b") as f:
        f.write((beta_oid + "\n").encode())
    listed = {e.name: e.oid for e in listing.list_experiments(p)}
    assert listed["alpha"] == beta_oid


def test_damaged_or_foreign_index_is_rebuilt(three: Lab) -> None:
    p = three.project
    want = listing.list_experiments(p)
    path = p.store_dir / "index" / "exps.msgpack"
    for junk in (b"", b"\x00garbage", b"\x93\xa4TLYX\x04\x00", path.read_bytes()[:100]):
        path.write_bytes(junk)
        assert listing.list_experiments(p) == want
        assert expindex.Index(p).records  # rewritten, loadable again


def test_index_drops_summaries_of_removed_records(three: Lab) -> None:
    p = three.project
    listing.list_experiments(p)
    removal.remove(p, everything=True)
    assert listing.list_experiments(p) == []
    assert expindex.Index(p).records == {}


@pytest.mark.parametrize("n", [600, helpers.slow_param(10_000)])
def test_many_experiments_list_correctly(lab: Lab, monkeypatch: pytest.MonkeyPatch, n: int) -> None:
    """The listing `show` makes at 10,000 experiments (timed by hand, not here); by
    default at 600, with the index's threshold for forked decoding lowered so they
    take the path 10,000 take."""
    if n < expindex.PARALLEL_MIN:
        monkeypatch.setattr(expindex, "PARALLEL_MIN", n // 3)
    p = lab.project
    base = lab.head()
    monkeypatch.setattr(os, "fsync", lambda fd: None)  # durability is not under test
    monkeypatch.setattr(refs, "fsync_dir", lambda d: None)
    with p.store.writer() as w:
        ids = [record.put(w, record.Record(
            name=f"e{i:05d}", baseline=base, created=T0 + i * 10**9,
            status="failed" if i % 7 == 0 else "success",
            params={"params.yaml": {"lr": i % 10 / 100, "seed": i}},
            metrics={"metrics.json": {"acc": (i * 37 % 1000) / 1000}})) for i in range(n)]
    root = refs.refs_root(p) / base
    for i, oid in enumerate(ids):
        refs.update(p, base, f"e{i:05d}", oid, None)
    exps = listing.list_experiments(p)
    assert len(exps) == n and exps[0].name == f"e{n - 1:05d}" and exps[-1].name == "e00000"
    k = 1234 % n
    e = next(x for x in exps if x.name == f"e{k:05d}")
    assert e.metrics == {"metrics.json:acc": k * 37 % 1000 / 1000}
    assert e.params == {"params.yaml:lr": k % 10 / 100, "params.yaml:seed": k}
    assert sum(x.status == "failed" for x in exps) == len(range(0, n, 7))
    time.sleep(0.05)
    assert listing.list_experiments(p) == exps  # from the index
    tab = listing.show(p, filter="metrics.acc >= 0.9 and status == 'success'", sort_by="seed:desc", limit=5)
    want = [i for i in range(n - 1, -1, -1) if (i * 37 % 1000) / 1000 >= 0.9 and i % 7][:5]
    assert names(tab.experiments) == [f"e{i:05d}" for i in want]
    assert len(list(root.iterdir())) == n


@pytest.mark.parametrize("child", ["works", "dies", "torn report"])
def test_many_new_records_are_summarized_the_same_in_forked_shards(
        lab: Lab, monkeypatch: pytest.MonkeyPatch, failpoint, child: str) -> None:
    """summarize_many splits many new records over forked children: the summaries and
    the problems (a missing record, a damaged one) are exactly the serial ones, and a
    child that dies or reports garbage only makes its shard be decoded by the parent."""
    p = lab.project
    ids = [lab.exp(f"e{i}", params=P(i / 100), metrics=M(i / 10), workspace_tree=False)
           for i in range(12)]
    with p.store.writer() as w:
        ids.append(w.put_bytes(b"TLYR\x01 not a record"))  # a damaged one, in the last shard
    ids.insert(3, "cd" * 32)  # names no object, in the first shard (the parent's)
    serial = expindex._summarize_serial(p.store, ids)
    assert len(serial[0]) == 12 and set(serial[1]) == {"cd" * 32, ids[-1]}
    monkeypatch.setattr(expindex, "PARALLEL_MIN", 4)
    monkeypatch.setattr(expindex, "PROCESSES", 3)
    forks = []
    real_fork = os.fork
    monkeypatch.setattr(expindex.os, "fork", lambda: forks.append(1) or real_fork())
    me, loaded_here = os.getpid(), []
    real_load = record.load
    monkeypatch.setattr(record, "load", lambda s, o: (os.getpid() == me and loaded_here.append(o),
                                                      real_load(s, o))[1])
    if child == "dies":  # SIGKILLed with its work done, nothing reported
        failpoint("forked:before-report")
    elif child == "torn report":  # SIGKILLed halfway through writing its report
        failpoint("forked:half-reported")
    assert expindex.summarize_many(p.store, ids) == serial
    assert len(forks) == 2  # three shards: two children and the parent
    # The parent decoded its own shard, and the children's too when they failed.
    assert len(loaded_here) == (len(ids) // 3 if child == "works" else len(ids))


def test_many_new_records_are_summarized_serially_while_another_thread_runs(
        three: Lab, monkeypatch: pytest.MonkeyPatch) -> None:
    """A fork copies the locks other threads hold: with one running, no fork."""
    import threading

    p = three.project
    ids = [oid for _, _, oid in refs.list_refs(p, three.head())]
    monkeypatch.setattr(expindex, "PARALLEL_MIN", 2)
    monkeypatch.setattr(expindex, "PROCESSES", 2)
    monkeypatch.setattr(expindex.os, "fork", lambda: pytest.fail("forked beside a thread"))
    stop = threading.Event()
    t = threading.Thread(target=stop.wait)
    t.start()
    try:
        assert expindex.summarize_many(p.store, ids) == expindex._summarize_serial(p.store, ids)
    finally:
        stop.set()
        t.join()


# -- finding by name ----------------------------------------------------------------------

def test_find_prefers_the_current_baseline_then_any(three: Lab) -> None:
    first = three.head()
    three.write({"train.py": "print('v2')\n"})
    second = three.commit("v2")
    p = three.project
    assert lookup.find(p, "alpha")[0] == first  # only under the old baseline: found there
    three.exp("alpha", params=P(0.3), workspace_tree=False)
    assert lookup.find(p, "alpha")[0] == second  # the current baseline wins
    assert lookup.find(p, f"{first[:7]}/alpha")[0] == first
    with pytest.raises(NotFound) as exc:
        lookup.find(p, "alpah")
    assert exc.value.exit_code == 3 and "alpha" in (exc.value.hint or "")
    with pytest.raises(UsageError):
        lookup.find(p, "zz/alpha")
    sh(three.root, "checkout", "-q", "--detach", "HEAD~1")
    three.write({"x.txt": "x"})
    sh(three.root, "add", "x.txt")
    sh(three.root, "commit", "-qm", "third")
    with pytest.raises(UsageError, match="several baselines"):
        lookup.find(p, "alpha")


# -- diff ---------------------------------------------------------------------------------

def test_diff_against_the_baseline_commit(lab: Lab) -> None:
    lab.exp("a1", params=P(0.01, 10), metrics=M(0.75, 0.5), workspace_tree=False)
    d = compare.diff(lab.project, "a1")
    by = {r.key: r for r in d.rows}
    assert by["params.yaml:train.lr"].a == 0.01 and by["params.yaml:train.lr"].b == 0.1
    assert by["params.yaml:train.lr"].changed and by["params.yaml:train.lr"].delta == pytest.approx(-0.09)
    assert not by["params.yaml:train.epochs"].changed
    assert by["metrics.json:acc"].delta == pytest.approx(0.25)
    assert d.b == f"baseline {lab.head()[:7]}" and d.notes == []


def test_diff_two_experiments_and_a_revision(three: Lab) -> None:
    d = compare.diff(three.project, "alpha", "gamma")
    by = {r.key: r for r in d.rows}
    assert by["metrics.json:acc"].b is query.MISSING and by["metrics.json:acc"].changed
    assert by["params.yaml:train.epochs"].delta == -10
    json.dumps([r.to_json() for r in d.rows])  # serializable, missing as null
    d = compare.diff(three.project, "alpha", "HEAD")
    assert d.b == "commit HEAD"
    with pytest.raises(NotFound, match="neither an experiment nor a Git commit"):
        compare.diff(three.project, "alpha", "nosuch")
    with pytest.raises(NotFound):
        compare.diff(three.project, "nosuch")


def test_diff_notes_files_missing_at_the_baseline(lab: Lab) -> None:
    lab.exp("a1", params={"other.yaml": {"x": 1}}, workspace_tree=False)
    d = compare.diff(lab.project, "a1")
    assert any("other.yaml does not exist" in n for n in d.notes)
    assert [r.key for r in d.rows] == ["other.yaml:x"]


# -- rename -------------------------------------------------------------------------------

def test_rename_and_its_conflicts(three: Lab) -> None:
    p = three.project
    oid = refs.read(p, three.head(), "alpha")
    r = lookup.rename(p, "alpha", "best")
    assert (r.old, r.new, r.oid) == ("alpha", "best", oid)
    assert "best" in names(listing.list_experiments(p))
    with pytest.raises(Conflict) as exc:
        lookup.rename(p, "best", "beta")
    assert exc.value.exit_code == 4
    with pytest.raises(NotFound):
        lookup.rename(p, "alpha", "x")
    with pytest.raises(UsageError):
        lookup.rename(p, "best", "bad name")
    assert refs.read(p, three.head(), "best") == oid  # untouched by the failures


# -- remove -------------------------------------------------------------------------------

def test_remove_by_names_dry_run_first(three: Lab) -> None:
    p = three.project
    res = removal.remove(p, names=["alpha", "gamma"], dry_run=True)
    assert res.dry_run and sorted(names(res.removed)) == ["alpha", "gamma"] and res.kept == 1
    assert len(listing.list_experiments(p)) == 3
    res = removal.remove(p, names=["alpha", "gamma"])
    assert names(listing.list_experiments(p)) == ["beta"]
    with pytest.raises(NotFound):
        removal.remove(p, names=["alpha"])


@pytest.mark.parametrize("selectors,removed", [
    ({"everything": True}, ["alpha", "beta", "gamma"]),
    ({"failed": True}, ["beta"]),
    ({"filter": "params.train.lr < 0.05"}, ["beta", "gamma"]),
    ({"older_than": "60s"}, ["alpha", "beta"]),  # now = beta + 60.5 s = gamma + 59.5 s
    ({"keep_best": 1, "sort_by": "metrics.acc:desc"}, ["beta", "gamma"]),
    ({"keep_best": 2, "sort_by": "loss:asc"}, ["gamma"]),
    ({"filter": "status == 'success'", "keep_best": 1, "sort_by": "loss:desc"}, ["alpha"]),
    ({"failed": True, "older_than": "1d"}, []),
])
def test_remove_selectors(three: Lab, selectors: dict[str, Any], removed: list[str]) -> None:
    p = three.project
    now = T0 + 62_500_000_000
    dry = removal.remove(p, dry_run=True, now_ns=now, **selectors)
    assert sorted(names(dry.removed)) == removed
    assert len(listing.list_experiments(p)) == 3  # a dry run removes nothing
    res = removal.remove(p, now_ns=now, **selectors)
    assert sorted(names(res.removed)) == removed and res.failed == []
    left = sorted(set(["alpha", "beta", "gamma"]) - set(removed))
    assert sorted(names(listing.list_experiments(p))) == left
    assert res.kept == len(left)


def test_remove_failed_takes_interrupted_runs_too(lab: Lab) -> None:
    """An interrupted run did not finish either (gc's --drop-failed drops both)."""
    for name, status in (("ok", "success"), ("broke", "failed"), ("stopped", "interrupted"),
                         ("waiting", "queued")):
        lab.exp(name, status=status, workspace_tree=False)
    res = removal.remove(lab.project, failed=True)
    assert sorted(names(res.removed)) == ["broke", "stopped"]
    assert sorted(names(listing.list_experiments(lab.project))) == ["ok", "waiting"]


@pytest.mark.parametrize("selectors,words", [
    ({}, "nothing selected"),
    ({"names": ["alpha"], "failed": True}, "not both"),
    ({"keep_best": 1}, "needs --sort-by"),
    ({"keep_best": 1, "sort_by": "acc"}, "which end is best"),
    ({"sort_by": "acc:desc"}, "only makes sense"),
    ({"older_than": "soon"}, "bad duration"),
    ({"filter": "acc >"}, "expected a value"),
])
def test_remove_refuses_unclear_selections(three: Lab, selectors: dict[str, Any], words: str) -> None:
    with pytest.raises(UsageError, match=words):
        removal.remove(three.project, **selectors)
    assert len(listing.list_experiments(three.project)) == 3


def test_remove_reports_a_ref_that_moved(three: Lab, monkeypatch: pytest.MonkeyPatch) -> None:
    p = three.project
    real = removal.select

    def racing(project: Any, **kw: Any) -> Any:
        chosen, kept = real(project, **kw)
        refs.update(project, three.head(), "alpha", refs.read(project, three.head(), "beta"),
                    refs.read(project, three.head(), "alpha"))
        return chosen, kept
    monkeypatch.setattr(removal, "select", racing)
    res = removal.remove(p, everything=True)
    assert sorted(names(res.removed)) == ["beta", "gamma"]
    assert [e.name for e, _ in res.failed] == ["alpha"] and res.failed[0][1].exit_code == 4
    assert names(listing.list_experiments(p)) == ["alpha"]


# -- restore ------------------------------------------------------------------------------

@pytest.fixture
def data_lab(lab: Lab) -> Lab:
    """A baseline with tracked data (data/ by pointer) and an ignored output, model.bin."""
    lab.write({"data/a.csv": "x\n1\n", "data/sub/b.csv": "y\n2\n", ".gitignore": "/model.bin\n",
               "README.md": "readme\n"})
    tracking.add(lab.project, ["data"])
    lab.commit("data")
    return lab


def _state(root: Path) -> dict[str, bytes]:
    out = {}
    for d, dirs, files in os.walk(root):
        dirs[:] = [x for x in dirs if x not in (".git", ".tally")]
        for f in files:
            p = Path(d, f)
            out[p.relative_to(root).as_posix()] = os.readlink(p).encode() if p.is_symlink() else p.read_bytes()
    return out


def test_restore_brings_back_exactly_the_experiment(data_lab: Lab) -> None:
    lab = data_lab
    lab.exp("e1", params=P(0.02), changes={"params.yaml": "train:\n  lr: 0.02\n  epochs: 10\n",
                                           "train.py": Exe(b"print('v2')\n"), "README.md": None,
                                           "src/new.py": "new\n", "data/a.csv": "x\n9\n"},
            outs={"model.bin": b"\x00model" * 100})
    before = _state(lab.root)
    want = dict(before)
    want.update({"params.yaml": b"train:\n  lr: 0.02\n  epochs: 10\n", "train.py": b"print('v2')\n",
                 "src/new.py": b"new\n", "data/a.csv": b"x\n9\n", "model.bin": b"\x00model" * 100})
    del want["README.md"]
    (lab.root / "scratch.txt").write_text("untracked, unknown to the experiment\n")
    r = restore.restore(lab.project, "e1")
    after = _state(lab.root)
    assert after == {**want, "scratch.txt": b"untracked, unknown to the experiment\n"}
    assert os.stat(lab.root / "train.py").st_mode & 0o111
    assert sorted(r.deleted) == ["README.md"]
    assert sorted(r.written) == ["data/a.csv", "model.bin", "params.yaml", "src/new.py", "train.py"]
    # Nothing just restored is hashed again: the stat cache vouches for every file.
    sc = lab.project.statcache
    for rel in r.written:
        st = os.lstat(lab.root / rel)
        assert sc.lookup(st) == workspace.snapshot(lab.root / rel, statcache=sc).oid, rel
    # A second restore touches nothing.
    mtimes = {rel: os.lstat(lab.root / rel).st_mtime_ns for rel in want}
    r2 = restore.restore(lab.project, "e1")
    assert r2.written == [] and r2.deleted == []
    assert {rel: os.lstat(lab.root / rel).st_mtime_ns for rel in want} == mtimes
    # The user's Git index and HEAD did not move (restore changes files only).
    assert "params.yaml" in sh(lab.root, "status", "--porcelain")


def test_restore_refuses_to_overwrite_uncommitted_work(data_lab: Lab) -> None:
    lab = data_lab
    lab.exp("e1", changes={"params.yaml": "train:\n  lr: 0.5\n", "README.md": None,
                           "data/a.csv": "x\n7\n"})
    lab.write({"params.yaml": "my precious edit\n", "README.md": "also edited\n"})
    (lab.root / "data" / "a.csv").write_text("edited data\n")
    (lab.root / "data" / "extra.csv").write_text("new data file\n")
    before = _state(lab.root)
    with pytest.raises(WouldOverwrite) as exc:
        restore.restore(lab.project, "e1")
    e = exc.value
    assert e.exit_code == 4
    assert sorted(e.paths) == ["README.md", "data/a.csv", "data/extra.csv", "params.yaml"]
    assert "params.yaml" in e.message and "--force" in (e.hint or "")
    assert _state(lab.root) == before  # nothing was touched
    r = restore.restore(lab.project, "e1", force=True)
    assert (lab.root / "params.yaml").read_text() == "train:\n  lr: 0.5\n"
    assert not (lab.root / "README.md").exists() and not (lab.root / "data" / "extra.csv").exists()
    assert (lab.root / "data" / "a.csv").read_text() == "x\n7\n"
    assert "README.md" in r.deleted


def test_restore_overwrites_committed_or_stored_content_freely(data_lab: Lab) -> None:
    lab = data_lab
    lab.exp("e1", changes={"params.yaml": "train:\n  lr: 0.5\n"})
    lab.exp("e2", changes={"params.yaml": "train:\n  lr: 0.7\n"})
    restore.restore(lab.project, "e1")  # params.yaml equals HEAD's: safe
    restore.restore(lab.project, "e2")  # params.yaml is e1's, in the store: safe
    assert (lab.root / "params.yaml").read_text() == "train:\n  lr: 0.7\n"


def test_restore_a_checkpoint_step(data_lab: Lab) -> None:
    lab = data_lab
    p = lab.project
    ck = {}
    for step in (1, 2):
        tmp = lab.root.parent / f"ck{step}"
        (tmp / "live").mkdir(parents=True)
        (tmp / "model.bin").write_bytes(b"step %d" % step)
        (tmp / "live" / "metrics.json").write_text('{"step": %d}' % step)
        with p.store.writer() as w:
            ck[step] = workspace.snapshot(tmp, statcache=p.statcache, writer=w).oid
    lab.exp("e1", outs={"model.bin": b"final"}, checkpoints=((1, ck[1]), (2, ck[2])))
    restore.restore(p, "e1", step=1)
    assert (lab.root / "model.bin").read_bytes() == b"step 1"
    assert (lab.root / "live" / "metrics.json").read_text() == '{"step": 1}'
    restore.restore(p, "e1")
    assert (lab.root / "model.bin").read_bytes() == b"final"
    with pytest.raises(NotFound, match="no checkpoint at step 3") as exc:
        restore.restore(p, "e1", step=3)
    assert "1, 2" in (exc.value.hint or "")


def test_restore_errors(data_lab: Lab) -> None:
    lab = data_lab
    lab.exp("nows", workspace_tree=False, status="failed")
    with pytest.raises(NotFound, match="no workspace snapshot"):
        restore.restore(lab.project, "nows")
    with pytest.raises(NotFound):
        restore.restore(lab.project, "nosuch")
    lab.exp("e1", changes={"params.yaml": "train:\n  lr: 0.5\n"})
    lab.project.store.delete(_blob_of(lab, "e1", "params.yaml"))
    before = _state(lab.root)
    with pytest.raises(ObjectMissing):
        restore.restore(lab.project, "e1")
    assert _state(lab.root) == before


def _blob_of(lab: Lab, name: str, rel: str) -> str:
    p = lab.project
    rec = record.load(p.store, refs.read(p, lab.head(), name))
    return tree_lookup(p, rec.workspace, rel)[0]


@pytest.mark.parametrize("link", ["hardlink", "symlink", "copy"])
def test_restore_links_data_by_the_configured_mode_and_code_never(data_lab: Lab, link: str) -> None:
    from cas.store import config as config_mod
    lab = data_lab
    blob = os.urandom(50_000)  # incompressible: stored raw, so it can be linked
    lab.exp("e1", changes={"params.yaml": "train:\n  lr: 0.3\n"}, outs={"model.bin": blob})
    config_mod.set_value(lab.project.store_dir / "config", "cache.type", link)
    r = restore.restore(lab.project, "e1")
    # model.bin (the output) by the configured mode; params.yaml (code) always copied
    assert r.modes == ({"copy": 2} if link == "copy" else {link: 1, "copy": 1})
    model = lab.root / "model.bin"
    assert model.read_bytes() == blob
    if link == "hardlink":
        assert os.stat(model).st_nlink > 1 and not os.stat(model).st_mode & 0o222  # protected
    if link == "symlink":
        assert model.is_symlink()
    params = lab.root / "params.yaml"
    assert not params.is_symlink() and os.stat(params).st_nlink == 1  # code: an independent copy
    assert os.stat(params).st_mode & 0o200


def test_restore_waits_for_no_run(data_lab: Lab) -> None:
    from cas.core.errors import LockBusy
    lab = data_lab
    lab.exp("e1", changes={"params.yaml": "train:\n  lr: 0.3\n"})
    with lab.project.lock("workspace", purpose="tally run"):
        with pytest.raises(LockBusy) as exc:
            restore.restore(lab.project, "e1")
    assert exc.value.exit_code == 7
    assert (lab.root / "params.yaml").read_text() != "train:\n  lr: 0.3\n"
