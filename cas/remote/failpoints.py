"""Crash injection for the remote's crash tests (tests/crash/test_remote_crash.py).

`TALLY_FAILPOINT=remote:<point>` (or `remote:<point>:N`) SIGKILLs this process the
N-th time (default: first) a transfer reaches `<point>`, the way
cas/gc/deletion.py's failpoints do for gc. Points, in the order a push meets them:

    push:before-pack     a pack is built, not yet sent
    push:after-pack      a pack was sent (its index is not written)
    push:before-large    a large object is about to be sent
    push:after-large     it was sent
    push:before-index    every pack and large object is sent
    push:after-index     the index is written (refs are not)
    push:before-ref      a ref is about to be written
    push:after-ref       it was written
    fetch:after-publish  a fetch published objects locally (refs are not written)

Read once, at import: a process that is not under test pays one dict lookup.
"""

from __future__ import annotations

import os
import signal

_WANT = os.environ.get("TALLY_FAILPOINT", "")
_hits: dict[str, int] = {}


def hit(point: str) -> None:
    """Die here if the environment says so (see the module docstring)."""
    if not _WANT.startswith("remote:"):
        return
    want, _, nth = _WANT[len("remote:"):].rpartition(":")
    if not nth.isdigit():
        want, nth = _WANT[len("remote:"):], "1"
    if want != point:
        return
    _hits[point] = _hits.get(point, 0) + 1
    if _hits[point] == int(nth):
        os.kill(os.getpid(), signal.SIGKILL)


__all__ = ["hit"]
