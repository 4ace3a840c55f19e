"""Merkle trees: one canonical object per directory.

Body (inside the envelope, kind b"T", version 1) is a msgpack array:

    [total_bytes, total_files, entries]
    entries = [[name, kind, oid, size, mode], ...]   sorted by name's UTF-8 bytes

    name   str, UTF-8, not empty, no "/" or NUL, not "." or ".."; unique in the tree
    kind   0 file, 1 directory (oid names another tree), 2 symlink (oid names a blob
           holding the link target)
    oid    bin, 32 bytes (the raw BLAKE3 digest)
    size   file: its bytes; directory: the subtree's total_bytes; symlink: target length
    mode   file: 0o644 or 0o755; directory and symlink: 0

total_bytes and total_files count regular files recursively, so a pointer can say how
big a directory is without opening its subtrees. Because every subtree is named by
its id, an unchanged subdirectory costs nothing to store or compare again: diff()
never opens two subtrees with equal ids.
"""

# No `from __future__ import annotations`: typing.NamedTuple compiles every string
# annotation into a ForwardRef, ~0.3 ms a class of every `tally run` start-up.

import sys
from typing import Callable, Iterator, NamedTuple

from cas.objects import envelope
from cas.objects.envelope import check
from cas.core.errors import FormatError

VERSION = 1
FILE, DIR, SYMLINK = 0, 1, 2
KIND_NAMES = {FILE: "file", DIR: "dir", SYMLINK: "symlink"}
FILE_MODES = (0o644, 0o755)
# Never a tree entry: "." and ".." are not names, and a nested Git repository or
# store is never snapshotted, so a tree naming one is hostile (checkout would write
# into .git/ or .tally/ otherwise).
RESERVED_NAMES = frozenset({".", "..", ".git", ".tally"})
# A 64-bit size is plenty; anything above is a hostile or corrupt declaration.
MAX_SIZE = 2**63 - 1


# NamedTuples, not dataclasses: this module is on `tally run`'s import path, where a
# dataclass costs ~1 ms of start-up each (see tests/test_import_budget.py).
class Entry(NamedTuple):
    """One name in a directory."""

    name: str
    kind: int
    oid: str  # lowercase hex
    size: int
    mode: int = 0


class Tree(NamedTuple):
    """A decoded directory: entries sorted by name bytes, plus recursive totals."""

    entries: tuple[Entry, ...]
    total_bytes: int
    total_files: int

    def get(self, name: str) -> Entry | None:
        """The entry called `name`, or None (binary search over the sorted entries)."""
        key = name.encode("utf-8", "surrogateescape")
        lo, hi = 0, len(self.entries)
        while lo < hi:
            mid = (lo + hi) // 2
            mk = self.entries[mid].name.encode("utf-8", "surrogateescape")
            if mk < key:
                lo = mid + 1
            elif mk > key:
                hi = mid
            else:
                return self.entries[mid]
        return None


def check_name(name: str) -> None:
    """Raise FormatError unless `name` is a safe single path component."""
    check(isinstance(name, str) and name != "", "tree entry", "empty or non-string name")
    check(name not in RESERVED_NAMES, "tree entry", f"reserved name {name!r}")
    check("/" not in name and "\0" not in name, "tree entry",
          f"name {name!r} contains '/' or NUL")


def make(entries: list[Entry], *, subtree_files: dict[str, int],
         names_checked: bool = False) -> Tree:
    """Make a canonical Tree from entries in any order.

    Args:
        entries: this directory's entries.
        subtree_files: for each directory entry's name, its subtree's total_files.
        names_checked: the caller already validated every name (a directory listing
            cannot hold duplicates or "/"), so skip the per-name checks.
    Raises:
        FormatError: a bad or duplicate name.
    """
    ordered = sorted(entries, key=lambda e: e.name.encode("utf-8", "surrogateescape"))
    total_bytes = 0
    total_files = 0
    prev = None
    for e in ordered:
        if not names_checked:
            check_name(e.name)
            check(e.name != prev, "tree", f"duplicate name {e.name!r}")
            prev = e.name
        if e.kind == FILE:
            total_bytes += e.size
            total_files += 1
        elif e.kind == DIR:
            total_bytes += e.size
            total_files += subtree_files[e.name]
    return Tree(entries=tuple(ordered), total_bytes=total_bytes, total_files=total_files)


def encode(tree: Tree) -> bytes:
    """The canonical bytes of `tree` (its id is the BLAKE3 of these bytes)."""
    rows = [[e.name, e.kind, bytes.fromhex(e.oid), e.size, e.mode] for e in tree.entries]
    try:
        return envelope.encode(envelope.KIND_TREE, VERSION, [tree.total_bytes, tree.total_files, rows])
    except UnicodeEncodeError:  # msgpack encodes str as UTF-8; lone surrogates cannot be
        bad = next(e.name for e in tree.entries if not _utf8_ok(e.name))
        raise FormatError(f"file name {bad!r} is not valid UTF-8") from None


def _utf8_ok(name: str) -> bool:
    try:
        name.encode("utf-8")
        return True
    except UnicodeEncodeError:
        return False


def decode(data: bytes) -> Tree:
    """Decode and fully validate a tree object.

    Raises:
        FormatError: anything malformed: header, shape, types, unsorted or duplicate
            names, unsafe names, bad kinds or modes, out-of-range sizes, totals that do
            not add up for the entries listed directly.
    """
    _, body = envelope.decode(data, kind=envelope.KIND_TREE, versions=(VERSION,))
    check(isinstance(body, list) and len(body) == 3, "tree", "body must be [bytes, files, entries]")
    total_bytes, total_files, rows = body
    check(_is_count(total_bytes) and _is_count(total_files), "tree", "totals must be non-negative ints")
    check(isinstance(rows, list), "tree", "entries must be an array")
    entries = []
    append = entries.append
    prev = b""
    direct_bytes = direct_files = 0
    # The hot loop of every checkout and status: one combined test per entry, and the
    # precise diagnosis (_diagnose) only once something is wrong.
    for i, row in enumerate(rows):
        try:
            name, kind, oid, size, mode = row
            key = name.encode("utf-8")
        except (TypeError, ValueError, AttributeError):
            _diagnose(i, row, prev)
            raise  # pragma: no cover - _diagnose always raises
        if not (key > prev and type(kind) is int and type(oid) is bytes and len(oid) == 32
                and type(size) is int and 0 <= size <= MAX_SIZE and name not in RESERVED_NAMES
                and "/" not in name and "\0" not in name
                and ((kind == FILE and mode in FILE_MODES) or (kind in (DIR, SYMLINK) and mode == 0))):
            _diagnose(i, row, prev)
        prev = key
        if kind == FILE:
            direct_bytes += size
            direct_files += 1
        elif kind == DIR:
            direct_bytes += size
        append(Entry(name, kind, oid.hex(), size, mode))
    check(total_bytes == direct_bytes, "tree", f"total_bytes {total_bytes} != sum of entries {direct_bytes}")
    check(total_files >= direct_files, "tree", "total_files smaller than the files listed")
    return Tree(entries=tuple(entries), total_bytes=total_bytes, total_files=total_files)


def _diagnose(i: int, row: object, prev: bytes) -> None:
    """Raise the precise FormatError for a bad entry row."""
    where = f"tree entry {i}"
    check(isinstance(row, list) and len(row) == 5, where, "must be [name, kind, oid, size, mode]")
    name, kind, oid, size, mode = row  # type: ignore[misc]
    check(isinstance(name, str), where, "name must be a string")
    check_name(name)
    check(i == 0 or name.encode("utf-8") > prev, where, f"{name!r} is out of order or duplicated")
    check(type(kind) is int and kind in KIND_NAMES, where, f"unknown kind {kind!r}")
    check(isinstance(oid, bytes) and len(oid) == 32, where, "oid must be 32 bytes")
    check(_is_count(size), where, f"size {size!r} out of range")
    if kind == FILE:
        check(mode in FILE_MODES, where, f"file mode {mode!r} not 0o644 or 0o755")
    else:
        check(mode == 0, where, f"mode must be 0 for a {KIND_NAMES[kind]}")
    raise FormatError(f"{where}: invalid")  # pragma: no cover - one check above fails


def _is_count(v: object) -> bool:
    return type(v) is int and 0 <= v <= MAX_SIZE


Loader = Callable[[str], Tree]


def reader(get: Callable[..., bytes]) -> Loader:
    """A Loader reading trees with a store's `get(oid, max_size=...)`, bounded in size."""
    return lambda oid: decode(get(oid, max_size=envelope.MAX_STRUCT_SIZE))


class CachedLoader:
    """A Loader that asks `load` for each tree once and keeps it for this operation.

    For the length of one operation (a restore, a promote, a checkout): trees are
    immutable, so a decoded one never goes stale, but nothing here bounds the memo,
    so it must not outlive the operation. `CachedLoader(reader(store.get))` reads
    from a store.
    """

    __slots__ = ("_load", "_trees")

    def __init__(self, load: Loader) -> None:
        self._load = load
        self._trees: dict[str, Tree] = {}

    def __call__(self, oid: str) -> Tree:
        t = self._trees.get(oid)
        if t is None:
            t = self._trees[oid] = self._load(oid)
        return t


def walk(oid: str, load: Loader, prefix: str = "") -> Iterator[tuple[str, Entry]]:
    """Yield (posix path, entry) for every non-directory entry below tree `oid`, in order.

    Iterative, so a hostile tree nested thousands of levels deep is just slow, never a
    RecursionError.
    """
    stack: list[tuple[str, Iterator[Entry]]] = [(prefix, iter(load(oid).entries))]
    while stack:
        base, it = stack[-1]
        for e in it:
            if e.kind == DIR:
                stack.append((f"{base}{e.name}/", iter(load(e.oid).entries)))
                break
            yield f"{base}{e.name}", e
        else:
            stack.pop()


def walk_trees(oid: str, load: Loader, prefix: str = "") -> Iterator[tuple[str, str]]:
    """Yield (posix dir path, tree oid) for `oid` and every subtree, parents first."""
    stack = [(prefix, oid)]
    while stack:
        base, t_oid = stack.pop()
        yield base.rstrip("/"), t_oid
        subdirs = [(f"{base}{e.name}/", e.oid) for e in load(t_oid).entries if e.kind == DIR]
        stack.extend(reversed(subdirs))


class Change(NamedTuple):
    """One difference between two trees: `old` or `new` is None for added/removed."""

    path: str
    old: Entry | None
    new: Entry | None


def diff(old: str | None, new: str | None, load: Loader, prefix: str = "") -> Iterator[Change]:
    """Yield the file-level differences from tree `old` to tree `new`.

    Subtrees with equal ids are skipped without being loaded, so the cost is
    proportional to what changed, not to the size of the trees. Raises FormatError
    (not RecursionError) for trees nested deeper than any real directory.
    """
    try:
        yield from _diff(old, new, load, prefix)
    except RecursionError:
        raise FormatError("tree nesting is deeper than tally can compare "
                          f"(over {sys.getrecursionlimit() // 2} levels)") from None


def _diff(old: str | None, new: str | None, load: Loader, prefix: str = "") -> Iterator[Change]:
    if old == new:
        return
    a = load(old).entries if old else ()
    b = load(new).entries if new else ()
    i = j = 0
    while i < len(a) or j < len(b):
        ka = a[i].name.encode() if i < len(a) else None
        kb = b[j].name.encode() if j < len(b) else None
        if kb is None or (ka is not None and ka < kb):
            yield from _one_side(a[i], prefix, load, removed=True)
            i += 1
        elif ka is None or kb < ka:
            yield from _one_side(b[j], prefix, load, removed=False)
            j += 1
        else:
            ea, eb = a[i], b[j]
            i += 1
            j += 1
            if ea.oid == eb.oid and ea.kind == eb.kind and ea.mode == eb.mode:
                continue
            path = f"{prefix}{ea.name}"
            if ea.kind == DIR and eb.kind == DIR:
                yield from _diff(ea.oid, eb.oid, load, path + "/")
            elif ea.kind == DIR:
                yield from _one_side(ea, prefix, load, removed=True)
                yield Change(path, None, eb)
            elif eb.kind == DIR:
                yield Change(path, ea, None)
                yield from _one_side(eb, prefix, load, removed=False)
            else:
                yield Change(path, ea, eb)


def _one_side(e: Entry, prefix: str, load: Loader, *, removed: bool) -> Iterator[Change]:
    path = f"{prefix}{e.name}"
    if e.kind == DIR:
        for sub, se in walk(e.oid, load, path + "/"):
            yield Change(sub, se, None) if removed else Change(sub, None, se)
    else:
        yield Change(path, e, None) if removed else Change(path, None, e)
