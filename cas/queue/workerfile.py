"""A queue worker's file: `.tally/queue/workers/<wid>.json`, who runs what, and since when.

The supervisor (cas/workers/supervisor.py) rewrites it at every heartbeat; everyone
else reads it to tell a live worker from a dead one (cas/queue/liveness.py) and to show
what runs where. Readers treat a file that is not a JSON object as absent and a field
of the wrong type as missing: the file is a report, never an instruction.
"""

# No `from __future__ import annotations`: typing.NamedTuple compiles every string
# annotation into a ForwardRef.

import json
from typing import Any, NamedTuple, Optional


class CurrentRun(NamedTuple):
    """One entry a worker runs now."""

    name: str = ""
    pgid: Optional[int] = None  # the executor's process group
    pstart: str = ""  # the executor's start time (/proc), against pid reuse
    started: Optional[float] = None  # unix seconds

    @classmethod
    def from_json(cls, doc: Any) -> "CurrentRun":
        doc = doc if isinstance(doc, dict) else {}
        return cls(name=_str(doc.get("name")), pgid=_int(doc.get("pgid")),
                   pstart=_str(doc.get("pstart")), started=_num(doc.get("started")))


class WorkerInfo(NamedTuple):
    """What a worker file says (spec/queue.md, "Worker file")."""

    wid: str = ""
    pid: Optional[int] = None
    host: str = ""
    boot_id: str = ""
    pstart: str = ""  # the supervisor's start time (/proc), against pid reuse
    started: Optional[float] = None  # unix seconds
    started_ns: Optional[int] = None
    heartbeat: Optional[float] = None  # unix seconds of the last rewrite
    slots: int = 1  # runs at once (-j)
    keep_alive: bool = False
    stopping: bool = False
    current: dict = {}  # entry id -> CurrentRun

    def to_json(self) -> dict[str, Any]:
        doc = self._asdict()
        doc["current"] = {eid: run._asdict() for eid, run in self.current.items()}
        return doc

    def dumps(self) -> bytes:
        return json.dumps(self.to_json(), sort_keys=True).encode()

    @classmethod
    def from_json(cls, doc: Any) -> "Optional[WorkerInfo]":
        if not isinstance(doc, dict):
            return None
        current = doc.get("current")
        runs = {eid: CurrentRun.from_json(run) for eid, run in current.items()
                if isinstance(eid, str)} if isinstance(current, dict) else {}
        slots = _int(doc.get("slots"))
        return cls(wid=_str(doc.get("wid")), pid=_int(doc.get("pid")), host=_str(doc.get("host")),
                   boot_id=_str(doc.get("boot_id")), pstart=_str(doc.get("pstart")),
                   started=_num(doc.get("started")), started_ns=_int(doc.get("started_ns")),
                   heartbeat=_num(doc.get("heartbeat")), slots=slots if slots else 1,
                   keep_alive=doc.get("keep_alive") is True, stopping=doc.get("stopping") is True,
                   current=runs)

    @classmethod
    def loads(cls, data: bytes) -> "Optional[WorkerInfo]":
        try:
            return cls.from_json(json.loads(data))
        except ValueError:
            return None


def _int(v: Any) -> Optional[int]:
    return v if type(v) is int else None


def _num(v: Any) -> Optional[float]:
    return v if type(v) in (int, float) else None


def _str(v: Any) -> str:
    return v if isinstance(v, str) else ""


__all__ = ["WorkerInfo", "CurrentRun"]
