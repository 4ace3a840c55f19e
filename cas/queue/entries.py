"""The queue as users see and edit it: never a run that nobody runs.

cas/queue/directory.py lists and moves entry files as they are. A running entry whose
worker died is still a file under running/ until someone reaps it (cas/queue/workers.py
moves it to failed/, or to done/ when its record was published). Every function here
reaps first, then does what its directory.py namesake does: what `tally queue status`,
`show`, `remove`, `retry` and `kill` see and act on is the queue's true state.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Iterable

from cas.queue import directory
from cas.queue.directory import STATES, Item
from cas.queue.workers import reap

if TYPE_CHECKING:
    from cas.workspace.project import Project


def items(project: Project, *, states: Iterable[str] = STATES) -> list[Item]:
    """Every entry, after reaping the runs of dead workers (directory.items)."""
    reap(project)
    return directory.items(project, states=states)


def find(project: Project, key: str, *, states: Iterable[str] = STATES) -> Item:
    """The entry named `key` or whose id starts with `key`, after reaping (directory.find)."""
    reap(project)
    return directory.find(project, key, states=states)


def remove(project: Project, *, keys: Iterable[str] = (), states: Iterable[str] = ()) -> list[Item]:
    """Drop entries by name/id or state, after reaping (directory.remove)."""
    reap(project)
    return directory.remove(project, keys=keys, states=states)


def retry(project: Project, *, keys: Iterable[str] = (), all_failed: bool = False) -> list[Item]:
    """Queue failed entries again, after reaping (directory.retry)."""
    reap(project)
    return directory.retry(project, keys=keys, all_failed=all_failed)


__all__ = ["items", "find", "remove", "retry"]
