"""CLI end to end for show, diff, restore, promote, remove, rename: exit codes, outputs."""

from __future__ import annotations

import csv
import io
import json
import os
from pathlib import Path

import pytest

from cli.main import run
from support.lab import Lab, M, P, sh


def tally(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    capsys.readouterr()
    code = run(list(args))
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture
def three(lab: Lab) -> Lab:
    lab.exp("alpha", params=P(0.1), metrics=M(0.912345678, 0.2), changes={"params.yaml": "a\n"})
    lab.exp("beta", params=P(0.01), metrics=M(0.8, 0.3), status="failed", changes={"params.yaml": "b\n"})
    lab.exp("gamma", params=P(0.001, 20), metrics=M(None, 0.5), changes={"params.yaml": "c\n"})
    return lab


def test_show_table(three: Lab, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = tally(capsys, "show")
    assert code == 0 and err == ""
    lines = out.splitlines()
    assert lines[0].split() == ["name", "created", "status", "metrics.json:acc", "metrics.json:loss",
                                "params.yaml:train.epochs", "params.yaml:train.lr", "changed", "deps"]
    assert [ln.split()[0] for ln in lines[1:]] == ["gamma", "beta", "alpha"]
    assert "0.91235" in lines[3]  # 5 significant digits by default
    code, out, _ = tally(capsys, "show", "--precision", "2", "--sort-by", "acc:desc", "--num", "1",
                         "--drop", "params.*", "--drop", "created")
    assert out.splitlines()[0].split() == ["name", "status", "metrics.json:acc", "metrics.json:loss",
                                           "changed", "deps"]
    assert out.splitlines()[1].split()[:3] == ["alpha", "success", "0.91"]


def test_show_machine_formats(three: Lab, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = tally(capsys, "show", "--json", "--filter", "status == 'success'")
    rows = json.loads(out)
    assert code == 0 and [r["name"] for r in rows] == ["gamma", "alpha"]
    assert rows[1]["metrics"] == {"metrics.json:acc": 0.912345678, "metrics.json:loss": 0.2}
    assert rows[1]["params"]["params.yaml:train.lr"] == 0.1 and rows[1]["created"].endswith("Z")
    code, out, _ = tally(capsys, "show", "--csv", "--only-changed")
    table = list(csv.reader(io.StringIO(out)))
    assert table[0][:3] == ["name", "created", "status"] and len(table) == 4
    assert table[1][table[0].index("metrics.json:acc")] == ""  # gamma has no acc
    assert table[3][table[0].index("metrics.json:acc")] == "0.912345678"  # csv: full precision
    code, out, _ = tally(capsys, "show", "--md", "--keep", "acc", "--drop", "*")
    assert out.splitlines()[:2] == ["| name | metrics.json:acc |", "|---|---|"]
    assert "| alpha | 0.91235 |" in out
    code, _, err = tally(capsys, "show", "--json", "--csv")
    assert code == 2


def test_show_errors_and_empty(lab: Lab, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = tally(capsys, "show")
    assert code == 0 and out == "" and "No experiments" in err
    code, out, _ = tally(capsys, "show", "--json")
    assert json.loads(out) == []
    lab.exp("alpha", params=P(0.1), metrics=M(0.9), workspace_tree=False)
    code, out, err = tally(capsys, "show", "--filter", "metrics.acc >> 1")
    assert code == 2 and out == "" and "^" in err and "column 14" in err
    code, out, err = tally(capsys, "show", "--filter", "metrics.acu > 1")
    assert code == 2 and "did you mean 'metrics.acc'" in err
    code, out, err = tally(capsys, "show", "--filter", "acc > 5")
    assert code == 0 and "No experiment matches (1 listed)" in err


def test_diff(three: Lab, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = tally(capsys, "diff", "alpha", "beta")
    assert code == 0
    lines = {ln.split()[1]: ln.split() for ln in out.splitlines()[1:]}
    assert lines["params.yaml:train.lr"][2:] == ["0.1", "0.01", "+0.09"]
    assert "params.yaml:train.epochs" not in lines  # unchanged rows hidden without --all
    code, out, _ = tally(capsys, "diff", "alpha", "beta", "--all", "--json")
    doc = json.loads(out)
    assert doc["a"].endswith("/alpha") and any(r["key"] == "params.yaml:train.epochs" for r in doc["rows"])
    code, out, err = tally(capsys, "diff", "nosuch")
    assert code == 3 and "no experiment named 'nosuch'" in err


def test_restore_refusal_then_force(three: Lab, capsys: pytest.CaptureFixture[str]) -> None:
    three.write({"params.yaml": "uncommitted\n"})
    code, out, err = tally(capsys, "restore", "alpha")
    assert code == 4 and "params.yaml" in err and "--force" in err
    assert (three.root / "params.yaml").read_text() == "uncommitted\n"
    code, out, err = tally(capsys, "restore", "alpha", "--force")
    assert code == 0 and "restored alpha: 1 written" in out
    assert (three.root / "params.yaml").read_text() == "a\n"
    code, out, _ = tally(capsys, "restore", "beta", "--json")
    assert code == 0 and json.loads(out)["written"] == ["params.yaml"]
    code, out, _ = tally(capsys, "restore", "beta")
    assert "already matches" in out
    code, _, err = tally(capsys, "restore", "alpah")
    assert code == 3 and "did you mean 'alpha'" in err
    for bad in ([], ["alpha", "--bogus"], ["alpha", "--step", "two"], ["alpha", "beta"]):
        code, out, err = tally(capsys, "restore", *bad)
        assert code == 2 and out == "" and "tally restore:" in err and "--help" in err, bad


def test_restore_verify_checks_linked_outputs(lab: Lab, capsys: pytest.CaptureFixture[str]) -> None:
    from cas.objects import record, tree
    from cas.store import config
    from support.lab import tree_lookup

    config.set_value(lab.root / ".tally" / "config", "cache.type", "hardlink,copy")
    weights = os.urandom(300)  # incompressible: stored raw, so it can be hardlinked
    oid = lab.exp("trained", outs={"model": {"w.bin": weights}})
    project = lab.project
    model, _ = tree_lookup(project, record.load(project.store, oid).workspace, "model")
    w = tree.decode(project.store.get(model)).get("w.bin").oid
    path = Path(project.store.raw_path(w))
    path.chmod(0o644)
    path.write_bytes(bytes([weights[0] ^ 0x20]) + weights[1:])
    path.chmod(0o444)
    code, out, err = tally(capsys, "restore", "trained", "--verify")
    assert code == 5 and out == "" and w in err
    assert not (lab.root / "model" / "w.bin").exists()  # nothing damaged took the name
    code, out, err = tally(capsys, "restore", "trained")  # a hardlink is unverified by default
    assert code == 0 and "1 hardlink" in out


def test_restore_names_the_links_it_skipped(lab: Lab, capsys: pytest.CaptureFixture[str]) -> None:
    os.symlink("/etc/passwd", lab.root / "evil")
    lab.exp("hostile")
    os.unlink(lab.root / "evil")
    code, out, err = tally(capsys, "restore", "hostile")
    assert code == 0 and err == "not restored (points outside the work tree): evil\n"
    assert out.startswith("restored hostile") or "already matches" in out
    assert not os.path.lexists(lab.root / "evil")
    code, out, err = tally(capsys, "restore", "hostile", "--json")
    assert code == 0 and json.loads(out)["skipped"] == ["evil"]


def test_show_says_which_experiment_is_unreadable(three: Lab, capsys: pytest.CaptureFixture[str]) -> None:
    from cas.store import refs

    refs.update(three.project, three.head(), "broken", "ab" * 32, None)  # names no object
    code, out, err = tally(capsys, "show")
    assert code == 0
    assert [ln.split()[:3] for ln in out.splitlines()[1:] if ln.startswith("broken")] == \
        [["broken", "-", "unreadable"]]
    (line,) = err.splitlines()
    assert line.startswith(f"warning: experiment {three.head()[:7]}/broken is unreadable: ")
    assert "missing" in line
    code, out, err = tally(capsys, "show", "--json")
    assert code == 0 and "broken is unreadable" in err
    assert next(r for r in json.loads(out) if r["name"] == "broken")["problem"] in line
    code, out, err = tally(capsys, "show", "--filter", "status == 'success'")
    assert code == 0 and err == ""  # only experiments listed are reported


def test_restore_does_not_import_typer(three: Lab) -> None:
    """restore is dispatched without Typer: its start-up is part of every restore."""
    import subprocess
    import sys
    code = ("import sys; from cli.entry import run; rc = run(['restore', 'alpha', '--force']); "
            "print(rc, 'typer' in sys.modules, 'click' in sys.modules, file=sys.stderr)")
    got = subprocess.run([sys.executable, "-c", code], cwd=three.root, capture_output=True,
                         text=True, check=True).stderr.split()[-3:]
    assert got == ["0", "False", "False"]


def test_promote_created_and_conflict(three: Lab, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = tally(capsys, "promote", "alpha")
    assert code == 0 and out.startswith("created exp/alpha at ")
    code, out, err = tally(capsys, "promote", "alpha", "beta", "--json")
    assert code == 4
    doc = {r["name"]: r for r in json.loads(out)}
    assert doc["alpha"]["status"] == "exists" and doc["beta"]["status"] == "created"
    code, out, err = tally(capsys, "promote", "--top", "1", "--sort-by", "loss:asc", "--branch-prefix", "best-")
    assert code == 0 and out.startswith("created best-alpha")  # alpha again, another prefix
    code, out, err = tally(capsys, "promote", "--top", "1", "--sort-by", "loss")
    assert code == 2 and "which end is best" in err
    assert "exp/beta" in sh(three.root, "branch")


def test_remove_and_rename(three: Lab, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = tally(capsys, "remove", "--failed", "--dry-run", "--json")
    doc = json.loads(out)
    assert code == 0 and doc["dry_run"] and [r["name"] for r in doc["removed"]] == ["beta"]
    code, out, err = tally(capsys, "remove", "--failed")
    assert code == 0 and out.startswith("removed beta") and "tally gc" in err
    code, out, err = tally(capsys, "remove")
    assert code == 2 and "nothing selected" in err
    code, out, err = tally(capsys, "rename", "alpha", "gamma")
    assert code == 4 and "already exists" in err
    code, out, err = tally(capsys, "rename", "alpha", "best")
    assert code == 0 and out.startswith("renamed alpha -> best")
    code, out, err = tally(capsys, "rename", "nosuch", "x")
    assert code == 3
    code, out, err = tally(capsys, "remove", "best", "--older-than", "1d")
    assert code == 2 and "not both" in err
    code, out, _ = tally(capsys, "show", "--json")
    assert sorted(r["name"] for r in json.loads(out)) == ["best", "gamma"]


def test_help_lists_the_commands(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = tally(capsys, "--help")
    for cmd in ("show", "diff", "restore", "promote", "remove", "rename"):
        assert cmd in out
    code, out, _ = tally(capsys, "show", "--help")
    assert code == 0 and "--sort-by" in out and "Exit codes" in out
