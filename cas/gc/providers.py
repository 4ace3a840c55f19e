"""The root providers: one explicit list of everything gc and fsck must keep.

A provider yields `(label, object id, kind)` for every object its owner keeps alive,
where kind is True (a tree), False or None (unknown: the object's header decides, as
for a record) or a kind name of cas/gc/reachability.py ("blob", "tree", "record").

The list is written out here, not filled by registration at import: a provider that
nothing imported would silently stop being a root, and gc would delete its data.
gc (cas/gc/roots.py) and fsck (cas/gc/fsck.py) both walk exactly `PROVIDERS`.
"""

from __future__ import annotations

from typing import Callable, Iterable, NamedTuple

from cas.gc.reachability import BLOB, TREE
from cas.objects import pointer
from cas.pipeline import runcache
from cas.queue import directory as queue
from cas.store import refs
from cas.workspace.project import Project

RootTriple = tuple[str, str, "bool | str | None"]


class Provider(NamedTuple):
    """One source of roots and the kind its roots are reported under."""

    kind: str  # "workspace" | "experiments" | "run-cache" | "queue"
    roots: Callable[[Project], Iterable[RootTriple]]


def pointer_roots(project: Project) -> Iterable[RootTriple]:
    """Every `*.tally` pointer of the work tree."""
    for rel in pointer.find_all(project.root):
        ptr = pointer.read(project.root, rel)
        # A file's object is user data whatever its first bytes are: never decoded.
        yield f"{rel}{pointer.SUFFIX}", ptr.oid, TREE if ptr.is_dir else BLOB


PROVIDERS: tuple[Provider, ...] = (
    Provider("workspace", pointer_roots),
    Provider("experiments", refs.roots),
    Provider("run-cache", runcache.roots),
    Provider("queue", queue.roots),
)


def kind_hint(kind: "bool | str | None") -> str | None:
    """A provider's third field as a walker hint: a kind name, or None (read the header)."""
    if kind is True:
        return TREE
    if kind is False or kind is None:
        return None
    return str(kind)


__all__ = ["Provider", "PROVIDERS", "pointer_roots", "kind_hint", "RootTriple"]
