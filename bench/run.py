"""Entry point: ``python -m bench.run [--quick] [--scale] [--reps N] [--only ROW]``.

Generates (or reuses) the workloads, installs (or reuses) DVC, measures the machine's
limits, runs every selected row with tally and DVC side by side, and prints the
Markdown report to stdout and to ``--out`` (default ``bench/RESULTS.md``; ``-`` for
stdout only). Progress goes to stderr, each line stamped with the seconds elapsed.

Work directory: ``$TALLY_BENCH_DIR/tally-bench`` when that variable is set (point it
at an XFS reflink mount to get the reflink rows), else ``bench/.work``. Generated
data is kept there between runs; projects, templates and DVC's site cache are
removed at the end. Runs sharing a work directory queue on ``<work>/.lock``.

Duration here (2 cores, ext4): ``--quick`` about 2 minutes; a full run about 45
minutes, of which the rows added for issues 4-6 take about 17: exp-queue-100 about
7 (DVC alone about 5: 100 ``dvc exp run --queue`` of ~1 s each, then 2.5-3.5 min of
``--run-all``, one sample), gc about 8 (mostly DVC's 25-40 s gcs and the ``cp -a`` of
each 50,000-file store per repetition), exp-restore-hardlink/-reflink about 1 each.
Use ``--only`` to run fewer rows.

``exp-restore-reflink`` runs its projects under ``$TALLY_BENCH_REFLINK_DIR/
tally-bench-reflink`` (an XFS ``reflink=1`` or Btrfs mount), or in the work dir when
that one can reflink; otherwise its cells read "skipped (no reflink fs)" and the
notes say why.
"""

from __future__ import annotations

import argparse
import datetime
import fcntl
import os
import platform
import shlex
import sys
import time
import traceback
from pathlib import Path

from bench import datapath, experiments, gcbench, limits, profile, report
from bench.dvc_env import DVC_VERSION, DvcUnavailable, ensure_dvc
from bench.measure import Results, can_drop_caches, rss_supported
from bench.gcworkload import GcSpec, gc_spec
from bench.rows import QUEUE_MANY, SHOW_COUNTS, Row, catalogue, selected
from bench.tools import (MODES, Templates, Tool, bench_env, dvc_tool, find_tally,
                         git_version, remove_tree)
from bench.workload import TRIVIAL_CMD, generate, sets, stage_python

HERE = Path(__file__).resolve().parent
QUICK_SKIPS = ("exp-queue", f"exp-queue-{QUEUE_MANY}",  # minutes each
               "exp-show-1000-first", "exp-show-1000",
               "exp-show-10000-first", "exp-show-10000")
SECTION_WORDS = ("data", "experiments", "gc", "scale", "limits")
REFLINK_ENV = "TALLY_BENCH_REFLINK_DIR"
SCRATCH = ("tmp", "projects", "templates", "dvc-site-cache")  # emptied per run
_T0 = time.perf_counter()


def _log(line: str) -> None:
    print(f"[{time.perf_counter() - _T0:6.1f}s] {line}", file=sys.stderr, flush=True)


def parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m bench.run",
        description="Benchmark tally against DVC 3.67.1 and the machine's limits on "
                    "the same generated data; print a Markdown report and write it "
                    "to --out.")
    p.add_argument("--quick", action="store_true",
                   help="reduced sizes (L 4x16 MiB, S 5,000 files), one repetition, "
                        "no queue or 1,000+ show rows: about two minutes")
    p.add_argument("--scale", action="store_true",
                   help="also the X rows (1,000,000 files)")
    p.add_argument("--reps", type=int, default=None,
                   help="repetitions per cell, median reported (default 3; 1 with --quick)")
    p.add_argument("--only", action="append", default=[], metavar="ROW",
                   help="row id or prefix (add-S, exp-show, ...) or a section "
                        f"({', '.join(SECTION_WORDS)}); repeat or comma-separate")
    p.add_argument("--modes", default=",".join(MODES),
                   help="link modes for the data rows (reflink only where supported)")
    p.add_argument("--no-dvc", action="store_true", help="benchmark tally alone")
    p.add_argument("--cold", action="store_true",
                   help="drop the page cache before every timed command (root only)")
    p.add_argument("--profile", action="store_true",
                   help="one extra, untimed pass of each tally data step under "
                        "cProfile; top functions go into the report")
    p.add_argument("--timeout", type=float, default=1800.0,
                   help="seconds before one command is killed (cell: timed out)")
    p.add_argument("--out", default=str(HERE / "RESULTS.md"),
                   help="report file ('-': stdout only)")
    p.add_argument("--append", metavar="TITLE", default=None,
                   help="append the report to --out as a section '## TITLE' (headings "
                        "demoted one level) instead of replacing the file")
    args = p.parse_args(argv)
    bad = set(args.modes.split(",")) - set(MODES)
    if bad:
        p.error(f"unknown mode(s) {', '.join(sorted(bad))}; choose among {MODES}")
    if args.reps is None:
        # --quick must finish in two minutes on 2 cores: one repetition per cell
        # (each DVC command costs 0.5-1 s of start-up alone); the alternation still
        # flips which tool goes first from one mode to the next
        args.reps = 1 if args.quick else 3
    return args


def _machine() -> str:
    cpu = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
        mem_kib = int(Path("/proc/meminfo").read_text().split()[1])
        mem = f"{mem_kib / (1 << 20):.1f} GiB RAM"
    except (OSError, ValueError, IndexError):
        mem = "unknown RAM"
    load = " / ".join(f"{x:.2f}" for x in os.getloadavg())
    return (f"{os.cpu_count()} cores ({cpu}), {mem}, Linux {platform.release()}, "
            f"load average at the end {load} (1/5/15 min; other work on the machine "
            "adds noise)")


def _work_dir() -> Path:
    base = os.environ.get("TALLY_BENCH_DIR")
    return Path(base) / "tally-bench" if base else HERE / ".work"


def _tools(env: dict[str, str], no_dvc: bool) -> list[Tool]:
    tally = find_tally(env)
    if tally.missing:
        _log(f"bench: tally: {tally.missing} (tally cells will say so)")
    if no_dvc:
        return [tally, dvc_tool(env, None, None, "not run (--no-dvc)")]
    try:
        d = ensure_dvc(log=_log)
        return [tally, dvc_tool(env, d.exe, d.version, None)]
    except DvcUnavailable as exc:
        _log(f"bench: DVC unavailable, continuing with tally only: {exc}")
        return [tally, dvc_tool(env, None, None, "DVC install failed")]


def _select(rows_all: list[Row], only: list[str]) -> list[Row]:
    """The rows ``--only`` names (sections, ids, prefixes); all rows by default."""
    if not only:
        return rows_all
    sections = [w for w in only if w in SECTION_WORDS]
    ids = [w for w in only if w not in SECTION_WORDS]
    picked = {r.id for r in selected(rows_all, ids)} if ids else set()
    for n in SHOW_COUNTS:  # a show row's first and next calls share one setup
        pair = {f"exp-show-{n}", f"exp-show-{n}-first"}
        if pair & picked:
            picked |= pair
    return [r for r in rows_all if r.section in sections or r.id in picked]


def _reflink_root(work: Path, work_can_reflink: bool) -> tuple[Path | None, str]:
    """Where the reflink restore row makes its projects, or (None, why not)."""
    base = os.environ.get(REFLINK_ENV)
    if base:
        root = Path(base) / "tally-bench-reflink"
        try:
            root.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            return None, f"{REFLINK_ENV}={base} is not usable ({exc})"
        if limits.reflink_supported(root):
            return root, ""
        return None, (f"{REFLINK_ENV}={base} is on {limits.filesystem_type(root)}, "
                      "where FICLONE fails")
    if work_can_reflink:
        return work, ""
    return None, (f"{REFLINK_ENV} is not set and the work dir cannot reflink; set it "
                  "to an XFS (reflink=1) or Btrfs mount")


def _restore_rows(row_ids: set[str], common: dict, *, work: Path, reflink: bool,
                  templates: Templates, restore_mib: int, results: Results,
                  tools: list[Tool], aborted: list[str]) -> list[str]:
    """The exp-restore rows: default, hardlink, reflink (where a filesystem can)."""
    notes = []
    for mode in ("default", "hardlink", "reflink"):
        row = "exp-restore" if mode == "default" else f"exp-restore-{mode}"
        if row not in row_ids:
            continue
        kw = dict(common)
        if mode == "reflink":
            root, why = _reflink_root(work, reflink)
            if root is None:
                for t in tools:
                    results.mark(row, mode, t.name, "skipped (no reflink fs)", why)
                continue
            if root != work:
                kw["templates"] = Templates(root / "templates")
                kw["projects"] = root / "projects"
            notes.append(f"- {row}: projects on `{root}` "
                         f"({limits.filesystem_type(root)}, reflink yes).")
        _guard(row, aborted, experiments.exp_restore, out_mib=restore_mib,
               mode=experiments.MODE if mode == "default" else mode, row=row, **kw)
        if mode == "reflink" and root != work:
            for sub in ("templates", "projects"):
                remove_tree(root / sub)
    return notes


def _notes(*, reflink: bool, fstype: str, row_ids: set[str], show: bool) -> list[str]:
    out = []
    if not reflink:
        out.append(f"- data-path reflink rows: not measured, the work dir's filesystem "
                   f"({fstype}) has no FICLONE; set TALLY_BENCH_DIR to an XFS "
                   "(reflink=1) or Btrfs mount to add them (exp-restore-reflink "
                   f"uses {REFLINK_ENV} instead).")
    if not rss_supported():
        out.append("- peak RSS: unknown, GNU time (/usr/bin/time) is not installed.")
    if row_ids & {"exp-run", "exp-run-trivial", "exp-queue", f"exp-queue-{QUEUE_MANY}", "exp-restore",
                  "exp-restore-hardlink", "exp-restore-reflink"} or show:
        out.append("- experiment commands: DVC `dvc exp run [--queue|--run-all -j 2]`, "
                   "`dvc exp show`, `dvc exp apply`; tally `tally run [--queue|"
                   "--run-all -j 2]`, `tally show`, `tally restore`.")
    if "exp-run-trivial" in row_ids:
        out.append("- exp-run-trivial: per repetition, `run -S lr=<new>` on the T "
                   f"pipeline minus the bare stage (`sh -c '{TRIVIAL_CMD}'`) run right "
                   "after it in the same project.")
    if "exp-run" in row_ids:
        out.append("- exp-run: per repetition, `run -S lr=<new>` minus the bare "
                   f"stage (`{Path(stage_python()).name} train.py`) run right after "
                   "it in the same project.")
    if row_ids & {"exp-queue", f"exp-queue-{QUEUE_MANY}"}:
        out.append("- exp-queue rows: a cell is timed only when `show --json` "
                   "(untimed, afterwards) counts every queued experiment a success; "
                   f"exp-queue-{QUEUE_MANY} gives each tool at most "
                   f"{experiments.QUEUE_LIMIT / 60:.0f} min (then: timed out).")
    if row_ids & {"exp-restore-hardlink", "exp-restore-reflink"}:
        out.append("- exp-restore-hardlink / -reflink: both tools configured with "
                   "`config cache.type hardlink` (`reflink`) in the project template; "
                   "hardlink cells fail unless the restored model.bin has a link "
                   "count >= 2.")
    if show:
        out.append("- exp-show: one real experiment plus clones of it (DVC: commits "
                   "of the same shape made with `git fast-import` under refs/exps/; "
                   "tally: records re-stored through cas.objects.record/cas.store.refs by "
                   "bench/tally_clone.py), other params, metrics and dates. \"first "
                   "call\" is one sample; DVC caches what it collected under .dvc/tmp "
                   "for the calls after it.")
    return out


def _lock(work: Path):
    """Hold ``work/.lock`` for the whole run; wait while another run holds it.

    Two runs in one work dir would delete each other's projects, and two runs on one
    machine would time each other's load: they queue instead.
    """
    work.mkdir(parents=True, exist_ok=True)
    f = open(work / ".lock", "a+")
    try:
        fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        f.seek(0)
        _log(f"bench: another run holds {work}/.lock ({f.read().strip()}); waiting")
        fcntl.flock(f, fcntl.LOCK_EX)
    f.seek(0)
    f.truncate()
    f.write(f"pid {os.getpid()}\n")
    f.flush()
    return f  # the lock lives as long as this file object


def _guard(phase: str, notes: list[str], fn, *args, **kw):
    """Run one phase; an unexpected error is logged and noted, the run goes on."""
    try:
        return fn(*args, **kw)
    except Exception as exc:  # noqa: BLE001 - a report with a hole beats no report
        _log(f"bench: {phase} aborted:\n{traceback.format_exc()}")
        notes.append(f"- {phase}: aborted by an unexpected error ({type(exc).__name__}: "
                     f"{exc}); its cells are incomplete.")
        return None


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    started = time.perf_counter()
    if args.cold and not can_drop_caches():
        _log("bench: --cold needs write access to /proc/sys/vm/drop_caches (root)")
        return 2
    only = [w for item in args.only for w in item.split(",") if w]
    work = _work_dir()
    lock = _lock(work)  # noqa: F841 - held until the process exits
    for sub in SCRATCH:
        remove_tree(work / sub)
    for sub in ("tmp", "projects", "templates"):
        (work / sub).mkdir(parents=True)

    tools = _tools(bench_env(work), args.no_dvc)
    tally, dvc = tools
    reflink = limits.reflink_supported(work)
    fstype = limits.filesystem_type(work)
    modes = tuple(m for m in args.modes.split(",") if m != "reflink" or reflink)
    data_sets = sets(quick=args.quick, scale=args.scale)
    restore_mib = 64 if args.quick else 1024
    gc = gc_spec(quick=args.quick)
    rows = _select([r for r in catalogue(modes=modes, restore_mib=restore_mib, gc=gc)
                    if r.section != "scale" or args.scale], only)
    row_ids = {r.id for r in rows}
    want_limits = not only or "limits" in only
    results = Results()
    if args.quick:
        for rid in QUICK_SKIPS:
            for t in tools:
                results.mark(rid, "default", t.name, "skipped in --quick")

    # workloads: only what the selected rows (or the limits) read
    generated = {}
    for name, fs in data_sets.items():
        if (want_limits and name in ("L", "S")) or any(r.endswith(f"-{name}")
                                                       for r in row_ids):
            _log(f"bench: generating {name} = {fs.describe()} (cached after the first run)")
            generated[name] = (fs, generate(fs, work))

    aborted: list[str] = []
    lims = {}
    if want_limits:
        lims = _guard("limits", aborted, limits.measure,
                      large=generated["L"][1] if "L" in generated else None,
                      small=generated["S"][1] if "S" in generated else None,
                      scratch=work / "tmp" / "limits", reps=args.reps,
                      reflink=reflink, log=_log) or {}

    templates = Templates(work / "templates")
    chains = [c for c in datapath.chains(generated) if any(r in row_ids for r in c.rows)]
    _guard("data path", aborted, datapath.run, chains_=chains,
           modes_for={"add-L": modes, "add-S": modes, "add-X": ("default",)},
           tools=tools, templates=templates, projects=work / "projects",
           results=results, reps=args.reps, timeout=args.timeout, cold=args.cold,
           log=_log, profile_dir=work / "tmp" / "profiles" if args.profile else None)

    if want_limits and lims:  # again after the data rows: keep the best of both
        lims = limits.best_of(lims, _guard(
            "limits (second pass)", aborted, limits.measure,
            large=generated["L"][1] if "L" in generated else None,
            small=generated["S"][1] if "S" in generated else None,
            scratch=work / "tmp" / "limits", reps=args.reps, reflink=reflink,
            log=_log) or {})

    common = dict(tools=tools, templates=templates, projects=work / "projects",
                  results=results, reps=args.reps, timeout=args.timeout, log=_log)
    _guard("cli start", aborted, experiments.cli_start, tools=tools,
           rows=sorted(row_ids), cwd=work / "tmp", results=results, reps=args.reps,
           log=_log, samples=5 if args.quick else experiments.CLI_REPS)
    if "exp-run-trivial" in row_ids:
        _guard("exp-run-trivial", aborted, experiments.exp_run, trivial=True, **common)
    if "exp-run" in row_ids:
        _guard("exp-run", aborted, experiments.exp_run, **common)
    if "exp-queue" in row_ids and not args.quick:
        _guard("exp-queue", aborted, experiments.exp_queue, **common)
    many = f"exp-queue-{QUEUE_MANY}"
    if many in row_ids and not args.quick:
        _guard(many, aborted, experiments.exp_queue, count=QUEUE_MANY, row=many,
               **{**common, "timeout": min(args.timeout, experiments.QUEUE_LIMIT)})
    counts = [n for n in SHOW_COUNTS if f"exp-show-{n}" in row_ids
              and not (args.quick and f"exp-show-{n}" in QUICK_SKIPS)]
    if counts:
        _guard("exp-show", aborted, experiments.exp_show, counts=counts, **common)
    run_notes = _restore_rows(row_ids, common, work=work, reflink=reflink,
                              templates=templates, restore_mib=restore_mib,
                              results=results, tools=tools, aborted=aborted)
    if row_ids & set(gcbench.ROWS):
        run_notes += _guard("gc", aborted, gcbench.run, spec=gc, rows=row_ids,
                            **common) or []

    ctx = report.Context(
        date=datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        command=" ".join(["python -m bench.run", *map(shlex.quote, sys.argv[1:])]),
        machine=_machine(),
        workdir=f"`{work}` on {fstype}, reflink {'yes' if reflink else 'no'}",
        tools=[tally.version or f"tally ({tally.missing})",
               f"DVC {dvc.version or '(' + str(dvc.missing) + ')'} (wanted {DVC_VERSION})",
               f"Python {platform.python_version()}", git_version()],
        cache=("cold: `sync; echo 3 > /proc/sys/vm/drop_caches` before every timed "
               "command" if args.cold else
               "warm for both tools (data just copied in; dirty pages synced before "
               "every timed command" + ("; `--cold` would drop caches" if
                                        can_drop_caches() else "") + ")"),
        reps=args.reps,
        workloads=_workloads(data_sets, restore_mib, gc),
        full_size=not args.quick,
        elapsed=time.perf_counter() - started)
    text = report.render(ctx=ctx, rows=rows, results=results, limits=lims,
                         extra_notes=aborted + _notes(reflink=reflink, fstype=fstype,
                                                     row_ids=row_ids, show=bool(counts))
                         + run_notes)
    text += "\n".join(profile.section(work / "tmp" / "profiles"))
    print(text)
    if args.out != "-" and args.append:
        with open(args.out, "a") as f:
            f.write("\n" + report.as_section(text, args.append))
        _log(f"bench: appended to {args.out}")
    elif args.out != "-":
        Path(args.out).write_text(text)
        _log(f"bench: wrote {args.out}")
    for sub in SCRATCH:
        remove_tree(work / sub)
    return 0


def _workloads(data_sets, restore_mib: int, gc: GcSpec) -> list[str]:
    desc = {name: fs.describe() for name, fs in data_sets.items()}
    return ([f"L = {desc['L']} (2 CSV-like text, 2 random; added as 4 paths)",
             f"S = {desc['S']} (half text, half random; added as one directory)"]
            + ([f"X = {desc['X']} (added as one directory)"] if "X" in desc else [])
            + [f"T = one trivial stage (`{TRIVIAL_CMD}`; a 1 KiB dep, a param, a cached "
               "output, a YAML metrics file)",
               f"E = one Python stage reading params.yaml, writing a 1 MiB model.bin "
               f"and metrics.json; restore uses a {restore_mib} MiB model.bin",
               f"gc = {gc.describe()}"])


if __name__ == "__main__":
    sys.exit(main())
