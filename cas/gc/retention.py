"""Retention policies: which experiments a cron `tally gc` may drop.

A policy is applied to the list of experiments before gc marks, and only ever drops
experiment refs; the objects they alone kept then become garbage like any other.

Rules (spec/gc.md, "Retention"):

- never dropped: promoted experiments (a commit of any ref names their record in a
  `Tally-Record:` line, as `tally promote` writes it; a committed `tally.lock` or
  pointer naming what the record names does not count: every experiment that reuses
  an upstream stage's output would then be "promoted"), queued and running ones, and
  any whose record cannot be read;
- `drop_failed`: failed and interrupted experiments are dropped, and are not counted
  by keep_last / keep_best;
- `keep_last N` / `keep_best N` (by `sort_by KEY:desc|asc`, or its aliases
  `KEY:max|min`): when either is set,
  experiments outside the union of the N most recent and the N best are dropped;
- `older_than T`: alone, drops experiments created more than T ago; together with a
  keep rule it narrows it: only experiments that are both outside the kept sets and
  older than T are dropped (a keep rule and an age both protect).

Counting is global, across baselines. An experiment without a finite value for the
sort key ranks after every experiment that has one. Under an active policy every
experiment is either dropped (a Drop) or kept (a Keep), each with its reasons.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Iterable, Mapping

from cas.core.durations import parse_duration
from cas.core.errors import UsageError

if TYPE_CHECKING:
    from cas.workspace.project import Project

FAILED = frozenset({"failed", "interrupted"})
PROTECTED_STATUSES = frozenset({"running", "queued", "unreadable"})


@dataclass(frozen=True)
class Candidate:
    """What a policy needs to know about one experiment (built from its ref and record)."""

    baseline: str
    name: str
    record: str  # the record's object id
    created: int  # unix ns
    status: str  # a record status, or "unreadable"
    metrics: Mapping[str, Any] = field(default_factory=dict)  # flat: "file:key.path" -> value
    names: frozenset[str] = frozenset()  # ids the record names (workspace, outs, checkpoints)

    @property
    def label(self) -> str:
        return f"{self.baseline[:12]}/{self.name}"


@dataclass(frozen=True)
class Drop:
    """One experiment a policy drops, and why."""

    exp: Candidate
    reason: str

    def to_json(self) -> dict[str, str]:
        return {"baseline": self.exp.baseline, "name": self.exp.name,
                "record": self.exp.record, "reason": self.reason}


@dataclass(frozen=True)
class Keep:
    """One experiment a policy keeps, and why (every reason that applies)."""

    exp: Candidate
    reason: str

    def to_json(self) -> dict[str, str]:
        return {"baseline": self.exp.baseline, "name": self.exp.name,
                "record": self.exp.record, "reason": self.reason}


@dataclass(frozen=True)
class Policy:
    """A retention policy; the default keeps everything."""

    keep_last: int = 0
    keep_best: int = 0
    sort_by: str = ""  # "KEY:desc" (higher is better) or "KEY:asc"; :max, :min are aliases
    drop_failed: bool = False
    older_than: str = ""  # a duration: 30d, 2w

    def __post_init__(self) -> None:
        if self.keep_last < 0 or self.keep_best < 0:
            raise UsageError("--keep-last and --keep-best must be >= 0")
        if self.keep_best and not self.sort_by:
            raise UsageError("--keep-best needs --sort-by KEY:desc or KEY:asc",
                             hint="e.g. --keep-best 5 --sort-by acc:desc")
        if self.sort_by:
            self.sort_key()  # validate early
        if self.older_than:
            parse_duration(self.older_than)

    @property
    def active(self) -> bool:
        return bool(self.keep_last or self.keep_best or self.drop_failed or self.older_than)

    def sort_key(self) -> tuple[str, bool]:
        """(metric key, higher_is_better) from `sort_by`.

        Raises:
            UsageError: no direction (`:desc`, `:asc`, `:max`, `:min`). It is required because
                guessing it wrong would keep the worst experiments.
        """
        # Here, not at the top: only a policy with a sort key needs the table module
        # (and the difflib it imports), not every `tally gc`.
        from cas.experiments.table import split_sort

        key, descending, explicit = split_sort(self.sort_by)
        if not explicit:
            raise UsageError(f"--sort-by {self.sort_by!r} must end in :desc or :asc (:max or :min)",
                             hint="say which way is better, e.g. acc:desc or loss:asc "
                                  "(a key may name its file: metrics.json:acc:desc)")
        return key, descending

    @classmethod
    def from_config(cls, config: Any) -> "Policy":
        """The policy set in the store config (`gc.keep_last` & co)."""
        return cls(keep_last=int(config.get("gc.keep_last")), keep_best=int(config.get("gc.keep_best")),
                   sort_by=str(config.get("gc.sort_by")),
                   drop_failed=str(config.get("gc.drop_failed")).lower() == "true",
                   older_than=str(config.get("gc.older_than")))

    def to_json(self) -> dict[str, Any]:
        return {"keep_last": self.keep_last, "keep_best": self.keep_best, "sort_by": self.sort_by,
                "drop_failed": self.drop_failed, "older_than": self.older_than}


def metric_value(metrics: Mapping[str, Any], key: str) -> float | None:
    """The finite number `key` names in flat metrics, or None.

    `key` is a full flat key (`metrics.json:acc`) or, when it names one column in a
    single file, the part after the file (`acc`).

    Raises:
        UsageError: a short key that matches columns in more than one file.
    """
    if key in metrics:
        v = metrics[key]
    else:
        hits = [k for k in metrics if k.split(":", 1)[-1] == key]
        if len(hits) > 1:
            raise UsageError(f"metric {key!r} is ambiguous: {', '.join(sorted(hits))}",
                             hint="name the file too, e.g. --sort-by " + f"{sorted(hits)[0]}:max")
        if not hits:
            return None
        v = metrics[hits[0]]
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
        return None
    return float(v)


_PROTECTED_WHY = {"running": "running", "queued": "queued", "unreadable": "record unreadable"}


def select(experiments: Iterable[Candidate], policy: Policy, *, now_ns: int,
           promoted: Callable[[Candidate], bool] = lambda e: False) -> list[Drop]:
    """The experiments `policy` drops, in the order given (judge()'s drops)."""
    return judge(experiments, policy, now_ns=now_ns, promoted=promoted)[0]


def judge(experiments: Iterable[Candidate], policy: Policy, *, now_ns: int,
          promoted: Callable[[Candidate], bool] = lambda e: False) -> tuple[list[Drop], list[Keep]]:
    """What `policy` does to each experiment: (drops, keeps), each in the order given.

    Under an inactive policy nothing is judged: ([], []).

    Args:
        now_ns: the current time (unix ns) for `older_than`.
        promoted: True for an experiment a commit promoted (never dropped).
    """
    exps = list(experiments)
    if not policy.active:
        return [], []
    is_promoted = {id(e) for e in exps if e.status not in PROTECTED_STATUSES and promoted(e)}
    protected = is_promoted | {id(e) for e in exps if e.status in PROTECTED_STATUSES}
    pool = [e for e in exps if e.status not in PROTECTED_STATUSES
            and not (policy.drop_failed and e.status in FAILED)]
    keep_rule = bool(policy.keep_last or policy.keep_best)
    last: set[int] = set()
    best: set[int] = set()
    if policy.keep_last:
        newest = sorted(pool, key=lambda e: e.created, reverse=True)
        last.update(id(e) for e in newest[:policy.keep_last])
    best_by = ""
    if policy.keep_best:
        key, higher = policy.sort_key()
        best_by = key

        def rank(e: Candidate) -> tuple[int, float, int]:
            v = metric_value(e.metrics, key)
            if v is None:
                return (1, 0.0, -e.created)
            return (0, -v if higher else v, -e.created)
        best.update(id(e) for e in sorted(pool, key=rank)[:policy.keep_best])
    kept = last | best
    cutoff = now_ns - int(parse_duration(policy.older_than) * 1e9) if policy.older_than else None

    drops, keeps = [], []
    for e in exps:
        if id(e) in protected:
            keeps.append(Keep(e, _why_kept(e, policy, is_promoted, last, best, best_by, cutoff)))
            continue
        if policy.drop_failed and e.status in FAILED:
            drops.append(Drop(e, f"status {e.status}"))
            continue
        if (not keep_rule and cutoff is None) or (keep_rule and id(e) in kept) \
                or (cutoff is not None and e.created >= cutoff):
            keeps.append(Keep(e, _why_kept(e, policy, is_promoted, last, best, best_by, cutoff)))
            continue
        why = []
        if keep_rule:
            sets = ([f"the last {policy.keep_last}"] if policy.keep_last else []) + \
                   ([f"the best {policy.keep_best} by {best_by}"] if policy.keep_best else [])
            why.append("not among " + " or ".join(sets))
        if cutoff is not None:
            why.append(f"older than {policy.older_than}")
        drops.append(Drop(e, ", ".join(why)))
    return drops, keeps


def _why_kept(e: Candidate, policy: Policy, promoted: set[int], last: set[int], best: set[int],
              best_by: str, cutoff: int | None) -> str:
    """Every reason `e` is kept, most binding first."""
    why = []
    if e.status in PROTECTED_STATUSES:
        why.append(_PROTECTED_WHY[e.status])
    if id(e) in promoted:
        why.append("promoted (a commit names its record)")
    if id(e) in last:
        why.append(f"among the last {policy.keep_last}")
    if id(e) in best:
        why.append(f"among the best {policy.keep_best} by {best_by}")
    if cutoff is not None and e.created >= cutoff:
        why.append(f"younger than {policy.older_than}")
    if not why and policy.drop_failed and e.status not in FAILED:
        why.append(f"status {e.status}, not failed")
    return ", ".join(why) or "no rule drops it"


def from_record(baseline: str, name: str, oid: str, rec: Any) -> Candidate:
    """An Candidate from a decoded cas.objects.record.Record."""
    names = set()
    if rec.workspace:
        names.add(rec.workspace)
    names.update(o for o, _ in rec.outs.values())
    names.update(t for _, t in rec.checkpoints)
    return Candidate(baseline=baseline, name=name, record=oid, created=rec.created,
                      status=rec.status, metrics=rec.flat_metrics(), names=frozenset(names))


def list_experiments(project: Project) -> list[Candidate]:
    """Every experiment ref with what its record says; unreadable records are kept
    (status "unreadable": a policy never drops what it cannot judge)."""
    from cas.objects import record
    from cas.store import refs
    from cas.core.errors import TallyError

    out = []
    for baseline, name, oid in refs.list_refs(project):
        try:
            rec = record.load(project.store, oid)
        except TallyError:
            out.append(Candidate(baseline, name, oid, 0, "unreadable"))
            continue
        out.append(from_record(baseline, name, oid, rec))
    return out


__all__ = ["Policy", "Candidate", "Drop", "Keep", "select", "judge", "metric_value", "from_record",
           "list_experiments"]
