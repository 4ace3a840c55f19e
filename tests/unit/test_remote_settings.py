"""Remote settings (.tally/config and .tally/config.local), progress, retries, auto-push,
and queued entries through a remote."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from support.lab import Lab, M, P, sh
from support.remotelab import make_remote, tiny_packs  # noqa: F401 - fixtures

from cas.core.errors import Conflict, NotFound, RemoteError, UsageError
from cas.remote import backend as backend_mod
from cas.remote import settings
from cas.remote.progress import Meter, Snapshot
from cas.store import config as config_mod
from cas.sync import autopush, data, exps


def test_add_list_default_modify_remove(project) -> None:
    spec = settings.add(project, "origin", "s3://bkt/p", default=True,
                        options={"region": "eu-west-1", "secret_access_key": "s3cr3t",
                                 "access_key_id": "AKIA"})
    assert spec.is_default and spec.options["region"] == "eu-west-1"
    shared = (project.store_dir / "config").read_text()
    local = project.store_dir / "config.local"
    assert "s3cr3t" not in shared and "AKIA" not in shared  # credentials never committed
    assert "s3cr3t" in local.read_text()
    assert stat.S_IMODE(local.stat().st_mode) == 0o600
    assert config_mod.load(project.store_dir / "config").get("remote.default") == "origin"
    settings.add(project, "backup", "/mnt/backup")
    assert sorted(settings.remotes(project)) == ["backup", "origin"]
    assert settings.resolve(project).name == "origin"
    settings.set_default(project, "backup")
    assert settings.resolve(project).name == "backup"
    with pytest.raises(Conflict):
        settings.add(project, "backup", "/elsewhere")
    with pytest.raises(UsageError, match="credential"):
        settings.modify(project, "origin", "secret_access_key", "x")
    settings.modify(project, "origin", "secret_access_key", "new", local=True)
    settings.modify(project, "origin", "endpoint_url", "http://minio:9000")
    assert settings.resolve(project, "origin").options["secret_access_key"] == "new"
    settings.modify(project, "origin", "endpoint_url", None)
    assert "endpoint_url" not in settings.resolve(project, "origin").options
    with pytest.raises(NotFound):
        settings.modify(project, "origin", "endpoint_url", None)
    public = settings.resolve(project, "origin").public()
    assert "secret_access_key" not in public["options"]
    settings.remove(project, "backup")
    assert list(settings.remotes(project)) == ["origin"]
    assert settings.resolve(project).name == "origin"  # the only one left
    with pytest.raises(NotFound):
        settings.resolve(project, "backup")
    with pytest.raises(UsageError):
        settings.add(project, "bad name", "/x")
    # config.local overrides per key; the committed file still parses for every command
    (project.store_dir / "config.local").write_text('[remotes.origin]\nurl = "/tmp/x"\n')
    assert settings.resolve(project).url == "/tmp/x"


def test_no_remote_is_a_clear_error(project) -> None:
    with pytest.raises(NotFound, match="no remote is configured"):
        settings.resolve(project)


def test_progress_reports_objects_bytes_rate_eta(project, tmp_path) -> None:
    seen: list[Snapshot] = []
    lab = Lab(project.root)
    (project.root / "d").mkdir()
    for i in range(30):
        (project.root / "d" / f"f{i}").write_bytes(os.urandom(2000 + i))
    from cas.workspace import tracking
    tracking.add(project, ["d"], cwd=project.root)
    lab.commit("d")
    settings.add(project, "o", os.fspath(tmp_path / "remote"), default=True)
    data.push(project, progress=seen.append)
    last = seen[-1]
    assert last.done and last.objects == last.objects_total == 31  # 30 files, 1 tree
    assert last.bytes == last.bytes_total > 60_000
    assert "objects" in last.line() and "MiB/s" in last.line()
    m = Meter("x")
    m.plan(10, 1000)
    m.advance(5, 500)
    assert m.snapshot().eta is not None


def test_transient_errors_are_retried_with_backoff(tmp_path, monkeypatch) -> None:
    from cas.remote.localdir import DirBackend
    monkeypatch.setattr(backend_mod, "BACKOFF_S", 0.001)
    b = DirBackend(tmp_path / "r")
    calls = {"n": 0}
    real = DirBackend._write

    def flaky(self, key, data, durable):
        calls["n"] += 1
        if calls["n"] <= 2:
            raise OSError(5, "Input/output error")  # EIO: transient on a network mount
        return real(self, key, data, durable)

    monkeypatch.setattr(DirBackend, "_write", flaky)
    b.write("k", b"v")
    assert calls["n"] == 3 and b.read("k", max_size=5) == b"v"
    calls["n"] = -10
    with pytest.raises(RemoteError) as info:
        b.write("k2", b"v")
    assert info.value.transient and calls["n"] == -10 + backend_mod.RETRIES + 1


def _lab_with_remote(tmp_path: Path, name: str = "p") -> tuple[Lab, object]:
    root = tmp_path / name
    root.mkdir()
    sh(root, "init", "-q", "-b", "main")
    sh(root, "config", "commit.gpgsign", "false")
    from cas.workspace.project import init_project
    p, _ = init_project(root)
    kind = make_remote("dir", tmp_path, None)
    kind.add_to(p)
    lab = Lab(root)
    lab.write({"params.yaml": "lr: 1\n"})
    lab.commit("base")
    return lab, kind


def test_auto_push_after_a_run(tmp_path) -> None:
    lab, kind = _lab_with_remote(tmp_path)
    p = lab.project
    lab.exp("e1", params=P(1), metrics=M(1))
    assert autopush.after_run(p, lab.head(), "e1") is None  # off by default
    config_mod.set_value(p.store_dir / "config", "remote.auto_push", "true")
    lines: list[str] = []
    rep = autopush.after_run(lab.project, lab.head(), "e1", notify=lines.append)
    assert [m.status for m in rep.results] == ["pushed"] and "auto-pushed" in lines[0]
    # A remote that fails does not fail the run: it says so.
    from cas.remote import settings as s
    s.modify(lab.project, "origin", "url", os.fspath(tmp_path / "gone" / "deeper"))
    lines.clear()
    assert autopush.after_run(lab.project, lab.head(), "e1", notify=lines.append) is None
    assert "auto-push of e1 failed" in lines[0]


def test_queued_entries_travel(tmp_path) -> None:
    lab, kind = _lab_with_remote(tmp_path)
    from cas.experiments import enqueue
    from cas.queue import directory as queue
    p = lab.project
    from cas.experiments.request import RunRequest
    entries = enqueue.plan(p, RunRequest(set_params=("lr=5",), name="later"))
    queue.enqueue(p, entries)
    rep = exps.push(p, queued=True)
    assert len(rep.queued) == 1
    other = tmp_path / "q"
    sh(tmp_path, "clone", "-q", os.fspath(lab.root), os.fspath(other))
    from cas.workspace.project import open_project
    po = open_project(other)
    got = exps.pull(po, queued=True)
    assert got.queued == rep.queued
    items = queue.items(po, states=("pending",))
    assert [it.name for it in items] == ["later"]
    assert po.store.has(items[0].entry.workspace)
    assert exps.pull(po, queued=True).queued == []  # already queued here


def test_push_and_fetch_across_history(tmp_path) -> None:
    """--rev / --all-commits cover data the work tree no longer names."""
    from cas.sync import selection
    from cas.workspace import tracking
    from cas.workspace.project import open_project
    lab, kind = _lab_with_remote(tmp_path)
    root = lab.root
    (root / "d").mkdir()
    (root / "d" / "x").write_text("one\n")
    tracking.add(lab.project, ["d"], cwd=root)
    v1 = lab.commit("v1")
    (root / "d" / "x").write_text("two\n")
    tracking.add(lab.project, ["d"], cwd=root)
    lab.commit("v2")
    p = lab.project
    head_only = data.push(p)
    assert head_only.objects == 2  # the tree and "two"
    old = selection.select(p, revs=[v1])
    assert [r.source.split(" at ")[1] for r in old] == [v1[:12]]
    assert data.push(p, revs=[v1]).transferred == 2  # v1's tree and "one"
    assert data.push(p, all_commits=True).transferred == 0
    other = tmp_path / "c"
    sh(tmp_path, "clone", "-q", os.fspath(root), os.fspath(other))
    po = open_project(other)
    got = data.fetch(po, all_commits=True)
    assert got.failed == {} and got.transferred == 4
    from cas.core import hashing
    assert po.store.has(hashing.hash_bytes(b"one\n"))
    with pytest.raises(NotFound):
        data.push(p, revs=["no-such-rev"])
