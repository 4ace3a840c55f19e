"""The experiment listing kept between requests, and when it must be taken again.

Listing 10,000 experiments (listing.list_rows: one stat per ref, the summary index) costs
~0.2-0.3 s here; filtering and sorting the listed rows (listing.table) ~0.05 s. The
server keeps the last listing and lists again only when something it shows may have
changed. That is told by the modification times of the directories that change when
an experiment is recorded, renamed or removed (`.tally/refs/exps/` and each baseline
directory in it: refs are written by rename into them) or when a queue entry moves
between states (the queue's state directories): together the **generation**.

The stamp is read *before* listing, and a listing is reused only when its stamp is
unchanged and its newest time is older than when the stamp was read by more than
MTIME_SLACK: a directory changed again within one clock tick of an earlier change can
keep the same mtime (git's racy-timestamp problem), so a recent stamp is never
trusted. While something is changing, the server simply lists every time.

Running experiments' live values (step, metrics) change without any of these: they
come from the live endpoint (cas/queue/status.py), which the page polls.
"""

from __future__ import annotations

import os
import threading
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

from cas.experiments import listing

if TYPE_CHECKING:
    from cas.workspace.project import Project

MTIME_SLACK_NS = 50_000_000  # 50 ms: well above any filesystem's timestamp granularity here
QUEUE_STATES = ("pending", "running", "done", "failed")


def generation(project: Project) -> tuple[tuple[str, int], ...]:
    """(directory, mtime_ns) of every directory whose change means relisting."""
    out: list[tuple[str, int]] = []
    exps = os.fspath(project.store_dir / "refs" / "exps")
    dirs = [exps]
    try:
        with os.scandir(exps) as it:
            dirs += sorted(e.path for e in it if e.is_dir(follow_symlinks=False))
    except OSError:
        pass
    queue = project.store_dir / "queue"
    dirs += [os.fspath(queue / s) for s in QUEUE_STATES]
    for d in dirs:
        try:
            out.append((d, os.stat(d).st_mtime_ns))
        except OSError:
            out.append((d, -1))
    return tuple(out)


@dataclass(frozen=True)
class Listed:
    experiments: list[listing.ExperimentRow]
    head: str | None
    stamp: tuple[tuple[str, int], ...]
    taken: int  # time.time_ns() when the stamp was read


class ListingCache:
    """listing.list_rows(project, all_baselines=True), reused while nothing changed."""

    def __init__(self, project: Project) -> None:
        self.project = project
        self._last: Listed | None = None
        # One listing at a time: two requests arriving together share the work.
        self._lock = threading.Lock()

    def get(self) -> Listed:
        with self._lock:
            now = time.time_ns()
            stamp = generation(self.project)
            last = self._last
            if last is not None and last.stamp == stamp and self._settled(last):
                return last
            exps, head = listing.list_rows(self.project, all_baselines=True)
            self._last = Listed(exps, head, stamp, now)
            return self._last

    @staticmethod
    def _settled(listed: Listed) -> bool:
        newest = max((m for _, m in listed.stamp), default=-1)
        return newest < listed.taken - MTIME_SLACK_NS

    def invalidate(self) -> None:
        with self._lock:
            self._last = None

    def stamp_text(self) -> str:
        """The generation as a short string the page compares to know it must reload."""
        import hashlib
        return hashlib.blake2b(repr(generation(self.project)).encode(), digest_size=8).hexdigest()


__all__ = ["ListingCache", "Listed", "generation"]
