"""Materialize a stored file or tree into the workspace, touching only what differs.

Each file is written by the first configured link mode that applies (reflink,
hardlink, symlink, copy: cas/workspace/materialize.py). Hardlinked and symlinked files are
read-only so an edit cannot corrupt the store; `tally unprotect` swaps one for a
writable copy.

Safety: before touching anything, every path that would be overwritten or deleted is
classified. A file whose current content is itself in the store can be recovered, so
replacing it loses nothing; anything else is user work and the whole checkout is
refused (WouldOverwrite, naming the files) unless `force`. Each file is written under a
temp name in its own directory and renamed into place, so an interrupted checkout
leaves whole old files or whole new ones, never a torn file.
"""

from __future__ import annotations

import os
import stat as stat_mod
from pathlib import Path
from typing import Callable, NamedTuple

from cas.core import hashing
from cas.objects import tree
from cas.workspace import snapshot as workspace
from cas.core.errors import UnsafePath, UsageError, WouldOverwrite, from_os_error
from cas.core.fsops import copy_file, reflink, remove_tree
from cas.workspace.materialize import TMP_PREFIX, remove_leftover
from cas.workspace.materialize import Materializer as _Materializer, case_twins, link_target as _link_target
from cas.workspace import statcache as statcache_mod
from cas.workspace.statcache import StatCache
from cas.store.objectstore import FileStore

Progress = Callable[[int, int], None]


# A plain class and a NamedTuple, not dataclasses: `tally run` imports this module
# (through cas.workspace.snapshot), and a dataclass costs ~1 ms of start-up each.
class CheckoutReport:
    """What a checkout did."""

    __slots__ = ("written", "deleted", "unchanged", "modes", "skipped")

    def __init__(self) -> None:
        self.written: list[str] = []  # paths relative to the target
        self.deleted: list[str] = []
        self.unchanged = 0
        self.modes: dict[str, int] = {}  # link mode -> files
        self.skipped: list[str] = []  # unsafe symlinks not written (unsafe_links="skip")

    def __repr__(self) -> str:
        return (f"CheckoutReport(written={self.written!r}, deleted={self.deleted!r}, "
                f"unchanged={self.unchanged}, modes={self.modes!r})")


class Target(NamedTuple):
    """What to materialize at a path: a tree, or a single blob with its mode."""

    oid: str
    is_dir: bool
    mode: int = 0o644
    size: int | None = None  # a blob's size when known (pointers carry it): checked too


def checkout(store: FileStore, target: Target, dest: Path, *, links: tuple[str, ...],
             statcache: StatCache, force: bool = False, progress: Progress | None = None,
             load_tree: Callable[[str], tree.Tree] | None = None,
             unsafe_links: str = "refuse", verify: bool = False) -> CheckoutReport:
    """Make `dest` hold exactly `target`.

    A symlink of the tree that points outside it (cas/core/paths.py) is never written:
    with `unsafe_links="refuse"` (tracked data) the whole checkout is refused before
    anything is written; with "skip" (an experiment's workspace, which may hold any
    link Git would commit) it is left out and listed in the report's `skipped`.

    Every copied or decompressed file is checked against its id before it takes its
    name; with `verify`, hardlinked, symlinked and reflinked ones too (their object is
    hashed), which a link mode otherwise cannot do without reading the object.

    Raises:
        WouldOverwrite: unrecoverable user changes are in the way and not `force`.
        ObjectMissing / CorruptObject: the store lacks or has damaged content; nothing
            is written for a file whose object is damaged.
    """
    load = load_tree or tree.reader(store.get)
    desired: dict[str, tree.Entry] = {}
    dirs: set[str] = set()  # every directory of the tree, empty ones included
    trees: dict[str, tuple[str, tree.Tree]] = {}  # dir -> its tree, for the directory memo
    skipped: list[str] = []
    clock0 = stamp0 = None
    if target.is_dir:
        # For the directory memo (spec/statcache.md, "What checkout records"): a clock
        # reading before any file is stat'ed, so unchanged files can be vouched for, and
        # the store stamp before any object is read, so that if it is the same at the
        # end, every object read meanwhile is still stored.
        clock0 = statcache.now_ns()
        if load_tree is None:
            stamp0 = statcache_mod.settled_stamp(store.objects, clock0)
        load_once = tree.CachedLoader(load)
        for rel, t_oid in tree.walk_trees(target.oid, load_once):
            if rel:
                _check_rel(rel)
            dirs.add(rel)
            t = load_once(t_oid)
            trees[rel] = (t_oid, t)
            for e in t.entries:
                if e.kind != tree.DIR:
                    desired[f"{rel}/{e.name}" if rel else e.name] = e
        # Symlink targets are judged before anything is written, so a hostile tree is
        # refused whole instead of half-materialized.
        tree_links = frozenset(r for r, e in desired.items() if e.kind == tree.SYMLINK)
        for rel in sorted(tree_links):
            try:
                _link_target(store, desired[rel], rel, tree_links)
            except UnsafePath:
                if unsafe_links != "skip":
                    raise
                del desired[rel]
                skipped.append(rel)
    else:
        # Size -1: unknown (a caller without a pointer), so neither compared nor checked.
        desired[""] = tree.Entry(dest.name, tree.FILE, target.oid,
                                 -1 if target.size is None else target.size, target.mode)

    seen_dirs: set[str] = set()
    current = _scan(dest, target.is_dir, seen_dirs)
    for rel in skipped:  # not ours to write, nor to delete: whatever stands there stays
        current.pop(rel, None)
    report = CheckoutReport()
    report.skipped = skipped
    todo: list[tuple[str, tree.Entry]] = []
    risky: list[tuple[str, os.stat_result, str]] = []  # (rel, stat, abs) to classify
    # Unchanged files by directory: (stat before verifying, id), for the directory memo.
    kept: dict[str, list[tuple[os.stat_result, str]]] = {}
    # Unchanged files the stat cache did not know, hashed to compare them: recorded
    # against clock0 (taken before their stat), so the next checkout does not hash them.
    hashed: list[tuple[os.stat_result, str]] | None = [] if clock0 is not None else None
    for rel, e in desired.items():
        st = current.pop(rel, None)
        if st is None:
            todo.append((rel, e))
            continue
        abs_p = _join(dest, rel)
        mark = len(hashed) if hashed is not None else 0
        if _same(st, e, abs_p, statcache, store, links, hashed):
            report.unchanged += 1
            d = rel.rpartition("/")[0]
            (kept.get(d) or kept.setdefault(d, [])).append((st, e.oid))
        else:
            if hashed is not None:
                del hashed[mark:]  # about to be replaced: its row would be garbage
            todo.append((rel, e))
            risky.append((rel, st, abs_p))
    extras = [(rel, st, _join(dest, rel)) for rel, st in current.items()]

    if not force:
        lost = [rel or dest.name for rel, st, p in risky + extras
                if not _recoverable(store, st, p, statcache)]
        if lost:
            shown = [f"{dest.name}/{r}" if target.is_dir and r != dest.name else r for r in sorted(lost)]
            raise WouldOverwrite(shown)

    replace = {rel: st for rel, st, _ in risky}
    writer = _Materializer(store, links, verify=verify)
    writer.tree_links = frozenset(r for r, e in desired.items() if e.kind == tree.SYMLINK)
    writer.case_twins = case_twins(desired)
    base = os.fspath(dest)
    made: set[str] = {base}
    stats: list[tuple[os.stat_result, str]] = []
    link_stats: list[tuple[os.stat_result, str]] = []  # symlink entries, for the memo only
    # The (dev, ino) of the files and directories this checkout deletes or replaces:
    # their rows are dropped where the new ones are recorded (spec/statcache.md, "The
    # bound"), else every replaced file would leave a row behind for good.
    gone: list[tuple[int, int]] = []
    gone_dirs: list[tuple[int, int]] = []
    clock = 0
    try:
        # A directory where a file must go (or the reverse) is removed first; it was
        # classified above like any other path in the way.
        if not target.is_dir and dest.is_dir() and not dest.is_symlink():
            gone, gone_dirs = statcache_mod.tree_keys(dest)
            remove_tree(dest)
        elif target.is_dir and (dest.is_symlink() or dest.is_file()):
            dest.unlink()
        for rel, st, p in extras:
            remove_tree(p)
            if stat_mod.S_ISREG(st.st_mode):
                gone.append((st.st_dev, st.st_ino))
            report.deleted.append(rel)
        if target.is_dir:
            dest.mkdir(parents=True, exist_ok=True)
            _prune_empty_dirs(dest, seen_dirs, dirs, gone_dirs)
            for d in sorted(dirs):
                if d:
                    os.makedirs(_join(dest, d), exist_ok=True)
        write_all(writer, todo, replace, base, made, report, stats, link_stats, gone,
                   progress=progress, memo=target.is_dir)
    finally:
        newest = max((max(st.st_mtime_ns, st.st_ctime_ns) for st, _ in stats + link_stats), default=0)
        if stats:
            # Record what we wrote, after waiting out the clock tick it was written
            # in (cas/workspace/statcache.py): restored files are never hashed again. Done even
            # when interrupted, for the files that did get written.
            clock = statcache.wait_past(newest)
        fresh = [(st, oid) for st, oid in hashed or () if max(st.st_mtime_ns, st.st_ctime_ns) < clock0]
        if stats or fresh or gone or gone_dirs:
            # fresh passed the racy rule against clock0, and clock, when taken, is later.
            # Written last: a file written after one of the same inode was hashed (two
            # hardlinks to one object) has the later stat.
            statcache.record(fresh + stats, clock_ns=clock if stats else (clock0 or 0),
                             forget=gone, forget_dirs=gone_dirs)
    if target.is_dir:
        if link_stats and not stats:
            clock = statcache.wait_past(newest)
        # Every object read from the store after stamp0: the trees, every symlink
        # entry's target (_link_target, above), each file written.
        # The directories whose listing this checkout changed: each one it wrote or
        # deleted in, created, or removed a directory from (and the top, always).
        touched = {rel.rpartition("/")[0] for rel, _ in todo}
        touched.update(rel.rpartition("/")[0] for rel, _, _ in extras)
        touched.update(d for d in dirs if d not in seen_dirs)
        touched.update(d.rpartition("/")[0] for d in seen_dirs - dirs)
        _record_dirs(store, dest, trees, kept, stats + link_stats, touched,
                     fetched=bool(todo or writer.tree_links), statcache=statcache,
                     clock0=clock0, clock=clock, stamp0=stamp0)  # type: ignore[arg-type]
    return report


def write_all(writer: _Materializer, todo: list[tuple[str, tree.Entry]],
               replace: dict[str, os.stat_result], base: str, made: set[str], report: CheckoutReport,
               stats: list[tuple[os.stat_result, str]],
               link_stats: list[tuple[os.stat_result, str]], gone: list[tuple[int, int]], *,
               progress: Progress | None, memo: bool) -> None:
    """Write `todo`, appending to `stats` (lstat after writing, id) of each regular
    file, to `link_stats` those of symlink entries (`memo`: only for the directory
    memo), and to `gone` the key of each regular file replaced, as it goes."""
    total = len(todo)
    # One lean loop: linking is syscall-bound and a thread pool only adds GIL and
    # futex contention (measured: 7 s -> 1.5 s for 50k hardlinks).
    try:
        for n, (rel, e) in enumerate(todo, 1):
            p = base if rel == "" else f"{base}/{rel}"
            parent = p.rpartition("/")[0]
            if parent not in made:
                os.makedirs(parent, exist_ok=True)
                made.add(parent)
            old = replace.get(rel)
            used, st = writer.write(e, p, rel=rel, replace=old is not None)
            if old is not None and stat_mod.S_ISREG(old.st_mode):
                gone.append((old.st_dev, old.st_ino))
            report.written.append(rel)
            report.modes[used] = report.modes.get(used, 0) + 1
            if e.kind == tree.SYMLINK and memo:
                link_stats.append((os.lstat(p), e.oid))
            if st is not None:
                stats.append((st, e.oid))
            if progress and (n % 1024 == 0 or n == total):
                progress(n, total)
    except OSError as exc:
        raise from_os_error(exc, doing="checking out") from None


def _record_dirs(store: FileStore, dest: Path, trees: dict[str, tuple[str, tree.Tree]],
                 kept: dict[str, list[tuple[os.stat_result, str]]],
                 wrote: list[tuple[os.stat_result, str]], touched: set[str], *, fetched: bool,
                 statcache: StatCache, clock0: int, clock: int, stamp0: bytes | None) -> None:
    """Record directory memo rows for the directories just materialized, so the next
    `status` or `add` takes them whole (spec/statcache.md, "What checkout records").

    Only the directories whose listing the checkout changed (`touched`) and those above
    them are listed again: an untouched one is as it was, with whatever row it had,
    and skipping it keeps a checkout that changes little from paying per file kept.
    Unchanged files are vouched for by their stat before they were verified, against
    the reading taken before that stat; written ones by their stat after writing,
    against the reading after the tick. A directory's row carries the store stamp only
    if every object its tree names, recursively, was read from the store during the
    checkout (the trees, every symlink target, and each file: written, none kept) and
    the stamp did not change meanwhile: nothing was deleted.
    """
    todo = _with_parents(touched, trees)
    if not todo:
        return
    known: dict[tuple[int, int], workspace.Vouched] = {}
    for rel in todo:
        workspace.vouch(known, kept.get(rel, ()), clock0)  # type: ignore[arg-type]
    workspace.vouch(known, wrote, clock)  # after: in write order, the last stat is current
    stamp = None
    if stamp0 is not None and fetched and statcache_mod.store_stamp(store.objects) == stamp0:
        stamp = stamp0
    unstored = _with_parents(set(kept), trees) if stamp is not None else set()
    items = [(_join(dest, rel), trees[rel][0], trees[rel][1], stamp is not None and rel not in unstored)
             for rel in todo]
    workspace.record_checkout(statcache, items, known, objects=os.path.abspath(store.objects),
                              stamp=stamp, clock=max(clock, clock0))


def _with_parents(rels: set[str], trees: dict[str, tuple[str, tree.Tree]]) -> set[str]:
    """The directories of `trees` among `rels` and every directory above them."""
    out: set[str] = set()
    for rel in rels:
        while rel not in out:
            if rel in trees:
                out.add(rel)
            if not rel:
                break
            rel = rel.rpartition("/")[0]
    return out


def _join(dest: Path, rel: str) -> str:
    return os.fspath(dest) if rel == "" else f"{os.fspath(dest)}/{rel}"


def _check_rel(rel: str) -> None:
    # tree.decode already refuses "..", "/" and NUL in names; this is the second
    # fence, at the point where a path is about to be written.
    parts = rel.split("/")
    if rel.startswith("/") or any(p in ("", ".", "..") for p in parts):
        raise UsageError(f"refusing unsafe path {rel!r} from a stored tree")


def _scan(dest: Path, is_dir: bool, seen_dirs: set[str]) -> dict[str, os.stat_result]:
    """Current files (and symlinks) at dest, keyed like `desired`."""
    try:
        st = os.lstat(dest)
    except FileNotFoundError:
        return {}
    if not stat_mod.S_ISDIR(st.st_mode) or not is_dir:
        # A file (or, for a file target, a whole directory) stands at dest: one entry,
        # classified like any other path in the way.
        return {"": st}
    out: dict[str, os.stat_result] = {}
    base = os.fspath(dest)
    stack = [""]
    while stack:
        rel_dir = stack.pop()
        d = base if not rel_dir else f"{base}/{rel_dir}"
        with os.scandir(d) as it:
            for ent in it:
                if ent.name in (".git", ".tally"):
                    continue
                if ent.name.startswith(TMP_PREFIX):
                    remove_leftover(f"{d}/{ent.name}", ent.name)  # a killed checkout's
                    continue
                rel = ent.name if not rel_dir else f"{rel_dir}/{ent.name}"
                if ent.is_dir(follow_symlinks=False):
                    stack.append(rel)
                    seen_dirs.add(rel)
                else:
                    out[rel] = ent.stat(follow_symlinks=False)
    return out


def _current_oid(st: os.stat_result, path: str, statcache: StatCache,
                 hashed: list[tuple[os.stat_result, str]] | None = None) -> str | None:
    """The id of what is at `path` (stat `st`); a regular file the stat cache did not
    know is hashed, and `(st, id)` appended to `hashed`."""
    if stat_mod.S_ISLNK(st.st_mode):
        return hashing.hash_bytes(os.readlink(path).encode("utf-8", "surrogateescape"))
    if not stat_mod.S_ISREG(st.st_mode):
        return None
    oid = statcache.lookup(st)
    if oid is None:
        try:
            oid = hashing.hash_file(path, size=st.st_size)
        except OSError:
            return None
        if hashed is not None:
            hashed.append((st, oid))
    return oid


def _same(st: os.stat_result, e: tree.Entry, path: str, statcache: StatCache,
          store: FileStore, links: tuple[str, ...],
          hashed: list[tuple[os.stat_result, str]] | None = None) -> bool:
    """Is what stands at `path` already exactly `e`, materialized the preferred way?"""
    if stat_mod.S_ISLNK(st.st_mode):
        if e.kind == tree.FILE:
            # symlink link mode: a link to the object itself is that file.
            return links[:1] == ("symlink",) and os.readlink(path) == \
                os.path.abspath(store.raw_path(e.oid))
        return e.kind == tree.SYMLINK and _current_oid(st, path, statcache, hashed) == e.oid
    if e.kind != tree.FILE or (e.size >= 0 and st.st_size != e.size):
        return False
    if bool(st.st_mode & 0o111) != (e.mode == 0o755):
        return False  # right bytes, wrong executable bit: rewrite (recoverable)
    if links[:1] == ("symlink",) and e.mode != 0o755:
        return False  # a regular file where the configured mode wants a link
    return _current_oid(st, path, statcache, hashed) == e.oid


def _recoverable(store: FileStore, st: os.stat_result, path: str, statcache: StatCache) -> bool:
    """Can the content now at `path` be brought back from the store after we replace it?"""
    if stat_mod.S_ISDIR(st.st_mode):
        return False
    if stat_mod.S_ISLNK(st.st_mode) and _object_link_oid(store, path) is not None:
        return True  # a symlink-mode link to an object: the object is the content
    oid = _current_oid(st, path, statcache)
    return oid is not None and store.has(oid)


def _object_link_oid(store: FileStore, path: str) -> str | None:
    """The id of the object a symlink-mode workspace link points to, if it does."""
    prefix = os.path.abspath(store.objects) + "/"
    target = os.readlink(path)
    if not target.startswith(prefix):
        return None
    shard, _, rest = target[len(prefix):].partition("/")
    oid = shard + rest
    return oid if len(shard) == 2 and hashing.is_oid(oid) and store.has(oid) else None


def _prune_empty_dirs(dest: Path, seen: set[str], keep: set[str],
                      gone: list[tuple[int, int]]) -> None:
    """Remove directories seen in the workspace but not in the tree, once empty,
    appending the (dev, ino) of each removed to `gone`."""
    for rel in sorted(seen - keep, key=lambda r: r.count("/"), reverse=True):
        p = _join(dest, rel)
        try:
            st = os.lstat(p)
            os.rmdir(p)
        except OSError:
            continue  # not empty: it holds something the user kept (force was needed)
        gone.append((st.st_dev, st.st_ino))


def unprotect(path: Path, *, objects_dir: str | None = None) -> bool:
    """Replace a hardlinked or symlinked file with an independent, writable copy.

    With `objects_dir`, only symlinks into it (tally's own links) are replaced: a
    symlink the user made is left alone. Returns False when nothing was changed.
    """
    st = os.lstat(path)
    if stat_mod.S_ISLNK(st.st_mode):
        src = os.path.realpath(path)
        if objects_dir is not None and not src.startswith(os.path.realpath(objects_dir) + os.sep):
            return False
    elif stat_mod.S_ISREG(st.st_mode) and (st.st_nlink > 1 or not st.st_mode & 0o200):
        src = os.fspath(path)
    else:
        return False
    tmp = f"{path.parent}/{TMP_PREFIX}{os.getpid()}-{os.urandom(6).hex()}"
    try:
        if not reflink(src, tmp):
            copy_file(src, tmp, mode=0o644)
        os.chmod(tmp, 0o644 | (0o111 if os.stat(src).st_mode & 0o111 else 0))
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return True


