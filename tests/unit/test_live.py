"""cas.live: the files (dvclive's layout), step and resume rules, readers that never see
a torn file, and checkpoint() storing a tree under tally."""

from __future__ import annotations

import json
import math
import multiprocessing
import os
import subprocess
from pathlib import Path

import pytest

from cas import live as live_mod
from cas.core.errors import UsageError
from cas.live import Live, read_checkpoints, read_history, read_live, read_summary


@pytest.fixture
def in_tmp(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for var in (live_mod.ENV_RUN_DIR, live_mod.ENV_STORE, live_mod.ENV_CHECKPOINTS,
                live_mod.ENV_RESUME_STEP):
        monkeypatch.delenv(var, raising=False)
    return tmp_path


def test_layout_matches_dvclive(in_tmp):
    with Live() as live:
        for i in range(3):
            live.log_metric("loss", 1.0 / (i + 1))
            live.log_metric("train/acc", i)
            live.next_step()
        live.log_param("lr", 0.1)
        live.log_params({"layers": [1, 2], "opt": {"name": "adam"}})
    d = in_tmp / "tally-live"
    assert json.loads((d / "metrics.json").read_text()) == \
        {"loss": 1 / 3, "train": {"acc": 2}, "step": 2}
    assert (d / "plots/metrics/loss.tsv").read_text() == \
        "step\tloss\n0\t1.0\n1\t0.5\n2\t0.3333333333333333\n"
    assert (d / "plots/metrics/train/acc.tsv").read_text() == "step\tacc\n0\t0\n1\t1\n2\t2\n"
    from ruamel.yaml import YAML
    assert YAML(typ="safe").load((d / "params.yaml").read_text()) == \
        {"lr": 0.1, "layers": [1, 2], "opt": {"name": "adam"}}
    assert live.summary == {"loss": 1 / 3, "train": {"acc": 2}}
    assert read_history(d, "train/acc") == [(0, 0), (1, 1), (2, 2)]


def test_step_of_the_summary_and_resume(in_tmp):
    live = Live("out")
    live.log_metric("m", 1)
    live.next_step()
    live.log_metric("m", 2)
    live.next_step()
    live.end()  # nothing logged at step 2: the summary stays at step 1
    assert read_summary(in_tmp / "out")["step"] == 1
    again = Live("out", resume=True)
    assert again.resumed and again.step == 2 and again.summary == {"m": 2}
    again.log_metric("m", 3)
    again.end()
    assert read_history(in_tmp / "out", "m") == [(0, 1), (1, 2), (2, 3)]
    fresh = Live("out")  # no resume: earlier files are gone
    assert fresh.step == 0 and not (in_tmp / "out/plots/metrics/m.tsv").exists()
    assert read_summary(in_tmp / "out") is None


def test_resume_follows_tally(in_tmp, monkeypatch):
    Live("x").log_metric("m", 1)
    Live("x").end() if False else None
    live = Live("x")
    live.log_metric("m", 5)
    live.next_step()
    monkeypatch.setenv(live_mod.ENV_RESUME_STEP, "0")
    assert Live("x").step == 1  # resume=None resumes when tally restored a checkpoint


def test_bad_values_and_names(in_tmp):
    live = Live()
    for bad in (True, "1", None, [1]):
        with pytest.raises(UsageError):
            live.log_metric("m", bad)
    for name in ("", "a//b", "../x", "a/./b", "tab\tname"):
        with pytest.raises(UsageError):
            live.log_metric(name, 1)
    with pytest.raises(UsageError):
        live.log_param("p", object())
    live.log_metric("inf", math.inf)
    live.log_metric("nan", math.nan)
    live.end()
    assert json.loads((in_tmp / "tally-live/metrics.json").read_text()) == \
        {"inf": None, "nan": None, "step": 0}
    assert read_history(in_tmp / "tally-live", "inf") == [(0, math.inf)]


def test_timestamp_column(in_tmp):
    live = Live()
    live.log_metric("t", 1, timestamp=True)
    live.log_metric("t", 2)  # the file's header decides
    lines = (in_tmp / "tally-live/plots/metrics/t.tsv").read_text().splitlines()
    assert lines[0] == "timestamp\tstep\tt" and len(lines[2].split("\t")) == 3
    assert read_history(in_tmp / "tally-live", "t") == [(0, 1), (0, 2)]


def test_readers_ignore_an_unfinished_row(in_tmp):
    d = in_tmp / "tally-live"
    Live().log_metric("m", 1)
    with open(d / "plots/metrics/m.tsv", "a") as f:
        f.write("1\t0.12")  # a row being written: no newline yet
    assert read_history(d, "m") == [(0, 1)]
    ck = in_tmp / "ckpts"
    a, b = "a" * 64, "b" * 64
    ck.write_text(f"0\t{a}\n1\t{a}\nnot a line\n1\t{b}\n2\t{b}")
    assert read_checkpoints(ck) == [(0, a), (1, b)]


def _writer(n: int) -> None:
    live = Live("busy", resume=True)  # a fresh Live would first delete the summary
    for i in range(n):
        live.log_metric("m", i)
        live.next_step()


def test_summary_is_never_torn(in_tmp):
    """A reader polling while a writer logs 100 steps only ever sees whole JSON."""
    Live("busy").end()
    ctx = multiprocessing.get_context("fork")
    p = ctx.Process(target=_writer, args=(100,))
    p.start()
    seen = 0
    while p.is_alive() or seen == 0:
        doc = json.loads((in_tmp / "busy/metrics.json").read_text())  # raises if torn
        assert isinstance(doc["step"], int)
        seen += 1
    p.join()
    assert p.exitcode == 0
    assert read_live(in_tmp)["step"] == 100  # resumed after step 0: steps 1..100


def test_read_live_finds_live_dirs(in_tmp):
    Live("a").log_metric("x", 1)
    (in_tmp / "sub").mkdir()
    b = Live("sub/b")
    b.log_metric("y", 2)
    b.log_param("p", 1)
    b.next_step()
    Live("a").end()
    assert read_live(in_tmp)["metrics"] == {"a/metrics.json": {}}  # nested: not scanned
    got = read_live(in_tmp, live_dirs=["sub/b"])
    assert got["metrics"] == {"a/metrics.json": {}, "sub/b/metrics.json": {"y": 2}}
    assert got["params"] == {"sub/b/params.yaml": {"p": 1}}
    assert got["step"] == 0 and got["updated"] is not None and got["checkpoints"] == []


def test_checkpoint_outside_tally_only_writes_the_summary(in_tmp):
    live = Live()
    live.log_metric("m", 1)
    (in_tmp / "model.bin").write_bytes(b"w")
    assert live.checkpoint("model.bin") is None
    assert read_summary(in_tmp / "tally-live") == {"m": 1, "step": 0}


def test_checkpoint_under_tally_stores_the_paths_and_the_live_dir(tmp_path, monkeypatch):
    from cas.objects import tree
    from cas.workspace.project import init_project

    root = tmp_path / "proj"
    root.mkdir()
    subprocess.run(["git", "init", "-q", root], check=True)
    proj, _ = init_project(root)
    run = tmp_path / "proj" / "work"
    (run / "models").mkdir(parents=True)
    (run / "models" / "m.bin").write_bytes(b"weights-0")
    (run / "models" / "other.bin").write_bytes(b"not named")
    (run / "opt").mkdir()
    (run / "opt" / "state").write_bytes(b"s")
    ck = tmp_path / "ckpts"
    monkeypatch.chdir(run)
    monkeypatch.setenv(live_mod.ENV_RUN_DIR, str(run))
    monkeypatch.setenv(live_mod.ENV_STORE, str(proj.store_dir))
    monkeypatch.setenv(live_mod.ENV_CHECKPOINTS, str(ck))
    live = Live()
    live.log_metric("loss", 0.5)
    t0 = live.checkpoint(["models/m.bin", "opt"])
    live.next_step()
    (run / "models" / "m.bin").write_bytes(b"weights-1")
    live.log_metric("loss", 0.25)
    t1 = live.checkpoint(Path("models/m.bin"))
    assert read_checkpoints(ck) == [(0, t0), (1, t1)]
    load = lambda oid: tree.decode(proj.store.get(oid))  # noqa: E731
    files0 = {p: proj.store.get(e.oid) for p, e in tree.walk(t0, load)}
    assert files0["models/m.bin"] == b"weights-0" and files0["opt/state"] == b"s"
    assert "models/other.bin" not in files0
    assert json.loads(files0["tally-live/metrics.json"]) == {"loss": 0.5, "step": 0}
    files1 = {p: proj.store.get(e.oid) for p, e in tree.walk(t1, load)}
    assert files1["models/m.bin"] == b"weights-1"
    assert files1["tally-live/plots/metrics/loss.tsv"] == b"step\tloss\n0\t0.5\n1\t0.25\n"
    with pytest.raises(UsageError):
        live.checkpoint(tmp_path / "outside.bin")
    assert read_live(run, checkpoints=ck)["checkpoints"] == [[0, t0], [1, t1]]
    # Every object the checkpoint trees name is in the store.
    assert all(proj.store.has(e.oid) for t in (t0, t1) for _, e in tree.walk(t, load))
    assert os.path.exists(ck)
