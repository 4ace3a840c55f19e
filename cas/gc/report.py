"""What `tally gc` reports: the deleted objects, per-root statistics, the refusal.

Split from cas/gc/collect.py by noun: the algorithm lives there, its results here.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from cas.gc import fsck as fsck_mod
from cas.core.errors import Corruption
from cas.gc.retention import Drop, Keep, Policy

# Report order of root kinds; providers may add others (they sort after these).
ROOT_KINDS = ("workspace", "experiments", "run-cache", "queue", "history", "inflight", "grace")
GRACE = "grace"
INFLIGHT = "inflight"


@dataclass(frozen=True, slots=True)
class Deleted:
    """One object gc deleted (or, in a dry run, would delete)."""

    oid: str
    kind: str  # blob | tree | record | run-cache entry | queue entry
    bytes: int  # on disk, both forms
    linked: bool  # another hardlink (a workspace file) still holds the bytes

    def to_json(self) -> dict[str, object]:
        return {"oid": self.oid, "kind": self.kind, "bytes": self.bytes, "linked": self.linked}


@dataclass
class RootStats:
    """What one kind of root keeps: all it reaches, and what nothing else reaches."""

    kind: str
    roots: int = 0
    objects: int = 0
    bytes: int = 0
    exclusive_objects: int = 0  # freed if only this kind of root went away
    exclusive_bytes: int = 0

    def to_json(self) -> dict[str, object]:
        return {"kind": self.kind, "roots": self.roots, "objects": self.objects,
                "bytes": self.bytes, "exclusive_objects": self.exclusive_objects,
                "exclusive_bytes": self.exclusive_bytes}


@dataclass
class GcReport:
    """Everything gc decided, in the same shape for a dry run and a real one."""

    dry_run: bool
    grace_s: float
    forced: bool = False
    scope: list[str] = field(default_factory=list)  # workspace, experiments, ..., branches
    policy: Policy | None = None
    objects: int = 0  # in the inventory
    bytes: int = 0
    kept_objects: int = 0
    kept_bytes: int = 0
    young_objects: int = 0  # unreachable but within the grace period
    young_bytes: int = 0
    deleted: list[Deleted] = field(default_factory=list)
    roots: list[RootStats] = field(default_factory=list)
    dropped: list[Drop] = field(default_factory=list)  # experiments a policy dropped
    kept_experiments: list[Keep] = field(default_factory=list)  # the others, with why
    run_cache_dropped: int = 0  # run-cache index entries removed (--drop-run-cache)
    temp_files: list[str] = field(default_factory=list)
    temp_bytes: int = 0
    inflight_live: int = 0  # in-flight files of live writers read as roots (pass B)
    inflight_removed: list[str] = field(default_factory=list)  # dead owners' files deleted
    problems: list[fsck_mod.Problem] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    cancelled: bool = False  # the confirm callback said no
    seconds: float = 0.0

    @property
    def deleted_bytes(self) -> int:
        return sum(d.bytes for d in self.deleted)

    @property
    def freed_bytes(self) -> int:
        """Bytes actually returned to the filesystem (hardlinked objects free nothing)."""
        return sum(d.bytes for d in self.deleted if not d.linked)

    def to_json(self) -> dict[str, object]:
        by_kind: dict[str, dict[str, int]] = {}
        for d in self.deleted:
            k = by_kind.setdefault(d.kind, {"objects": 0, "bytes": 0})
            k["objects"] += 1
            k["bytes"] += d.bytes
        return {
            "dry_run": self.dry_run, "forced": self.forced, "cancelled": self.cancelled,
            "grace_seconds": self.grace_s, "scope": self.scope,
            "policy": self.policy.to_json() if self.policy else None,
            "store": {"objects": self.objects, "bytes": self.bytes},
            "kept": {"objects": self.kept_objects, "bytes": self.kept_bytes},
            "young": {"objects": self.young_objects, "bytes": self.young_bytes},
            "deleted": {"objects": len(self.deleted), "bytes": self.deleted_bytes,
                        "freed_bytes": self.freed_bytes, "by_kind": by_kind,
                        "list": [d.to_json() for d in self.deleted]},
            "roots": [r.to_json() for r in self.roots],
            "dropped_experiments": [d.to_json() for d in self.dropped],
            "kept_experiments": [k.to_json() for k in self.kept_experiments],
            "run_cache_dropped": self.run_cache_dropped,
            "temp_files": {"count": len(self.temp_files), "bytes": self.temp_bytes,
                           "list": self.temp_files},
            "inflight": {"live": self.inflight_live, "removed": self.inflight_removed},
            "problems": [p.to_json() for p in self.problems],
            "notes": self.notes,
            "seconds": round(self.seconds, 3),
        }


class GcRefused(Corruption):
    """A root names a missing or undecodable object: gc cannot prove what is reachable
    and deleted nothing. `report` lists the problems (rerun with force to sweep anyway)."""

    def __init__(self, report: GcReport) -> None:
        n = len(report.problems)
        super().__init__(
            f"gc refused: {n} root problem(s); reachability cannot be proven, nothing was deleted",
            hint="run `tally fsck` to see the damage; `tally gc --force` sweeps anyway and "
                 "keeps only what the readable part of the graph reaches")
        self.report = report

