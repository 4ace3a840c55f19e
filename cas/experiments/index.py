"""The experiment summary index: `.tally/index/exps.msgpack`, a cache that makes `show` fast.

Listing 10,000 experiments from the source of truth costs ~0.2 s of ref reads and
~0.8 s of reading and decoding records on one core here (summarize_many splits many
new records over forked processes: ~0.45 s on two). The index keeps what a listing
needs so that only what changed since the last listing is read again. It is only a cache: deleting it costs
one slow listing, never a wrong one, and a damaged or foreign file is ignored (and
rewritten), never an error.

What it holds, and why each part can be trusted:

    records    record id -> summary (baseline, created, status, flattened metrics and
               params, deps, ...). A record is immutable and named by its content, so
               a summary keyed by its id can never go stale.
    refs       baseline -> name -> (inode, size, mtime_ns, ctime_ns, record id): the
               ref file's stat when it was read. A cached id is used only when the
               ref file's stat is unchanged *and* its mtime and ctime are older than
               `clock`, the filesystem time read before the ref was read (git's
               racy-timestamp rule, as in cas/workspace/statcache.py): any later rewrite, even
               in place and within one clock tick, moves mtime or ctime past it. So
               each listing costs one scandir and one stat per ref (10,000 refs:
               ~40 ms), and reads only the refs that changed. Names are always those
               the directory holds now.
    baselines  commit -> {dep path: id at that commit, or nil if absent, or "" if
               unknown}, read from the commit's files and tally.lock: a commit is
               immutable too.

Layout: one msgpack array `[b"TLYX", 6, clock, refs, schemas, records, baselines]`,
where `schemas` lists the column-id lists that records' values are aligned with. Writes
are atomic (temp file in the same directory, rename) and happen only when something
changed, so a repeated listing writes nothing. Two concurrent writers each publish
a complete, valid index; the last one wins.
"""

from __future__ import annotations

import os
import stat as stat_mod
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import msgpack

from cas.workspace import gitobjects
from cas.core import hashing
from cas.objects import pointer
from cas.objects import record
from cas.store import refs
from cas.core.errors import FormatError, ObjectMissing, TallyError
from cas.core.fsops import unlink_quiet

if TYPE_CHECKING:
    from cas.workspace.project import Project

MAGIC = b"TLYX"
VERSION = 7  # 7: baseline deps a DVC baseline names by MD5 are UNKNOWN (cached ones were None)
INDEX_DIR = "index"
INDEX_FILE = "exps.msgpack"
# A cache file bigger than this is not ours: ignore it rather than load it.
MAX_INDEX_SIZE = 1024 * 1024 * 1024  # bytes; 10,000 summaries take ~3 MiB
LOCK_FILE = "tally.lock"
DVC_LOCK_FILE = "dvc.lock"
DVC_SUFFIX = ".dvc"  # `dvc add`'s pointer: PATH.dvc
UNKNOWN = ""  # a baseline dep whose id cannot be told cheaply (a directory Git tracks)


@dataclass(frozen=True, slots=True)
class Summary:
    """What a listing needs from one record (rows are built from these)."""

    baseline: str
    created: int  # unix ns
    status: str
    exit_code: int | None
    # Row values under their query column ids (cas/experiments/table.py): "metrics:<file>:<key>",
    # "params:<file>:<key>", "deps:<path>". Kept in that form so a row is one dict merge.
    values: dict[str, Any]
    deps: dict[str, str]  # path -> id (also in values, as "deps:<path>")
    message: str
    steps: tuple[int, ...]  # checkpoint steps
    has_workspace: bool
    parent: str | None

    def pack(self, schema: int) -> list[Any]:
        """The index form: `values` as a list aligned with the key list `schema` names."""
        return [self.baseline, self.created, self.status, self.exit_code, schema,
                list(self.values.values()), self.message, list(self.steps), self.has_workspace,
                self.parent]


def summarize(rec: record.Record) -> Summary:
    """The listing summary of a decoded record."""
    values: dict[str, Any] = {}
    for k, v in rec.flat_metrics().items():
        values["metrics:" + k] = v
    for k, v in rec.flat_params().items():
        values["params:" + k] = v
    for k, v in sorted(rec.deps.items()):
        values["deps:" + k] = v
    return Summary(baseline=rec.baseline, created=rec.created, status=rec.status,
                   exit_code=rec.exit_code, values=values, deps=dict(sorted(rec.deps.items())),
                   message=rec.message,
                   steps=tuple(s for s, _ in rec.checkpoints),
                   has_workspace=rec.workspace is not None, parent=rec.parent)


@dataclass(frozen=True, slots=True)
class Listed:
    """One experiment as listed: its ref and the summary of the record it names."""

    baseline: str
    name: str
    oid: str
    summary: Summary | None  # None: the record is missing or damaged
    problem: str | None = None  # why summary is None


# Stands for the record id of a ref file that cannot be read (list_refs -> listed):
# never an id (ids are hex), so it can never meet a record.
BAD_REF = "damaged-ref:"


class Index:
    """The loaded cache plus the bookkeeping to save it when it changed."""

    def __init__(self, project: Project) -> None:
        self.project = project
        self.path = Path(project.store_dir) / INDEX_DIR / INDEX_FILE
        self.clock: int | None = None  # the saved index's clock
        self.refs: dict[str, dict[str, list[Any]]] = {}
        self.records: dict[str, Summary] = {}
        self.baselines: dict[str, dict[str, str | None]] = {}
        self.dirty = False
        self.bad_refs: dict[str, str] = {}  # BAD_REF + "baseline/name" -> the problem
        self._new_clock: int | None = None
        self._tmp: str | None = None
        self._load()

    # -- loading ---------------------------------------------------------------------
    def _load(self) -> None:
        try:
            with open(self.path, "rb") as f:
                data = f.read(MAX_INDEX_SIZE + 1)
        except OSError:
            return
        if len(data) > MAX_INDEX_SIZE:
            return
        try:
            magic, version, clock, refs_, schemas, records, baselines = msgpack.unpackb(
                data, raw=False, use_list=True, strict_map_key=False)
            if magic != MAGIC or version != VERSION or type(clock) is not int:
                return
            self.records = _unpack_records(schemas, records)
            self.refs = {b: dict(names) for b, names in refs_.items()}
            self.baselines = {c: dict(d) for c, d in baselines.items()}
            self.clock = clock
        except (ValueError, TypeError, KeyError, IndexError, AttributeError, msgpack.UnpackException):
            # Damaged or foreign: start from nothing; the next save replaces it.
            self.refs, self.records, self.baselines, self.clock = {}, {}, {}, None
            self.dirty = True

    # -- the fs clock ----------------------------------------------------------------
    def _clock_now(self) -> int | None:
        """Filesystem time before reading refs; also creates the temp file to save into."""
        if self._new_clock is not None:
            return self._new_clock
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            tmp = f"{self.path.parent}/.{INDEX_FILE}.tmp-{os.getpid()}-{os.urandom(4).hex()}"
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
            try:
                self._new_clock = os.fstat(fd).st_mtime_ns
            finally:
                os.close(fd)
            self._tmp = tmp
        except OSError:
            return None  # a read-only store: list without caching
        return self._new_clock

    # -- refs ------------------------------------------------------------------------
    def list_refs(self, baselines: list[str]) -> list[tuple[str, str, str]]:
        """(baseline, name, record id) of every ref under `baselines`, sorted like refs.list_refs."""
        root = os.fspath(refs.refs_root(self.project))
        out: list[tuple[str, str, str]] = []
        for b in baselines:
            cached = self.refs.get(b)
            got = self._scan(b, f"{root}/{b}", cached or {})
            if got is None:
                if cached is not None:
                    del self.refs[b]
                    self.dirty = True
                continue
            out.extend(got)
        return out

    def _scan(self, b: str, d: str, cached: dict[str, list[Any]]) -> list[tuple[str, str, str]] | None:
        """List one baseline directory (None if there is none), reading only refs whose
        stat changed."""
        out = []
        fresh: dict[str, list[Any]] = {}
        try:
            with os.scandir(d) as it:
                entries = sorted((e for e in it if not e.name.startswith(".")), key=lambda e: e.name)
                stats = [(e.name, e.stat(follow_symlinks=False)) for e in entries]
        except (FileNotFoundError, NotADirectoryError):
            return None
        for name, st in stats:
            if not stat_mod.S_ISREG(st.st_mode):
                continue
            c = cached.get(name)
            if c is not None and self.clock is not None and c[0] == st.st_ino \
                    and c[1] == st.st_size and c[2] == st.st_mtime_ns and c[3] == st.st_ctime_ns \
                    and max(st.st_mtime_ns, st.st_ctime_ns) < self.clock:
                fresh[name] = c
                out.append((b, name, c[4]))
                continue
            if refs.name_problem(name):
                continue
            clock = self._clock_now()
            # The stat was taken before this read (the safe order, as for the stat
            # cache): a ref replaced in between shows a new stat next time.
            try:
                oid = _read_ref(f"{d}/{name}")
            except FormatError as exc:
                # One damaged ref must not hide the others: it is listed, unreadable,
                # with the problem naming its file (never cached: it is re-read).
                self.bad_refs[BAD_REF + f"{b}/{name}"] = exc.message
                out.append((b, name, BAD_REF + f"{b}/{name}"))
                continue
            if oid is None:
                continue  # removed while we listed
            if clock is not None:
                fresh[name] = [st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns, oid]
            self.dirty = True
            out.append((b, name, oid))
        if fresh.keys() != cached.keys():
            self.dirty = True
        self.refs[b] = fresh
        return out

    # -- records ---------------------------------------------------------------------
    def listed(self, ref_list: list[tuple[str, str, str]]) -> list[Listed]:
        """Attach each ref's record summary, decoding only records not seen before."""
        new = list(dict.fromkeys(oid for _, _, oid in ref_list
                                 if oid not in self.records and not oid.startswith(BAD_REF)))
        problems: dict[str, str] = {}
        if new:
            found, problems = summarize_many(self.project.store, new)
            if found:
                self.records.update(found)
                self.dirty = True
        out = []
        for b, name, oid in ref_list:
            s = self.records.get(oid)
            if oid.startswith(BAD_REF):
                out.append(Listed(b, name, "", None, self.bad_refs.get(oid, "damaged ref")))
                continue
            out.append(Listed(b, name, oid, s) if s is not None else
                       Listed(b, name, oid, None, problems.get(oid, "record unreadable")))
        return out

    # -- baselines -------------------------------------------------------------------
    def baseline_deps(self, commit: str, paths: set[str]) -> dict[str, str | None]:
        """What each dep path in `paths` is at baseline `commit`: its id, None when the
        commit does not have it, or UNKNOWN when that cannot be told cheaply.

        From the commit's own content first: a pointer `PATH.tally` gives the data's
        id, a file Git tracks is hashed; then from the commit's `tally.lock` (a stage's
        output that a later stage depends on). UNKNOWN: a path a DVC baseline names by
        MD5 (a `PATH.dvc` file, or dvc.lock, for it or a directory holding it), and a
        directory Git tracks.
        """
        known = self.baselines.setdefault(commit, {})
        todo = {p for p in paths if p not in known}
        if not todo:
            return known
        self.dirty = True
        listed: list[str] = []

        def match(p: str) -> bool:
            listed.append(p)
            return p in todo or p in (LOCK_FILE, DVC_LOCK_FILE) or \
                (p.endswith(pointer.SUFFIX) and p[:-len(pointer.SUFFIX)] in todo)
        try:
            with gitobjects.TreeReader(self.project.root) as reader:
                files = reader.read_files(commit, match)
        except TallyError:  # an unknown commit (rewritten history): nothing to compare to
            known.update((p, UNKNOWN) for p in todo)
            return known
        lock: dict[str, str] = {}
        if LOCK_FILE in files:
            try:
                from cas.pipeline import tallylock as lockfile
                for st in lockfile.loads(files[LOCK_FILE].decode("utf-8", "replace")).values():
                    for d in st.deps:
                        lock[d.path] = d.oid
            except (TallyError, AttributeError, ValueError):
                pass
        # A DVC baseline names data by MD5 (a `PATH.dvc` file, dvc.lock's deps and outs),
        # which cannot be compared with a BLAKE3 id: UNKNOWN, never "changed".
        dvc_named = {p[:-len(DVC_SUFFIX)] for p in listed if p.endswith(DVC_SUFFIX)}
        if DVC_LOCK_FILE in files:
            dvc_named.update(_dvc_lock_paths(files[DVC_LOCK_FILE]))
        dirs = {p.rsplit("/", 1)[0] for p in listed if "/" in p}
        dirs |= {d.rsplit("/", i)[0] for d in list(dirs) for i in range(1, d.count("/") + 1)}
        for p in todo:
            ptr = files.get(p + pointer.SUFFIX)
            if ptr is not None:
                try:
                    known[p] = pointer.decode(ptr, path=p).oid
                    continue
                except TallyError:
                    pass
            if p in files:
                known[p] = hashing.hash_bytes(files[p])
            elif p in lock:
                known[p] = lock[p]
            elif p in dvc_named or any(p.startswith(d + "/") for d in dvc_named):
                known[p] = UNKNOWN
            elif p in dirs:
                known[p] = UNKNOWN
            else:
                known[p] = None
        return known

    # -- saving ----------------------------------------------------------------------
    def save(self) -> None:
        """Publish the index if anything changed; a failure to write is not an error."""
        tmp, self._tmp = self._tmp, None
        if not self.dirty:
            if tmp:
                unlink_quiet(tmp)
            return
        clock = self._new_clock if self._new_clock is not None else self.clock
        if tmp is None:
            clock = self._clock_now()
            tmp, self._tmp = self._tmp, None
            if tmp is None or clock is None:
                return
        live = {c[4] for names in self.refs.values() for c in names.values()}
        # Summaries of records no ref names any more are dropped, so the file stays
        # proportional to the experiments that exist.
        schemas, records = _pack_records((oid, s) for oid, s in self.records.items() if oid in live)
        body = [MAGIC, VERSION, clock, self.refs, schemas, records,
                self.baselines]
        try:
            with open(tmp, "wb") as f:
                f.write(msgpack.packb(body, use_bin_type=True))
            os.replace(tmp, self.path)
        except OSError:
            unlink_quiet(tmp)
            return
        self.dirty = False

    def discard(self) -> None:
        if self._tmp:
            unlink_quiet(self._tmp)
            self._tmp = None


# Records to decode before the work is split over forked processes. Decoding is Python
# work that holds the GIL, so threads would not help; a fork and packing the summaries
# back cost ~10-20 ms, against ~0.1 ms a record (10,000 new records: ~1 s on one core).
PARALLEL_MIN = 2000
PROCESSES = os.cpu_count() or 1


def summarize_many(store: Any, oids: list[str]) -> tuple[dict[str, Summary], dict[str, str]]:
    """(record id -> summary, record id -> why there is none) for `oids`.

    Many ids are split into contiguous shards, one per core: forked children decode
    all but the first, which this process decodes meanwhile. A child that fails in any
    way (killed, a bad report) only costs its shard being decoded here afterwards: the
    result never depends on how the work was split.
    """
    n = min(PROCESSES, len(oids) // (PARALLEL_MIN // 2)) if hasattr(os, "fork") else 1
    threading = sys.modules.get("threading")
    if n < 2 or (threading is not None and threading.active_count() > 1):
        # Serial when another thread runs: a fork copies whatever lock it holds.
        return _summarize_serial(store, oids)
    from cas.core import forked

    bounds = [len(oids) * k // n for k in range(n + 1)]
    shards = [oids[bounds[k]:bounds[k + 1]] for k in range(n)]
    children: list[forked.Child] = []
    try:
        for shard in shards[1:]:
            children.append(forked.start(lambda shard=shard: _summarize_report(store, shard)))
        found, problems = _summarize_serial(store, shards[0])
        for child, shard in zip(children, shards[1:]):
            payload, _ = child.result()
            try:
                schemas, packed, theirs = msgpack.unpackb(payload, raw=False)
                found.update(_unpack_records(schemas, packed))
                problems.update(theirs)
            except (ValueError, TypeError, KeyError, IndexError, msgpack.UnpackException):
                # The child died (an empty report) or its report is torn.
                more, why = _summarize_serial(store, shard)
                found.update(more)
                problems.update(why)
        return found, problems
    except BaseException:  # Ctrl-C: leave no child behind
        forked.stop_all(children)
        raise


def _summarize_serial(store: Any, oids: list[str]) -> tuple[dict[str, Summary], dict[str, str]]:
    found: dict[str, Summary] = {}
    problems: dict[str, str] = {}
    for oid in oids:
        try:
            found[oid] = summarize(record.load(store, oid))
        except ObjectMissing:
            problems[oid] = "record missing from the store"
        except (FormatError, TallyError) as exc:
            problems[oid] = f"record unreadable: {exc}"
    return found, problems


def _summarize_report(store: Any, oids: list[str]) -> bytes:
    """A forked child's work: `oids` summarized, as one msgpack report."""
    found, problems = _summarize_serial(store, oids)
    return msgpack.packb([*_pack_records(found.items()), problems], use_bin_type=True)


def _pack_records(items: Any) -> tuple[list[list[str]], dict[str, list[Any]]]:
    """(key lists, record id -> packed summary). Experiments of one project mostly share
    one set of columns: storing it once makes the file smaller and, on loading, lets
    every row share the same key strings (hashed once) instead of 10,000 copies."""
    ids: dict[tuple[str, ...], int] = {}
    schemas: list[list[str]] = []
    packed = {}
    for oid, s in items:
        keys = tuple(s.values)
        sid = ids.get(keys)
        if sid is None:
            sid = ids[keys] = len(schemas)
            schemas.append(list(keys))
        packed[oid] = s.pack(sid)
    return schemas, packed


def _unpack_records(schemas: Any, records: Any) -> dict[str, Summary]:
    """The inverse of _pack_records. Raises ValueError/TypeError/... on a damaged file."""
    keys = [tuple(k) for k in schemas]
    if not all(type(k) is str for ks in keys for k in ks):
        raise ValueError("bad schema")
    dep_pos = [[(k[5:], i) for i, k in enumerate(ks) if k.startswith("deps:")] for ks in keys]
    out = {}
    for oid, v in records.items():
        b, c, st, code, sid, vals, msg, steps, ws, parent = v
        ks = keys[sid]
        # Cheap shape checks: a damaged cache must fail here (and be rebuilt), not later.
        if type(b) is not str or type(c) is not int or type(st) is not str or len(vals) != len(ks):
            raise ValueError("bad summary")
        out[oid] = Summary(b, c, st, code, dict(zip(ks, vals)), {p: vals[i] for p, i in dep_pos[sid]},
                           msg, tuple(steps), ws, parent)
    return out


def _read_ref(path: str) -> str | None:
    """The id in a ref file (None if it vanished); FormatError names a damaged one.

    The same check as refs.read, without its pathlib work (10,000 refs: 0.5 s of it).
    """
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)  # no file object: ~5 us a ref
    except (FileNotFoundError, NotADirectoryError):
        return None
    try:
        data = os.read(fd, refs.REF_SIZE + 1)
    finally:
        os.close(fd)
    text = data.decode("ascii", "replace")
    if len(data) != refs.REF_SIZE or not text.endswith("\n") or not hashing.is_oid(text[:-1]):
        raise FormatError(f"ref {path} is not an object id and a newline ({len(data)} bytes)",
                          path=path, hint="delete the ref file or restore it from a backup")
    return text[:-1]


def _dvc_lock_paths(text: bytes) -> set[str]:
    """Every `path:` dvc.lock names (its stages' deps and outs), read leniently: a
    `path: X` line, X plain or quoted; no YAML parser on `tally show`'s path."""
    import re  # re caches the compiled pattern

    out = set()
    for m in re.finditer(r"""^[ \t-]*path:[ \t]*(?:'([^']*)'|"([^"]*)"|([^#\n]*?))[ \t]*$""",
                         text.decode("utf-8", "replace"), re.M):
        p = (m.group(1) or m.group(2) or m.group(3) or "").strip().rstrip("/")
        p = p[2:] if p.startswith("./") else p
        if p:
            out.add(p)
    return out
