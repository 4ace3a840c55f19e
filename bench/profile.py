"""``--profile``: where tally's time goes, for the rows that miss their goal.

With ``--profile``, every tally data-path step runs once more after its timed
repetitions, untimed, under cProfile (``python -m cProfile -o FILE -m cli ARGS``:
the same entry point as the ``tally`` script). The report then lists, per step, the
functions with the largest cumulative time. Work done in worker processes that tally
forks is not in the parent's profile; the report says so.
"""

from __future__ import annotations

import pstats
import sys
from pathlib import Path

from bench.tools import Tool

TOP = 12  # functions listed per profile


def wrap(tool: Tool, argv: list[str], out: Path) -> list[str]:
    """``argv`` of a tally command rewritten to run under cProfile, writing ``out``."""
    assert tool.name == "tally" and argv[0] == str(tool.exe)
    python = Path(tool.exe).parent / "python"
    return [str(python if python.exists() else sys.executable), "-m", "cProfile",
            "-o", str(out), "-m", "cli", *argv[1:]]


def summary(path: Path, top: int = TOP) -> list[str]:
    """Two preformatted top-``top`` lists of one profile: self time, then cumulative.

    The cumulative list leaves out the interpreter's plumbing (runpy, importlib,
    ``<string>``, ``exec``), which would otherwise fill it with one-line wrappers.
    """
    stats = pstats.Stats(str(path)).stats  # (file, line, func) -> (cc, nc, tt, ct, _)
    total = max((ct for (_, _, _, ct, _) in stats.values()), default=0.0)

    def name(key) -> str:
        file, line, func = key
        return f"{Path(file).name}:{line}({func})" if line else func

    def plumbing(key) -> bool:
        file, _, func = key
        return (file.startswith("<") or "runpy" in file or "importlib" in file
                or func in ("<built-in method builtins.exec>", "<module>"))

    head = f"{'self s':>8} {'cum s':>8} {'calls':>9}  function"
    rows = lambda keys: [f"{stats[k][2]:8.3f} {stats[k][3]:8.3f} {stats[k][1]:9d}  "  # noqa: E731
                         f"{name(k)}" for k in keys]
    by_self = sorted(stats, key=lambda k: stats[k][2], reverse=True)[:top]
    by_cum = [k for k in sorted(stats, key=lambda k: stats[k][3], reverse=True)
              if not plumbing(k)][:top]
    return ([f"total {total:.3f} s; by self time:", head] + rows(by_self)
            + ["", "by cumulative time:", head] + rows(by_cum))


def section(profile_dir: Path) -> list[str]:
    """Markdown lines: one code block per profile found in ``profile_dir``."""
    files = sorted(profile_dir.glob("*.prof")) if profile_dir.exists() else []
    if not files:
        return []
    out = ["", "## tally profiles (`--profile`: cProfile, one untimed extra run, "
           f"top {TOP} by self and by cumulative time; forked workers not included)",
           ""]
    for f in files:
        out += [f"### {f.stem}", "", "```"] + summary(f) + ["```", ""]
    return out
