"""Workspace trees as wholes: split into data roots and loose files, or laid over one another.

An experiment's workspace tree holds every file Git would see plus tally-tracked data.
Restoring it, promoting it or materializing it for a queued run treats the two parts
differently: data roots (a path whose pointer file is its sibling in the tree, or a
declared output) are checked out whole by cas/workspace/checkout.py; the loose files
one by one. A checkpoint is a tree of outputs laid over the workspace it came from.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

from cas.objects import pointer, tree

# The store and Git's own directory are never part of a workspace tree, and never
# touched by a restore (`.tally/config` and `.tally/.gitignore` are tracked by Git).
NEVER_TOUCHED = (".tally/", ".git/")


@dataclass
class TreePlan:
    """A workspace tree split for checkout: data roots (materialized by
    cas/workspace/checkout.py) and every other file, by path."""

    loose: dict[str, tree.Entry] = field(default_factory=dict)  # path -> entry
    data_files: dict[str, tree.Entry] = field(default_factory=dict)
    data_dirs: dict[str, str] = field(default_factory=dict)  # path -> tree id


def plan_tree(root_oid: str, load: Callable[[str], tree.Tree], data_paths: set[str]) -> TreePlan:
    """Split a workspace tree into data roots and the other (loose) files.

    A data root is a path in `data_paths` or one whose pointer file is its sibling in
    the tree; data directories are not walked (cas/workspace/checkout.py does that).
    """
    plan = TreePlan()

    def visit(oid: str, prefix: str) -> None:
        t = load(oid)
        pointers = {e.name[: -len(pointer.SUFFIX)] for e in t.entries
                    if e.kind == tree.FILE and e.name.endswith(pointer.SUFFIX)}
        for e in t.entries:
            path = prefix + e.name
            if not prefix and e.name in (".tally", ".git"):
                continue  # never in a workspace tree; never written if one had them
            data = path in data_paths or e.name in pointers
            if e.kind == tree.DIR:
                if data:
                    plan.data_dirs[path] = e.oid
                else:
                    visit(e.oid, path + "/")
            elif data:
                plan.data_files[path] = e
            else:
                plan.loose[path] = e

    visit(root_oid, "")
    return plan


def overlay(store, base: str, top: str, writer) -> str:
    """Store and return a tree holding every entry of `base` and of `top`, `top`
    winning on a clash (directories present in both are merged): a checkpoint's
    outputs laid over the workspace it was taken in."""
    load = tree.CachedLoader(tree.reader(store.get))

    def merge(a: str, b: str) -> tuple[str, int, int]:
        ta, tb = load(a), load(b)
        entries = {e.name: e for e in ta.entries}
        files: dict[str, int] = {}
        for e in ta.entries:
            if e.kind == tree.DIR:
                files[e.name] = load(e.oid).total_files
        for e in tb.entries:
            old = entries.get(e.name)
            if e.kind == tree.DIR and old is not None and old.kind == tree.DIR:
                oid, size, n = merge(old.oid, e.oid)
                entries[e.name] = tree.Entry(e.name, tree.DIR, oid, size, 0)
                files[e.name] = n
            else:
                entries[e.name] = e
                if e.kind == tree.DIR:
                    files[e.name] = load(e.oid).total_files
                else:
                    files.pop(e.name, None)
        t = tree.make(list(entries.values()), subtree_files=files)
        return writer.put_bytes(tree.encode(t), compress=True), t.total_bytes, t.total_files

    return merge(base, top)[0]


__all__ = ["NEVER_TOUCHED", "TreePlan", "plan_tree", "overlay"]
