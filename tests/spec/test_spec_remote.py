"""spec/remote.md cannot drift: its worked example runs, and its dumps are checked.

Blocks, in page order:

    ```console                          `$ cmd` then its exact stdout, run in one fresh
                                        project directory (`proj`, beside which `../remote`
                                        is created). `tally ...` runs through the cas
                                        library (init, add, remote add, push, pull) and
                                        prints nothing; other commands run in bash.
    ```text spec:remote-pack oid=H      hex of a pack: BLAKE3 == H, header TLYP 1
    ```text spec:remote-index-annotated oid=H
                                        annotated index: on each line the hex before the
                                        first run of 2+ spaces; together an index file
                                        whose BLAKE3 is H, which decodes, re-encodes to
                                        the same bytes, and names the pack above
    ```text spec:remote-index-invalid   one hex index per line: each is a FormatError
    ```text spec:constants              `module.NAME = literal  # note`: == cas.module.NAME

Every 64-hex id on the page must have been printed by a console command or checked by
one of the blocks above.
"""

from __future__ import annotations

import ast
import importlib
import os
import re
import shlex
import subprocess
import sys
import textwrap
from pathlib import Path

import blake3
import pytest

from cas.core.errors import FormatError, TallyError
from cas.remote import packfile

PAGE = Path(__file__).resolve().parents[2] / "spec" / "remote.md"
ID_RE = re.compile(r"\b[0-9a-f]{64}\b")
SECTIONS = ["Terminology", "Synopsis", "Layout", "Invalid values", "Read and write ordering",
            "The lock protocol", "Remote gc", "Threat model", "Settings", "Worked example",
            "Changes"]
B3SUM = """
import sys, blake3
for a in sys.argv[1:] or ["-"]:
    data = sys.stdin.buffer.read() if a == "-" else open(a, "rb").read()
    print(f"{blake3.blake3(data).hexdigest()}  {a}")
"""


@pytest.fixture(autouse=True)
def tiny_thresholds() -> None:
    """Override conftest's: the page states the code's real constants."""


def blocks() -> list[tuple[str, dict[str, str], str]]:
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


def _hex(text: str) -> bytes:
    return bytes.fromhex("".join(text.split()))


def test_page_has_the_sections_and_is_indexed() -> None:
    headings = re.findall(r"^## (.+)$", PAGE.read_text("utf-8"), flags=re.M)
    for s in SECTIONS:
        assert s in headings, f"spec/remote.md lacks '## {s}'"
    assert "](remote.md)" in (PAGE.parent / "README.md").read_text("utf-8")


def test_invalid_indexes_are_format_errors() -> None:
    found = [t for k, _, t in blocks() if k == "remote-index-invalid"]
    assert found
    for line in found[0].split():
        with pytest.raises(FormatError):
            packfile.decode_index(bytes.fromhex(line))


def test_constants() -> None:
    found = [t for k, _, t in blocks() if k == "constants"]
    assert found
    for line in found[0].splitlines():
        if not line.strip():
            continue
        left, _, right = line.partition(" = ")
        value = right.split("  #")[0].strip()
        module, _, name = left.strip().rpartition(".")
        got = getattr(importlib.import_module(f"cas.{module}"), name)
        assert got == ast.literal_eval(value), f"{left}: page says {value}, code has {got!r}"


def _tally(argv: list[str], cwd: Path) -> int:
    """The `tally` commands the page uses, through the library (exit status)."""
    from cas.remote import settings
    from cas.sync import data
    from cas.workspace import tracking
    from cas.workspace.project import init_project, open_project

    try:
        if argv == ["init"]:
            init_project(cwd)
        elif argv[0] == "add":
            tracking.add(open_project(cwd), argv[1:], cwd=cwd)
        elif argv[:2] == ["remote", "add"]:
            settings.add(open_project(cwd), argv[2], argv[3], default="--default" in argv)
        elif argv == ["push"]:
            data.push(open_project(cwd)).raise_for_failures()
        elif argv == ["pull"]:
            data.pull(open_project(cwd)).raise_for_failures()
        else:
            raise AssertionError(f"the spec test does not know `tally {' '.join(argv)}`")
    except TallyError as exc:
        return exc.exit_code
    return 0


def test_worked_example(tmp_path: Path) -> None:
    bindir = tmp_path / "bin"
    bindir.mkdir()
    shim = bindir / "b3sum"
    shim.write_text(f"#!{sys.executable}\n" + textwrap.dedent(B3SUM))
    shim.chmod(0o755)
    env = {**os.environ, "PATH": f"{bindir}:{os.environ['PATH']}"}
    proj = tmp_path / "proj"
    proj.mkdir()
    printed: set[str] = set()
    for kind, _, text in blocks():
        if kind != "console":
            continue
        steps: list[tuple[str, list[str]]] = []
        for line in text.splitlines():
            if line.startswith("$ "):
                steps.append((line[2:], []))
            else:
                steps[-1][1].append(line)
        for cmd, expected in steps:
            want_code = 0
            if expected and re.fullmatch(r"\[exit \d+\]", expected[-1]):
                want_code = int(expected.pop()[6:-1])
            if cmd.startswith("tally "):
                code, out = _tally(shlex.split(cmd)[1:], proj), ""
            else:
                done = subprocess.run(["bash", "-c", cmd], cwd=proj, env=env, capture_output=True)
                code, out = done.returncode, done.stdout.decode()
            assert code == want_code, f"`{cmd}` exited {code}"
            assert out.splitlines() == expected, f"`{cmd}` printed:\n{out}"
            printed.update(ID_RE.findall(out))
    # The dumps match the files the session wrote.
    pack = next((a, t) for k, a, t in blocks() if k == "remote-pack")
    data = _hex(pack[1])
    assert blake3.blake3(data).hexdigest() == pack[0]["oid"]
    assert data[:5] == packfile.PACK_MAGIC + b"\x01"
    assert (tmp_path / "remote" / "packs" / f"{pack[0]['oid']}.pack").read_bytes() == data
    ann = next((a, t) for k, a, t in blocks() if k == "remote-index-annotated")
    idx = b"".join(_hex(re.split(r"\s{2,}", line.strip(), maxsplit=1)[0])
                   for line in ann[1].splitlines() if line.strip())
    assert blake3.blake3(idx).hexdigest() == ann[0]["oid"]
    decoded = packfile.decode_index(idx, index_id=ann[0]["oid"])
    assert packfile.encode_index(decoded.packs, decoded.small, decoded.large) == idx
    assert list(decoded.packs) == [pack[0]["oid"]]
    for oid, s in decoded.small.items():  # each row locates its object in the pack
        assert blake3.blake3(data[s.offset:s.offset + s.length]).hexdigest() == oid
    assert (tmp_path / "remote" / "index" / f"{ann[0]['oid']}.idx").read_bytes() == idx
    checked = printed | {pack[0]["oid"], ann[0]["oid"]} | set(decoded.small)
    unchecked = sorted(set(ID_RE.findall(PAGE.read_text("utf-8"))) - checked)
    assert not unchecked, f"spec/remote.md shows ids no example checks: {unchecked}"
