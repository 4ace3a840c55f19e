"""`tally gc`'s body and its Typer-free front end.

cli/entry.py dispatches `tally gc ARGS` to `main` here without importing Typer (whose
option parsing builds pydantic validators: ~0.2 s of a no-op gc); `tally gc --help`
and in-process callers go through the Typer command in cli/gc_cmd.py, which calls the
same `run_gc`. Tests check that both front ends say and do the same.
"""

from __future__ import annotations

import sys

from .output import emit_json, err, human_bytes, out, table


def run_gc(*, dry_run: bool = False, json_out: bool = False, yes: bool = False,
           grace: str | None = None, all_branches: bool = False, all_tags: bool = False,
           all_commits: bool = False, drop_run_cache: bool = False, keep_best: int | None = None,
           sort_by: str | None = None, keep_last: int | None = None, drop_failed: bool | None = None,
           older_than: str | None = None, no_retention: bool = False, force: bool = False,
           wait: float = 60.0, verbose: bool = False) -> None:
    """The body of `tally gc`, whichever front end parsed the arguments."""
    from dataclasses import replace

    from cas.core.durations import parse_duration
    from cas.core.errors import UsageError
    from cas.gc.collect import GcRefused
    from cas.gc.collect import gc as run
    from cas.workspace.project import open_project
    from cas.gc.retention import Policy

    interactive = sys.stdin.isatty()
    if not dry_run and not yes and not interactive:
        raise UsageError("gc deletes data and stdin is not a terminal, so it cannot ask",
                         hint="pass --yes to run unattended (e.g. from cron), or --dry-run to see the plan")
    project = open_project()
    grace_s = parse_duration(grace) if grace is not None else None
    policy = Policy() if no_retention else Policy.from_config(project.config)
    overrides = {k: v for k, v in (("keep_best", keep_best), ("sort_by", sort_by),
                                   ("keep_last", keep_last), ("drop_failed", drop_failed),
                                   ("older_than", older_than)) if v is not None}
    policy = replace(policy, **overrides)

    def confirm(plan) -> bool:
        if not plan.deleted and not plan.dropped and not plan.temp_files and not drop_run_cache:
            return True
        _render(plan, verbose=False, stream=err, planned=True)
        sys.stderr.write(f"Delete {len(plan.deleted)} object(s), {human_bytes(plan.deleted_bytes)}"
                         + (f", and drop {len(plan.dropped)} experiment(s)" if plan.dropped else "")
                         + "? [y/N] ")
        sys.stderr.flush()
        answer = sys.stdin.readline().strip().lower()
        return answer in ("y", "yes")

    try:
        report = run(project, grace_s=grace_s, dry_run=dry_run, all_branches=all_branches,
                     all_tags=all_tags, all_commits=all_commits, drop_run_cache=drop_run_cache,
                     policy=policy, force=force, lock_wait=wait,
                     confirm=None if (yes or dry_run) else confirm)
    except GcRefused as exc:
        if json_out:
            emit_json(exc.report.to_json())
        for p in exc.report.problems:
            err(f"{p.kind}: {p.where}: {p.detail}")
        raise
    if json_out:
        emit_json(report.to_json())
        return
    if report.cancelled:
        err("cancelled; nothing was deleted")
        return
    _render(report, verbose=verbose, stream=out)


def main(argv: list[str]) -> None:
    """`tally gc [options]` parsed without Typer (the options of the command above)."""
    import argparse

    from cas.core.errors import UsageError

    class Parser(argparse.ArgumentParser):
        def error(self, message: str):  # one error funnel: exit 2 via UsageError
            raise UsageError(f"tally gc: {message}", hint="see `tally gc --help`")

    def count(text: str) -> int:
        try:
            return int(text)
        except ValueError:
            raise UsageError(f"tally gc: {text!r} is not a whole number") from None

    def seconds(text: str) -> float:
        try:
            return float(text)
        except ValueError:
            raise UsageError(f"tally gc: --wait {text!r} is not a number of seconds") from None

    p = Parser(prog="tally gc", add_help=False, allow_abbrev=False)
    for flags, dest in ((("-n", "--dry-run"), "dry_run"), (("--json",), "json_out"),
                        (("-y", "--yes"), "yes"), (("-a", "--all-branches"), "all_branches"),
                        (("-T", "--all-tags"), "all_tags"), (("-A", "--all-commits"), "all_commits"),
                        (("--drop-run-cache",), "drop_run_cache"), (("--no-retention",), "no_retention"),
                        (("--force",), "force"), (("-v", "--verbose"), "verbose")):
        p.add_argument(*flags, dest=dest, action="store_true")
    p.add_argument("--grace", metavar="DURATION")
    p.add_argument("--keep-best", type=count, metavar="N")
    p.add_argument("--sort-by", metavar="KEY:max|min")
    p.add_argument("--keep-last", type=count, metavar="N")
    p.add_argument("--drop-failed", dest="drop_failed", action="store_const", const=True, default=None)
    p.add_argument("--keep-failed", dest="drop_failed", action="store_const", const=False)
    p.add_argument("--older-than", metavar="DURATION")
    p.add_argument("--wait", type=seconds, default=60.0, metavar="SECONDS")
    run_gc(**vars(p.parse_args(argv)))


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
