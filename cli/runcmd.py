"""`tally run`, Typer-free: its start-up is part of every experiment's overhead.

cli/entry.py dispatches here without importing Typer (the goal is at most 0.1 s over
the bare command); cli/experiments.py registers the same function for
`tally run --help` and for in-process callers.
"""

from __future__ import annotations

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
        from cas.errors import RunFailed
        raise RunFailed(f"experiment {exp.name} failed; its record, logs and partial outputs are kept",
                        hint=f"see the log: `tally logs {exp.name}`")
    if rec.status == "interrupted":
        from cas.errors import Interrupted
        raise Interrupted(f"experiment {exp.name} was interrupted; its record is kept")


RUN_HELP = """Run the pipeline in the workspace as a new experiment, and record it.

\b
tally run [STAGE...] [-S [FILE:]KEY=VALUE]... [-n NAME] [-m MSG] [-f] [--no-run-cache]
tally run [-o OUT]... [-O OUT]... [-d DEP]... [-M METRICS]... -- CMD [ARG...]

Stages whose cmd, deps, params and outputs match tally.lock are skipped; others are
restored from the run-cache when the same inputs ran before, else run. Afterwards
the workspace holds the results, and the experiment is recorded (name printed).

\b
  STAGE                  stage or foreach/matrix group to run, with what it depends on
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
  --run-all              run the queue in the foreground until it is empty
  -j, --jobs N           with --run-all: runs at a time (default 1)
  --resume NAME          continue experiment NAME from its last checkpoint

Exit 8 when a stage fails (the experiment is still recorded), 7 when another run
holds the workspace, 130 on Ctrl-C (recorded as interrupted).
"""


def main(args: list[str]) -> None:
    """`tally run ARGS` (see RUN_HELP); `--` separates a quick stage's command."""
    from cas import experiments
    from cas.project import open_project

    a = _parse_run(list(args))
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
            from cas.errors import UsageError
            raise UsageError("-o/-d/-M need a command after --", hint="tally run -o out.txt -- ./make.sh")
        quick = experiments.QuickStage(cmd=tuple(cmd), deps=tuple(a.deps), outs=tuple(a.outs),
                                       metrics=tuple(a.metrics), outs_no_cache=tuple(a.outs_no_cache))
        targets = []
    project = open_project()
    exp = experiments.run(project, stages=targets, set_params=a.set_param, name=a.name,
                          message=a.message, force=a.force, no_run_cache=a.no_run_cache,
                          quick_stage=quick, echo=not a.quiet and not a.json,
                          wait=a.wait, notify=None if a.json or a.quiet else err)
    render(exp, a.json, "Ran")


def _parse_run(args: list[str]):
    import argparse

    from cas.errors import UsageError

    cmd = None
    if "--" in args:
        i = args.index("--")
        args, cmd = args[:i], args[i + 1:]

    class Parser(argparse.ArgumentParser):
        def error(self, message: str):  # one error funnel: exit 2 via UsageError
            raise UsageError(f"tally run: {message}", hint="see `tally run --help`")

    class Formatter(argparse.HelpFormatter):
        # A fixed width: argparse builds a formatter per add_argument, and without a
        # width each one imports shutil (~4 ms with zlib, bz2, lzma) for the terminal
        # size. Help is Typer's (`tally run --help`); this one never prints.
        def __init__(self, prog: str) -> None:
            super().__init__(prog, width=80)

    # A fixed usage too: parse_intermixed_args formats it up front, and generating it
    # compiles a dozen regular expressions (~3 ms).
    p = Parser(prog="tally run", usage="tally run [OPTIONS] [STAGE...] [-- CMD...]",
               add_help=False, allow_abbrev=False, formatter_class=Formatter)
    p.add_argument("targets", nargs="*")
    p.add_argument("-S", "--set-param", action="append", default=[])
    p.add_argument("-n", "--name")
    p.add_argument("-m", "--message", default="")
    p.add_argument("-f", "--force", action="store_true")
    p.add_argument("--no-run-cache", action="store_true")
    p.add_argument("-o", "--outs", action="append", default=[])
    p.add_argument("-O", "--outs-no-cache", action="append", default=[])
    p.add_argument("-d", "--deps", action="append", default=[])
    p.add_argument("-M", "--metrics", action="append", default=[])
    p.add_argument("--wait", type=float, default=0.0)
    p.add_argument("-q", "--quiet", action="store_true")
    p.add_argument("--json", action="store_true")
    p.add_argument("--queue", action="store_true")
    p.add_argument("--run-all", action="store_true")
    p.add_argument("-j", "--jobs", type=int, default=1)
    p.add_argument("--resume")
    p.add_argument("--dry-run", action="store_true")
    ns = p.parse_intermixed_args(args)
    ns.cmd = cmd
    return ns
