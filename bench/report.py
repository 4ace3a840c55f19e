"""The Markdown report: context header, one table per section, limits, notes.

Only measured numbers are ever printed. A cell that was not measured shows why
("not built yet", "pending", "failed (exit 2)", "skipped in --quick"); its ratio and
goal verdict show "—".
"""

from __future__ import annotations

from dataclasses import dataclass

from bench.limits import Limit
from bench.measure import Outcome, Results
from bench.rows import Row

SECTIONS = (("data", "Data path"), ("experiments", "Experiments"),
            ("gc", "Garbage collection (each tool's default link mode)"),
            ("scale", "Scale (X, each tool's default link mode)"))


@dataclass(frozen=True)
class Context:
    """Everything the header states about the run.

    Attributes:
        date: ISO date and time (UTC).
        command: the exact command line.
        machine: cores, CPU, memory, kernel.
        workdir: work directory and its filesystem type, reflink yes/no.
        tools: tool versions, one "name version" string each.
        cache: "warm" or "cold" with the explanation.
        reps: repetitions per cell.
        workloads: one line per data set / pipeline.
        full_size: False for --quick (absolute goals then read "n/a (quick)").
        elapsed: wall seconds of the whole run.
    """

    date: str
    command: str
    machine: str
    workdir: str
    tools: list[str]
    cache: str
    reps: int
    workloads: list[str]
    full_size: bool
    elapsed: float


def seconds(x: float) -> str:
    """Seconds with ~3 significant digits."""
    if x >= 100:
        return f"{x:.0f}"
    if x >= 10:
        return f"{x:.1f}"
    if x >= 0.1:
        return f"{x:.2f}"
    return f"{x:.3f}"


def _mib(kib: int | None) -> str:
    return "—" if kib is None else f"{kib / 1024:,.0f} MiB"


def _cell(out: Outcome, reps: int) -> str:
    if out.measured:
        text = seconds(out.median)
        return text if len(out.samples) >= reps else f"{text} (n={len(out.samples)})"
    return out.status or "not run"


def _ratio(tally: Outcome, dvc: Outcome) -> str:
    if tally.measured and dvc.measured and tally.median > 0:
        return f"{dvc.median / tally.median:.1f}x"
    return "—"


def _mode(mode: str) -> str:
    return "default (reflink,copy)" if mode == "default" else mode


def section_table(rows: list[Row], results: Results, ctx: Context) -> list[str]:
    """One Markdown table for ``rows`` (all of the same section)."""
    out = ["| operation | mode | tally s | DVC s | DVC/tally | tally peak RSS "
           "| DVC peak RSS | goal (DESIGN.md) | goal |",
           "|---|---|---:|---:|---:|---:|---:|---|---|"]
    for row in rows:
        for mode in row.modes:
            t = results.cell(row.id, mode, "tally")
            d = results.cell(row.id, mode, "dvc")
            goal = row.goals.get(mode)
            verdict = goal.judge(t, d, full_size=ctx.full_size) if goal else "—"
            out.append(f"| {row.label} | {_mode(mode)} | {_cell(t, ctx.reps)} "
                       f"| {_cell(d, ctx.reps)} | {_ratio(t, d)} | {_mib(t.peak_kib)} "
                       f"| {_mib(d.peak_kib)} | {goal.text if goal else '—'} | {verdict} |")
    return out


def limits_table(limits: dict[str, Limit]) -> list[str]:
    out = ["| limit | how | time s | rate |", "|---|---|---:|---|"]
    for lim in limits.values():
        out.append(f"| {lim.key} | {lim.what} | {seconds(lim.seconds)} "
                   f"| {lim.rate() or '—'} |")
    return out


def floors_table(rows: list[Row], results: Results, limits: dict[str, Limit]) -> list[str]:
    """Each figure against its floor: floor/figure is the share of the machine used."""
    out = ["| operation | mode | floor = sum of | floor s | tally s | tally at % of "
           "floor speed | DVC s | DVC at % of floor speed |",
           "|---|---|---|---:|---:|---:|---:|---:|"]
    for row in rows:
        for mode in row.modes:
            keys = row.floors.get(mode)
            if not keys or not all(k in limits for k in keys):
                continue
            floor = sum(limits[k].seconds for k in keys)
            cells = []
            for tool in ("tally", "dvc"):
                o = results.cell(row.id, mode, tool)
                if o.measured and o.median > 0:
                    cells += [seconds(o.median), f"{100 * floor / o.median:.0f}%"]
                else:
                    cells += [o.status or "—", "—"]
            out.append(f"| {row.label} | {_mode(mode)} | {' + '.join(keys)} "
                       f"| {seconds(floor)} | {' | '.join(cells)} |")
    return out if len(out) > 2 else []


def notes(rows: list[Row], results: Results) -> list[str]:
    """Failure details, one bullet per failed or explained cell."""
    out = []
    for row in rows:
        for mode in row.modes:
            for tool in ("tally", "dvc"):
                o = results.cell(row.id, mode, tool)
                if o.note and o.status != "skipped":
                    text = " ".join(o.note.split())
                    out.append(f"- {row.id} / {mode} / {tool}: {o.status}: {text[:700]}")
    return out


def as_section(text: str, title: str) -> str:
    """A rendered report demoted one heading level under ``## title``.

    For appending a run to a results file that keeps the earlier runs (``--append``):
    the report's own "# tally benchmarks" heading becomes the section heading.
    """
    out = []
    for line in text.splitlines():
        if line.startswith("# "):
            out.append(f"## {title}")
        elif line.startswith("#"):
            out.append("#" + line)
        else:
            out.append(line)
    return "\n".join(out) + "\n"


def render(*, ctx: Context, rows: list[Row], results: Results,
           limits: dict[str, Limit], extra_notes: list[str]) -> str:
    """The whole report as Markdown."""
    lines = [
        "# tally benchmarks",
        "",
        "Produced by `bench/` (see `bench/__init__.py`). Only measured figures; "
        "nothing here is edited by hand.",
        "",
        f"- Date: {ctx.date}",
        f"- Command: `{ctx.command}` (took {seconds(ctx.elapsed)} s)",
        f"- Machine: {ctx.machine}",
        f"- Work dir: {ctx.workdir}",
        f"- Tools: {'; '.join(ctx.tools)}",
        f"- Page cache: {ctx.cache}",
        f"- Each cell: median wall seconds of {ctx.reps} repetition"
        f"{'s' if ctx.reps > 1 else ''} (tools alternating, fresh project each); "
        "peak RSS = max over repetitions of the tool's ru_maxrss (GNU time %M: "
        "the tool or any descendant it waited for); `(n=k)`: only k samples (a "
        "sample over 120 s is not repeated). DVC/tally > 1 means tally is faster.",
        "- Workloads: " + "; ".join(ctx.workloads),
    ]
    if not ctx.full_size:
        lines.append("- `--quick`: reduced sizes, so DESIGN.md's absolute goals "
                     "(stated for full sizes) read \"n/a (quick)\"; ratio goals apply.")
    for section, title in SECTIONS:
        part = [r for r in rows if r.section == section]
        if part:
            lines += ["", f"## {title}", ""] + section_table(part, results, ctx)
    if limits:
        lines += ["", "## Machine limits (best of the repetitions before and after the "
                  "tool runs, warm cache)", ""]
        lines += limits_table(limits)
        floors = floors_table(rows, results, limits)
        if floors:
            lines += ["", "### Figures against the machine's floor", "",
                      "Floor = the sum of the limits an operation cannot avoid; "
                      "\"% of floor speed\" = floor / figure (100% = as fast as the "
                      "machine allows). Over 100%: the tool ran at a moment when the "
                      "filesystem was faster than at any of the limit measurements "
                      "(its metadata speed swings with other load on this machine), "
                      "or it does less work than the floor assumes (e.g. fewer files).",
                      ""] + floors
    all_notes = extra_notes + notes(rows, results)
    if all_notes:
        lines += ["", "## Notes", ""] + all_notes
    return "\n".join(lines) + "\n"
