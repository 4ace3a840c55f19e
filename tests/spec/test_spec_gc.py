"""spec/gc.md cannot drift: its worked example runs against the implementation.

The page's blocks are processed in order in one fresh directory:

    ```console                       `$ cmd` then its exact stdout; `[exit N]` last
                                     means the command must exit N. Commands run in
                                     bash with the real `tally` CLI first on PATH.
    ```text spec:gc-fate grace=G [flags=--all-commits,...]
                                     one line per object: `oid  kind  fate`, fate
                                     being `deleted` or `kept by K1,K2` (the root kinds
                                     whose walk reaches it). Checked with a dry run of
                                     gc at that point of the session: every object of
                                     the store is listed, with exactly that fate.

Finally every 64-hex id on the page must have been printed by a console command or
checked by a gc-fate block, and the page has the sections every spec page has.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from support import gclab
from cas.gc import collect as gc_mod
from cas.core.durations import parse_duration
from cas.workspace.project import open_project

PAGE = Path(__file__).resolve().parents[2] / "spec" / "gc.md"
ID_RE = re.compile(r"\b[0-9a-f]{64}\b")
SECTIONS = ["Terminology", "Synopsis", "Layout", "Invalid values", "Worked example", "Changes",
            "Roots", "The grace rule", "The lock protocol", "The algorithm",
            "Deletion order and the crash argument", "Retention"]

B3SUM_SHIM = """
    import sys, blake3
    for a in sys.argv[1:] or ["-"]:
        data = sys.stdin.buffer.read() if a == "-" else open(a, "rb").read()
        print(f"{blake3.blake3(data).hexdigest()}  {a}")
"""


def blocks() -> list[tuple[str, dict[str, str], str]]:
    """(kind, args, text) of each fenced block: kind is console, gc-fate or other."""
    out, lines, i = [], PAGE.read_text("utf-8").splitlines(), 0
    while i < len(lines):
        m = re.match(r"^(`{3,})(.*)$", lines[i])
        if not m:
            i += 1
            continue
        fence, info = m.group(1), m.group(2).split()
        body = []
        i += 1
        while i < len(lines) and lines[i].rstrip() != fence:
            body.append(lines[i])
            i += 1
        i += 1
        kind = "console" if info[:1] == ["console"] else next(
            (w[5:] for w in info[1:] if w.startswith("spec:")), "other")
        args = dict(w.split("=", 1) for w in info[1:] if "=" in w)
        out.append((kind, args, "".join(x + "\n" for x in body)))
    return out


def test_page_has_the_sections() -> None:
    headings = re.findall(r"^## (.+)$", PAGE.read_text("utf-8"), flags=re.M)
    for s in SECTIONS:
        assert s in headings, f"spec/gc.md lacks '## {s}'"


def _env(tmp: Path) -> dict[str, str]:
    bindir = tmp / "bin"
    bindir.mkdir()
    os.symlink(Path(sys.executable).with_name("tally") if Path(sys.executable).with_name("tally").exists()
               else shutil.which("tally"), bindir / "tally")
    if shutil.which("b3sum") is None:
        (bindir / "b3sum").write_text(f"#!{sys.executable}\n" + textwrap.dedent(B3SUM_SHIM))
        (bindir / "b3sum").chmod(0o755)
    return {**os.environ, "PATH": f"{bindir}{os.pathsep}{os.environ['PATH']}", "LC_ALL": "C"}


def _fate(workdir: Path, args: dict[str, str], text: str, monkeypatch) -> None:
    captured = gclab.markers(monkeypatch)
    flags = {f.lstrip("-").replace("-", "_"): True for f in args.get("flags", "").split(",") if f}
    project = open_project(workdir)
    report = gc_mod.gc(project, grace_s=parse_duration(args["grace"]), dry_run=True, **flags)
    project.statcache.close()
    marker = captured[-1]
    names = {b: k for k, b in marker.bits.items()}
    deleted = {d.oid: d.kind for d in report.deleted}
    want = {}
    for line in text.splitlines():
        oid, kind, fate = line.split(None, 2)
        want[oid] = (kind, fate)
    got = {}
    for oid in project.store.iter_oids():
        if oid in deleted:
            got[oid] = (deleted[oid], "deleted")
        else:
            m = marker.marks[oid]
            kinds = [names[b] for b in sorted(names) if m & b]
            got[oid] = (marker.walker.kinds[oid], "kept by " + ",".join(kinds))
    assert got == want


def test_worked_example(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    workdir = tmp_path / "project"
    workdir.mkdir()
    env = _env(tmp_path)
    checked: set[str] = set()
    for kind, args, text in blocks():
        if kind == "gc-fate":
            _fate(workdir, args, text, monkeypatch)
            checked.update(ID_RE.findall(text))
        elif kind == "console":
            steps: list[tuple[str, list[str]]] = []
            for line in text.splitlines():
                if line.startswith("$ "):
                    steps.append((line[2:], []))
                else:
                    steps[-1][1].append(line)
            for cmd, expected in steps:
                rc_want = 0
                if expected and re.fullmatch(r"\[exit \d+\]", expected[-1]):
                    rc_want = int(expected.pop()[6:-1])
                r = subprocess.run(["bash", "-o", "pipefail", "-c", cmd], cwd=workdir, env=env,
                                   capture_output=True, text=True)
                # `| head` may close the pipe early: a SIGPIPE'd tally is not a failure.
                rc = 0 if "| head" in cmd and r.returncode in (0, 141) else r.returncode
                assert rc == rc_want, f"`{cmd}` exited {r.returncode}\n{r.stderr}"
                want = "".join(x + "\n" for x in expected)
                assert r.stdout == want, f"`{cmd}` printed\n{r.stdout}\nnot\n{want}\n{r.stderr}"
                checked.update(ID_RE.findall(want))
    unchecked = set(ID_RE.findall(PAGE.read_text("utf-8"))) - checked
    assert not unchecked, f"spec/gc.md shows ids nothing checked: {sorted(unchecked)}"
