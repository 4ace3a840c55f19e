"""cas/core/forked.py: a child reports what its function returns; a failure is an empty
report; stop_all leaves no child behind and never signals a reaped pid."""

from __future__ import annotations

import os
import time

import pytest

from cas.core import forked


def test_a_child_reports_what_its_work_returns() -> None:
    big = os.urandom(300_000)  # far more than a pipe holds: the parent reads as it goes
    child = forked.start(lambda: b"ok:" + big)
    data, status = child.result()
    assert data == b"ok:" + big and os.waitstatus_to_exitcode(status) == 0
    assert child.pid == -1 and child.fd == -1


@pytest.mark.parametrize("how", ["raises", "exits"])
def test_a_child_that_fails_reports_nothing(how: str) -> None:
    def work() -> bytes:
        if how == "raises":
            raise RuntimeError("boom")
        os._exit(7)

    data, status = forked.start(work).result()
    assert data == b"" and os.waitstatus_to_exitcode(status) == (1 if how == "raises" else 7)


def test_stop_all_kills_and_reaps_only_what_was_not_collected(monkeypatch) -> None:
    done = forked.start(lambda: b"x")
    assert done.result()[0] == b"x"
    slow = forked.start(lambda: time.sleep(60) or b"late")
    pid = slow.pid
    killed = []
    real_kill = os.kill
    monkeypatch.setattr(forked.os, "kill", lambda pid, sig: killed.append(pid) or real_kill(pid, sig))
    t0 = time.monotonic()
    forked.stop_all([done, slow])
    assert time.monotonic() - t0 < 10 and len(killed) == 1 and slow.pid == -1
    assert killed == [pid]
    with pytest.raises(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)  # reaped already
