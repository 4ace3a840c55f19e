"""The experiment record: what went into one run and what came out (spec/experiments.md).

A record is a structured object (envelope kind b"R", version 1) in the object store,
named by a ref `.tally/refs/exps/<baseline>/<name>` (cas/store/refs.py). Its body is one
msgpack array, fields in this fixed order:

    0  name         str     the experiment name (also the ref name)
    1  baseline     bin     the Git commit the run started from (20 or 32 bytes)
    2  parent       bin|nil the record this one continues (resume, derived), 32 bytes
    3  created      int     unix time, ns
    4  host         str
    5  user         str
    6  status       str     success | failed | interrupted | running | queued
    7  exit_code    int|nil the failing stage's exit code, 0 on success, nil if none ran
    8  started      int|nil unix ns
    9  finished     int|nil unix ns
    10 workspace    bin|nil tree id of the workspace (every file Git sees + tracked data)
    11 params       [[file, value], ...]              sorted by file
    12 deps         [[path, oid], ...]                sorted by path
    13 outs         [[path, oid, is_dir], ...]        sorted by path
    14 metrics      [[file, value], ...]              sorted by file
    15 stages       [[name, [cmd, ...], state, exit_code|nil, duration_ns], ...]  run order
    16 logs         bin|nil blob id of the captured stdout+stderr
    17 checkpoints  [[step, tree oid], ...]           steps strictly increasing
    18 message      str

A `value` (a params or metrics file's content) is canonical too: nil, bool, int,
float (always float64), str as themselves; a list as [0, [items]]; a mapping as
[1, [[key, value], ...]] with str keys sorted by UTF-8 bytes. Scalars are never
arrays, so the tag is unambiguous; ints stay ints and floats stay floats. Non-str
mapping keys (YAML `1: x`) are stored as their str().

Equal content therefore encodes to equal bytes, and so to the same id.
"""

# No `from __future__ import annotations`: typing.NamedTuple compiles every string
# annotation into a ForwardRef, ~0.3 ms a class of every `tally run` start-up.

import math
from collections.abc import Mapping
from typing import Any, NamedTuple, NoReturn

from cas.objects import envelope
from cas.core import hashing
from cas.objects.envelope import check
from cas.core.errors import FormatError, UsageError

VERSION = 1
N_FIELDS = 19
STATUSES = ("success", "failed", "interrupted", "running", "queued")
STAGE_STATES = ("ran", "skipped", "cache-hit", "failed", "interrupted", "not-run")
TAG_LIST, TAG_MAP = 0, 1
MAX_DEPTH = 64  # nesting of params/metrics values; real configs use < 10
INT_MIN, INT_MAX = -(2**63), 2**64 - 1  # what msgpack can carry exactly


# NamedTuples, not dataclasses: `tally run` imports this module, and a dataclass costs
# ~1 ms of start-up each (tests/test_import_budget.py).
class StageResult(NamedTuple):
    """How one stage of the run went."""

    name: str
    cmd: tuple[str, ...]
    state: str  # one of STAGE_STATES
    exit_code: int | None = None
    duration_ns: int = 0

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "cmd": list(self.cmd), "state": self.state,
                "exit_code": self.exit_code, "duration": self.duration_ns / 1e9}


class Record(NamedTuple):
    """One experiment. Mappings are plain dicts; encode() sorts them.

    Records are values: nothing changes their dicts in place, so the empty defaults
    can be shared. Derive a changed record with `rec._replace(field=...)`.
    """

    name: str
    baseline: str  # Git commit, hex
    created: int  # unix ns
    status: str
    parent: str | None = None
    host: str = ""
    user: str = ""
    exit_code: int | None = None
    started: int | None = None
    finished: int | None = None
    workspace: str | None = None
    params: dict[str, Any] = {}  # file -> nested value
    deps: dict[str, str] = {}  # path -> oid
    outs: dict[str, tuple[str, bool]] = {}  # path -> (oid, is_dir)
    metrics: dict[str, Any] = {}  # file -> nested value
    stages: tuple[StageResult, ...] = ()
    logs: str | None = None
    checkpoints: tuple[tuple[int, str], ...] = ()
    message: str = ""

    def with_name(self, name: str) -> "Record":
        return self._replace(name=name)

    def flat_params(self) -> dict[str, Any]:
        """`{"params.yaml:train.lr": 0.1, ...}`: one column per leaf, sorted."""
        return _flat(self.params)

    def flat_metrics(self) -> dict[str, Any]:
        """`{"eval/metrics.json:avg_prec.test": 0.9, ...}`, sorted."""
        return _flat(self.metrics)

    @property
    def duration_ns(self) -> int | None:
        if self.started is None or self.finished is None:
            return None
        return self.finished - self.started

    def to_json(self) -> dict[str, Any]:
        """A stable JSON mapping (`--json` output)."""
        return {
            "name": self.name, "baseline": self.baseline, "parent": self.parent,
            "created": self.created, "host": self.host, "user": self.user,
            "status": self.status, "exit_code": self.exit_code, "started": self.started,
            "finished": self.finished, "workspace": self.workspace, "params": self.params,
            "deps": dict(sorted(self.deps.items())),
            "outs": {p: {"oid": o, "is_dir": d} for p, (o, d) in sorted(self.outs.items())},
            "metrics": self.metrics, "stages": [s.to_json() for s in self.stages],
            "logs": self.logs, "checkpoints": [[s, t] for s, t in self.checkpoints],
            "message": self.message,
        }


def _flat(per_file: Mapping[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for file in sorted(per_file):
        value = per_file[file]
        if isinstance(value, Mapping):
            stack: list[tuple[str, Any]] = [("", value)]
            while stack:
                prefix, node = stack.pop()
                for k in sorted(node, key=str):
                    v = node[k]
                    name = f"{prefix}{k}"
                    if isinstance(v, Mapping) and v:
                        stack.append((name + ".", v))
                    else:
                        out[f"{file}:{name}"] = v
        else:
            out[f"{file}:"] = value
    return dict(sorted(out.items()))


# ---------------------------------------------------------------- encoding

def encode(rec: Record) -> bytes:
    """The canonical bytes of `rec` (its id is their BLAKE3).

    Raises:
        UsageError: a field that cannot be stored (bad status, id, or a value such as
            an int beyond 64 bits or an unsupported type in params/metrics).
    """
    if rec.status not in STATUSES:
        raise UsageError(f"record status {rec.status!r} is not one of {', '.join(STATUSES)}")
    body = [
        rec.name,
        _commit_bin(rec.baseline),
        None if rec.parent is None else _oid_bin(rec.parent, "parent"),
        _int(rec.created, "created"),
        rec.host,
        rec.user,
        rec.status,
        None if rec.exit_code is None else _int(rec.exit_code, "exit_code"),
        None if rec.started is None else _int(rec.started, "started"),
        None if rec.finished is None else _int(rec.finished, "finished"),
        None if rec.workspace is None else _oid_bin(rec.workspace, "workspace"),
        [[f, _enc_value(v, f"params {f}", 0)] for f, v in _sorted(rec.params)],
        [[p, _oid_bin(o, f"deps {p}")] for p, o in _sorted(rec.deps)],
        [[p, _oid_bin(o, f"outs {p}"), bool(d)] for p, (o, d) in _sorted(rec.outs)],
        [[f, _enc_value(v, f"metrics {f}", 0)] for f, v in _sorted(rec.metrics)],
        [[s.name, list(s.cmd), _state(s.state), s.exit_code, _int(s.duration_ns, "duration")]
         for s in rec.stages],
        None if rec.logs is None else _oid_bin(rec.logs, "logs"),
        [[_int(step, "checkpoint step"), _oid_bin(t, "checkpoint")] for step, t in rec.checkpoints],
        rec.message,
    ]
    return envelope.encode(envelope.KIND_RECORD, VERSION, body)


def record_id(rec: Record) -> str:
    """The object id `rec` is stored under."""
    return hashing.hash_bytes(encode(rec))


def _sorted(m: Mapping[str, Any]) -> list[tuple[str, Any]]:
    return sorted(m.items(), key=lambda kv: kv[0].encode("utf-8", "surrogateescape"))


def _state(s: str) -> str:
    if s not in STAGE_STATES:
        raise UsageError(f"stage state {s!r} is not one of {', '.join(STAGE_STATES)}")
    return s


def _int(v: Any, what: str) -> int:
    if type(v) is not int or not INT_MIN <= v <= INT_MAX:
        raise UsageError(f"record {what}: {v!r} is not a 64-bit integer")
    return v


def _oid_bin(oid: str, what: str) -> bytes:
    if not isinstance(oid, str) or not hashing.is_oid(oid):
        raise UsageError(f"record {what}: {oid!r} is not an object id")
    return bytes.fromhex(oid)


def _commit_bin(commit: str) -> bytes:
    if not isinstance(commit, str) or len(commit) not in (40, 64) or \
            any(c not in "0123456789abcdef" for c in commit):
        raise UsageError(f"record baseline: {commit!r} is not a full lowercase Git commit id")
    return bytes.fromhex(commit)


def _enc_value(v: Any, where: str, depth: int) -> Any:
    if depth > MAX_DEPTH:
        raise UsageError(f"{where}: nested deeper than {MAX_DEPTH} levels")
    if v is None or isinstance(v, (bool, str, float)):
        return v
    if isinstance(v, int):
        if not INT_MIN <= v <= INT_MAX:
            raise UsageError(f"{where}: integer {v} does not fit in 64 bits",
                             hint="store it as a string or a float")
        return int(v)
    if isinstance(v, Mapping):
        items = sorted(((str(k), x) for k, x in v.items()), key=lambda kv: kv[0].encode("utf-8", "surrogateescape"))
        for a, b in zip(items, items[1:]):
            if a[0] == b[0]:
                raise UsageError(f"{where}: key {a[0]!r} appears twice once keys are text")
        return [TAG_MAP, [[k, _enc_value(x, f"{where}.{k}", depth + 1)] for k, x in items]]
    if isinstance(v, (list, tuple)):
        return [TAG_LIST, [_enc_value(x, where, depth + 1) for x in v]]
    raise UsageError(f"{where}: a {type(v).__name__} cannot be recorded",
                     hint="params and metrics values must be JSON-like")


# ---------------------------------------------------------------- decoding

def decode(data: bytes) -> Record:
    """Decode and fully validate a record.

    Raises:
        FormatError: anything malformed (header, shape, types, ids, unsorted or
            duplicated keys, unknown status or stage state, non-increasing steps).
    """
    # The checks below test first and format their message only on failure: `show`
    # decodes every record it has not seen, and formatting each field's message
    # whether or not it was needed made decoding ~1.7x slower (35 vs 20 us a record).
    _, body = envelope.decode(data, kind=envelope.KIND_RECORD, versions=(VERSION,))
    check(isinstance(body, list) and len(body) == N_FIELDS, "record",
          f"body must be an array of {N_FIELDS} fields")
    (name, baseline, parent, created, host, user, status, exit_code, started, finished,
     workspace, params, deps, outs, metrics, stages, logs, checkpoints, message) = body
    check(isinstance(name, str), "record name", "must be a string")
    check(isinstance(baseline, bytes) and len(baseline) in (20, 32), "record baseline",
          "must be a 20- or 32-byte commit id")
    check(type(created) is int, "record created", "must be an int")
    check(isinstance(host, str) and isinstance(user, str), "record host/user", "must be strings")
    if status not in STATUSES:
        _bad("record status", f"{status!r} is not one of {', '.join(STATUSES)}")
    for what, v in (("exit_code", exit_code), ("started", started), ("finished", finished)):
        if not (v is None or type(v) is int):
            _bad(f"record {what}", "must be an int or nil")
    check(isinstance(message, str), "record message", "must be a string")
    return Record(
        name=name, baseline=baseline.hex(), created=created, status=status,
        parent=_dec_oid_opt(parent, "parent"), host=host, user=user, exit_code=exit_code,
        started=started, finished=finished, workspace=_dec_oid_opt(workspace, "workspace"),
        params=_dec_files(params, "params"), deps=_dec_deps(deps), outs=_dec_outs(outs),
        metrics=_dec_files(metrics, "metrics"), stages=_dec_stages(stages),
        logs=_dec_oid_opt(logs, "logs"), checkpoints=_dec_checkpoints(checkpoints),
        message=message)


def _bad(what: str, detail: str) -> NoReturn:
    raise FormatError(f"{what}: {detail}")


def _dec_oid(v: Any, what: str, key: str | None = None) -> str:
    if not (isinstance(v, bytes) and len(v) == hashing.DIGEST_SIZE):
        _bad(f"record {what}" if key is None else f"record {what} {key}",
             f"must be a {hashing.DIGEST_SIZE}-byte id")
    return v.hex()


def _dec_oid_opt(v: Any, what: str) -> str | None:
    return None if v is None else _dec_oid(v, what)


def _sorted_rows(rows: Any, what: str, width: int) -> list[list[Any]]:
    if not isinstance(rows, list):
        _bad(f"record {what}", "must be an array")
    prev = None
    for i, row in enumerate(rows):
        if not (isinstance(row, list) and len(row) == width and isinstance(row[0], str)):
            _bad(f"record {what}[{i}]", f"must be an array of {width} starting with a string")
        key = row[0].encode("utf-8", "surrogateescape")
        if prev is not None and key <= prev:
            _bad(f"record {what}[{i}]", f"{row[0]!r} is out of order or duplicated")
        prev = key
    return rows


def _dec_files(rows: Any, what: str) -> dict[str, Any]:
    return {r[0]: _dec_value(r[1], (f"{what} {r[0]}",), 0) for r in _sorted_rows(rows, what, 2)}


def _check_rel_path(path: str, what: str) -> None:
    """Deps and outs are workspace paths: relative, POSIX, inside the project.

    Restore and gc act on them, so a record naming `../x`, `/etc/x` or `.git/x` is
    hostile or damaged, and refused here, at the one door every record comes through.
    """
    parts = path.split("/")
    if not (path != "" and not path.startswith("/") and "\0" not in path
            and not any(p in ("", ".", "..") for p in parts) and parts[0] not in (".git", ".tally")):
        _bad(f"record {what}", f"{path!r} is not a relative path inside the project")


def _dec_deps(rows: Any) -> dict[str, str]:
    out = {}
    for r in _sorted_rows(rows, "deps", 2):
        _check_rel_path(r[0], "deps")
        out[r[0]] = _dec_oid(r[1], "deps", r[0])
    return out


def _dec_outs(rows: Any) -> dict[str, tuple[str, bool]]:
    out = {}
    for r in _sorted_rows(rows, "outs", 3):
        _check_rel_path(r[0], "outs")
        if not isinstance(r[2], bool):
            _bad(f"record outs {r[0]}", "is_dir must be a bool")
        out[r[0]] = (_dec_oid(r[1], "outs", r[0]), r[2])
    return out


def _dec_stages(rows: Any) -> tuple[StageResult, ...]:
    if not isinstance(rows, list):
        _bad("record stages", "must be an array")
    out = []
    for i, r in enumerate(rows):
        if not (isinstance(r, list) and len(r) == 5):
            _bad(f"record stages[{i}]", "must be [name, cmds, state, exit_code, duration]")
        name, cmds, state, code, dur = r
        problem = ("name must be a string" if not isinstance(name, str) else
                   "cmd must be an array of strings"
                   if not (isinstance(cmds, list) and all(isinstance(c, str) for c in cmds)) else
                   f"state {state!r} is not one of {', '.join(STAGE_STATES)}"
                   if state not in STAGE_STATES else
                   "exit_code must be an int or nil" if not (code is None or type(code) is int) else
                   "duration must be a non-negative int" if not (type(dur) is int and dur >= 0) else
                   None)
        if problem is not None:
            _bad(f"record stages[{i}]", problem)
        out.append(StageResult(name, tuple(cmds), state, code, dur))
    return tuple(out)


def _dec_checkpoints(rows: Any) -> tuple[tuple[int, str], ...]:
    if not isinstance(rows, list):
        _bad("record checkpoints", "must be an array")
    out = []
    prev = None
    for i, r in enumerate(rows):
        if not (isinstance(r, list) and len(r) == 2 and type(r[0]) is int):
            _bad(f"record checkpoints[{i}]", "must be [step, tree]")
        if prev is not None and r[0] <= prev:
            _bad(f"record checkpoints[{i}]", "steps must increase")
        prev = r[0]
        out.append((r[0], _dec_oid(r[1], f"checkpoints[{i}]")))
    return tuple(out)


_SCALARS = (bool, int, str, float)  # and None: a value's leaves, returned as they are


def _dec_value(v: Any, where: tuple[str, ...], depth: int) -> Any:
    """A params or metrics value; `where` is its path (file, then keys), for messages."""
    if v is None or isinstance(v, _SCALARS):
        return v
    if depth >= MAX_DEPTH:
        _bad(".".join(where), f"nested deeper than {MAX_DEPTH} levels")
    if not (isinstance(v, list) and len(v) == 2 and v[0] in (TAG_LIST, TAG_MAP)
            and type(v[0]) is int and isinstance(v[1], list)):
        _bad(".".join(where), "a container must be [0, items] or [1, pairs]")
    if v[0] == TAG_LIST:
        return [x if x is None or isinstance(x, _SCALARS) else _dec_value(x, where, depth + 1)
                for x in v[1]]
    out: dict[str, Any] = {}
    prev = None
    for i, pair in enumerate(v[1]):
        if not (isinstance(pair, list) and len(pair) == 2 and isinstance(pair[0], str)):
            _bad(".".join(where), f"entry {i} must be [key, value]")
        k, x = pair
        key = k.encode("utf-8", "surrogateescape")
        if prev is not None and key <= prev:
            _bad(".".join(where), f"key {k!r} is out of order or duplicated")
        prev = key
        out[k] = x if x is None or isinstance(x, _SCALARS) else _dec_value(x, where + (k,), depth + 1)
    return out


# ---------------------------------------------------------------- store helpers

def load(store: Any, oid: str) -> Record:
    """Read and decode the record `oid` from `store`.

    Raises:
        ObjectMissing: not in the store. CorruptObject / FormatError: damaged.
    """
    return decode(store.get(oid))


def put(writer_or_store: Any, rec: Record) -> str:
    """Store `rec` (through a Writer or a store); return its id.

    With a Writer the record becomes visible at its flush, after every object put
    before it: the "objects before records" ordering.
    """
    return writer_or_store.put_bytes(encode(rec), compress=True)


def is_finite_number(v: Any) -> bool:
    """True for an int or a finite float (not a bool): what a metric column can sort on."""
    return (isinstance(v, int) and not isinstance(v, bool)) or (isinstance(v, float) and math.isfinite(v))


__all__ = ["Record", "StageResult", "encode", "decode", "record_id", "load", "put",
           "STATUSES", "STAGE_STATES", "FormatError"]
