"""CLI end to end for remotes: `tally remote ...`, push, pull, fetch, status/show/diff/gc
--remote, restore and promote on demand; exit codes, stdout/stderr, --json. In-process
through `cli.main.run`, against a directory remote and the moto S3 server."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from support.remotelab import make_remote, s3, tiny_packs  # noqa: F401 - fixtures

from cli.main import run


def git(cwd: Path, *args: str) -> str:
    return subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True,
                          text=True).stdout


def tally(capsys, *args: str) -> tuple[int, str, str]:
    capsys.readouterr()
    code = run(list(args))
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture(params=["dir", "s3"])
def kind(request, tmp_path):
    return make_remote(request.param, tmp_path,
                       request.getfixturevalue("s3") if request.param == "s3" else None)


def test_the_teammate_story_through_the_cli(tmp_path, monkeypatch, capsys, kind) -> None:
    bare = tmp_path / "origin.git"
    git(tmp_path, "init", "-q", "--bare", "-b", "main", os.fspath(bare))
    a = tmp_path / "alice"
    a.mkdir()
    git(a, "init", "-q", "-b", "main")
    git(a, "remote", "add", "origin", os.fspath(bare))
    monkeypatch.chdir(a)
    assert tally(capsys, "init")[0] == 0
    code, out, _ = tally(capsys, "remote", "add", "store", kind.url, "--default")
    assert code == 0 and "added remote store" in out
    for k, v in kind.options.items():
        local = ["--local"] if "secret" in k or "access" in k else []
        assert tally(capsys, "remote", "modify", *local, "store", k, v)[0] == 0
    code, _, err = tally(capsys, "remote", "modify", "store", "secret_access_key", "x")
    assert code == 2 and "credential" in err
    code, out, _ = tally(capsys, "remote", "list", "--json")
    assert [r["name"] for r in json.loads(out)] == ["store"]
    assert "secret" not in out
    (a / "data").mkdir()
    for i in range(30):
        (a / "data" / f"f{i}.txt").write_text(f"file {i}\n" * (i + 1))
    (a / "params.yaml").write_text("lr: 0.1\n")
    (a / "train.py").write_text("open('model.bin', 'w').write('m' * 5000)\n"
                                "open('metrics.json', 'w').write('{\"acc\": 0.9}')\n")
    (a / "tally.yaml").write_text("stages:\n  train:\n    cmd: python3 train.py\n"
                                  "    deps: [train.py]\n    params: [lr]\n"
                                  "    outs: [model.bin]\n    metrics:\n"
                                  "    - metrics.json:\n        cache: false\n")
    assert tally(capsys, "add", "data")[0] == 0
    git(a, "add", "-A")
    git(a, "commit", "-qm", "data")
    git(a, "push", "-q", "origin", "main")
    code, out, _ = tally(capsys, "push")
    assert code == 0 and "pushed 31 object(s)" in out, out
    code, out, _ = tally(capsys, "push", "--json")
    assert code == 0 and json.loads(out)["transferred"] == 0
    code, out, err = tally(capsys, "run", "-n", "first")
    assert code == 0, (out, err)
    code, out, err = tally(capsys, "push", "--exp", "first")
    assert code == 0 and "pushed: first" in out, (out, err)
    code, out, _ = tally(capsys, "push", "--exp", "--all", "--json")
    assert [e["status"] for e in json.loads(out)["experiments"]] == ["up-to-date"]
    code, _, err = tally(capsys, "push", "--all")
    assert code == 2 and "--exp" in err

    b = tmp_path / "bob"
    git(tmp_path, "clone", "-q", os.fspath(bare), os.fspath(b))
    monkeypatch.chdir(b)
    for k, v in kind.options.items():
        if "secret" in k or "access" in k:
            assert tally(capsys, "remote", "modify", "--local", "store", k, v)[0] == 0
    code, out, _ = tally(capsys, "status", "--remote", "store")
    assert code == 0 and "data: here missing" in out, out
    code, out, _ = tally(capsys, "pull")
    assert code == 0 and "checked out data" in out
    assert (b / "data" / "f3.txt").read_text() == "file 3\n" * 4
    code, out, _ = tally(capsys, "show", "--remote", "store", "-A", "--json")
    rows = [json.loads(x) for x in out.splitlines() if x.strip()] if not out.startswith("[") \
        else json.loads(out)
    assert [r["name"] for r in rows] == ["first"] and rows[0]["metrics"]
    code, out, _ = tally(capsys, "show")
    assert "first" not in out  # nothing pulled yet
    code, out, err = tally(capsys, "diff", "first", "--remote", "store", "--json")
    assert code == 0, err
    code, out, err = tally(capsys, "restore", "first", "--force")  # fetched on demand
    assert code == 0 and "fetching it from the remote" in err, (out, err)
    assert (b / "model.bin").read_text() == "m" * 5000
    code, out, err = tally(capsys, "promote", "first")
    assert code == 0 and "created exp/first" in out, (out, err)
    code, out, err = tally(capsys, "gc", "--remote", "store", "--grace", "0", "--dry-run", "--json")
    assert code == 0 and json.loads(out)["dry_run"] is True, err
    code, out, err = tally(capsys, "gc", "--remote", "store", "--grace", "0", "--yes")
    assert code == 0 and "Deleted" in out, err
    code, _, err = tally(capsys, "pull", "--exp", "nobody")
    assert code == 3 and "no experiment" in err
    code, _, err = tally(capsys, "push", "-r", "nowhere")
    assert code == 3 and "no remote named" in err
