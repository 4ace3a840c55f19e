"""`tally run`: run the pipeline as an experiment, or queue it.

Fast path: its start-up is part of every experiment's overhead (goal: at most 0.1 s
over the bare command), so cli/entry.py parses it with cli/parse.py and never imports
Typer; nor does this module import json, dataclasses or the queue modules unless the
options ask for them (tests/unit/test_import_budget.py).
"""

from __future__ import annotations

import gc

from ..flags import DRY_RUN, FORCE, JOBS, JSON, MESSAGE, NAME, QUIET, WAIT
from ..output import emit_json, err, out
from ..spec import ANY, FLAG, MANY, ONE, Arg, Command, Opt


def render(exp, json_out: bool, verb: str) -> None:
    """An experiment just run or saved: the result line on stdout (or its JSON), what
    failed and the metrics on stderr.

    Raises:
        RunFailed: the experiment failed (exit 8; recorded, with its logs).
        Interrupted: it was interrupted (exit 130; recorded).
    """
    rec = exp.record
    if json_out:
        emit_json(exp.to_json())
    else:
        for s in rec.stages:
            if s.state == "failed":
                err(f"stage '{s.name}' failed" + (f" with exit code {s.exit_code}" if s.exit_code is not None else ""))
        if exp.reason and rec.status == "failed":
            err(exp.reason)
        for f, m in rec.flat_metrics().items():
            err(f"  {f}: {m}")
        out(f"{verb} experiment {exp.name} ({rec.status})")
    if rec.status == "failed":
        from cas.core.errors import RunFailed
        raise RunFailed(f"experiment {exp.name} failed; its record, logs and partial outputs are kept",
                        hint=f"see its output with `tally logs {exp.name}`")
    if rec.status == "interrupted":
        from cas.core.errors import Interrupted
        raise Interrupted(f"experiment {exp.name} was interrupted; its record is kept")


def body(a) -> None:
    # The imports below create ~15k objects that live until exit. With the cyclic
    # collector on, they are walked by every collection the imports trigger (~5 ms
    # here); frozen afterwards, no later collection walks them again.
    gc.disable()
    from cas.experiments import runs as experiments
    from cas.workspace.project import open_project
    gc.freeze()
    gc.enable()

    if a.dry or a.single_item or a.downstream or a.keep_going:
        _check_selection_flags(a)
    if a.queue or a.run_all or a.resume or a.dry_run:
        exp = _queue_options(a)
        if exp is not None:
            render(exp, a.json, "Ran")
        return
    quick = None
    targets = a.targets
    if a.cmd is not None or a.outs or a.deps or a.metrics or a.outs_no_cache:
        cmd = a.cmd if a.cmd is not None else targets
        if not cmd:
            from cas.core.errors import UsageError
            raise UsageError("-o/-d/-M need a command after --", hint="tally run -o out.txt -- ./make.sh")
        quick = experiments.QuickStage(cmd=tuple(cmd), deps=tuple(a.deps), outs=tuple(a.outs),
                                       metrics=tuple(a.metrics), outs_no_cache=tuple(a.outs_no_cache))
        targets = []
    project = open_project()
    request = experiments.RunRequest(
        stages=tuple(targets), set_params=tuple(a.set_param), name=a.name, message=a.message,
        force=a.force, no_run_cache=a.no_run_cache, quick_stage=quick, single=a.single_item,
        downstream=a.downstream, keep_going=a.keep_going)
    if a.dry:
        render_plan(experiments.plan(project, request), a.json)
        return
    exp = experiments.run(project, request, echo=not a.quiet and not a.json, wait=a.wait,
                          notify=None if a.json or a.quiet else err)
    render(exp, a.json, "Ran")
    # remote.auto_push: checked on the parsed config first, so a run with it off
    # imports nothing of the remote layer (cas/sync/autopush.py never fails the run).
    if project.config.get("remote.auto_push") == "true" or \
            (project.store_dir / "config.local").exists():
        from cas.sync import autopush
        autopush.after_run(project, exp.record.baseline, exp.name, notify=err)


def _check_selection_flags(a) -> None:
    """--dry, -s, --downstream, -k: the combinations `tally run` refuses (UsageError)."""
    from cas.core.errors import UsageError

    used = [f for f, on in (("--dry", a.dry), ("-s/--single-item", a.single_item),
                            ("--downstream", a.downstream), ("-k/--keep-going", a.keep_going)) if on]
    other = [f for f, on in (("--queue", a.queue), ("--run-all", a.run_all), ("--dry-run", a.dry_run),
                             ("--resume", a.resume)) if on]
    if other:
        raise UsageError(f"tally run: {used[0]} cannot be used with {other[0]}",
                         hint="--dry, -s, --downstream and -k apply to a run in the workspace")
    if a.single_item and a.downstream:
        raise UsageError("tally run: -s/--single-item and --downstream cannot be used together",
                         hint="-s runs only the named stages; --downstream adds what follows them")
    if a.dry and a.set_param:
        raise UsageError("tally run: --dry cannot be used with -S: the overrides are applied by "
                         "editing the params files, which a dry run never does",
                         hint="drop -S to see the plan for the params as they are")


def render_plan(plan: list[dict], json_out: bool) -> None:
    """`tally run --dry`: one line per stage (stdout), or {"dry": true, "stages": [...]}."""
    if json_out:
        emit_json({"dry": True, "stages": plan})
        return
    verbs = {"skip": "would skip", "restore": "would restore", "run": "would run"}
    for p in plan:
        out(f"{verbs[p['action']]} stage '{p['name']}' ({p['reason']})")
        if p["action"] == "run":
            for cmd in p["cmd"]:
                out(f"  > {cmd}")


def _queue_options(a):
    """`tally run` with --queue / --dry-run / --run-all / --resume. Returns the
    Experiment of a workspace --resume run (to render), else None (queue output is
    rendered here)."""
    from cas.core.errors import UsageError
    from cas.experiments import checkpoints
    from cas.experiments import enqueue as sweep
    from cas.experiments.request import QuickStage, RunRequest
    from cas.queue import directory as queue
    from cas.workers import supervisor as worker
    from cas.workspace.project import open_project

    quick = None
    if a.cmd is not None or a.outs or a.deps or a.metrics or a.outs_no_cache:
        cmd = a.cmd if a.cmd is not None else a.targets
        if a.queue or a.run_all or a.dry_run or not cmd:
            raise UsageError("quick stages (-o/-d/-M -- CMD) cannot be queued; "
                             "--resume NAME takes one with its command after --",
                             hint="put the stage in tally.yaml, then queue it")
        # --resume of a command-line stage: the stage is given again (the record keeps
        # its command, not its -o/-d/-M declarations).
        quick = QuickStage(cmd=tuple(cmd), deps=tuple(a.deps), outs=tuple(a.outs),
                           metrics=tuple(a.metrics), outs_no_cache=tuple(a.outs_no_cache))
    project = open_project()
    request = RunRequest(stages=tuple(a.targets) if quick is None else (), set_params=tuple(a.set_param),
                         name=a.name, message=a.message, force=a.force, no_run_cache=a.no_run_cache,
                         resume=a.resume, quick_stage=quick)
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
                            hint="see `tally logs NAME`; `tally queue retry --failed` re-runs them")
    return None


COMMAND = Command(
    "run",
    "Run the pipeline in the workspace as a new experiment, and record it.\n\n"
    "\b\n"
    "tally run [STAGE...] [-S [FILE:]KEY=VALUE]... [-n NAME] [-m MSG] [-f] [-s | --downstream] [-k] [--dry]\n"
    "tally run [-o OUT]... [-O OUT]... [-d DEP]... [-M METRICS]... -- CMD [ARG...]\n"
    "tally run --queue [-S ...] | --run-all [-j N] | --resume NAME\n\n"
    "Stages whose cmd, deps, params and outputs match tally.lock are skipped; others are "
    "restored from the run-cache when the same inputs ran before, else run. Afterwards "
    "the workspace holds the results, and the experiment is recorded (name printed). "
    "With -o/-O/-d/-M, the command after `--` is a one-stage pipeline of its own.",
    body,
    args=(Arg("targets", "STAGE", ANY, "A stage or foreach/matrix group to run, with what it depends on."),),
    opts=(
        Opt(("-S", "--set-param"), "set_param", MANY,
            "Override a param before running: [FILE:]KEY=VALUE, edited in place with comments "
            "kept (repeatable). With --queue, VALUE may be a sweep: a,b,c or range(a,b,step).",
            metavar="[FILE:]KEY=VALUE"),
        NAME, MESSAGE,
        FORCE._replace(help="Run every selected stage, even unchanged ones (no run-cache)."),
        Opt(("--no-run-cache",), "no_run_cache", FLAG, "Never restore outputs from the run-cache."),
        Opt(("-s", "--single-item"), "single_item", FLAG,
            "Run only the named stages, not their upstream stages (whose outputs must exist)."),
        Opt(("--downstream",), "downstream", FLAG,
            "Run the named stages and every stage downstream of them."),
        Opt(("-k", "--keep-going"), "keep_going", FLAG,
            "When a stage fails, still run the stages that do not depend on it; those that "
            "do are recorded not-run (the run still fails)."),
        Opt(("--dry",), "dry", FLAG,
            "Print what each selected stage would do, in run order: skip, restore (from the "
            "run-cache) or run (with its commands); change nothing. Not with -S."),
        Opt(("-o", "--outs"), "outs", MANY, "Quick stage: an output, stored (repeatable).", metavar="PATH"),
        Opt(("-O", "--outs-no-cache"), "outs_no_cache", MANY,
            "Quick stage: an output, hashed but not stored (repeatable).", metavar="PATH"),
        Opt(("-d", "--deps"), "deps", MANY, "Quick stage: a dependency (repeatable).", metavar="PATH"),
        Opt(("-M", "--metrics"), "metrics", MANY,
            "Quick stage: a metrics file, JSON/YAML/TOML (repeatable).", metavar="PATH"),
        WAIT._replace(help="Wait this long for another run in this workspace (default 0)."),
        QUIET, JSON,
        Opt(("--queue",), "queue", FLAG,
            "Queue the run (every point of a -S sweep) instead of running it; the workspace "
            "is snapshotted now, so later edits do not leak in."),
        DRY_RUN._replace(help="With --queue (or alone): list what would be queued, queue nothing "
                              "(for a plan of the stages, see --dry)."),
        Opt(("--run-all",), "run_all", FLAG, "Run the queue in the foreground until it is empty."),
        JOBS._replace(help="With --run-all: runs at a time (default 1)."),
        Opt(("--resume",), "resume", ONE, "Continue experiment NAME from its last checkpoint.",
            metavar="NAME"),
    ),
    exits=((2, "bad usage: -s with --downstream; --dry, -s, --downstream or -k with --queue, "
               "--run-all, --dry-run or --resume; --dry with -S"),
           (3, "an unknown stage or a missing dependency (also with --dry)"),
           (4, "the experiment name is taken under this baseline"),
           (7, "another run holds the workspace (see --wait)"),
           (8, "a stage failed (the experiment is still recorded: `tally logs NAME`)"),
           (130, "interrupted (recorded as interrupted)")),
    rest="cmd", fast=True)
