"""Snapshot a file or directory of the workspace into ids (and, when asked, the store).

A snapshot is five passes, so the expensive middle one runs in parallel and the
common case (nothing changed) does almost nothing beyond one lstat per file:

1. walk: one scandir per directory, one lstat per entry (no other syscalls);
2. memo: bottom-up, each directory whose listing signature (names and stat values
   of its entries, tree ids of its subdirectories) equals the one the directory memo
   recorded takes its tree id from there, with no lookup or encoding (see
   spec/statcache.md, "The directory memo");
3. hash (and store): of the other directories' files, only those the stat cache does
   not vouch for, in forked processes or on a thread pool;
4. build: their trees bottom-up, children before parents, so every tree is stored
   after the objects it names (the write-ordering invariant) and an unchanged
   directory encodes to the same bytes and id as before;
5. record: memo rows for the directories just built, under the racy rule.

A checkout records memo rows too, for the directories it materialized, from what it
wrote and verified (`record_checkout`), with the same signature.

Names tally never snapshots: `.git` and `.tally` directories (another repository or
store nested inside data is not data).
"""

from __future__ import annotations

import os
import stat as stat_mod
import sys
from array import array
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple

from cas.core import hashing, paths
from cas.workspace import hashpool
from cas.workspace.hashpool import FileToHash, Progress
from cas.objects import tree
from cas.core.errors import NotFound, UsageError, from_os_error

if TYPE_CHECKING:
    from cas.workspace.statcache import StatCache
    from cas.store.objectstore import FileStore
    from cas.store.writer import Writer

SKIP_NAMES = frozenset({".git", ".tally"})
TMP_PREFIX = ".tally-tmp-"  # == checkout.TMP_PREFIX (not imported: checkout is heavy)
# The directory signature (spec/statcache.md): scheme and tree format in its first line.
SIG_HEADER = b"tally-dirsig 1 tree %d\n" % tree.VERSION
_SWAP = sys.byteorder != "little"  # signatures pack integers little-endian
# The lstat values a listing keeps of each entry, in this order (spec/statcache.md).
STAT_FIELDS = ("st_mode", "st_dev", "st_ino", "st_size", "st_mtime_ns", "st_ctime_ns")



class Snapshot(NamedTuple):
    """What a path hashed to."""

    oid: str
    is_dir: bool
    size: int  # bytes (a directory: total of its files)
    files: int  # regular files (1 for a file)
    mode: int  # 0o644/0o755 for a file, 0 for a directory
    hashed: int  # files read this time (the rest came from the stat cache)
    # Temp files a killed checkout left (`.tally-tmp-*`): never part of the tree, and
    # reported so that they are seen (the next checkout removes them).
    leftovers: tuple[str, ...] = ()


class _Dir:
    """One directory of the walk: its listing, and what it resolved to."""

    __slots__ = ("path", "dev", "ino", "names", "vals", "children", "links", "files",
                 "store_links", "oid", "nbytes", "nfiles", "sig", "hit")

    def __init__(self, path: str, dev: int, ino: int) -> None:
        self.path, self.dev, self.ino = path, dev, ino
        self.names: list[str] = []  # non-directory entries, in listing order
        # Their lstat values, STAT_FIELDS of each in the same order: kept as plain ints
        # (an array once listed) rather than stat objects, ~10% of a no-op status.
        self.vals: array | list[int] = []
        self.children: list[tuple[str, _Dir]] = []  # subdirectories, in listing order
        self.links = False  # has a symlink among its entries
        self.files: list[FileToHash] | None = None  # built only when the memo misses
        self.store_links = False  # a symlink points into the objects directory
        self.oid: str | None = None
        self.nbytes = self.nfiles = 0
        self.sig: bytes | None = None
        self.hit = False  # tree id taken from the directory memo


def file_mode(st: os.stat_result) -> int:
    """The tree mode of a regular file: executable by anyone -> 0o755, else 0o644."""
    return 0o755 if st.st_mode & 0o111 else 0o644


def snapshot(path: Path, *, statcache: StatCache, writer: Writer | None = None,
             ingest: str = "copy", progress: Progress | None = None,
             trees: dict[str, tree.Tree] | None = None, objects: str | None = None,
             memo: bool | None = None, memo_hits: dict[str, object] | None = None,
             publish: bool = False, refuse_unsafe_links: bool = False) -> Snapshot:
    """Hash the file or directory at `path`; with a writer, store it too.

    Args:
        path: an existing regular file or directory (symlinks inside a directory are
            recorded as links; `path` itself is followed).
        statcache: vouches for unchanged files and directories; gains entries for the
            files hashed and memo rows for the directories built.
        writer: when given, every blob and tree is put into its store. The caller must
            hold the store lock shared (spec/gc.md) until it has written the root
            naming the result: the directory memo's store stamp relies on it.
        ingest: how blobs enter the store ("copy", "reflink", "hardlink").
        progress: called with (done, total) as files are hashed.
        trees: when given, receives every tree built, by id (to diff without storing).
        objects: the store's objects directory, so symlinks into it (symlink link mode)
            count as the files they stand for (taken from `writer` when given).
        memo: take unchanged directories' tree ids from the directory memo. Default:
            only when `trees` is not given or `memo_hits` is, since a tree taken from
            the memo is not built and so not in `trees`.
        memo_hits: when given, receives {tree id: handle} for the trees taken from the
            memo; `rebuild()` turns a handle into the Tree, from the same listing.
        publish: flush `writer` before returning (for a caller that flushes next
            anyway), so the memo rows recorded carry the store stamp and the next
            snapshot of the same data need not check its blobs. Without it, a writer's
            batches stay as the caller made them, and rows are recorded as not known
            to be stored.
        refuse_unsafe_links: refuse a directory holding a symlink that a checkout
            would refuse (absolute, leaving the directory, through another link of it,
            into .git/.tally: cas/core/paths.py), before anything is stored: what
            `tally add` stores must check out again.
    Raises:
        NotFound: `path` does not exist.
        UsageError: a special file (socket, fifo, device) or a name that is not UTF-8.
        UnsafePath: with `refuse_unsafe_links`, such a symlink (named in the message).
    """
    clock = statcache.now_ns()  # before any stat: see statcache's racy rule
    try:
        st = os.stat(path)
    except OSError as exc:
        raise from_os_error(exc, path=path, doing="reading") from None
    if stat_mod.S_ISREG(st.st_mode):
        f = FileToHash(path.name, os.fspath(path), st, tree.FILE, clock)
        hashed = hashpool.hash_files([f], statcache, writer, ingest, progress)
        return Snapshot(f.oid, False, st.st_size, 1, file_mode(st), hashed)  # type: ignore[arg-type]
    if not stat_mod.S_ISDIR(st.st_mode):
        raise UsageError(f"{path} is not a regular file or directory", path=path)
    if memo is None:
        memo = trees is None or memo_hits is not None
    objects_dir = os.path.abspath(writer.store.objects) if writer is not None else objects
    leftovers: list[str] = []
    top, hashed = _snapshot_dir(os.fspath(path), st, clock, statcache=statcache, writer=writer,
                                ingest=ingest, progress=progress, trees=trees,
                                objects_dir=objects_dir, memo=memo, memo_hits=memo_hits,
                                publish=publish, refuse_unsafe_links=refuse_unsafe_links,
                                leftovers=leftovers)
    return Snapshot(top.oid, True, top.nbytes, top.nfiles, 0, hashed,  # type: ignore[arg-type]
                    tuple(sorted(leftovers)))


def rebuild(handle: object, oid: str, *, statcache: StatCache,
            trees: dict[str, tree.Tree]) -> tree.Tree | None:
    """The tree `oid` a snapshot took from the memo (`handle` from its `memo_hits`).

    Built from the listing that snapshot read, not a new one: its files are looked up
    (or hashed), its subdirectories are what that snapshot resolved them to. The tree
    goes into `trees` too. Returns None if it does not come out as `oid` (a file the
    stat cache no longer vouches for changed since it was listed).
    """
    d, clock, prefix = handle  # type: ignore[misc]
    try:
        _classify(d, prefix, clock)
        hashpool.hash_files(d.files, statcache, None, "copy", None)
    except (NotFound, FileNotFoundError):
        return None  # a file went away since it was listed
    t = _build(d, None, trees)
    return t if d.oid == oid else None


def _snapshot_dir(root: str, root_st: os.stat_result, clock: int, *, statcache: StatCache,
                  writer: Writer | None, ingest: str, progress: Progress | None,
                  trees: dict[str, tree.Tree] | None, objects_dir: str | None, memo: bool,
                  memo_hits: dict[str, object] | None, publish: bool,
                  refuse_unsafe_links: bool = False,
                  leftovers: list[str] | None = None) -> tuple[_Dir, int]:
    prefix = None if objects_dir is None else objects_dir.rstrip("/") + "/"
    dirs = _walk(root, root_st, leftovers)
    if refuse_unsafe_links and any(d.links for d in dirs):
        _check_links(root, dirs, prefix)
    rows = statcache.dir_rows([(d.dev, d.ino) for d in dirs]) if memo else {}
    stamp_then: bytes | None = None
    if rows:
        stamp_then = _resolve_memo(dirs, rows, prefix, writer)
        if memo_hits is not None:
            for d in dirs:
                if d.hit:
                    memo_hits[d.oid] = (d, clock, prefix)  # type: ignore[index]

    todo = [d for d in dirs if not d.hit]
    files = []
    for d in todo:
        _classify(d, prefix, clock)
        files.extend(d.files)  # type: ignore[arg-type]
    hashed = hashpool.hash_files(files, statcache, writer, ingest, progress) if files else 0

    # Build bottom-up: _walk lists parents before children, so reverse it.
    for d in reversed(todo):
        _build(d, writer, trees)

    _record(dirs, todo, statcache, writer if publish else None, prefix, clock, stamp_then)
    return dirs[0], hashed


def _check_links(root: str, dirs: list[_Dir], prefix: str | None) -> None:
    """Refuse the first symlink under `root` that a checkout of it would refuse.

    A link into the store's objects directory (symlink link mode) stands for the
    file it links to and is not judged here.
    """
    found: dict[str, str] = {}  # tree-relative path -> target
    base = root.rstrip("/") + "/"
    for d in dirs:
        if not d.links:
            continue
        rel_dir = d.path[len(base):] if d.path.startswith(base) else ""
        for i, name in enumerate(d.names):
            if stat_mod.S_ISLNK(d.vals[len(STAT_FIELDS) * i]):
                path = f"{d.path}/{name}"
                target = os.readlink(path)
                if prefix is not None and os.path.join(d.path, target).startswith(prefix):
                    continue
                found[f"{rel_dir}/{name}" if rel_dir else name] = target
    links = frozenset(found)
    for rel, target in sorted(found.items()):
        paths.check_symlink(rel, target, links, source=f"{os.path.basename(root)}/{rel}")


def _build(d: _Dir, writer: Writer | None, trees: dict[str, tree.Tree] | None) -> tree.Tree:
    """Encode (and with a writer, put) the tree of `d`, whose files have their ids and
    whose subdirectories are resolved; sets d.oid and its totals."""
    entries = [tree.Entry(f.name, f.kind, f.oid, f.st.st_size,  # type: ignore[arg-type]
                          file_mode(f.st) if f.kind == tree.FILE else 0) for f in d.files]  # type: ignore[union-attr]
    sub_files = {}
    for name, child in d.children:
        entries.append(tree.Entry(name, tree.DIR, child.oid, child.nbytes, 0))  # type: ignore[arg-type]
        sub_files[name] = child.nfiles
    t = tree.make(entries, subtree_files=sub_files, names_checked=True)
    data = tree.encode(t)
    d.oid = writer.put_bytes(data, compress=True) if writer else hashing.hash_bytes(data)
    if trees is not None:
        trees[d.oid] = t
    d.nbytes, d.nfiles = t.total_bytes, t.total_files
    return t


def _walk(root: str, root_st: os.stat_result, leftovers: list[str] | None = None) -> list[_Dir]:
    """Every directory below `root` (pre-order: parents before children), listed.

    Temp files of a killed checkout are left out of the listing; with `leftovers`, their
    paths are collected there.

    The hot loop of every status: per entry one d_type test, one lstat and two appends;
    names are checked, and special files refused, only for directories the memo misses
    (_classify).
    """
    top = _Dir(root, root_st.st_dev, root_st.st_ino)
    out = []
    stack = [top]
    while stack:
        d = stack.pop()
        names, vals, subdirs = d.names, d.vals, []
        path = d.path
        try:
            # Listing by descriptor: each lstat is then an fstatat() relative to it,
            # ~15% cheaper than resolving every file's whole path again.
            # Below the top, never follow a symlink swapped in for a directory meanwhile.
            fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC
                         | (os.O_NOFOLLOW if d is not top else 0))
        except OSError as exc:
            raise from_os_error(exc, path=path, doing="listing a directory") from None
        try:
            with os.scandir(fd) as it:
                for ent in it:
                    name = ent.name
                    # (Every skipped name starts with a dot: one cheap test for the rest.)
                    if name[0] == "." and (name in SKIP_NAMES or name.startswith(TMP_PREFIX)):
                        if leftovers is not None and name.startswith(TMP_PREFIX):
                            leftovers.append(f"{path}/{name}")
                        continue  # nested repos/stores, and a crashed checkout's temp files
                    try:
                        if ent.is_dir(follow_symlinks=False):
                            subdirs.append(ent)
                            continue
                        if ent.is_symlink():
                            d.links = True
                        st = ent.stat(follow_symlinks=False)
                    except FileNotFoundError:
                        continue  # deleted since it was listed: as if it had not been
                    vals += (st.st_mode, st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns,
                             st.st_ctime_ns)  # == STAT_FIELDS
                    names.append(name)
            for ent in subdirs:
                try:
                    st = ent.stat(follow_symlinks=False)
                except FileNotFoundError:
                    continue
                d.children.append((ent.name, _Dir(f"{path}/{ent.name}", st.st_dev, st.st_ino)))
        except OSError as exc:
            raise from_os_error(exc, path=path, doing="listing a directory") from None
        finally:
            os.close(fd)
        try:
            d.vals = array("q", vals)
        except OverflowError:
            pass  # a value beyond 63 bits: kept as a list, and the directory has no signature
        out.append(d)
        stack.extend(c for _, c in reversed(d.children))
    return out


def _signature(d: _Dir, vals: array | list[int], prefix: str | None) -> bytes | None:
    """The directory's listing signature (spec/statcache.md), or None if it has none.

    `vals` holds STAT_FIELDS for each of `d.names`. Every subdirectory must be resolved
    (its oid known). None when a value does not fit a signed 64-bit integer.
    """
    if not isinstance(vals, array):
        try:
            vals = array("q", vals)
        except OverflowError:
            return None
    if _SWAP:
        vals = array("q", vals)
        vals.byteswap()
    names = d.names
    h = hashing.new_hasher()
    h.update(SIG_HEADER)
    h.update(len(names).to_bytes(8, "little") + len(d.children).to_bytes(8, "little"))
    if names:
        h.update(("\0".join(names) + "\0").encode("utf-8", "surrogateescape"))
    h.update(vals.tobytes())
    if d.children:
        h.update("".join([f"{name}\0{c.oid}" for name, c in d.children])
                 .encode("utf-8", "surrogateescape"))
    if d.links:
        h.update(b"links " + (prefix or "").encode("utf-8", "surrogateescape") + b"\n")
    return h.digest()


def _stat_vals(stats: list) -> list[int]:
    vals: list[int] = []
    for st in stats:
        vals += (st.st_mode, st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)
    return vals


def _resolve_memo(dirs: list[_Dir], rows: dict, prefix: str | None,
                  writer: Writer | None) -> bytes | None:
    """Mark each directory the memo vouches for as a hit, bottom-up. Returns the store
    stamp it compared against (with a writer), else None.

    Without a writer a matching signature is enough. With one, the tree must also be
    known to be stored with everything it names: the row's store stamp equals the
    store's now (so no object was deleted since it was recorded), and the tree object
    is present (freshened, so gc's grace period covers all it reaches).
    """
    stamp: bytes | None = None
    stamped = False
    for d in reversed(dirs):
        row = rows.get((d.dev, d.ino))
        if row is None:
            continue
        if not all(c.hit for _, c in d.children):
            continue
        d.sig = _signature(d, d.vals, prefix)
        if d.sig != row[0]:
            continue
        if writer is not None:
            if not stamped:
                from cas.workspace.statcache import store_stamp  # loaded already: `statcache` is one
                stamp, stamped = store_stamp(writer.store.objects), True
            if row[4] is None or row[4] != stamp or not _touch(writer.store, row[1]):
                continue
        d.hit = True
        d.oid, d.nbytes, d.nfiles = row[1], row[2], row[3]
    return stamp


def _classify(d: _Dir, prefix: str | None, clock: int) -> None:
    """Turn a directory's listing into _Files: names checked, special files refused,
    symlinks into the objects directory resolved to the objects they stand for."""
    files = []
    base = d.path
    vals = d.vals
    for i, name in enumerate(d.names):
        path = f"{base}/{name}"
        st = hashpool.Stat(*vals[6 * i + 1:6 * i + 6], vals[6 * i])
        _check_name(name, path)
        if stat_mod.S_ISREG(st.st_mode):
            files.append(FileToHash(name, path, st, tree.FILE, clock))
        elif stat_mod.S_ISLNK(st.st_mode):
            f = FileToHash(name, path, st, tree.SYMLINK, clock)
            if prefix is not None and _resolve_object_link(f, prefix):
                d.store_links = True
            files.append(f)
        else:
            raise UsageError(f"{path} is a special file (socket, fifo or device)",
                             path=path, hint="move it out of the tracked directory")
    d.files = files


def _resolve_object_link(f: FileToHash, prefix: str) -> bool:
    """Resolve a symlink into the objects directory (symlink link mode): it stands for
    the object it names, recorded as that file with the id read from the link (objects
    are named by their hash and never change; fsck verifies them). Returns whether the
    target is inside the objects directory at all."""
    target = os.readlink(f.path)
    if not target.startswith(prefix):
        return False
    shard, _, rest = target[len(prefix):].partition("/")
    oid = shard + rest
    if len(shard) == 2 and hashing.is_oid(oid):
        try:
            f.st = os.stat(f.path)  # the object's size and (read-only) mode
        except FileNotFoundError:
            return True  # dangling: record it as the link it is
        f.kind = tree.FILE
        f.oid = oid
    return True


def _check_name(name: str, path: str) -> None:
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        raise UsageError(f"file name is not valid UTF-8: {path!r}", path=path,
                         hint="rename the file; tally stores names as UTF-8") from None


def _record(dirs: list[_Dir], built: list[_Dir], statcache: StatCache, writer: Writer | None,
            prefix: str | None, clock: int, stamp_then: bytes | None) -> None:
    """Record memo rows for the directories just built, under the racy rule: every
    entry a row's signature covers must be strictly older than the clock reading taken
    before its stat, and on the directory's (and so the clock's) filesystem.

    With a writer (only when the snapshot may publish), everything is published first
    (blobs before trees, as always), so a row can carry the store stamp taken after
    it: "this tree and all it names were in the store when the store looked like this".
    """
    if not built:
        return  # every tree came from the memo, under a stamp nothing has changed since
    stamp: bytes | None = None
    if writer is not None:
        writer.flush()
        from cas.workspace.statcache import recordable_stamp  # loaded already: `statcache` is one
        stamp = recordable_stamp(writer.store.objects, statcache)
    items = []
    for d in built:
        if d.store_links:
            continue  # what such a link stands for depends on the store, not the listing
        files: list[FileToHash] = d.files  # type: ignore[assignment]
        dev = d.dev
        newest, row_clock = -1, clock
        for f in files:
            st = f.st
            ts = st.st_mtime_ns if st.st_mtime_ns > st.st_ctime_ns else st.st_ctime_ns
            if ts >= f.clock or st.st_dev != dev:
                break
            newest = ts if ts > newest else newest
            row_clock = f.clock if f.clock > row_clock else row_clock
        else:
            sig = _signature(d, _stat_vals([f.st for f in files]), prefix)
            if sig is not None:
                items.append((dev, d.ino, sig, d.oid, d.nbytes, d.nfiles, stamp, newest, row_clock))
    if items:
        statcache.record_dirs(items)
    if stamp is not None and stamp != stamp_then:
        hits = [(d.dev, d.ino, d.sig) for d in dirs if d.hit]
        if hits:
            statcache.restamp_dirs(hits, stamp)


# What record_checkout knows of one inode: (its STAT_FIELDS, content id, size, kind,
# tree mode, max(mtime, ctime)). Plain tuples: 50,000 of them are checked per checkout.
Vouched = tuple


def vouch(known: dict[tuple[int, int], Vouched], items: list[tuple[os.stat_result, str]],
          clock: int) -> None:
    """Add to `known` the files and symlinks a checkout wrote or kept, as (lstat, id),
    if strictly older than `clock` (the racy rule; see record_checkout for which
    reading). A later item for the same inode replaces an earlier one: a hardlinked
    object linked again has a new ctime, and only its last stat is current."""
    reg, lnk, FILE, SYMLINK = stat_mod.S_ISREG, stat_mod.S_ISLNK, tree.FILE, tree.SYMLINK
    for st, oid in items:
        k = (st.st_dev, st.st_ino)
        m, mt, ct = st.st_mode, st.st_mtime_ns, st.st_ctime_ns
        ts = mt if mt > ct else ct
        if ts >= clock:
            known.pop(k, None)  # racy: nothing vouches for this inode
            continue
        kind = FILE if reg(m) else SYMLINK if lnk(m) else -1
        known[k] = ((m, k[0], k[1], st.st_size, mt, ct), oid, st.st_size, kind,
                    (0o755 if m & 0o111 else 0o644) if kind == FILE else 0, ts)


def record_checkout(statcache: StatCache, dirs: list[tuple[str, str, tree.Tree, bool]],
                    known: dict[tuple[int, int], Vouched], *, objects: str,
                    stamp: bytes | None, clock: int) -> int:
    """Record memo rows for directories a checkout has just materialized
    (spec/statcache.md, "What checkout records").

    Each directory is listed again (names only, after the clock tick): a row is
    recorded only if the listing holds exactly the tree's entries and every
    non-directory one is in `known` with the kind, mode, size and id its tree entry
    says. Its signature is then that of the listing a snapshot reads, with the stat
    values from `known`: if anything changed since, a snapshot's signature differs and
    the row is not used.

    Args:
        dirs: (absolute path, tree id, tree, stored) of each directory, where `stored`
            says every object the tree names, recursively, was read from the store
            since `stamp` was taken.
        known: from vouch(): each file and symlink the checkout wrote (lstat after
            writing it, older than the reading after the tick) or found unchanged
            (lstat before verifying it, older than a reading taken before that).
        objects: the store's objects directory, as a snapshot of the workspace names it.
        stamp: the store stamp under which no object was deleted during the checkout,
            or None; recorded in `stored` for the directories that allow it.
        clock: the checkout's latest clock reading (every entry in `known` is older).
    Returns:
        How many rows were recorded.
    """
    prefix = objects.rstrip("/") + "/"
    items = []
    for path, oid, t, stored in dirs:
        got = _listed(path, t, known)
        if got is None:
            continue
        d, vals, newest = got
        sig = _signature(d, vals, prefix)
        if sig is not None:
            items.append((d.dev, d.ino, sig, oid, t.total_bytes, t.total_files,
                          stamp if stored else None, newest, clock))
    return statcache.record_dirs(items) if items else 0


def _listed(path: str, t: tree.Tree, known: dict[tuple[int, int], Vouched]
            ) -> tuple[_Dir, list[int], int] | None:
    """(the directory as a snapshot would list it, its entries' STAT_FIELDS, their newest
    timestamp) if the directory at `path` holds exactly tree `t` by `known` (see
    record_checkout); else None. Names only: one scandir (d_type, d_ino), no lstat; the
    stat values are `known`'s, and the key's device is the directory's own."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC | os.O_NOFOLLOW)
    except OSError:
        return None
    FILE, SYMLINK = tree.FILE, tree.SYMLINK
    vals: list[int] = []
    newest = -1
    try:
        dst = os.fstat(fd)
        dev = dst.st_dev
        d = _Dir(path, dev, dst.st_ino)
        names = d.names
        n = 0
        by_name = {e.name: e for e in t.entries}  # (Tree.get encodes names: 5x slower)
        with os.scandir(fd) as it:
            for ent in it:
                name = ent.name
                if name[0] == "." and (name in SKIP_NAMES or name.startswith(TMP_PREFIX)):
                    continue  # as _walk: not part of any listing
                n += 1
                e = by_name.get(name)
                if e is None:
                    return None  # not in the tree: an untracked file or directory
                if ent.is_dir(follow_symlinks=False):
                    if e.kind != tree.DIR:
                        return None
                    child = _Dir(f"{path}/{name}", dev, 0)
                    child.oid = e.oid
                    d.children.append((name, child))
                    continue
                got = known.get((dev, ent.inode()))
                if got is None or got[1] != e.oid or got[2] != e.size or got[3] != e.kind:
                    return None
                if e.kind == FILE:
                    if got[4] != e.mode:
                        return None
                elif e.kind == SYMLINK:
                    d.links = True
                names.append(name)
                vals += got[0]
                if got[5] > newest:
                    newest = got[5]
    except OSError:
        return None
    finally:
        os.close(fd)
    if n != len(t.entries):
        return None  # an entry of the tree is missing
    return d, vals, newest


def _touch(store: FileStore, oid: str) -> bool:
    """Is object `oid` present? Freshens it (gc's grace period) as a put would."""
    # Raw first: trees of up to writer.RAW_MAX bytes (nearly all) are stored raw.
    for p in (store.raw_path(oid), store.zst_path(oid)):
        try:
            os.utime(p)
            return True
        except FileNotFoundError:
            continue
        except OSError:
            return os.path.exists(p)  # a shared store we may not touch: presence counts
    return False
