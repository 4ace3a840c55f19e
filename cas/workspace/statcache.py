"""The stat cache (hash memo): `(dev, inode) -> (size, mtime_ns, ctime_ns, oid)`, and the
directory memo: `(dev, inode) of a directory -> (listing signature, tree id)`.

One per store, shared by every workspace of it (the project and each run directory
under `.tally/tmp/`), so a file hashed anywhere is never hashed again while it is
unchanged. It is only a cache: losing it costs re-hashing, never correctness; it must
never be *wrong*, which is what the racy rule below is for.

Racy-timestamp rule (git's, with the filesystem's own clock). Timestamps come from a
coarse kernel clock (and some filesystems truncate them to seconds), so a file changed
twice within one tick can keep the same (size, mtime, ctime). Before hashing, the
caller reads the clock through `now_ns()`: the mtime of a marker file it just touched,
i.e. the same clock and truncation as the files. An entry is recorded only when the
file's max(mtime, ctime) is strictly older than that reading: any later change to the
file then moves its mtime or ctime past the reading, so a stale entry can never match.
Files that are too new are simply hashed again next time.

A checkout records what it wrote: it writes the files, then waits out the clock tick
(`wait_past`), so every file it just wrote is strictly older than the reading, and
records them with the ids it wrote. Nothing just restored is hashed again. It then
records directory memo rows for the directories it materialized (cas/workspace/checkout.py,
cas/workspace/snapshot.py `record_checkout`), so that no directory is built again either.

The directory memo (spec/statcache.md, "The directory memo") lets a snapshot skip a
whole unchanged directory: its rows hold a BLAKE3 signature of the directory's listing
(every entry's name and stat values, each subdirectory's tree id) and the tree id it
built. cas/workspace/snapshot.py computes signatures and applies the racy rule to every entry
before it records a row; this module only stores and returns rows.

Storage: SQLite in WAL mode (concurrent readers and writers across processes, atomic
batches); one row per (dev, inode). The file rows are loaded whole into a dict when a
snapshot needs many of them (one SELECT is ~100x cheaper than 50k), and queried one by
one when it needs few (a directory memo hit leaves only the changed directories).

The bound (spec/statcache.md, "The bound"). Rows are keyed by inode, so a file that is
replaced (a new inode) or deleted leaves its row behind. A checkout forgets the rows of
what it replaces or deletes in the transaction that records what it wrote; for
everything else, the `counts` table keeps an upper bound of each table's rows and the
largest batch ever recorded into it, and a write that takes the bound past the table's
limit prunes the least recently recorded rows, in one transaction of its own. Nothing
is added to lookups: a last-used column would cost a write per hit (measured: 0.2 s
for 50,000 hits, twice the load of those rows).
"""

from __future__ import annotations

import os
import sqlite3
import sys
import threading
import time
from array import array
from pathlib import Path

from cas.core import hashing

# Format 3 added the `counts` table, format 2 the `dirs` table; format 1 (user_version
# 0) had `entries` alone. The older tables keep their meaning, so opening an older
# database only adds tables (spec/statcache.md, "Changes").
FORMAT_VERSION = 3
SCHEMA = """
CREATE TABLE IF NOT EXISTS entries (
    dev INTEGER NOT NULL,
    ino INTEGER NOT NULL,
    size INTEGER NOT NULL,
    mtime_ns INTEGER NOT NULL,
    ctime_ns INTEGER NOT NULL,
    recorded_ns INTEGER NOT NULL,
    oid TEXT NOT NULL,
    PRIMARY KEY (dev, ino)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS dirs (
    dev INTEGER NOT NULL,
    ino INTEGER NOT NULL,
    sig BLOB NOT NULL,
    oid TEXT NOT NULL,
    total_bytes INTEGER NOT NULL,
    total_files INTEGER NOT NULL,
    recorded_ns INTEGER NOT NULL,
    stored BLOB,
    PRIMARY KEY (dev, ino)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS counts (
    tbl TEXT NOT NULL PRIMARY KEY,
    rows INTEGER NOT NULL,
    peak INTEGER NOT NULL
) WITHOUT ROWID;
"""
# Filling `counts` from the tables themselves: when the table is created, and whenever a
# prune counts the rows anyway.
_COUNT_ROWS = ("INSERT OR REPLACE INTO counts VALUES ('entries', (SELECT count(*) FROM entries), 0), "
               "('dirs', (SELECT count(*) FROM dirs), 0)")
BUSY_TIMEOUT_MS = 30_000
MAX_TICK_WAIT = 2.5  # seconds: covers filesystems with 1 s or 2 s timestamp granularity
# Up to this many lookups are one indexed SELECT each (~5 us); more load the whole
# table once (~2 us a row, 50k rows ~0.1 s), which pays off only for many lookups.
POINT_LOOKUPS_MAX = 2048
_I63 = 1 << 63  # SQLite INTEGER is signed 64-bit
# The bound, per table: a table may hold LIMIT = max(ROWS_MIN, BATCH_FACTOR * peak) rows,
# where peak is the most rows one write has recorded into it (a checkout or add of the
# largest data set seen), so that live rows are never the ones pruned for want of room.
# ROWS_MIN costs at most ~0.2 s to load (~2 us a row); a prune deletes down to PRUNE_TO
# of the limit, so the count(*) and sort it costs (~0.3 s at 300,000 rows) come at most
# once per quarter limit of rows recorded.
ROWS_MIN = 100_000
BATCH_FACTOR = 2
PRUNE_TO = 0.75
_PRUNE_HOOK = None  # tests: called inside a prune's transaction, after its DELETE

_Keys = "list[tuple[int, int]] | tuple[()]"  # (dev, ino) of files or directories
DirRow = tuple  # (sig: bytes, oid: str, total_bytes: int, total_files: int, stored: bytes | None)


class NewerFormat(sqlite3.OperationalError):
    """The database was written by a newer tally (user_version above FORMAT_VERSION)."""


class StatCache:
    """Hash memo for one store. Thread-safe; cheap to construct (opens lazily)."""

    def __init__(self, db_path: Path, *, clock_dir: Path) -> None:
        self.db_path = Path(db_path)
        self.clock_dir = Path(clock_dir)
        self._db: sqlite3.Connection | None = None
        self._map: dict[int, tuple[int, int, int, int, int, str]] | None = None
        self._lock = threading.Lock()
        self._clock_dev = -1  # device of the last clock reading; record() keeps only its files

    # -- clock -------------------------------------------------------------------------
    def now_ns(self) -> int:
        """The filesystem's current time: the mtime of a marker file touched now.

        Returns 0 when the marker cannot be written (a read-only or full store): then
        nothing is recorded, which is always safe for a cache.
        """
        marker = self.clock_dir / f"clock-{os.getpid()}-{threading.get_ident()}"
        try:
            self.clock_dir.mkdir(parents=True, exist_ok=True)
            fd = os.open(marker, os.O_WRONLY | os.O_CREAT, 0o600)
        except OSError:
            return 0
        try:
            os.utime(fd)
            st = os.fstat(fd)
            ns = st.st_mtime_ns
            self._clock_dev = st.st_dev
        finally:
            os.close(fd)
            os.unlink(marker)
        return ns

    def wait_past(self, newest_ns: int, *, limit: float = MAX_TICK_WAIT) -> int:
        """Wait until the filesystem clock is strictly past `newest_ns`; return the reading.

        Gives up after `limit` seconds and returns the last reading, which the caller's
        racy check then rejects.
        """
        deadline = time.monotonic() + limit
        while True:
            now = self.now_ns()
            if now > newest_ns or time.monotonic() > deadline:
                return now
            time.sleep(0.002)

    # -- file lookups ------------------------------------------------------------------
    def lookup(self, st: os.stat_result) -> str | None:
        """The id recorded for this exact file state, or None."""
        m = self._map if self._map is not None else self._load()
        hit = m.get(st.st_ino)
        if hit is not None and hit[1] == st.st_dev and hit[2] == st.st_size \
                and hit[3] == st.st_mtime_ns and hit[4] == st.st_ctime_ns:
            return hit[5]
        return None

    def lookup_many(self, stats: list) -> list[str | None]:
        """lookup() for each stat, by point queries when they are few (see POINT_LOOKUPS_MAX)."""
        if self._map is not None or len(stats) > POINT_LOOKUPS_MAX:
            return [self.lookup(st) for st in stats]
        out: list[str | None] = []
        query = "SELECT size, mtime_ns, ctime_ns, oid FROM entries WHERE dev=? AND ino=?"
        with self._lock:
            db = self._connect()
            try:
                for st in stats:
                    if st.st_ino >= _I63 or st.st_dev >= _I63:
                        out.append(None)
                        continue
                    r = db.execute(query, (st.st_dev, st.st_ino)).fetchone()
                    out.append(r[3] if r is not None and r[0] == st.st_size
                               and r[1] == st.st_mtime_ns and r[2] == st.st_ctime_ns else None)
            except sqlite3.DatabaseError:
                out = []
        if len(out) != len(stats):  # damaged pages: _load() throws the database away
            return [self.lookup(st) for st in stats]
        return out

    def record(self, items: list[tuple[os.stat_result, str]], *, clock_ns: int,
               forget: _Keys = (), forget_dirs: _Keys = ()) -> int:
        """Remember `items` (stat taken before hashing, id) if they are older than `clock_ns`.

        `clock_ns` must come from now_ns() read *before* the files were stat'ed and
        hashed (or, for a checkout, from wait_past() after they were written). In the
        same transaction, and before recording (an inode freed may already be reused by
        one of `items`), drops the rows of the files and directories whose `(dev, ino)`
        are in `forget` and `forget_dirs`: what the caller deleted or replaced. Returns
        how many entries were recorded.
        """
        rows = []
        for st, oid in items:
            # Only files on the clock's own filesystem: another one may truncate its
            # timestamps more coarsely, and then the racy rule would not hold. Device
            # and inode numbers must fit SQLite's signed 64-bit INTEGER.
            if (self._clock_dev != -1 and st.st_dev != self._clock_dev) or st.st_ino >= _I63 \
                    or st.st_dev >= _I63:
                continue
            if max(st.st_mtime_ns, st.st_ctime_ns) < clock_ns:
                rows.append((st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns,
                             clock_ns, oid))
        gone = {"entries": _keys(forget), "dirs": _keys(forget_dirs)}
        if not rows and not gone["entries"] and not gone["dirs"]:
            return 0
        with self._lock:
            if not self._write("INSERT OR REPLACE INTO entries VALUES (?,?,?,?,?,?,?)", rows,
                               table="entries", forget=gone):
                return 0
            if self._map is not None:
                for dev, ino in gone["entries"]:
                    hit = self._map.get(ino)
                    if hit is not None and hit[1] == dev:
                        del self._map[ino]
                for r in rows:
                    self._map[r[1]] = (r[1], r[0], r[2], r[3], r[4], r[6])
        return len(rows)

    def forget(self, files: _Keys = (), dirs: _Keys = ()) -> None:
        """Drop the rows of the files and directories `(dev, ino)` a caller deleted."""
        self.record([], clock_ns=0, forget=files, forget_dirs=dirs)

    # -- directory memo ----------------------------------------------------------------
    def dir_rows(self, keys: list[tuple[int, int]]) -> dict[tuple[int, int], DirRow]:
        """The directory memo rows for `keys` ((dev, ino) of directories) that exist."""
        out: dict[tuple[int, int], DirRow] = {}
        query = "SELECT sig, oid, total_bytes, total_files, stored FROM dirs WHERE dev=? AND ino=?"
        with self._lock:
            db = self._connect()
            try:
                for key in keys:
                    if key[0] < _I63 and key[1] < _I63:
                        r = db.execute(query, key).fetchone()
                        if r is not None:
                            out[key] = r
            except sqlite3.DatabaseError:
                return {}  # the next write or file load finds and discards the damage
        return out

    def record_dirs(self, items: list[tuple]) -> int:
        """Remember directory memo rows.

        Each item is `(dev, ino, sig, oid, total_bytes, total_files, stored, newest_ns,
        clock_ns)`: `newest_ns` is the largest mtime or ctime among the entries the
        signature covers and `clock_ns` the clock reading taken before they were
        stat'ed. The caller checks each entry against the reading taken before its own
        stat; here a row is kept only if `newest_ns < clock_ns` and the directory is on
        the clock's filesystem (the racy rule). Returns how many rows were recorded.
        """
        rows = [(dev, ino, sig, oid, nbytes, nfiles, clock, stored)
                for dev, ino, sig, oid, nbytes, nfiles, stored, newest, clock in items
                if newest < clock and dev == self._clock_dev and dev < _I63 and ino < _I63]
        if not rows:
            return 0
        with self._lock:
            if not self._write("INSERT OR REPLACE INTO dirs VALUES (?,?,?,?,?,?,?,?)", rows,
                               table="dirs"):
                return 0
        return len(rows)

    def restamp_dirs(self, keys: list[tuple[int, int, bytes]], stored: bytes) -> None:
        """Set the store stamp of the rows `(dev, ino, sig)` (those whose trees an add
        found stored, under a stamp that its own publishing then changed)."""
        with self._lock:
            self._write("UPDATE dirs SET stored=? WHERE dev=? AND ino=? AND sig=?",
                        [(stored, dev, ino, sig) for dev, ino, sig in keys])

    def _write(self, sql: str, rows: list[tuple], *, table: str | None = None,
               forget: dict[str, list[tuple[int, int]]] | None = None) -> bool:
        """executemany in one transaction (caller holds the lock); False if not written.

        With `table`, `rows` are new rows of it: its count in `counts` grows by their
        number (an upper bound: a replaced row is counted again) and its peak to it, and
        if that takes the count past the table's limit, the table is pruned after the
        commit. `forget` maps a table to keys deleted first, in the same transaction.
        A read-only or full store is not an error: a cache may simply not remember.
        """
        db = self._connect()
        over = False
        try:
            with db:
                for t, keys in (forget or {}).items():
                    if keys:
                        n = db.executemany(f"DELETE FROM {t} WHERE dev=? AND ino=?", keys).rowcount
                        db.execute("UPDATE counts SET rows = max(rows - ?, 0) WHERE tbl=?", (n, t))
                if rows:
                    db.executemany(sql, rows)
                if table is not None and rows:
                    db.execute("UPDATE counts SET rows = rows + ?, peak = max(peak, ?) WHERE tbl=?",
                               (len(rows), len(rows), table))
                    r = db.execute("SELECT rows, peak FROM counts WHERE tbl=?", (table,)).fetchone()
                    over = r is not None and r[0] > row_limit(r[1])
        except sqlite3.OperationalError:
            return False
        if over:
            self._prune(table)  # type: ignore[arg-type]
        return True

    def _prune(self, table: str) -> int:
        """Delete the least recently recorded rows of `table`, down to PRUNE_TO of its
        limit, if its count is past the limit (caller holds the lock). Returns rows deleted.

        One IMMEDIATE transaction: the count, the delete and the new count land together
        or not at all, and a concurrent writer that also found the table over its limit
        finds the new count when it gets the lock. Only deletes: a killed prune leaves
        the rows it had, each as trustworthy as before (the lookup rule checks them).
        """
        db = self._connect()
        try:
            db.execute("BEGIN IMMEDIATE")
        except sqlite3.OperationalError:
            return 0  # busy past the timeout, or read-only: the next write tries again
        try:
            r = db.execute("SELECT rows, peak FROM counts WHERE tbl=?", (table,)).fetchone()
            if r is None or r[0] <= row_limit(r[1]):
                db.rollback()
                return 0  # another process pruned it meanwhile
            limit = row_limit(r[1])
            n = db.execute(f"SELECT count(*) FROM {table}").fetchone()[0]
            gone = 0
            if n > limit:
                # Ties in recorded_ns (one batch) are broken by key, so exactly this many go.
                gone = db.execute(
                    f"DELETE FROM {table} WHERE (dev, ino) IN (SELECT dev, ino FROM {table} "
                    "ORDER BY recorded_ns, dev, ino LIMIT ?)", (n - int(limit * PRUNE_TO),)).rowcount
                if _PRUNE_HOOK is not None:
                    _PRUNE_HOOK()
            db.execute("UPDATE counts SET rows=? WHERE tbl=?", (n - gone, table))
            db.commit()
        except sqlite3.OperationalError:
            db.rollback()
            return 0
        except BaseException:
            db.rollback()
            raise
        # Rows already loaded stay in the map: pruning makes no row wrong, only absent.
        return gone

    # -- maintenance -------------------------------------------------------------------
    def forget_oids(self, oids: set[str]) -> int:
        """Drop entries naming any of `oids` (gc removed those objects). Returns rows removed.

        One pass over each table, matching ids in Python, then deleting the matching
        rows by key: the cost follows the cache's size, not the number of ids (gc often
        drops 50,000 objects a cache never saw; loading them into a temporary table to
        join against cost 0.25 s even with an empty cache). An index on oid would
        instead tax every insert of every add and checkout.
        """
        if not oids:
            return 0
        with self._lock:
            db = self._connect()
            n = 0
            try:
                with db:
                    for table in ("entries", "dirs"):
                        gone = [(dev, ino) for dev, ino, oid in
                                db.execute(f"SELECT dev, ino, oid FROM {table}") if oid in oids]
                        if gone:
                            db.executemany(f"DELETE FROM {table} WHERE dev = ? AND ino = ?", gone)
                            db.execute("UPDATE counts SET rows = max(rows - ?, 0) WHERE tbl=?",
                                       (len(gone), table))
                            n += len(gone)
            except sqlite3.OperationalError:
                return 0  # a read-only store keeps its (harmless) stale entries
            self._map = None
            return n

    def clear(self) -> None:
        with self._lock:
            db = self._connect()
            with db:
                db.execute("DELETE FROM entries")
                db.execute("DELETE FROM dirs")
                db.execute("UPDATE counts SET rows=0")
            self._map = None

    def __len__(self) -> int:
        return len(self._map if self._map is not None else self._load())

    def close(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None

    # -- internals ---------------------------------------------------------------------
    def _connect(self) -> sqlite3.Connection:
        if self._db is None:
            try:
                self._db = self.open_db()
            except (sqlite3.OperationalError, OSError):
                # A read-only store (or one with no space), or a newer format: work
                # without memory.
                db = sqlite3.connect(":memory:", check_same_thread=False)
                db.executescript(SCHEMA)
                with db:
                    db.execute(_COUNT_ROWS)
                self._db = db
        return self._db

    def open_db(self) -> sqlite3.Connection:
        """Open the SQLite file (created and prepared if needed); called once, on first
        use. A subclass may open it otherwise (read-only, as a cache the user may read
        but not write is opened: tests/unit/test_statcache_bound.py).

        Raises:
            sqlite3.OperationalError, OSError: the cache cannot be opened or prepared
                (then the cache works from memory, recording nothing on disk).
        """
        self.db_path.parent.mkdir(parents=True, exist_ok=True)
        db = sqlite3.connect(self.db_path, timeout=BUSY_TIMEOUT_MS / 1000,
                             isolation_level="DEFERRED", check_same_thread=False)
        try:
            _prepare(db)
        except sqlite3.OperationalError:
            db.close()  # locked too long, read-only, full, newer: not damage; never delete
            raise
        except sqlite3.DatabaseError:
            # A damaged cache is thrown away, never trusted.
            db.close()
            _unlink_db(self.db_path)
            db = sqlite3.connect(self.db_path, timeout=BUSY_TIMEOUT_MS / 1000,
                                 isolation_level="DEFERRED", check_same_thread=False)
            _prepare(db)
        return db

    def _load(self) -> dict[int, tuple[int, int, int, int, int, str]]:
        # Keyed by inode alone, valued by SQLite's own row tuple: no tuple is built per
        # row in Python (a third of the load time of 50k rows). The device is compared
        # on lookup; entries are only ever recorded for the clock's device anyway.
        with self._lock:
            if self._map is None:
                db = self._connect()
                query = "SELECT ino, dev, size, mtime_ns, ctime_ns, oid FROM entries"
                try:
                    self._map = {r[0]: r for r in db.execute(query)}
                except sqlite3.DatabaseError:
                    # A valid header over damaged pages ("database disk image is
                    # malformed") only shows when the rows are read: throw it away too.
                    db.close()
                    self._db = None
                    _unlink_db(self.db_path)
                    self._connect()
                    self._map = {}
            return self._map


def row_limit(peak: int) -> int:
    """The most rows a table may hold, given the largest batch recorded into it."""
    return max(ROWS_MIN, BATCH_FACTOR * peak)


def _keys(keys: _Keys) -> list[tuple[int, int]]:
    return [k for k in keys if 0 <= k[0] < _I63 and 0 <= k[1] < _I63]


def tree_keys(root: str | os.PathLike[str]) -> tuple[list[tuple[int, int]], list[tuple[int, int]]]:
    """`(files, dirs)`: the `(dev, ino)` of everything under `root` (itself included),
    for forgetting before a caller deletes it. One scandir per directory and no stat
    (the inode numbers come with the listing), the device is `root`'s: a mount point
    inside gets a wrong key, and forgetting a wrong key only costs a re-hash."""
    files: list[tuple[int, int]] = []
    dirs: list[tuple[int, int]] = []
    try:
        st = os.lstat(root)
    except OSError:
        return files, dirs
    dev = st.st_dev
    is_dir = st.st_mode & 0o170000 == 0o040000  # S_ISDIR (the stat module is not imported here)
    (dirs if is_dir else files).append((dev, st.st_ino))
    stack = [os.fspath(root)] if is_dir else []
    while stack:
        try:
            with os.scandir(stack.pop()) as it:
                for e in it:
                    if e.is_dir(follow_symlinks=False):
                        dirs.append((dev, e.inode()))
                        stack.append(e.path)
                    else:
                        files.append((dev, e.inode()))
        except OSError:
            continue
    return files, dirs


def _prepare(db: sqlite3.Connection) -> None:
    """WAL mode, the schema, and the format version: 0 (format 1) and 2 are upgraded in
    place, counting their rows once."""
    db.execute("PRAGMA journal_mode=WAL")
    # A cache: NORMAL keeps WAL atomic (never torn), only the last commits may be lost
    # on power failure, which costs a re-hash, not correctness.
    db.execute("PRAGMA synchronous=NORMAL")
    version = db.execute("PRAGMA user_version").fetchone()[0]
    if version == FORMAT_VERSION:
        return
    if version > FORMAT_VERSION:
        raise NewerFormat(f"stat cache format {version} is newer than {FORMAT_VERSION}")
    db.executescript(SCHEMA)
    with db:
        db.execute(_COUNT_ROWS)
        db.execute(f"PRAGMA user_version={FORMAT_VERSION}")


def _unlink_db(db_path: Path) -> None:
    for suffix in ("", "-wal", "-shm"):
        try:
            os.unlink(str(db_path) + suffix)
        except FileNotFoundError:
            pass


# ------------------------------------------------------------------ the store stamp
#
# A directory memo row's `stored` column (spec/statcache.md, "The store stamp"): while
# the stamp of the objects directory is unchanged, no object was deleted, so a tree
# once seen stored is still whole in the store.

STAMP_HEADER = b"tally-store-stamp 1\n"
# After an add, the store stamp is recorded once the clock is past the objects just
# published; on filesystems with a coarser clock than this wait, the next add records it.
STAMP_WAIT = 0.1  # seconds
_SWAP = sys.byteorder != "little"  # the stamp packs integers little-endian


def settled_stamp(objects_dir: str | os.PathLike[str], clock: int) -> bytes | None:
    """The store stamp, if every value in it is strictly older than `clock` (a reading
    taken before this call), so that any deletion from now on changes it; else None."""
    stamp, newest = _store_stamp(objects_dir)
    return stamp if newest < clock else None


def store_stamp(objects_dir: str | os.PathLike[str]) -> bytes | None:
    """The store stamp (spec/statcache.md, "The store stamp"), None if unreadable."""
    return _store_stamp(objects_dir)[0]


def _store_stamp(objects_dir: str | os.PathLike[str]) -> tuple[bytes | None, int]:
    """(stamp, newest mtime or ctime) of the objects directory and its shard directories.

    Deleting an object changes its shard directory's mtime and ctime (and removing or
    replacing a shard changes the objects directory's), so while the stamp is equal,
    no object was deleted. Adding one changes it too, which only costs a slower add.
    """
    root = os.fspath(objects_dir)
    try:
        st = os.stat(root)
        with os.scandir(root) as it:
            ents = sorted(it, key=lambda e: e.name)
        vals = [st.st_dev, st.st_ino, st.st_mtime_ns, st.st_ctime_ns]
        newest = max(st.st_mtime_ns, st.st_ctime_ns)
        for e in ents:
            s = e.stat(follow_symlinks=False)
            vals += (s.st_ino, s.st_mtime_ns, s.st_ctime_ns)
            newest = max(newest, s.st_mtime_ns, s.st_ctime_ns)
    except OSError:
        return None, 0
    try:
        ints = array("q", vals)
    except OverflowError:
        return None, 0
    if _SWAP:
        ints.byteswap()
    h = hashing.new_hasher()
    h.update(STAMP_HEADER)
    h.update(("".join(e.name + "\0" for e in ents)).encode("utf-8", "surrogateescape"))
    h.update(ints.tobytes())
    return h.digest(), newest


def recordable_stamp(objects_dir: str | os.PathLike[str], statcache: "StatCache") -> bytes | None:
    """The store stamp, if a later deletion is sure to change it (the racy rule again).

    An add publishes objects just before this, so their shards are as new as the clock;
    then it waits out the tick (at most STAMP_WAIT). Waiting after the stat is safe only
    because the caller holds the store lock shared: nothing deletes objects meanwhile,
    and a deletion after the lock is released is stamped later than the reading.
    """
    now = statcache.now_ns()
    stamp, newest = _store_stamp(objects_dir)
    if stamp is None or newest < now:
        return stamp
    return stamp if statcache.wait_past(newest, limit=STAMP_WAIT) > newest else None
