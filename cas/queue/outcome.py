"""How one attempt at a queued entry ended: `.tally/queue/outcomes/<entry id>.json`.

Written by the executor that ran the attempt, or by whoever decided its end without
it (the supervisor, a reaper: spec/queue.md, "Write ordering"); read by every view of
the queue. A file is JSON written by replacing it (temp + rename). Readers treat a
file that is not a JSON object as absent, and a field of the wrong type as missing:
an outcome is a report, never an instruction, so nothing in it is trusted beyond
being shown and deciding done/ vs failed/.
"""

# No `from __future__ import annotations`: typing.NamedTuple compiles every string
# annotation into a ForwardRef, a cost every queued run's executor would pay.

import json
from typing import Any, NamedTuple, Optional

# Fields written only when set: a reconciled verdict's note, a retried entry's reason.
_OPTIONAL = ("note", "previous")
_TYPES: dict[str, tuple[type, ...]] = {
    "status": (str,), "reason": (str,), "exit_code": (int,), "record": (str,),
    "name": (str,), "note": (str,), "pid": (int,), "executor_pid": (int,), "host": (str,),
    "wid": (str,), "started": (int, float), "finished": (int, float), "attempt": (int,),
    "final": (bool,), "previous": (str,),
}


class Outcome(NamedTuple):
    """One attempt's end (spec/queue.md, "Outcome")."""

    status: str = "failed"  # "success" | "failed"
    reason: Optional[str] = None  # why it failed; "" on success
    exit_code: Optional[int] = None  # the failing stage's exit code
    record: Optional[str] = None  # the experiment record written, if any
    name: Optional[str] = None  # the experiment name the record got
    note: Optional[str] = None  # a verdict reconciled with the published record
    pid: Optional[int] = None  # the worker (supervisor)
    executor_pid: Optional[int] = None  # the process that ran the experiment
    host: Optional[str] = None
    wid: Optional[str] = None
    started: Optional[float] = None  # unix seconds
    finished: Optional[float] = None
    attempt: int = 0  # 1 for the first attempt, +1 per retry
    final: bool = False  # false only on a retried entry not yet run
    previous: Optional[str] = None  # the last attempt's reason, on a retried entry

    @property
    def ok(self) -> bool:
        return self.status == "success"

    def to_json(self) -> dict[str, Any]:
        return {k: v for k, v in self._asdict().items() if v is not None or k not in _OPTIONAL}

    @classmethod
    def from_json(cls, doc: Any) -> "Optional[Outcome]":
        """The outcome a parsed file holds; None if it is not an object. A field of the
        wrong type is taken as absent (bool is not an int here)."""
        if not isinstance(doc, dict):
            return None
        fields = {}
        for k, types in _TYPES.items():
            v = doc.get(k)
            if v is None or (type(v) is bool and bool not in types) or not isinstance(v, types):
                continue
            fields[k] = v
        return cls(**fields)

    @classmethod
    def loads(cls, data: bytes) -> "Optional[Outcome]":
        try:
            return cls.from_json(json.loads(data))
        except ValueError:
            return None

    def dumps(self) -> bytes:
        return json.dumps(self.to_json(), sort_keys=True).encode()


__all__ = ["Outcome"]
