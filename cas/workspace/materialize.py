"""Writing one entry of a stored tree into the workspace: the link modes.

Link modes, tried in the configured order per file (default `reflink, copy`):

    reflink   clone the raw object (copy-on-write; independent, writable file)
    hardlink  the workspace file *is* the object's inode: read-only (0444)
    symlink   a symlink to the object file: read-only target
    copy      an independent copy (also the only way out of a zstd object)

A mode that cannot apply (compressed object, another filesystem, no CoW support)
falls through to the next. Hardlinked and symlinked files are read-only so an edit
cannot corrupt the store; `tally unprotect` swaps one for a writable copy. Every file
is built under a temp name in its own directory and renamed into place when it
replaces something (or when the mode is not atomic), so no reader sees a torn file.

What to write, what may be overwritten, and what the stat cache is told are decided
by cas/workspace/checkout.py, the only user of this module.
"""

from __future__ import annotations

import errno
import os
from pathlib import Path
from collections.abc import Collection

from cas.core import hashing
from cas.objects import tree
from cas.core.errors import Conflict, CorruptObject
from cas.core import paths
from cas.core.failpoints import failpoint
from cas.core.fsops import copy_file, reflink, remove_tree, write_all
from cas.store.objectstore import FileStore

TMP_PREFIX = ".tally-tmp-"
# The process umask, read once (os.umask can only be read by setting it).
_UMASK = os.umask(0o022)
os.umask(_UMASK)


class Materializer:
    """Writes entries into the workspace by the first link mode that applies."""

    def __init__(self, store: FileStore, links: tuple[str, ...], *, verify: bool = False) -> None:
        self.store = store
        self.links = links
        # Copies (and decompressions) are always checked against their id: the bytes
        # pass through this process anyway. With `verify`, linked files are too, by
        # hashing the object before it is linked (spec/checkout.md, "Verification").
        self.verify = verify
        self.no_reflink = False  # set after the first refusal: do not ask per file
        self.tree_links: frozenset[str] = frozenset()  # the tree's symlinks (see _escapes)
        # Paths (rel) of the tree whose name another one's differs from only in case
        # (case_twins): one file on a case-insensitive filesystem.
        self.case_twins: frozenset[str] = frozenset()
        self._n = 0
        self._tag = f"{os.getpid()}-{os.urandom(4).hex()}"

    def _tmp(self, path: str) -> str:
        self._n += 1
        return f"{path.rpartition('/')[0]}/{TMP_PREFIX}{self._tag}-{self._n}"

    def write(self, e: tree.Entry, path: str, *, rel: str,
              replace: bool) -> tuple[str, os.stat_result | None]:
        """Materialize `e` at `path` (`rel` inside the tree); return (link mode, lstat).

        A new path is created directly when the mode is atomic (hardlink, symlink);
        otherwise, and whenever something is replaced, the entry is built under a temp
        name and renamed over, so no reader ever sees a torn file. A regular file whose
        size is not the tree's is damage: it is removed and CorruptObject raised.
        """
        if not replace and rel in self.case_twins and os.path.lexists(path):
            # Nothing was here when the checkout looked, and a twin was just written:
            # this filesystem does not tell the two names apart. A rename would replace
            # the twin silently (copy, reflink); refuse instead.
            raise Conflict(f"{rel} and another path of the tree differ only in case: this "
                           "filesystem holds them as one file", path=path,
                           hint="check the data out on a case-sensitive filesystem, "
                                "or rename one of them and add it again")
        if e.kind == tree.SYMLINK:
            return self._symlink_entry(e, path, rel), None
        mode = self._write_file(e, path, replace)
        st = os.lstat(path)
        # A symlink is judged by the object it points to; size -1 means unknown.
        size = os.stat(path).st_size if mode == "symlink" else st.st_size
        if e.size >= 0 and e.size != size:
            os.unlink(path)
            raise CorruptObject(e.oid, f"{st.st_size} bytes in the store, the tree says {e.size}",
                                path=self.store.raw_path(e.oid))
        return mode, (None if mode == "symlink" else st)

    def _write_file(self, e: tree.Entry, path: str, replace: bool) -> str:
        raw = self.store.raw_path(e.oid)
        tmp = None
        try:
            for mode in self.links:
                if e.mode & 0o111 and mode in ("hardlink", "symlink"):
                    continue  # would share the object's 0444 and lose the x bits
                if mode in ("hardlink", "symlink") and self.verify and os.path.exists(raw):
                    _check_id(raw, e.oid, raw)
                if mode == "hardlink":
                    tmp = self._tmp(path) if replace else None
                    try:
                        os.link(raw, tmp or path)
                    except FileNotFoundError:
                        if not os.path.exists(raw):  # compressed or missing: next mode
                            tmp = None
                            continue
                        raise
                    except OSError as exc:
                        if exc.errno in (errno.EXDEV, errno.EMLINK, errno.EPERM, errno.ENOTSUP):
                            tmp = None
                            continue
                        raise
                elif mode == "symlink":
                    if not os.path.exists(raw):
                        continue
                    tmp = self._tmp(path) if replace else None
                    os.symlink(os.path.abspath(raw), tmp or path)
                elif mode == "reflink":
                    if self.no_reflink or not os.path.exists(raw):
                        continue
                    tmp = self._tmp(path)
                    if not reflink(raw, tmp):
                        self.no_reflink = True
                        tmp = None
                        continue
                    os.chmod(tmp, e.mode & ~_UMASK)
                    if self.verify:
                        _check_id(tmp, e.oid, raw)
                elif mode == "copy":
                    tmp = self._tmp(path)
                    self._copy(e, raw, tmp)
                else:  # pragma: no cover - config validation forbids it
                    continue
                if tmp is not None:
                    self._replace(tmp, path)
                return mode
            # Nothing in the configured order applied: a copy always can.
            tmp = self._tmp(path)
            self._copy(e, raw, tmp)
            self._replace(tmp, path)
            return "copy"
        except BaseException:
            if tmp is not None:
                try:
                    os.unlink(tmp)
                except FileNotFoundError:
                    pass
            raise

    def _copy(self, e: tree.Entry, raw: str, tmp: str) -> None:
        try:
            if e.size >= 0 and e.size < hashing.MMAP_THRESHOLD:
                # Small: read, hash, write; the bytes are in hand, so checking them
                # costs a hash and no second read.
                with open(raw, "rb", buffering=0) as f:
                    data = f.read()
                if hashing.hash_bytes(data) != e.oid:
                    raise CorruptObject(e.oid, "its bytes do not hash to its id", path=raw)
                fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, e.mode)
                try:
                    write_all(fd, data)
                finally:
                    os.close(fd)
            else:
                # Large: the kernel copies, then the copy (in the page cache) is hashed
                # on BLAKE3's threads before it may take the final name.
                copy_file(raw, tmp, mode=e.mode)
                _check_id(tmp, e.oid, raw)
        except FileNotFoundError:
            info = self.store.info(e.oid)  # ObjectMissing when neither form exists
            if not info.compressed:
                raise
            _decompress_to(e.oid, info.path, tmp, e.mode, e.size)

    @staticmethod
    def _replace(tmp: str, path: str) -> None:
        failpoint("checkout:temp-written", group=True)
        if os.path.isdir(path) and not os.path.islink(path):
            remove_tree(path)
        os.replace(tmp, path)
        failpoint("checkout:renamed", group=True)

    def _symlink_entry(self, e: tree.Entry, path: str, rel: str) -> str:
        target = link_target(self.store, e, rel, self.tree_links)
        tmp = self._tmp(path)
        os.symlink(target, tmp)
        self._replace(tmp, path)
        return "symlink"


def case_twins(rels: "Collection[str]") -> frozenset[str]:
    """The paths of `rels` that another differs from only in case (`A.txt`, `a.txt`):
    the same file on a case-insensitive filesystem (macOS, Windows). One set
    comprehension when there are none, which is almost always."""
    if len({r.lower() for r in rels}) == len(rels):
        return frozenset()
    seen: dict[str, list[str]] = {}
    for r in rels:
        seen.setdefault(r.lower(), []).append(r)
    return frozenset(r for group in seen.values() if len(group) > 1 for r in group)


def link_target(store: FileStore, e: tree.Entry, rel: str,
                 links: frozenset[str] = frozenset()) -> str:
    """The target of a stored symlink, refused if absolute or escaping its tree
    (`links`: every symlink of the tree, which a target may not pass through)."""
    target = store.get(e.oid, max_size=e.size or None).decode("utf-8", "surrogateescape")
    # Judged from the link's place in the tree, not in its directory:
    # `sub/link -> ../a.txt` stays inside, `link -> ../x` does not.
    return paths.check_symlink(rel or "link", target, links, source="a stored tree")


def remove_leftover(path: str, name: str) -> bool:
    """Remove the temp file `path` (named `name`, `.tally-tmp-<pid>-...`) if the process
    that made it is gone; True if removed.

    A checkout or restore killed between creating a temp file and renaming it over its
    final name leaves it behind. One whose writer still runs (on this host: workspaces
    are local) is left alone: it is about to be renamed.
    """
    pid_text = name[len(TMP_PREFIX):].partition("-")[0]
    if not pid_text.isdigit() or int(pid_text) == os.getpid():
        return False
    try:
        os.kill(int(pid_text), 0)
        return False  # its writer lives
    except ProcessLookupError:
        pass
    except (PermissionError, OverflowError):
        return False  # alive under another user, or not a pid at all: not ours to judge
    try:
        os.unlink(path)
        return True
    except (FileNotFoundError, IsADirectoryError):
        return False


def _check_id(path: str, oid: str, source: str) -> None:
    """Raise CorruptObject unless the file at `path` hashes to `oid` (`source`: the
    object file to name in the error)."""
    if hashing.hash_file(path) != oid:
        raise CorruptObject(oid, "its bytes do not hash to its id", path=source)


def _decompress_to(oid: str, src: Path, tmp: str, mode: int, size: int) -> None:
    """Decompress a zstd object into a new file, verifying its hash on the way."""
    import zstandard  # here: only a checkout out of a compressed object needs it

    hasher = hashing.new_hasher(threaded=size >= hashing.MMAP_THRESHOLD)
    written = 0
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    try:
        with open(src, "rb") as f:
            reader = zstandard.ZstdDecompressor().stream_reader(f)
            while True:
                chunk = reader.read(hashing.STREAM_CHUNK)
                if not chunk:
                    break
                written += len(chunk)
                if size >= 0 and written > size:
                    raise CorruptObject(oid, f"expands beyond its recorded {size} bytes", path=src)
                hasher.update(chunk)
                view = memoryview(chunk)
                while view:
                    view = view[os.write(fd, view):]
    except zstandard.ZstdError as exc:
        os.close(fd)
        raise CorruptObject(oid, f"bad zstd frame: {exc}", path=src) from None
    except BaseException:
        os.close(fd)
        raise
    os.close(fd)
    if hasher.hexdigest() != oid:
        raise CorruptObject(oid, "content does not hash to its id", path=src)
