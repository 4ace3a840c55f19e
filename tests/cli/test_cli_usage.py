"""Every command's bad input, and the one funnel every failure leaves through.

Runs `cli.entry.run` in-process (the funnel the `tally` script uses) in a fresh
project: each command refused for a mistake of its own, with its exit code and a
one-line message on stderr; an unexpected exception as one line and exit 1 (a
traceback only with --debug), Ctrl-C as 130, a closed pipe as success; and
`tally logs NAME` on a failed run, as the failure's hint says.
"""

from __future__ import annotations

import errno
import subprocess
import sys
from pathlib import Path

import pytest

from cli import commands, entry
from cli.spec import Group
from support.lab import M, Lab

COMMANDS = sorted(c.name for c in commands.commands())


def tally(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    capsys.readouterr()
    code = entry.run(list(args))
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.parametrize("name", COMMANDS)
def test_an_unknown_option_is_refused_by_every_command(lab: Lab, capsys, name: str) -> None:
    code, out, err = tally(capsys, *name.split(), "--bogus")
    assert (code, out) == (2, "")
    first, hint = err.splitlines()
    assert first.startswith(f"tally: error: tally {name}: No such option: --bogus")
    assert hint == f"  hint: see `tally {name} --help`"


# (argv, exit code, what stderr must say): each command refused for a mistake of its own.
BAD_INPUT = [
    (["init", "extra"], 2, "tally init: Got unexpected extra argument(s) (extra)"),
    (["add"], 2, "tally add: Missing argument 'PATH'."),
    (["add", "nope"], 3, "nope does not exist"),
    (["status", "nope"], 3, "nope is not tracked"),
    (["checkout", "nope"], 3, "nope is not tracked"),
    (["unprotect"], 2, "tally unprotect: Missing argument 'PATH'."),
    (["run", "nosuchstage"], 3, "no tally.yaml or dvc.yaml"),
    (["run", "-j", "0", "--run-all"], 2, "Invalid value for '-j' / '--jobs': '0' is not at least 1"),
    (["run", "-o", "x.txt"], 2, "need a command"),
    (["save", "-n", "bad name"], 2, "invalid experiment name"),
    (["save", "-n"], 2, "Option '-n' requires an argument."),
    (["show", "--filter", "acc >"], 2, "filter"),
    (["show", "--sort-by", "nope:desc"], 2, "nope"),
    (["show", "--json", "--csv"], 2, "choose one of --json, --csv, --md"),
    (["show", "--num", "-1"], 2, "Invalid value for '--num': '-1' is negative"),
    (["diff"], 2, "tally diff: Missing argument 'A'."),
    (["diff", "nope"], 3, "no experiment named 'nope'"),
    (["diff", "a", "b", "c"], 2, "Got unexpected extra argument(s) (c)"),
    (["logs"], 2, "tally logs: Missing argument 'NAME'."),
    (["logs", "nope"], 3, "no experiment or queue entry named 'nope'"),
    (["restore", "nope"], 3, "no experiment named 'nope'"),
    (["restore", "x", "--step", "two"], 2, "Invalid value for '--step': 'two' is not a whole number"),
    (["promote", "--top", "2"], 2, "--top needs --sort-by"),
    (["promote", "nope"], 3, "no experiment named 'nope'"),
    (["remove"], 2, "nothing"),
    (["remove", "--keep-best", "1", "--failed"], 2, "--sort-by"),
    (["rename", "nope", "new"], 3, "no experiment named 'nope'"),
    (["rename", "x"], 2, "tally rename: Missing argument 'NEW'."),
    (["gc"], 2, "stdin is not a terminal"),
    (["gc", "--grace", "soon", "--yes"], 2, "soon"),
    (["gc", "--keep-best", "2", "--sort-by", "acc", "--yes"], 2, "must end in :desc or :asc"),
    (["gc", "--sort-by", ":max", "--dry-run"], 2, "empty sort key"),
    (["fsck", "--repair=yes"], 2, "Option '--repair' does not take a value."),
    (["config", "no.such.key"], 2, "unknown config key 'no.such.key'"),
    (["config", "cache.compression", "maybe"], 2, "must be one of"),
    (["queue", "status", "x"], 2, "Got unexpected extra argument(s) (x)"),
    (["queue", "logs", "nope"], 3, "no queue entry named 'nope'"),
    (["queue", "kill"], 2, "tally queue kill: Missing argument 'NAME'."),
    (["queue", "kill", "nope"], 3, "no queue entry named 'nope'"),
    (["queue", "stop", "--kill=1"], 2, "Option '--kill' does not take a value."),
    (["queue", "remove"], 2, "nothing to remove"),
    (["queue", "retry"], 2, "nothing to retry"),
    (["queue", "start", "-j", "0"], 2, "Invalid value for '-j' / '--jobs': '0' is not at least 1"),
    (["push", "--all"], 2, "--all, --filter and --top select experiments"),
    (["push"], 3, "no remote is configured"),
    (["pull", "-j", "0"], 2, "Invalid value for '-j' / '--jobs': '0' is not at least 1"),
    (["fetch", "-r", "nope"], 3, "no remote named 'nope'"),
    (["remote", "add", "bad name", "/x"], 2, "invalid remote name"),
    (["remote", "list", "x"], 2, "Got unexpected extra argument(s) (x)"),
    (["remote", "remove", "nope"], 3, "no remote named 'nope'"),
    (["remote", "default", "nope"], 3, "no remote named 'nope'"),
    (["remote", "modify", "nope", "url", "/x"], 3, "no remote named 'nope'"),
    (["plots", "show", "--format", "pdf"], 2, "Invalid value for '--format': 'pdf' is not one of"),
    (["plots", "diff", "x", "nope"], 3, "no experiment named 'nope'"),
    (["plots", "diff", "x", "--json", "--open"], 2, "--json prints the document and writes nothing"),
    (["ui", "--port", "65536"], 2, "Invalid value for '--port': '65536' is not between 0 and 65535"),
    (["nosuchcommand"], 2, "No such command 'nosuchcommand'"),
    (["queue", "nosuch"], 2, "No such command 'nosuch'"),
]


@pytest.mark.parametrize("argv, code, needle", BAD_INPUT, ids=[" ".join(a) for a, _, _ in BAD_INPUT])
def test_bad_input(lab: Lab, capsys, argv: list[str], code: int, needle: str) -> None:
    lab.exp("x")  # an experiment to name
    got, out, err = tally(capsys, *argv)
    assert got == code, err
    assert needle in err and err.startswith("tally: error: ")
    assert "Traceback" not in err


def test_every_command_has_bad_input_of_its_own() -> None:
    covered = set()
    for argv, _, _ in BAD_INPUT:
        covered.add(" ".join(argv[:2]) if isinstance(commands.load(argv[0]), Group) else argv[0])
    assert set(COMMANDS) <= covered


@pytest.mark.parametrize("best, worst", [("acc:desc", "acc:asc"), ("acc:max", "acc:min"),
                                         ("metrics.json:acc:MAX", "metrics.acc:Min")])
def test_sort_keys_read_alike_in_show_promote_remove_and_gc(lab: Lab, capsys, best, worst) -> None:
    import json

    for name, acc in (("low", 0.1), ("high", 0.9), ("mid", 0.5)):
        lab.exp(name, metrics=M(acc))
    code, out, _ = tally(capsys, "show", "--json", "--sort-by", best)
    assert code == 0 and [r["name"] for r in json.loads(out)] == ["high", "mid", "low"]
    code, out, _ = tally(capsys, "show", "--json", "--sort-by", worst)
    assert code == 0 and [r["name"] for r in json.loads(out)] == ["low", "mid", "high"]
    code, out, _ = tally(capsys, "promote", "--top", "1", "--sort-by", best, "--dry-run", "--json")
    assert code == 0 and [r["name"] for r in json.loads(out)] == ["high"]
    code, out, _ = tally(capsys, "remove", "--all", "--keep-best", "1", "--sort-by", worst, "--dry-run",
                         "--json")
    assert code == 0 and sorted(r["name"] for r in json.loads(out)["removed"]) == ["high", "mid"]
    code, out, _ = tally(capsys, "gc", "--keep-best", "1", "--sort-by", best, "--dry-run", "--json")
    assert code == 0 and sorted(d["name"] for d in json.loads(out)["dropped_experiments"]) == ["low", "mid"]


def test_no_store_is_exit_6(tmp_path: Path, monkeypatch, capsys) -> None:
    monkeypatch.chdir(tmp_path)
    code, _, err = tally(capsys, "show")
    assert code == 6 and err.startswith("tally: error: ")
    code, _, err = tally(capsys, "init")
    assert code == 6 and "Git" in err


# -- the funnel ----------------------------------------------------------------------------

def _failing(monkeypatch: pytest.MonkeyPatch, name: str, exc: BaseException) -> None:
    """Make command `name` raise `exc` from its body, on either front end."""
    import importlib

    module = importlib.import_module(f"cli.commands.{name}")

    def body(_args):
        raise exc
    monkeypatch.setattr(module, "COMMAND", module.COMMAND._replace(body=body))


@pytest.mark.parametrize("name", ["status", "init"])  # a fast command, one through Typer
def test_an_unexpected_exception_is_one_line_and_exit_1(lab: Lab, capsys, monkeypatch, name) -> None:
    _failing(monkeypatch, name, ZeroDivisionError("boom\nsecond line"))
    code, out, err = tally(capsys, name)
    assert (code, out) == (1, "")
    assert err == ("tally: error: unexpected ZeroDivisionError: boom\n"
                   "  hint: this is a bug in tally; rerun with --debug for a traceback to report\n")
    code, _, err = tally(capsys, "--debug", name)
    assert code == 1 and "Traceback (most recent call last)" in err and "ZeroDivisionError: boom" in err
    assert err.rstrip().endswith("tally: error: unexpected ZeroDivisionError: boom")
    code, _, err = tally(capsys, name, "--debug")  # after the command too
    assert code == 1 and "Traceback" in err


@pytest.mark.parametrize("name", ["status", "init"])
def test_interrupted_is_130(lab: Lab, capsys, monkeypatch, name) -> None:
    _failing(monkeypatch, name, KeyboardInterrupt())
    assert tally(capsys, name) == (130, "", "tally: interrupted\n")


@pytest.mark.parametrize("name", ["status", "init"])
def test_a_closed_pipe_is_success(lab: Lab, capsys, monkeypatch, name) -> None:
    _failing(monkeypatch, name, BrokenPipeError(errno.EPIPE, "Broken pipe"))
    monkeypatch.setattr(entry, "_pipe_closed", lambda: 0)  # the real one points fd 1 at /dev/null
    assert tally(capsys, name) == (0, "", "")


def test_an_os_error_becomes_the_tally_error_it_means(lab: Lab, capsys, monkeypatch) -> None:
    _failing(monkeypatch, "status", OSError(errno.ENOSPC, "No space left on device", "/x"))
    code, _, err = tally(capsys, "status")
    assert code == 6 and "no space left on device" in err and "Traceback" not in err


def test_show_piped_into_head_is_quiet_success(lab: Lab) -> None:
    for i in range(30):
        lab.exp(f"e{i}")
    done = subprocess.run(f"{sys.executable} -m cli show | head -1", shell=True, cwd=lab.root,
                          capture_output=True, text=True, timeout=120)
    assert done.stdout.startswith("name") and done.stderr == ""


# -- tally logs ----------------------------------------------------------------------------

def test_a_failed_runs_log_is_one_command_away(lab: Lab, capsys) -> None:
    code, _, err = tally(capsys, "run", "-q", "-n", "bad", "--", "sh", "-c", "echo to-out; echo to-err >&2; exit 3")
    assert code == 8 and "`tally logs bad`" in err
    code, out, err = tally(capsys, "logs", "bad")
    assert code == 0 and "to-out" in out and "to-err" in out and err == ""
    code, out, _ = tally(capsys, "logs", f"{lab.head()[:7]}/bad")
    assert code == 0 and "to-out" in out


def test_a_saved_experiment_has_no_log(lab: Lab, capsys) -> None:
    assert tally(capsys, "save", "-n", "snap")[0] == 0
    code, _, err = tally(capsys, "logs", "snap")
    assert code == 3 and "no captured output" in err


def test_help_and_version_import_neither_pydantic_nor_the_library(lab: Lab) -> None:
    probe = ("import sys; from cli.entry import run; run(sys.argv[1:]); "
             "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('pydantic', 'rich', 'cas'));"
             "sys.stderr.write(repr(bad))")
    for argv in (["--help"], ["run", "--help"], ["show", "-h"], ["queue", "--help"], ["--version"]):
        done = subprocess.run([sys.executable, "-c", probe, *argv], cwd=lab.root, capture_output=True,
                              text=True, timeout=120)
        assert done.returncode == 0 and done.stderr == "[]", (argv, done.stderr)
