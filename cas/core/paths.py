"""Which paths content may name: the one rule for pointers, outputs, trees and symlinks.

Anything a repository, a store or a remote says is a path (a pointer file's name, a
pipeline's `outs:` and `deps:`, an experiment record's outputs, a tree's entries, a
stored symlink's target) is judged here before tally reads, writes or deletes there
(spec/checkout.md, "Path safety"). Such a path:

- is relative and POSIX (`/` separated), at most MAX_PATH bytes, each component at
  most MAX_NAME bytes, with no NUL;
- has no empty, `.` or `..` component: it cannot leave the work tree lexically;
- has no component that is `.git` or `.tally`, in any case (a case-insensitive
  filesystem takes `.GIT` for `.git`): tally never touches a repository's or a
  store's own directory, the project's or a nested one's (submodules included);
- is reached without following a symlink: every existing parent directory of it in
  the work tree is a real directory (`check_parents`), so a link cannot carry a write
  outside the work tree.

A symlink tally stores or recreates must point inside the tree it belongs to:
relative, not through another symlink of that tree, not climbing above the tree's
root, not into `.git` or `.tally` (`symlink_problem`). The same rule refuses such a
link when `tally add` meets it and when a checkout, restore, promote or queued run
would write it.
"""

from __future__ import annotations

import os
import stat

from cas.core.errors import UnsafePath

MAX_PATH = 4096  # bytes: PATH_MAX on Linux
MAX_NAME = 255  # bytes: NAME_MAX on the common filesystems
RESERVED = frozenset({".git", ".tally"})


def path_problem(rel: str) -> str | None:
    """Why `rel` may not be named by content, or None when it may (module doc)."""
    if not rel:
        return "it is empty"
    if "\0" in rel:
        return "it contains a NUL byte"
    if rel.startswith("/") or (len(rel) > 1 and rel[1] == ":" and rel[0].isalpha()):
        return "it is absolute"
    try:
        size = len(rel.encode("utf-8", "surrogateescape"))
    except UnicodeEncodeError:
        return "it is not valid UTF-8"
    if size > MAX_PATH:
        return f"it is longer than {MAX_PATH} bytes"
    for part in rel.split("/"):
        if part in ("", ".", ".."):
            return "it leaves the work tree" if part == ".." else "it has an empty or '.' component"
        if part.lower() in RESERVED:
            return f"it names {part!r}, a directory tally never touches"
        if len(part.encode("utf-8", "surrogateescape")) > MAX_NAME:
            return f"a component is longer than {MAX_NAME} bytes"
    return None


def check_path(rel: str, *, source: str) -> str:
    """`rel` if content may name it; else UnsafePath naming `source`, what asked for it.

    Raises:
        UnsafePath (exit 2): `rel` is absolute, escapes, or names `.git`/`.tally`.
    """
    problem = path_problem(rel)
    if problem is not None:
        raise UnsafePath(f"{source} names {rel!r}: {problem}", path=source,
                         hint="tally refuses it and changes nothing; fix or remove the file "
                              "that names it")
    return rel


def check_parents(root: str | os.PathLike[str], rel: str, *, source: str) -> None:
    """Refuse when an existing parent directory of `root/rel` is not a real directory.

    A symlinked parent would carry whatever tally reads, writes or deletes at `rel`
    to wherever the link points, outside the work tree maybe. Parents that do not
    exist yet are fine (they will be created as directories).

    Raises:
        UnsafePath: a parent of `rel` is a symlink (or a file).
    """
    base = os.fspath(root)
    parts = rel.split("/")[:-1]
    for i in range(len(parts)):
        p = os.path.join(base, *parts[: i + 1])
        try:
            st = os.lstat(p)
        except FileNotFoundError:
            return
        if stat.S_ISLNK(st.st_mode):
            raise UnsafePath(f"{source} names {rel!r}, but {'/'.join(parts[: i + 1])} is a "
                             "symlink: tally does not follow links out of the work tree",
                             path=source, hint="replace the link with the directory itself")
        if not stat.S_ISDIR(st.st_mode):
            return  # a file in the way: the caller reports it as a conflict


def symlink_problem(link_rel: str, target: str, links: frozenset[str] = frozenset()) -> str | None:
    """Why a symlink at `link_rel` (inside its tree) may not point at `target`, or None.

    The target is walked component by component from the link's directory. It is
    refused when absolute, when `..` climbs above the tree's root, when it passes
    *through* another symlink of the tree (`links`, tree-relative paths: whatever
    that link points at, a lexical check cannot vouch for the path beyond it, so a
    chain of individually harmless links `a -> .`, `b -> a/..` is refused as a whole),
    or when it names `.git` or `.tally`.
    """
    if not target:
        return "its target is empty"
    if "\0" in target:
        return "its target contains a NUL byte"
    if target.startswith("/"):
        return "it points to an absolute path"
    parts = link_rel.split("/")[:-1] if link_rel else []
    comps = [c for c in target.split("/") if c not in ("", ".")]
    for i, part in enumerate(comps):
        if part == "..":
            if not parts:
                return "it points outside its tree"
            parts.pop()
            continue
        if part.lower() in RESERVED:
            return f"it points into {part!r}"
        parts.append(part)
        if i < len(comps) - 1 and "/".join(parts) in links:
            return "it points through another symlink of its tree"
    return None


def check_symlink(link_rel: str, target: str, links: frozenset[str] = frozenset(), *,
                  source: str) -> str:
    """`target` if a symlink at `link_rel` may point there; else UnsafePath."""
    problem = symlink_problem(link_rel, target, links)
    if problem is not None:
        raise UnsafePath(f"refusing symlink {link_rel} -> {target} ({source}): {problem}",
                         path=source, hint="tally stores and restores only links that stay "
                                           "inside their tree; nothing was written")
    return target


__all__ = ["MAX_PATH", "MAX_NAME", "RESERVED", "path_problem", "check_path", "check_parents",
           "symlink_problem", "check_symlink"]
