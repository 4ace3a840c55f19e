"""The queue entry: what to run, fixed at queue time (envelope kind b"Q", spec/queue.md).

The body is a msgpack array of 12 fields in a fixed order (name, baseline, workspace,
overrides, targets, options, queued, host, user, parent, checkpoint, message);
options are sorted by name, so equal entries encode to equal bytes. The entry's id is
the BLAKE3 of those bytes, like any object's. Decoders raise only FormatError.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from cas.objects import envelope
from cas.core import hashing
from cas.objects.envelope import check
from cas.core.errors import FormatError, UsageError

VERSION = 1
N_FIELDS = 12
OPS = ("set", "add", "force", "delete")
OPTION_TYPES = (type(None), bool, int, str)
MAX_ENTRY_SIZE = 16 * 1024 * 1024  # bytes: an entry is a few hundred bytes; refuse junk


@dataclass(frozen=True, kw_only=True)
class QueueEntry:
    """What to run, fixed at queue time. Encoded as envelope kind Q, version 1."""

    name: str
    baseline: str  # Git commit, hex
    workspace: str  # tree id of the workspace snapshot taken at queue time
    overrides: tuple[tuple[str, str, str, Any], ...] = ()  # (file, op, key, value) in order
    targets: tuple[str, ...] = ()  # stages to run (empty: all)
    options: dict[str, Any] = field(default_factory=dict)  # run options: scalars only
    queued: int = 0  # unix ns
    host: str = ""
    user: str = ""
    parent: str | None = None  # record resumed from (`run --resume`)
    checkpoint: str | None = None  # that record's checkpoint tree to start from
    message: str = ""

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "baseline": self.baseline, "workspace": self.workspace,
                "overrides": [{"file": f, "op": op, "key": k, "value": v}
                              for f, op, k, v in self.overrides],
                "targets": list(self.targets), "options": dict(sorted(self.options.items())),
                "queued": self.queued, "host": self.host, "user": self.user,
                "parent": self.parent, "checkpoint": self.checkpoint, "message": self.message}

    def override_specs(self) -> list[str]:
        """The overrides as `-S` texts (values in JSON, which YAML reads back the same)."""
        prefix = {"set": "", "add": "+", "force": "++", "delete": "~"}
        out = []
        for f, op, k, v in self.overrides:
            body = f"{prefix[op]}{k}" if op == "delete" else \
                f"{prefix[op]}{k}={json.dumps(v, sort_keys=True)}"
            out.append(f"{f}:{body}")
        return out


def encode(e: QueueEntry) -> bytes:
    """The canonical bytes of an entry (its id is their BLAKE3).

    Raises:
        UsageError: a field that cannot be stored (bad id, op, option type, value).
    """
    for k, v in e.options.items():
        if not isinstance(k, str) or not isinstance(v, OPTION_TYPES):
            raise UsageError(f"queue entry option {k!r}={v!r}: options are str -> nil/bool/int/str")
    ovs = []
    for f, op, k, v in e.overrides:
        if op not in OPS:
            raise UsageError(f"queue entry override op {op!r} is not one of {', '.join(OPS)}")
        try:
            text = json.dumps(v, sort_keys=True, allow_nan=False, separators=(",", ":"))
        except (TypeError, ValueError) as exc:
            raise UsageError(f"override {f}:{k}: value {v!r} cannot be queued ({exc})") from None
        ovs.append([f, op, k, text])
    body = [
        e.name, _commit_bin(e.baseline), _oid_bin(e.workspace, "workspace"), ovs,
        list(e.targets), [[k, e.options[k]] for k in sorted(e.options)], _int(e.queued),
        e.host, e.user, None if e.parent is None else _oid_bin(e.parent, "parent"),
        None if e.checkpoint is None else _oid_bin(e.checkpoint, "checkpoint"), e.message,
    ]
    return envelope.encode(envelope.KIND_QUEUE, VERSION, body)


def decode(data: bytes) -> QueueEntry:
    """Decode and validate an entry. Raises FormatError on anything malformed."""
    if len(data) > MAX_ENTRY_SIZE:
        raise FormatError(f"queue entry of {len(data)} bytes exceeds {MAX_ENTRY_SIZE}")
    _, body = envelope.decode(data, kind=envelope.KIND_QUEUE, versions=(VERSION,))
    check(isinstance(body, list) and len(body) == N_FIELDS, "queue entry",
          f"body must be an array of {N_FIELDS} fields")
    (name, baseline, workspace, ovs, targets, options, queued, host, user, parent,
     checkpoint, message) = body
    for what, v in (("name", name), ("host", host), ("user", user), ("message", message)):
        check(isinstance(v, str), f"queue entry {what}", "must be a string")
    check(isinstance(baseline, bytes) and len(baseline) in (20, 32), "queue entry baseline",
          "must be a 20- or 32-byte commit id")
    check(type(queued) is int, "queue entry queued", "must be an int")
    check(isinstance(ovs, list), "queue entry overrides", "must be an array")
    overrides = []
    for i, row in enumerate(ovs):
        where = f"queue entry overrides[{i}]"
        check(isinstance(row, list) and len(row) == 4 and all(isinstance(x, str) for x in row),
              where, "must be [file, op, key, json]")
        check(row[1] in OPS, where, f"unknown op {row[1]!r}")
        try:
            value = json.loads(row[3])
        except ValueError:
            raise FormatError(f"{where}: value is not JSON") from None
        overrides.append((row[0], row[1], row[2], value))
    check(isinstance(targets, list) and all(isinstance(t, str) for t in targets),
          "queue entry targets", "must be an array of strings")
    check(isinstance(options, list), "queue entry options", "must be an array")
    opts: dict[str, Any] = {}
    prev = None
    for i, row in enumerate(options):
        where = f"queue entry options[{i}]"
        check(isinstance(row, list) and len(row) == 2 and isinstance(row[0], str)
              and isinstance(row[1], OPTION_TYPES), where, "must be [name, nil|bool|int|str]")
        check(prev is None or row[0] > prev, where, "names must be sorted and unique")
        prev = row[0]
        opts[row[0]] = row[1]
    return QueueEntry(name=name, baseline=baseline.hex(), workspace=_dec_oid(workspace, "workspace"),
                 overrides=tuple(overrides), targets=tuple(targets), options=opts,
                 queued=queued, host=host, user=user,
                 parent=None if parent is None else _dec_oid(parent, "parent"),
                 checkpoint=None if checkpoint is None else _dec_oid(checkpoint, "checkpoint"),
                 message=message)


def _commit_bin(commit: str) -> bytes:
    if not isinstance(commit, str) or len(commit) not in (40, 64) or commit.strip("0123456789abcdef"):
        raise UsageError(f"queue entry baseline {commit!r} is not a full lowercase Git commit id")
    return bytes.fromhex(commit)


def _oid_bin(oid: str, what: str) -> bytes:
    if not isinstance(oid, str) or not hashing.is_oid(oid):
        raise UsageError(f"queue entry {what}: {oid!r} is not an object id")
    return bytes.fromhex(oid)


def _dec_oid(v: Any, what: str) -> str:
    check(isinstance(v, bytes) and len(v) == hashing.DIGEST_SIZE, f"queue entry {what}",
          f"must be a {hashing.DIGEST_SIZE}-byte id")
    return v.hex()


def _int(v: Any) -> int:
    if type(v) is not int or not -(2**63) <= v < 2**63:
        raise UsageError(f"queue entry time {v!r} is not a 64-bit integer")
    return v


__all__ = ["QueueEntry", "encode", "decode", "VERSION", "OPS"]
