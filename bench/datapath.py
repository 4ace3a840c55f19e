"""The data-path rows: add, no-op re-add, no-op status, checkout after delete.

Each data set is benchmarked as one *chain* of steps in a fresh project, so one
project serves several rows without any step being measured on a state another tool
left behind:

- L chain: ``add large/part-*`` (4 files), delete those 4 files, ``checkout``.
- S chain: ``add small``, ``add small`` again (no-op), ``status``, delete ``small/``,
  ``checkout``.
- X chain (``--scale``): as S, without the re-add.

The repetitions alternate the tools (tally first, then DVC first, and so on, the
turn carrying over from one mode to the next), so slow drift of the machine (page cache, thermal
state, background write-back) does not favour either. Copying the pristine data
into the project, deleting, and sanity checks are never timed. After each checkout the
restored file count is checked: a fast checkout that restores nothing is a failure,
not a win.
"""

from __future__ import annotations

import os
import subprocess
from dataclasses import dataclass
from pathlib import Path

from bench import profile
from bench.measure import CommandFailed, Results, run_timed
from bench.tools import Templates, Tool, remove_tree
from bench.workload import FileSet, copy_into, tree_size


@dataclass(frozen=True)
class Chain:
    """The steps benchmarked on one data set.

    Attributes:
        fileset: the data set.
        source: its generated (pristine) directory.
        rows: row id of each timed step, in order: "add-X", then any of
            "noop-add-X", "status-X", and last "checkout-X".
    """

    fileset: FileSet
    source: Path
    rows: tuple[str, ...]


def chains(sets: dict[str, tuple[FileSet, Path]]) -> list[Chain]:
    """The chains for the generated sets (L, S, and X when present)."""
    steps = {"L": ("add", "checkout"), "S": ("add", "noop-add", "status", "checkout"),
             "X": ("add", "status", "checkout")}
    return [Chain(fs, src, tuple(f"{s}-{name}" for s in steps[name]))
            for name, (fs, src) in sets.items()]


def _add_targets(chain: Chain) -> list[str]:
    """What ``add`` is given: L's four files one by one, S and X as one directory."""
    if chain.fileset.folders:
        return [chain.fileset.dirname]
    return [f"{chain.fileset.dirname}/{rel}" for rel in chain.fileset.relpaths()]


def _delete_data(chain: Chain, project: Path) -> None:
    """Remove the workspace data, keeping pointer files and .gitignore entries."""
    if chain.fileset.folders:
        remove_tree(project / chain.fileset.dirname)
    else:
        for rel in chain.fileset.relpaths():
            (project / chain.fileset.dirname / rel).unlink()


def _check_restored(chain: Chain, project: Path) -> None:
    """Raise CommandFailed unless every file of the set is back with its size."""
    root = project / chain.fileset.dirname
    want_count = chain.fileset.files
    count, _ = tree_size(root) if root.exists() else (0, 0)
    if chain.fileset.folders == 0:  # L: pointer files live next to the data
        count = sum(1 for rel in chain.fileset.relpaths() if (root / rel).exists())
    if count != want_count:
        raise CommandFailed(["checkout"], -1,
                            f"checkout restored {count} of {want_count} files")


def _run_chain(chain: Chain, tool: Tool, mode: str, project: Path, results: Results,
               *, timeout: float, cold: bool, profile_dir: Path | None = None) -> None:
    """One repetition of ``chain`` with ``tool`` in ``project``; record every step.

    With ``profile_dir``, nothing is recorded: each step runs under cProfile instead
    (``bench.profile``), writing ``<profile_dir>/<row>-<mode>.prof``. The project
    already holds a fresh copy of the data set.
    """
    for row in chain.rows:
        step = row.rsplit("-", 1)[0]
        if step in ("add", "noop-add"):
            argv = tool.add(_add_targets(chain))
        elif step == "status":
            argv = tool.status()
        else:
            _delete_data(chain, project)
            argv = tool.checkout()
        if profile_dir is not None:
            argv = profile.wrap(tool, argv, profile_dir / f"{row}-{mode}.prof")
        try:
            sample = run_timed(argv, cwd=project, env=tool.env, timeout=timeout,
                               cold=cold)
            if step == "checkout":
                _check_restored(chain, project)
        except CommandFailed as exc:
            if profile_dir is not None:
                return  # a profiling pass only adds information; the timed one judged
            results.fail(row, mode, tool.name, exc)
            for later in chain.rows[chain.rows.index(row) + 1:]:
                results.mark(later, mode, tool.name, "skipped",
                             f"skipped: an earlier step ({row}) failed")
            return
        if profile_dir is None:
            results.record(row, mode, tool.name, sample)


def run(*, chains_: list[Chain], modes_for: dict[str, tuple[str, ...]],
        tools: list[Tool], templates: Templates, projects: Path, results: Results,
        reps: int, timeout: float, cold: bool, log,
        profile_dir: Path | None = None) -> None:
    """Benchmark every chain in every mode with every available tool.

    Args:
        chains_: from ``chains``.
        modes_for: link modes per chain's first row id ("add-L" -> ("copy", ...)).
        tools: tally and DVC (a missing tool gets its reason in every cell).
        templates: project templates.
        projects: directory for the per-repetition projects (emptied as we go).
        results: where samples and failures go.
        reps: repetitions per cell.
        timeout: seconds before one command is killed (cell marked "timed out").
        cold: drop the page cache before every timed command.
        log: progress callable.
        profile_dir: if set, one extra untimed tally pass per (chain, mode) under
            cProfile, profiles written there.
    """
    turn = 0  # flips which tool goes first, across reps *and* modes (even with 1 rep)
    for chain in chains_:
        for mode in modes_for[chain.rows[0]]:
            for tool in tools:
                if tool.missing:
                    for row in chain.rows:
                        results.mark(row, mode, tool.name, tool.missing)
            for rep in range(reps):
                order = tools if turn % 2 == 0 else tools[::-1]
                turn += 1
                for tool in order:
                    if tool.missing or all(results.done(r, mode, tool.name, reps)
                                            for r in chain.rows):
                        continue
                    log(f"bench: {chain.fileset.name} chain, {mode}, {tool.name}, "
                        f"rep {rep + 1}/{reps}")
                    _fresh_chain(chain, tool, mode, projects, templates, results,
                                 timeout=timeout, cold=cold)
            tally = next((t for t in tools if t.name == "tally" and not t.missing), None)
            if profile_dir is not None and tally is not None:
                log(f"bench: {chain.fileset.name} chain, {mode}, tally, cProfile pass")
                profile_dir.mkdir(parents=True, exist_ok=True)
                _fresh_chain(chain, tally, mode, projects, templates, results,
                             timeout=timeout, cold=cold, profile_dir=profile_dir)


def _fresh_chain(chain: Chain, tool: Tool, mode: str, projects: Path,
                 templates: Templates, results: Results, **kw) -> None:
    """``_run_chain`` in a fresh project from the template, removed afterwards."""
    project = projects / f"{tool.name}-{mode}-{chain.fileset.name}"
    try:
        templates.project(tool, mode, project)
        copy_into(chain.source, project)
    except (CommandFailed, subprocess.CalledProcessError) as exc:
        if not isinstance(exc, CommandFailed):
            exc = CommandFailed(list(map(str, exc.cmd)), exc.returncode, "setup failed")
        if kw.get("profile_dir") is None:
            for row in chain.rows:
                results.fail(row, mode, tool.name, exc)
        return
    _run_chain(chain, tool, mode, project, results, **kw)
    remove_tree(project)
    os.sync()
