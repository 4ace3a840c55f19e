"""`tally gc`: delete what no root needs; plan, confirm, report.

Fast path: cron runs it every night, and Typer's option handling (pydantic) cost
~0.2 s of a no-op gc's ~1 s.
"""

from __future__ import annotations

import sys

from ..flags import ALL_COMMITS, DRY_RUN, FORCE, JSON, KEEP_BEST, OLDER_THAN, SORT_BY, VERBOSE, WAIT, YES
from ..output import emit_json, err, human_bytes, out, table
from ..spec import FLAG, ONE, Command, Opt, count
from .push import REMOTE


def body(a) -> None:
    from dataclasses import replace

    from cas.core.durations import parse_duration
    from cas.core.errors import UsageError
    from cas.gc.collect import GcRefused
    from cas.gc.collect import gc as collect
    from cas.gc.retention import Policy
    from cas.workspace.project import open_project

    if not a.dry_run and not a.yes and not sys.stdin.isatty():
        raise UsageError("gc deletes data and stdin is not a terminal, so it cannot ask",
                         hint="pass --yes to run unattended (e.g. from cron), or --dry-run to see the plan")
    project = open_project()
    if a.remote is not None:
        return _remote(project, a)
    grace_s = parse_duration(a.grace) if a.grace is not None else None
    policy = Policy() if a.no_retention else Policy.from_config(project.config)
    overrides = {k: v for k, v in (("keep_best", a.keep_best), ("sort_by", a.sort_by),
                                   ("keep_last", a.keep_last), ("drop_failed", a.drop_failed),
                                   ("older_than", a.older_than)) if v is not None}
    policy = replace(policy, **overrides)

    def confirm(plan) -> bool:
        if not plan.deleted and not plan.dropped and not plan.temp_files and not a.drop_run_cache:
            return True
        _render(plan, verbose=False, stream=err, planned=True)
        sys.stderr.write(f"Delete {len(plan.deleted)} object(s), {human_bytes(plan.deleted_bytes)}"
                         + (f", and drop {len(plan.dropped)} experiment(s)" if plan.dropped else "")
                         + "? [y/N] ")
        sys.stderr.flush()
        return sys.stdin.readline().strip().lower() in ("y", "yes")

    try:
        report = collect(project, grace_s=grace_s, dry_run=a.dry_run, all_branches=a.all_branches,
                         all_tags=a.all_tags, all_commits=a.all_commits,
                         drop_run_cache=a.drop_run_cache, policy=policy, force=a.force,
                         lock_wait=a.wait, confirm=None if (a.yes or a.dry_run) else confirm)
    except GcRefused as exc:
        if a.json:
            emit_json(exc.report.to_json())
        for p in exc.report.problems:
            err(f"{p.kind}: {p.where}: {p.detail}")
        raise
    if a.json:
        emit_json(report.to_json())
        return
    if report.cancelled:
        err("cancelled; nothing was deleted")
        return
    _render(report, verbose=a.verbose, stream=out)


def _remote(project, a) -> None:
    """`gc --remote NAME` (cas/gc/remotegc.py): the same roots, grace and reports."""
    from cas.gc.remotegc import gc_remote

    def run(dry: bool):
        return gc_remote(project, remote=a.remote, grace=a.grace, dry_run=dry, force=a.force,
                         all_branches=a.all_branches, all_tags=a.all_tags,
                         all_commits=a.all_commits, verbose=a.verbose)

    if not a.dry_run and not a.yes:  # a terminal: show the plan, then ask
        plan = run(True)
        if not plan.deleted_objects and not plan.orphans_deleted:
            out("Nothing to delete on the remote.")
            return
        sys.stderr.write(f"Delete {plan.deleted_objects} object(s), "
                         f"{human_bytes(plan.deleted_bytes)} from remote {plan.remote}? [y/N] ")
        sys.stderr.flush()
        if sys.stdin.readline().strip().lower() not in ("y", "yes"):
            err("cancelled; nothing was deleted")
            return
    report = run(a.dry_run)
    if a.json:
        emit_json(report.to_json())
        return
    verb = "Would delete" if report.dry_run else "Deleted"
    out(f"{verb} {report.deleted_objects} object(s), {human_bytes(report.deleted_bytes)} from "
        f"remote {report.remote} ({report.packs_deleted} pack(s), {report.packs_repacked} "
        f"repacked, {report.large_deleted} large, {report.orphans_deleted} unindexed)")
    out(f"  kept {report.kept_objects} object(s), {human_bytes(report.kept_bytes)}; "
        f"{report.young_objects} younger than the grace period")
    if a.verbose:
        for d in report.deleted_list:
            out(f"  {d['oid']}  {d['bytes']}")
    for p in report.problems:
        err(f"{p['kind']}: {p['oid']}: {p['detail']}")


def _render(report, *, verbose: bool, stream, planned: bool = False) -> None:
    """The human report: what goes, what stays and why."""
    planned = planned or report.dry_run
    verb = "Would delete" if planned else "Deleted"
    by_kind: dict[str, int] = {}
    for d in report.deleted:
        by_kind[d.kind] = by_kind.get(d.kind, 0) + 1
    kinds = ", ".join(f"{n} {k}{'s' if n != 1 else ''}" for k, n in sorted(by_kind.items()))
    stream(f"{verb} {len(report.deleted)} object(s), {human_bytes(report.deleted_bytes)}"
           + (f" ({kinds})" if kinds else ""))
    linked = report.deleted_bytes - report.freed_bytes
    if linked:
        stream(f"  {human_bytes(linked)} of it stays on disk: workspace files hardlink those objects")
    if verbose:
        for d in report.deleted:
            stream(f"  {d.oid}  {d.kind:<6}  {d.bytes}")
    stream(f"Kept {report.kept_objects} object(s), {human_bytes(report.kept_bytes)}; "
           f"scope: {', '.join(report.scope) or 'workspace'}")
    if report.roots:
        rows = [[r.kind, str(r.roots), str(r.objects), human_bytes(r.bytes),
                 str(r.exclusive_objects), human_bytes(r.exclusive_bytes)] for r in report.roots]
        for line in table(["kept by", "roots", "objects", "bytes", "only by it", "only bytes"],
                          rows).splitlines():
            stream("  " + line)
    if report.young_objects:
        stream(f"Unreferenced but younger than the grace period ({_dur(report.grace_s)}): "
               f"{report.young_objects} object(s), {human_bytes(report.young_bytes)} kept")
    for d in report.dropped:
        stream(f"{'Would drop' if planned else 'Dropped'} experiment {d.exp.label}: {d.reason}")
    if report.kept_experiments:
        why: dict[str, int] = {}
        for k in report.kept_experiments:
            why[k.reason] = why.get(k.reason, 0) + 1
        stream(f"{'Would keep' if planned else 'Kept'} {len(report.kept_experiments)} experiment(s): "
               + "; ".join(f"{n} {r}" for r, n in sorted(why.items(), key=lambda rn: -rn[1])))
        if verbose:
            for k in report.kept_experiments:
                stream(f"  kept {k.exp.label}: {k.reason}")
    if report.run_cache_dropped:
        stream(f"Dropped {report.run_cache_dropped} run-cache entr{'y' if report.run_cache_dropped == 1 else 'ies'}")
    if report.temp_files:
        stream(f"{'Would remove' if planned else 'Removed'} {len(report.temp_files)} stale temp "
               f"file(s), {human_bytes(report.temp_bytes)}")
    for p in report.problems:
        stream(f"problem (forced past): {p.kind}: {p.where}: {p.detail}")
    for n in report.notes:
        err(f"note: {n}")


def _dur(seconds: float) -> str:
    for unit, n in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= n and seconds % n == 0:
            return f"{int(seconds // n)}{unit}"
    return f"{seconds:g}s"


COMMAND = Command(
    "gc",
    "Delete objects that no root needs and that are older than the grace period.\n\n"
    "Roots: the workspace's pointers and tally.lock, every experiment ref, queued and "
    "running experiments, the run-cache (unless --drop-run-cache), and with -a/-T/-A the "
    "pointers and tally.lock files of Git history. Experiments a retention policy drops "
    "stop being roots, except promoted ones (named from Git), queued and running ones. "
    "Promoted experiments (a commit names their record: tally promote) are never dropped; "
    "the report says why each kept experiment was kept.\n\n"
    "Without --yes, asks before deleting when stdin is a terminal, and refuses (exit 2) "
    "when it is not. --dry-run and --json say exactly which objects and how many bytes "
    "go, and which roots keep what.",
    body,
    opts=(
        DRY_RUN._replace(help="Plan only: report what would go."),
        JSON._replace(help="Machine-readable report on stdout."),
        YES,
        Opt(("--grace",), "grace", ONE, "Keep unreferenced objects younger than this "
            "(default: config gc.grace, 24h). 0 is allowed.", metavar="DURATION"),
        Opt(("-a", "--all-branches"), "all_branches", FLAG,
            "Keep what every local branch's pointers and tally.lock name."),
        Opt(("-T", "--all-tags"), "all_tags", FLAG, "Keep what every tag names."),
        ALL_COMMITS._replace(help="Every commit, not only HEAD: keep what every commit of Git "
                                  "history names."),
        Opt(("--drop-run-cache",), "drop_run_cache", FLAG,
            "Remove the run-cache too (stages will run again)."),
        KEEP_BEST._replace(help="Retention: keep the N best experiments by --sort-by."),
        SORT_BY._replace(help="Which end is best for --keep-best: KEY:desc (highest, e.g. "
                              "acc:desc) or KEY:asc (lowest, loss:asc); :max and :min are "
                              "aliases. Required: a wrong guess would keep the worst."),
        Opt(("--keep-last",), "keep_last", ONE, "Retention: keep the N most recent experiments.",
            metavar="N", type=count),
        Opt(("--drop-failed",), "drop_failed", FLAG,
            "Retention: drop failed and interrupted experiments (--keep-failed: keep them, "
            "whatever the config says).", off=("--keep-failed",)),
        OLDER_THAN._replace(help="Retention: drop experiments older than DURATION (e.g. 30d)."),
        Opt(("--no-retention",), "no_retention", FLAG,
            "Ignore the gc.* retention settings of the store config."),
        # No -f: in DVC, `gc -f` skips the prompt (here --yes); a DVC user's `-f` must not
        # mean "sweep past a damaged root".
        FORCE._replace(names=("--force",),
                       help="Sweep even when a root names a missing or corrupt object."),
        WAIT._replace(default=60.0, help="How long to wait for writers holding the store lock "
                                         "(default 60)."),
        VERBOSE._replace(help="List every object deleted."),
        REMOTE._replace(help="Collect the remote NAME instead of this store: the same roots "
                             "plus the remote's refs and queue, the same grace; under the "
                             "remote's exclusive lock (exit 7 while a push runs)."),
    ),
    exits=((0, "done (also: nothing to delete, or declined at the prompt)"),
           (9, "with --remote: the remote is unreachable, refused the credentials or is "
               "read-only"),
           (2, "bad usage: a bad --grace or policy option, or not a terminal and no --yes "
               "(cron jobs must say --yes)"),
           (5, "refused: a root names a missing or undecodable object, so reachability cannot "
               "be proven and nothing was deleted (see `tally fsck`, or --force)"),
           (7, "the store stayed busy (writers hold its lock) for longer than --wait")),
    fast=True)
