"""Which experiment a name means, and renaming one.

A name is unique only per baseline, so `NAME` is looked up under the current baseline
(HEAD) first, then under every baseline; found under several others, it is ambiguous
and must be written `BASELINE/NAME` with a prefix of the baseline commit (at least 4
hex digits).
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass
from typing import TYPE_CHECKING

from cas.core.errors import NotFound, StoreError, UsageError
from cas.objects import record
from cas.store import refs
from cas.workspace import git

if TYPE_CHECKING:
    from cas.workspace.project import Project


MIN_BASELINE_PREFIX = 4  # hex digits, as `git rev-parse` wants at least


def current_baseline(project: Project) -> str | None:
    """HEAD's commit: the baseline new experiments start from (None: no commit yet)."""
    from cas.workspace.fullsnapshot import baseline_commit

    try:
        return baseline_commit(project.root)  # reads .git directly: no process start
    except StoreError:
        return git.head_commit(project.root)  # None with no commit; raises if not a repo


def find(project: Project, spec: str) -> tuple[str, str, str]:
    """The (baseline, name, record id) that `spec` (`NAME` or `BASELINE/NAME`) means.

    Raises:
        NotFound: no such experiment (with the closest names as a hint).
        UsageError: a malformed spec, or a name found under several other baselines.
    """
    prefix, sep, name = spec.rpartition("/")
    if refs.name_problem(name):
        raise UsageError(f"invalid experiment name {name!r}: {refs.name_problem(name)}")
    baselines = refs.list_baselines(project)
    if sep:
        if len(prefix) < MIN_BASELINE_PREFIX or prefix.strip("0123456789abcdef"):
            raise UsageError(f"{prefix!r} is not a baseline commit prefix",
                             hint="write BASELINE/NAME with at least 4 hex digits of the commit")
        candidates = [b for b in baselines if b.startswith(prefix)]
    else:
        head = current_baseline(project)
        if head is not None and refs.read(project, head, name) is not None:
            return head, name, refs.read(project, head, name)  # type: ignore[return-value]
        candidates = baselines
    found = [(b, name, oid) for b in candidates if (oid := refs.read(project, b, name)) is not None]
    if len(found) == 1:
        return found[0]
    if found:
        where = ", ".join(b[:7] for b, _, _ in found)
        raise UsageError(f"experiment {name!r} exists under several baselines ({where})",
                         hint=f"write it as BASELINE/NAME, e.g. {found[0][0][:7]}/{name}")
    known = sorted({n for _, n, _ in refs.list_refs(project)}) if len(baselines) < 1000 else []
    close = difflib.get_close_matches(name, known, n=3, cutoff=0.6)
    hint = (f"did you mean {' or '.join(repr(c) for c in close)}?" if close
            else "`tally show --all` lists the experiments")
    raise NotFound(f"no experiment named {spec!r}", hint=hint)


def load(project: Project, spec: str) -> tuple[str, str, record.Record]:
    """(baseline, name, decoded record) of the experiment `spec` names.

    Raises:
        NotFound, UsageError: as find(). ObjectMissing / Corruption: the record is
            missing from the store or damaged.
    """
    b, name, oid = find(project, spec)
    return b, name, record.load(project.store, oid)


@dataclass(frozen=True, slots=True)
class Renamed:
    baseline: str
    old: str
    new: str
    oid: str


def rename(project: Project, old: str, new: str) -> Renamed:
    """Rename experiment `old` (a NAME or BASELINE/NAME) to `new`, under its baseline.

    Raises:
        NotFound: no experiment `old`. Conflict: `new` is taken under that baseline.
        UsageError: `new` is not a valid name.
    """
    refs.check_name(new)
    baseline, name, oid = find(project, old)
    if name == new:
        return Renamed(baseline, name, new, oid)
    oid = refs.rename(project, baseline, name, new, oid=oid)
    return Renamed(baseline, name, new, oid)


__all__ = ["current_baseline", "find", "load", "rename", "Renamed", "MIN_BASELINE_PREFIX"]
