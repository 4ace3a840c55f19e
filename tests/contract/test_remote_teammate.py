"""The teammate test: two clones with separate stores share only a bare Git repository
and the tally remote. One pushes data and experiments; the other pulls them, lists,
diffs, restores and promotes them. Against every remote kind (directory, fsspec
memory, moto S3)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from support import helpers
from support.lab import Lab, M, P, sh
from support.remotelab import remote_kind, s3, tiny_packs  # noqa: F401 - fixtures

from cas.core.errors import Conflict, NotFound
from cas.experiments import listing, lookup
from cas.remote import settings
from cas.sync import data, exps
from cas.workspace import tracking
from cas.workspace.project import init_project, open_project


def _clone(bare: Path, dest: Path) -> Path:
    sh(bare.parent, "clone", "-q", os.fspath(bare), os.fspath(dest))
    sh(dest, "config", "commit.gpgsign", "false")
    return dest


@pytest.fixture
def team(tmp_path: Path, remote_kind):
    bare = tmp_path / "origin.git"
    sh(tmp_path, "init", "-q", "--bare", "-b", "main", os.fspath(bare))
    a = tmp_path / "alice"
    a.mkdir()
    sh(a, "init", "-q", "-b", "main")
    sh(a, "config", "commit.gpgsign", "false")
    sh(a, "remote", "add", "origin", os.fspath(bare))
    proj, _ = init_project(a)
    remote_kind.add_to(proj)
    return bare, a, tmp_path / "bob", remote_kind


def test_data_and_experiments_travel_between_clones(team, monkeypatch) -> None:
    bare, a, b, kind = team
    lab = Lab(a)
    helpers.write_tree(a / "data", helpers.rich_spec(seed=3))
    helpers.many_small_files(a / "data" / "small", 120, seed=4)
    (a / "model.bin").write_bytes(os.urandom(40_000))
    lab.write({"train.py": "print('v1')\n", "params.yaml": "train:\n  lr: 0.1\n",
               "metrics.json": '{"acc": 0.5}\n'})
    tracking.add(open_project(a), ["data", "model.bin"], cwd=a)
    base = lab.commit("data v1")
    want = helpers.manifest(a / "data")
    lab.exp("good", params=P(0.01), metrics=M(0.91), changes={"train.py": "print('v2')\n"},
            outs={"out/model.pt": os.urandom(30_000)})
    lab.exp("bad", params=P(0.5), metrics=M(0.40))
    sh(a, "push", "-q", "origin", "main")

    pa = open_project(a)
    pushed = data.push(pa)
    assert pushed.failed == {} and pushed.transferred == pushed.objects > 100
    again = data.push(pa)
    assert again.transferred == 0 and again.already == again.objects  # no-op push
    ex = exps.push(pa, everything=True)
    assert sorted((m.name, m.status) for m in ex.results) == [("bad", "pushed"), ("good", "pushed")]
    assert [m.status for m in exps.push(pa, names=["good"]).results] == ["up-to-date"]

    # Bob: a clone of the Git repository and the shared remote, nothing else.
    _clone(bare, b)
    pb = open_project(b)  # .tally/config came with the clone: it names the remote
    assert settings.resolve(pb).url == kind.url
    for k, v in kind.options.items():  # credentials are per user, never committed
        settings.modify(pb, "origin", k, v, local=True)
    assert not (b / "data").exists()
    st = {s.path: (s.local, s.remote) for s in data.status(pb)}
    assert st["data"][1] in ("complete", "has the top tree (not checked below)")
    pulled = data.pull(pb)
    assert pulled.failed == {}, pulled.failed
    assert helpers.manifest(b / "data") == want
    assert (b / "model.bin").read_bytes() == (a / "model.bin").read_bytes()
    assert {s.path: s.local for s in data.status(pb)} == {"data": "complete", "model.bin": "complete"}

    # Experiments: listed from the remote without data, then pulled and used.
    table = exps.show(pb, all_baselines=True)
    assert sorted(e.name for e in table.experiments) == ["bad", "good"]
    top = exps.show(pb, all_baselines=True, filter="acc > 0.5")
    assert [e.name for e in top.experiments] == ["good"]
    d = exps.diff(pb, "good", "bad")
    assert any(r.key == "metrics.json:acc" and r.a == 0.91 and r.b == 0.40 for r in d.rows)
    got = exps.pull(pb, top=1, sort_by="acc:desc")
    assert [(m.name, m.status) for m in got.results] == [("good", "pulled")]
    assert lookup.find(pb, "good")[2] == lookup.find(pa, "good")[2]
    assert [e.name for e in listing.list_experiments(pb)] == ["good"]

    # restore and promote fetch on demand: "bad" was never pulled here.
    restored = exps.restore(pb, "bad", force=True)
    assert restored.name == "bad" and lookup.find(pb, "bad")
    exps.restore(pb, "good", force=True)
    assert (b / "train.py").read_text() == "print('v2')\n"
    assert (b / "out" / "model.pt").exists()
    rep = exps.promote(pb, names=["good"])
    assert rep.results[0].status == "created"
    assert base  # the baseline both clones share


def test_name_clash_is_never_silent(team) -> None:
    bare, a, b, kind = team
    lab = Lab(a)
    lab.write({"params.yaml": "lr: 1\n"})
    lab.commit("base")
    sh(a, "push", "-q", "origin", "main")
    lab.exp("same", params=P(0.1), metrics=M(0.1))
    pa = open_project(a)
    exps.push(pa, names=["same"])
    _clone(bare, b)
    pb = open_project(b)
    for k, v in kind.options.items():
        settings.modify(pb, "origin", k, v, local=True)
    Lab(b).exp("same", params=P(0.2), metrics=M(0.2))  # same name, another record
    res = exps.push(pb, names=["same"])
    assert res.results[0].status == "conflict" and res.exit_code == Conflict.exit_code
    assert "rename" in res.results[0].error or "another record" in res.results[0].error
    res = exps.pull(pb, names=["same"])
    assert res.results[0].status == "conflict"
    # The same record pulled again is a no-op.
    assert [m.status for m in exps.pull(pa, names=["same"]).results] == ["up-to-date"]
    with pytest.raises(NotFound):
        exps.pull(pb, names=["nobody"])
