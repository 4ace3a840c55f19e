"""The run-cache: a stage's outputs, found by what went into it, so it need not run again.

Key (spec/experiments.md, "Run-cache key"): BLAKE3-256 of the canonical msgpack array

    ["tally-runcache/1", [cmd, ...], wdir, [[dep path, dep oid], ...] sorted by path,
     [[params file, [[key, value], ...] sorted by key], ...] sorted by file,
     [out path, ...] sorted]

with ids as 32 raw bytes and values in the record's canonical value form
(cas/objects/record.py), so `lr: 0.1` and `lr: 0.10` are one key and `1` and `1.0` are two.

CacheEntry: a structured object (envelope kind b"C", version 1) in the object store whose
body repeats the key's inputs and adds the outputs:

    [[cmd, ...], wdir, deps, params, [[out path, oid, is_dir], ...], created_ns]

Index: `.tally/runcache/<key[:2]>/<key>`, a text file with the entry's id and a
newline, replaced atomically; the newest entry for a key wins (as in DVC). Entries
are gc/fsck roots (`roots` below, listed in cas/gc/providers.py), so a gc never strands a key whose outputs
it deleted (DVC#9420).

Only stages that can be replayed are cached: a command, at least one dep and one
out, no out `persist`, not `always_changed`. A `cache: false` output (DVC's
`metrics.json: {cache: false}`) is stored for its entry all the same, as DVC's
run-cache does, and restored as an independent copy; the record leaves it out of its outs.
"""

# No `from __future__ import annotations`: typing.NamedTuple compiles every string
# annotation into a ForwardRef, ~0.3 ms a class of every `tally run` start-up.

import os
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable, NamedTuple

import msgpack

from cas.objects import envelope
from cas.core import hashing
from cas.objects import record
from cas.objects.envelope import check
from cas.core.errors import TallyError, UsageError
from cas.core.fsops import atomic_write

if TYPE_CHECKING:
    from cas.workspace.project import Project

VERSION = 1
KEY_TAG = "tally-runcache/1"
INDEX_DIR = "runcache"  # under .tally/


class CacheEntry(NamedTuple):  # not a dataclass: ~1 ms less start-up for `tally run`
    """A cached run of one stage."""

    cmd: tuple[str, ...]
    wdir: str
    deps: dict[str, str]  # path -> oid
    params: dict[str, dict[str, Any]]  # file -> {key: value}
    outs: dict[str, tuple[str, bool]]  # path -> (oid, is_dir)
    created: int = 0  # unix ns


def _params_body(params: dict[str, dict[str, Any]]) -> list:
    return [[f, [[k, record._enc_value(v, f"{f}:{k}", 0)] for k, v in sorted(params[f].items())]]
            for f in sorted(params)]


def key(cmd: Iterable[str], wdir: str, deps: dict[str, str], params: dict[str, dict[str, Any]],
        outs: Iterable[str]) -> str:
    """The run-cache key of a stage about to run (see the module docstring)."""
    body = [KEY_TAG, list(cmd), wdir,
            [[p, bytes.fromhex(o)] for p, o in sorted(deps.items())],
            _params_body(params), sorted(outs)]
    return hashing.hash_bytes(msgpack.packb(body, use_bin_type=True))


def entry_key(e: CacheEntry) -> str:
    return key(e.cmd, e.wdir, e.deps, e.params, e.outs)


def encode(e: CacheEntry) -> bytes:
    body = [list(e.cmd), e.wdir, [[p, bytes.fromhex(o)] for p, o in sorted(e.deps.items())],
            _params_body(e.params),
            [[p, bytes.fromhex(o), bool(d)] for p, (o, d) in sorted(e.outs.items())], e.created]
    return envelope.encode(envelope.KIND_RUNCACHE, VERSION, body)


def decode(data: bytes) -> CacheEntry:
    """Decode and validate an entry. Raises only FormatError."""
    _, body = envelope.decode(data, kind=envelope.KIND_RUNCACHE, versions=(VERSION,))
    what = "run-cache entry"
    check(isinstance(body, list) and len(body) == 6, what, "body must be an array of 6 fields")
    cmd, wdir, deps, params, outs, created = body
    check(isinstance(cmd, list) and cmd and all(isinstance(c, str) for c in cmd), what, "bad cmd")
    check(isinstance(wdir, str), what, "bad wdir")
    check(type(created) is int, what, "bad created")
    d = record._dec_deps(deps)
    o = record._dec_outs(outs)
    check(isinstance(params, list), what, "bad params")
    p: dict[str, dict[str, Any]] = {}
    for row in record._sorted_rows(params, "runcache params", 2):
        kv = record._sorted_rows(row[1], f"runcache params {row[0]}", 2)
        p[row[0]] = {k: record._dec_value(v, (f"{row[0]}:{k}",), 0) for k, v in kv}
    return CacheEntry(tuple(cmd), wdir, d, p, o, created)


def _index_path(project: "Project", k: str) -> Path:
    return project.store_dir / INDEX_DIR / k[:2] / k


def lookup(project: "Project", k: str) -> tuple[str, CacheEntry] | None:
    """The entry stored under key `k` as (entry id, entry), or None.

    A damaged index file or entry, or one whose outputs are no longer all in the
    store, is a miss (the stage simply runs), never an error.
    """
    try:
        text = _index_path(project, k).read_bytes().decode("ascii").strip()
    except (FileNotFoundError, NotADirectoryError, UnicodeDecodeError):
        return None
    if not hashing.is_oid(text):
        return None
    try:
        e = decode(project.store.get(text))
    except TallyError:  # missing, corrupt or malformed: a miss; fsck reports the damage
        return None
    if entry_key(e) != k:
        return None
    for oid, _ in e.outs.values():
        if not project.store.has(oid):
            return None
    return text, e


def put(writer, e: CacheEntry) -> tuple[str, str]:
    """Put entry `e` through `writer`; return (entry id, key). Write the index with
    write_index() once the writer has flushed (the entry must be published first)."""
    return writer.put_bytes(encode(e), compress=True), entry_key(e)


def write_index(project: "Project", k: str, entry_oid: str) -> None:
    """Point key `k`'s index file at `entry_oid` (atomic replace; newest wins)."""
    p = _index_path(project, k)
    p.parent.mkdir(parents=True, exist_ok=True)
    # Not fsync'd: a lost index file costs a re-run, never a wrong result.
    atomic_write(p, (entry_oid + "\n").encode("ascii"), durable=False)


def save(project: "Project", e: CacheEntry) -> tuple[str, str]:
    """Store `e` and index it, in order. Returns (key, entry id)."""
    with project.store.writer() as w:
        oid, k = put(w, e)
    write_index(project, k, oid)
    return k, oid


def make_entry(cmd, wdir, deps, params, outs) -> CacheEntry:
    return CacheEntry(tuple(cmd), wdir, dict(deps), {f: dict(kv) for f, kv in params.items()},
                 dict(outs), time.time_ns())


def iter_index(project: "Project") -> Iterable[tuple[str, str]]:
    """Every (key, entry id) in the index."""
    base = project.store_dir / INDEX_DIR
    try:
        shards = sorted(os.scandir(base), key=lambda e: e.name)
    except FileNotFoundError:
        return
    for shard in shards:
        if not shard.is_dir(follow_symlinks=False):
            continue
        with os.scandir(shard.path) as it:
            for ent in sorted(it, key=lambda e: e.name):
                if ent.name.startswith(".") or not hashing.is_oid(ent.name):
                    continue
                try:
                    text = Path(ent.path).read_text("ascii").strip()
                except (OSError, UnicodeDecodeError):
                    continue
                yield ent.name, text


def roots(project: "Project") -> Iterable[tuple[str, str, bool]]:
    """fsck/gc roots: every indexed entry and the outputs it names."""
    for k, oid in iter_index(project):
        label = f"run-cache {k[:12]}"
        if not hashing.is_oid(oid):
            raise UsageError(f"run-cache index {k} is damaged", path=_index_path(project, k))
        yield label, oid, False
        try:
            e = decode(project.store.get(oid))
        except TallyError:
            continue  # fsck reports it as missing or corrupt through the root above
        for path, (o, is_dir) in e.outs.items():
            yield f"{label}:{path}", o, is_dir


