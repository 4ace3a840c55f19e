"""`tally run --queue | --dry-run | --run-all -j N | --resume NAME` (cli/runcmd.py parses).

Typer-free, like cli/runcmd.py that calls it: `tally run` is dispatched without
importing Typer (~60 ms), and queueing a sweep point by point must stay cheap.
"""

from __future__ import annotations

from .output import emit_json, err, out


def run_options(a):
    """`tally run` with --queue / --dry-run / --run-all / --resume (parsed by
    cli/runcmd.py). Returns a RunOutcome to render for a workspace --resume run,
    else None (queue output is rendered here)."""
    from cas.experiments import checkpoints
    from cas.experiments.request import RunRequest
    from cas.queue import directory as queue
    from cas.experiments import enqueue as sweep
    from cas.workers import supervisor as worker
    from cas.core.errors import UsageError

    if a.cmd is not None or a.outs or a.deps or a.metrics or a.outs_no_cache:
        raise UsageError("quick stages (-o/-d/-M -- CMD) cannot be queued or resumed",
                         hint="put the stage in tally.yaml, then queue it")
    if a.jobs < 1:
        raise UsageError("-j must be at least 1")
    from cas.workspace.project import open_project

    project = open_project()
    request = RunRequest(stages=tuple(a.targets), set_params=tuple(a.set_param), name=a.name,
                         message=a.message, force=a.force, no_run_cache=a.no_run_cache,
                         resume=a.resume)
    if a.resume and not (a.queue or a.dry_run):
        return checkpoints.run_resumed(project, request, echo=not a.quiet and not a.json,
                                       wait=a.wait, notify=None if a.json or a.quiet else err)
    if a.queue or a.dry_run:
        entries = sweep.plan(project, request, dry_run=a.dry_run)
        if not a.dry_run:
            queue.enqueue(project, entries)
        if a.json:
            emit_json({"queued": not a.dry_run, "entries": [
                {k: v for k, v in e.to_json().items() if not (a.dry_run and k == "workspace")}
                for e in entries]})
        else:
            verb = "would queue" if a.dry_run else "queued"
            for e in entries:
                sets = " ".join(e.override_specs())
                out(f"{verb} {e.name}" + (f"  {sets}" if sets else ""))
            if not a.dry_run and not a.run_all and not a.quiet:
                err(f"{len(entries)} run(s) queued; start them with `tally queue start -j N` "
                    "or `tally run --run-all -j N`")
    if a.run_all and not a.dry_run:
        stats = worker.run_all(project, jobs=a.jobs,
                               notify=None if a.json or a.quiet else (lambda m: err(m)))
        if a.json and not a.queue:
            emit_json({"done": stats.done, "failed": stats.failed})
        elif not a.json:
            err(f"{len(stats.done)} done, {len(stats.failed)} failed")
        if stats.interrupted:
            from cas.core.errors import Interrupted
            raise Interrupted("the queue run was interrupted; killed runs are failed and retryable",
                              hint="`tally queue retry --failed` queues them again")
        if stats.failed:
            from cas.core.errors import RunFailed
            raise RunFailed(f"{len(stats.failed)} queued run(s) failed: {', '.join(stats.failed)}",
                            hint="see `tally queue logs NAME`; `tally queue retry --failed` re-runs them")
    return None
