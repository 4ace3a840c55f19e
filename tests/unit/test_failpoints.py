"""cas/core/failpoints.py: a failpoint kills at its N-th hit and not before, takes its
parent or its process group when asked, costs nothing unarmed, and the module's table
names every failpoint in cas/ (and no other)."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest

import cas
from cas.core import failpoints, forked


def hits_before_death(spec: str, name: str, **kw) -> tuple[int, int]:
    """In a forked child armed with `spec`: how many hits of `name` it reported, and
    its wait status."""
    r, w = os.pipe()

    def work() -> bytes:
        os.close(r)
        for i in range(1, 6):
            os.write(w, b"%d\n" % i)
            failpoints.failpoint(name, **kw)
        return b""

    failpoints.arm(spec)
    try:
        child = forked.start(work)
    finally:
        failpoints.arm(None)
    os.close(w)
    with os.fdopen(r, "rb") as f:
        seen = f.read().split()
    _, status = child.result()
    return len(seen), status


@pytest.mark.parametrize("spec, survived", [("a:b", 1), ("a:b:1", 1), ("a:b:3", 3), ("other", 5),
                                            ("a:b:9", 5), ("", 5)])
def test_the_nth_hit_kills(spec: str, survived: int) -> None:
    n, status = hits_before_death(spec, "a:b")
    assert n == survived
    killed = os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL
    assert killed == (survived < 5)


def test_arming_here_never_kills_here_unless_reached() -> None:
    failpoints.arm("a:b")
    try:
        assert failpoints.armed() == "a:b"
        failpoints.failpoint("a:c")  # another name: nothing
    finally:
        failpoints.arm(None)
    assert failpoints.armed() is None
    failpoints.failpoint("a:b")  # disarmed: nothing


CHILD = r"""
import os, sys, time
from cas.core import failpoints
r, w = os.pipe()
helper = os.fork()
if helper == 0:  # a forked helper of the command, as hashing children are
    os.read(r, 1)  # not before the command has said who its helper is
    if sys.argv[1] == "parent":
        failpoints.failpoint("x:y", parent=True)
    time.sleep(30)
    os._exit(0)
print(helper, flush=True)
os.write(w, b"!")
if sys.argv[1] == "group":
    failpoints.failpoint("x:y", group=True)
else:
    os.waitpid(helper, 0)
print("survived", flush=True)
"""


@pytest.mark.parametrize("how", ["group", "parent"])
def test_the_command_dies_with_its_helpers(how: str) -> None:
    """group: the command, its own session's leader, takes its forked helper with it.
    parent: the helper takes the command."""
    r = subprocess.run([sys.executable, "-c", CHILD, how], env={**os.environ, "TALLY_FAILPOINT": "x:y"},
                       capture_output=True, text=True, timeout=60, start_new_session=True)
    assert r.returncode == -signal.SIGKILL and "survived" not in r.stdout, r.stderr
    helper = int(r.stdout.split()[0])
    with pytest.raises(ProcessLookupError):
        for _ in range(100):  # reaped by init once killed
            os.kill(helper, 0)
            __import__("time").sleep(0.05)


def test_group_kills_only_a_group_its_process_or_parent_leads() -> None:
    """In a process that does not lead its group (pytest's own, here, in a forked
    child), `group` kills the process alone, never the group it happens to be in."""
    n, status = hits_before_death("x:y", "x:y", group=True)
    assert n == 1 and os.WTERMSIG(status) == signal.SIGKILL  # and this process lives


def test_the_table_names_every_failpoint_in_cas() -> None:
    root = Path(cas.__file__).parent
    source = {p: p.read_text() for p in root.rglob("*.py")}
    used = {n for text in source.values() for n in re.findall(r'failpoint\("([a-z]+:[a-z-]+)"', text)}
    # Steps named by a prefix (fsops.atomic_write(..., failpoints="pointer")) ...
    steps = re.findall(r'failpoint\(f"\{failpoints\}:([a-z-]+)"', source[root / "core" / "fsops.py"])
    used |= {f"{prefix}:{step}" for text in source.values()
             for prefix in re.findall(r'failpoints="([a-z]+)"', text) for step in steps}
    # ... and the executor's, as executor:<point> and worker:<point>.
    points = re.findall(r'_failpoint\("([a-z]+)"\)', source[root / "workers" / "executor.py"])
    used |= {f"{who}:{p}" for who in ("executor", "worker") for p in points}
    doc = failpoints.__doc__ or ""
    named = set(re.findall(r"\b([a-z]+:[a-z-]+)\b", doc))
    for who, alternatives in re.findall(r"\b(executor):([a-z|]+)", doc):
        named |= {f"{w}:{p}" for w in (who, "worker") for p in alternatives.split("|")}
    assert len(used) > 20 and used == named, (sorted(used - named), sorted(named - used))
