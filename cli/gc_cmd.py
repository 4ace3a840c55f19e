"""`tally gc`: delete what no root needs; plan, confirm, report.

Two front ends share one body (`run_gc`, cli/gcrun.py): the Typer command below
(`--help`, and every in-process caller), and `cli.gcrun.main(argv)`, Typer-free, to
which cli/entry.py dispatches `tally gc ARGS` (Typer parses through pydantic: ~0.2 s
of a no-op gc's ~1 s).
"""

from __future__ import annotations

from typing import Optional

import typer

from .main import app
from .gcrun import main, run_gc  # noqa: F401 - main: the fast front end, re-exported

GC_EXIT_CODES = """\
Exit codes: 0 done (also: nothing to delete, or declined at the prompt);
1 unexpected failure; 2 bad usage: a bad --grace or policy option, or not a terminal
and no --yes (cron jobs must say --yes); 5 refused: a root names a missing or
undecodable object, so reachability cannot be proven and nothing was deleted (see
`tally fsck`, or --force); 6 store unusable; 7 the store stayed busy (writers hold
its lock) for longer than --wait; 130 interrupted."""


@app.command(epilog=GC_EXIT_CODES)
def gc(
    dry_run: bool = typer.Option(False, "--dry-run", "-n", help="Plan only: report what would go."),
    json_out: bool = typer.Option(False, "--json", help="Machine-readable report on stdout."),
    yes: bool = typer.Option(False, "--yes", "-y", help="Do not ask (required when stdin is not a terminal)."),
    grace: Optional[str] = typer.Option(None, "--grace", metavar="DURATION",
                                        help="Keep unreferenced objects younger than this "
                                             "(default: config gc.grace, 24h). 0 is allowed."),
    all_branches: bool = typer.Option(False, "--all-branches", "-a",
                                      help="Keep what every local branch's pointers and tally.lock name."),
    all_tags: bool = typer.Option(False, "--all-tags", "-T", help="Keep what every tag names."),
    all_commits: bool = typer.Option(False, "--all-commits", "-A",
                                     help="Keep what every commit of Git history names."),
    drop_run_cache: bool = typer.Option(False, "--drop-run-cache",
                                        help="Remove the run-cache too (stages will run again)."),
    keep_best: Optional[int] = typer.Option(None, "--keep-best", metavar="N",
                                            help="Retention: keep the N best experiments by --sort-by."),
    sort_by: Optional[str] = typer.Option(None, "--sort-by", metavar="KEY:max|min",
                                          help="Metric for --keep-best, with its direction: acc:max, loss:min."),
    keep_last: Optional[int] = typer.Option(None, "--keep-last", metavar="N",
                                            help="Retention: keep the N most recent experiments."),
    drop_failed: Optional[bool] = typer.Option(None, "--drop-failed/--keep-failed",
                                               help="Retention: drop failed and interrupted experiments."),
    older_than: Optional[str] = typer.Option(None, "--older-than", metavar="DURATION",
                                             help="Retention: drop experiments older than this (e.g. 30d)."),
    no_retention: bool = typer.Option(False, "--no-retention",
                                      help="Ignore the gc.* retention settings of the store config."),
    force: bool = typer.Option(False, "--force",
                               help="Sweep even when a root names a missing or corrupt object."),
    wait: float = typer.Option(60.0, "--wait", metavar="SECONDS",
                               help="How long to wait for writers holding the store lock."),
    verbose: bool = typer.Option(False, "--verbose", "-v", help="List every object deleted."),
) -> None:
    """Delete objects that no root needs and that are older than the grace period.

    Roots: the workspace's pointers and tally.lock, every experiment ref, queued and
    running experiments, the run-cache (unless --drop-run-cache), and with -a/-T/-A
    the pointers and tally.lock files of Git history. Experiments a retention policy
    drops stop being roots, except promoted ones (named from Git), queued and running
    ones. Promoted experiments are never dropped.

    Without --yes, asks before deleting when stdin is a terminal, and refuses (exit 2)
    when it is not. --dry-run and --json say exactly which objects and how many bytes
    go, and which roots keep what.
    """
    run_gc(dry_run=dry_run, json_out=json_out, yes=yes, grace=grace, all_branches=all_branches,
           all_tags=all_tags, all_commits=all_commits, drop_run_cache=drop_run_cache,
           keep_best=keep_best, sort_by=sort_by, keep_last=keep_last, drop_failed=drop_failed,
           older_than=older_than, no_retention=no_retention, force=force, wait=wait, verbose=verbose)
