"""`tally run`, Typer-free: its start-up is part of every experiment's overhead.

cli/entry.py dispatches here without importing Typer (the goal is at most 0.1 s over
the bare command); cli/experiments.py registers the same function for
`tally run --help` and for in-process callers.
"""

from __future__ import annotations

import gc
from types import SimpleNamespace

from .output import emit_json, err, out


def render(exp, json_out: bool, verb: str) -> None:
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
                        hint=f"see the log: `tally logs {exp.name}`")
    if rec.status == "interrupted":
        from cas.core.errors import Interrupted
        raise Interrupted(f"experiment {exp.name} was interrupted; its record is kept")


RUN_HELP = """Run the pipeline in the workspace as a new experiment, and record it.

\b
tally run [STAGE...] [-S [FILE:]KEY=VALUE]... [-n NAME] [-m MSG] [-f] [--no-run-cache]
          [-s | --downstream] [-k] [--dry]
tally run [-o OUT]... [-O OUT]... [-d DEP]... [-M METRICS]... -- CMD [ARG...]

Stages whose cmd, deps, params and outputs match tally.lock are skipped; others are
restored from the run-cache when the same inputs ran before, else run. Afterwards
the workspace holds the results, and the experiment is recorded (name printed).

\b
  STAGE                  stage or foreach/matrix group to run, with what it depends on
  -s, --single-item      run only the named stages, not their upstream stages (whose
                         outputs must exist)
  --downstream           run the named stages and every stage downstream of them
  -k, --keep-going       when a stage fails, still run the stages that do not depend on
                         it; those that do are recorded "not-run" (the run still fails)
  --dry                  print what each selected stage would do, in run order: skip,
                         restore (from the run-cache) or run (with its commands); change
                         nothing (no params edit, no store write, no tally.lock, no
                         record). --json: the plan as data. Not with -S (refused, exit 2)
  -S, --set-param SPEC   [FILE:]KEY=VALUE override applied first (repeatable; round-trip)
  -n, --name NAME        experiment name (default: generated, e.g. bold-seal)
  -m, --message MSG      a note stored with the experiment
  -f, --force            run every selected stage, even unchanged ones (no run-cache)
  --no-run-cache         never restore outputs from the run-cache
  -o, --outs PATH        quick stage: an output, stored (repeatable)
  -O, --outs-no-cache P  quick stage: an output, hashed but not stored
  -d, --deps PATH        quick stage: a dependency (repeatable)
  -M, --metrics PATH     quick stage: a metrics file (JSON/YAML/TOML)
  --wait SECONDS         wait this long for another run in this workspace (default 0)
  -q, --quiet            do not echo stage output or progress
  --json                 machine-readable result on stdout
  --queue                queue the run (every point of a -S sweep) instead of running it;
                         the workspace is snapshotted now, so later edits do not leak in
  --dry-run              with --queue: list what would be queued, queue nothing
                         (for a plan of the stages, see --dry)
  --run-all              run the queue in the foreground until it is empty
  -j, --jobs N           with --run-all: runs at a time (default 1)
  --resume NAME          continue experiment NAME from its last checkpoint

Exit 8 when a stage fails (the experiment is still recorded), 7 when another run
holds the workspace, 3 for an unknown stage or a missing dependency (also with --dry),
2 for bad usage (-s with --downstream; --dry, -s, --downstream or -k with --queue,
--run-all, --dry-run or --resume), 130 on Ctrl-C (recorded as interrupted).
"""


def main(args: list[str]) -> None:
    """`tally run ARGS` (see RUN_HELP); `--` separates a quick stage's command."""
    # The imports below create ~15k objects that live until exit. With the cyclic
    # collector on, they are walked by every collection the imports trigger (~5 ms
    # here); frozen afterwards, no later collection walks them again.
    gc.disable()
    from cas.experiments import runs as experiments
    from cas.workspace.project import open_project
    gc.freeze()
    gc.enable()

    a = _parse_run(list(args))
    if a.dry or a.single_item or a.downstream or a.keep_going:
        _check_selection_flags(a)
    if a.queue or a.run_all or a.resume or a.dry_run:
        from . import queue_run  # --queue, --run-all -j N, --resume NAME, --dry-run
        exp = queue_run.run_options(a)
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


def _check_selection_flags(a: SimpleNamespace) -> None:
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


# (short, long, kind): kind is "flag", "one" (the last one given wins), "many" (each
# one appended), or the type of a single value. The dest is the long name, snake_cased.
_OPTIONS = (
    ("-S", "--set-param", "many"), ("-n", "--name", "one"), ("-m", "--message", "one"),
    ("-f", "--force", "flag"), (None, "--no-run-cache", "flag"), ("-o", "--outs", "many"),
    ("-O", "--outs-no-cache", "many"), ("-d", "--deps", "many"), ("-M", "--metrics", "many"),
    (None, "--wait", float), ("-q", "--quiet", "flag"), (None, "--json", "flag"),
    (None, "--queue", "flag"), (None, "--run-all", "flag"), ("-j", "--jobs", int),
    (None, "--resume", "one"), (None, "--dry-run", "flag"), ("-s", "--single-item", "flag"),
    (None, "--downstream", "flag"), ("-k", "--keep-going", "flag"), (None, "--dry", "flag"),
)
_DEFAULTS = {"message": "", "wait": 0.0, "jobs": 1}


def _parse_run(args: list[str]) -> SimpleNamespace:
    """Parse `tally run` arguments the way argparse would (intermixed options and
    stages; `--opt=V`, `-oV`, `-fq`; a value may not look like an option unless it
    is attached or a negative number), into the namespace `main` reads.

    Hand-written because argparse costs ~3 ms of import and set-up on every run.
    Raises UsageError (exit 2) naming the bad argument.
    """
    from cas.core.errors import UsageError

    def fail(message: str) -> UsageError:
        return UsageError(f"tally run: {message}", hint="see `tally run --help`")

    by_name = {name: opt for opt in _OPTIONS for name in opt[:2] if name}

    def is_option(tok: str) -> bool:  # argparse's _parse_optional, in short
        if not tok.startswith("-") or tok == "-":
            return False
        if tok.partition("=")[0] in by_name or (tok[1] != "-" and tok[:2] in by_name):
            return True
        return not _is_negative_number(tok) and " " not in tok

    cmd = None
    if "--" in args:
        i = args.index("--")
        args, cmd = args[:i], args[i + 1:]
    ns = {long[2:].replace("-", "_"): [] if kind == "many" else False if kind == "flag" else None
          for _, long, kind in _OPTIONS}
    ns.update(_DEFAULTS)
    targets: list[str] = []
    i = 0
    while i < len(args):
        tok = args[i]
        i += 1
        if not is_option(tok):
            targets.append(tok)
            continue
        name, eq, attached = tok.partition("=")
        if tok.startswith("--") or (eq and name in by_name):  # --name[=V], -n=V
            pending = [(by_name.get(name), attached if eq else None)]
        else:  # a cluster of short options: -fq, -nNAME, -qnNAME
            pending, j = [], 1
            while j < len(tok):
                opt = by_name.get("-" + tok[j])
                rest = tok[j + 1:]
                if opt is not None and opt[2] == "flag":
                    pending.append((opt, None))
                    j += 1
                    continue
                pending.append((opt, rest or None))
                break
        for opt, value in pending:
            if opt is None:
                raise fail(f"unrecognized arguments: {tok}")
            short, long, kind = opt
            label = f"{short}/{long}" if short else long
            dest = long[2:].replace("-", "_")
            if kind == "flag":
                if value is not None:
                    raise fail(f"argument {label}: ignored explicit argument {value!r}")
                ns[dest] = True
                continue
            if value is None:
                if i >= len(args) or is_option(args[i]):
                    raise fail(f"argument {label}: expected one argument")
                value = args[i]
                i += 1
            if kind == "many":
                ns[dest].append(value)
            elif kind == "one":
                ns[dest] = value
            else:
                try:
                    ns[dest] = kind(value)
                except ValueError:
                    raise fail(f"argument {label}: invalid {kind.__name__} value: {value!r}") from None
    return SimpleNamespace(targets=targets, cmd=cmd, **ns)


def _is_negative_number(tok: str) -> bool:
    """argparse's `^-\\d+$|^-\\d*\\.\\d+$`: `-1`, `-.5`, `-2.5` are values, not options."""
    whole, dot, frac = tok[1:].partition(".")
    digits = whole + frac
    return bool(frac if dot else whole) and digits.isdigit() and digits.isascii()
