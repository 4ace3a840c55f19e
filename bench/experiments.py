"""The experiment rows: run overhead, queue, show, restore, and CLI start.

All of them use the E pipeline (``workload.write_pipeline``) in a project whose
baseline commit already holds the pipeline's lock file (``dvc repro`` /
``tally run``, then ``git commit``), as a user's would. Commands per tool are in
ARGV (DVC: ``dvc exp run/show/apply``; tally: ``tally run/show/restore``).

- ``exp-run-trivial``: DESIGN.md's "fixed overhead (trivial stage)": the T pipeline
  (``workload.write_trivial_pipeline``: a dep, a param, a cached output and a YAML
  metrics file; the command copies two small files), per repetition ``run -S lr=<new>``
  and right after it the bare command (``sh -c CMD``) in the same project; the sample
  is the difference (paired, so machine drift cancels).
- ``exp-run``: the same on the E pipeline, whose stage is a Python script writing a
  1 MiB model: the overhead then includes hashing and durably storing that output.
- ``exp-queue`` / ``exp-queue-100``: 20 (100) x ``run --queue`` (untimed), then
  ``run --run-all -j 2`` timed until every experiment has finished. Afterwards,
  untimed, ``show --json`` must count every one a success (DVC: ``dvc exp show
  --json`` and the refs under refs/exps/ must agree), else the cell reads failed
  with the counts by state, never a time. exp-queue-100 gives each tool at most
  QUEUE_LIMIT seconds (then "timed out").
- ``exp-show-N-first`` / ``exp-show-N``: N experiments on one baseline, ``show``
  timed on its first call (one sample), then on the calls after it. One experiment is run for real and N-1 are cloned from it (DVC:
  ``git fast-import`` of commits of the same shape under ``refs/exps/``; tally:
  ``bench.tally_clone`` through cas.objects.record/cas.store.refs), with other params, metrics
  and dates: creating 10,000 by running them would take hours here.
- ``exp-restore``: an experiment whose ``model.bin`` is 1 GiB (``--quick``: 64 MiB)
  is brought back onto the baseline workspace (``dvc exp apply`` / ``tally
  restore``); before each repetition, untimed, ``git reset --hard`` and
  ``dvc checkout --force`` / ``tally run`` (a run-cache hit) put the baseline's
  1 MiB ``model.bin`` back (checked). ``exp-restore-hardlink`` / ``-reflink``: the
  same with both tools set to ``cache.type hardlink`` (``reflink``, on a filesystem
  that can clone); in hardlink mode the restored file must be a hardlink.
- ``cli-help`` / ``cli-version``: ``--help`` and ``--version`` start-up.

A tally cell reads "pending" until ``tally <words> --help`` exits 0 for the words in
NEEDS.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

from bench.measure import CommandFailed, Results, Sample, run_quiet, run_timed
from bench.tools import DEFAULT_MODE, REPO, Templates, Tool, remove_tree
from bench.workload import TRIVIAL_CMD, stage_python, write_pipeline, write_trivial_pipeline

MODE = DEFAULT_MODE
CLI_REPS = 10  # start-up is ~0.1-0.5 s: more samples for a stable median, same cost
QUEUED = 20  # DESIGN.md: 20 queued trivial experiments
WORKERS = 2

# Command words per tool. tally's follow its CLI as built (`tally run --help`): the
# experiment commands sit at the top level, and a baseline is made by a plain run.
ARGV = {
    "dvc": {"baseline": ("repro", "-q"), "run": ("exp", "run", "-q"),
            "queue": ("exp", "run", "--queue", "-q"),
            "run_all": ("exp", "run", "--run-all", "-j", str(WORKERS), "-q"),
            "show": ("exp", "show", "--no-pager"), "apply": ("exp", "apply", "-q"),
            "reset_outputs": ("checkout", "--force", "-q")},
    "tally": {"baseline": ("run", "-q"), "run": ("run", "-q"),
              "queue": ("run", "--queue", "-q"),
              "run_all": ("run", "--run-all", "-j", str(WORKERS), "-q"),
              "show": ("show",), "apply": ("restore",),
              # `tally checkout` covers .tally pointers only, not tally.lock outputs;
              # a run whose inputs match the baseline restores them from the
              # run-cache
              "reset_outputs": ("run", "-q")},
}
# The tally subcommands each row needs before it stops being "pending".
NEEDS = {"exp-run": [("run",)],
         "exp-queue": [("run",), ("show",)],
         "exp-show": [("run",), ("show",)],
         "exp-restore": [("run",), ("restore",)]}
QUEUE_LIMIT = 1200.0  # seconds per tool for the 100-experiment queue (issue 6)


def _cmd(tool: Tool, what: str, *extra: str) -> list[str]:
    return tool.argv(*ARGV[tool.name][what], *extra)


def _git(project: Path, tool: Tool, *args: str) -> str:
    return run_quiet(["git", *args], cwd=project, env=tool.env)


def _pipeline_project(tool: Tool, templates: Templates, dest: Path, *,
                      out_mib: int = 1, mode: str = MODE, trivial: bool = False) -> Path:
    """A project with the E (or T) pipeline reproduced and committed as the baseline."""
    project = templates.project(tool, mode, dest)
    if trivial:
        write_trivial_pipeline(project)
    else:
        write_pipeline(project, out_mib=out_mib)
    _git(project, tool, "add", "-A")
    _git(project, tool, "commit", "-q", "-m", f"bench: pipeline {'T' if trivial else 'E'}")
    run_quiet(_cmd(tool, "baseline"), cwd=project, env=tool.env)
    _git(project, tool, "add", "-A")
    _git(project, tool, "commit", "-q", "-m", "bench: baseline")
    return project


def _available(tool: Tool, row: str) -> str | None:
    """Why ``tool`` cannot run ``row`` yet (None: it can)."""
    if tool.missing:
        return tool.missing
    if tool.name == "tally":
        for words in NEEDS[next(k for k in NEEDS if row.startswith(k))]:
            if not tool.has_command(*words):
                return "pending"
    return None


def _alternating(tools: list[Tool], reps: int):
    """(rep, tool) pairs, tools in alternating order per repetition."""
    for rep in range(reps):
        for tool in (tools if rep % 2 == 0 else tools[::-1]):
            yield rep, tool


def cli_start(*, tools: list[Tool], rows: list[str], cwd: Path, results: Results,
              reps: int, log, samples: int = CLI_REPS) -> None:
    """``--help`` and ``--version`` start-up, max(reps, samples) samples each."""
    for row, flag in (("cli-help", "--help"), ("cli-version", "--version")):
        if row not in rows:
            continue
        log(f"bench: {row}")
        n = max(reps, samples)
        for _, tool in _alternating(tools, n):
            if tool.missing:
                results.mark(row, MODE, tool.name, tool.missing)
                continue
            if results.done(row, MODE, tool.name, n):
                continue
            try:
                results.record(row, MODE, tool.name,
                               run_timed(tool.argv(flag), cwd=cwd, env=tool.env))
            except CommandFailed as exc:
                results.fail(row, MODE, tool.name, exc)


def exp_run(*, tools, templates, projects: Path, results: Results, reps: int,
            timeout: float, log, trivial: bool = False) -> None:
    """``exp run`` overhead over the bare stage command, paired per repetition
    (``trivial``: the T pipeline, row exp-run-trivial; else E, row exp-run)."""
    row = "exp-run-trivial" if trivial else "exp-run"
    ready = {}
    for tool in tools:
        why = _available(tool, row)
        if why:
            results.mark(row, MODE, tool.name, why)
            continue
        try:
            project = _pipeline_project(tool, templates, projects / f"{tool.name}-{row}",
                                        trivial=trivial)
            # warm-up: first-run costs (DVC's tmp dirs, indexes) are not overhead
            run_quiet(_cmd(tool, "run", "-S", "lr=0.5"), cwd=project, env=tool.env)
            ready[tool.name] = project
        except CommandFailed as exc:
            results.fail(row, MODE, tool.name, exc)
    bare = ["sh", "-c", TRIVIAL_CMD] if trivial else [stage_python(), "train.py"]
    for rep, tool in _alternating(tools, reps):
        if tool.name not in ready or results.done(row, MODE, tool.name, reps):
            continue
        log(f"bench: {row}, {tool.name}, rep {rep + 1}/{reps}")
        project = ready[tool.name]
        try:
            run = run_timed(_cmd(tool, "run", "-S", f"lr=0.{rep + 1:04d}"), cwd=project,
                            env=tool.env, timeout=timeout)
            stage = run_timed(bare, cwd=project, env=tool.env, timeout=timeout)
        except CommandFailed as exc:
            results.fail(row, MODE, tool.name, exc)
            continue
        results.record(row, MODE, tool.name,
                       Sample(seconds=run.seconds - stage.seconds,
                              maxrss_kib=run.maxrss_kib))
    for project in ready.values():
        remove_tree(project)


def exp_queue(*, tools, templates, projects: Path, results: Results, reps: int,
              timeout: float, log, count: int = QUEUED, row: str = "exp-queue") -> None:
    """``count`` experiments queued (untimed), then run with 2 workers (timed).

    The cell is measured only when every queued experiment finished with success
    (counted in ``show --json`` afterwards, untimed); otherwise it reads "failed"
    with the counts, never a time.
    """
    for tool in tools:
        why = _available(tool, row)
        if why:
            results.mark(row, MODE, tool.name, why)
    for rep, tool in _alternating(tools, reps):
        if results.done(row, MODE, tool.name, reps):
            continue
        log(f"bench: {row}, {tool.name}, rep {rep + 1}/{reps}")
        dest = projects / f"{tool.name}-queue"
        try:
            project = _pipeline_project(tool, templates, dest)
            for i in range(count):
                run_quiet(_cmd(tool, "queue", "-S", f"lr=0.{i + 1:04d}"), cwd=project,
                          env=tool.env)
            try:
                sample = run_timed(_cmd(tool, "run_all"), cwd=project, env=tool.env,
                                   timeout=timeout)
            except CommandFailed as exc:  # say how far it got, then report the failure
                states = _experiment_states(tool, project)
                kept = _keep_evidence(tool, project, projects.parent / "failures", row, rep)
                raise CommandFailed(exc.argv, exc.code,
                                    f"{_states_text(states, count)}; {kept}{exc.tail}") from exc
            states = _experiment_states(tool, project)
            if states.get("success", 0) != count:
                kept = _keep_evidence(tool, project, projects.parent / "failures", row, rep)
                raise CommandFailed(_cmd(tool, "run_all"), -1,
                                    f"exited 0 but {_states_text(states, count)}; {kept}")
            results.record(row, MODE, tool.name, sample)
        except CommandFailed as exc:
            results.fail(row, MODE, tool.name, exc)
        finally:
            _stop_workers(tool, dest)
            remove_tree(dest)


def _keep_evidence(tool: Tool, project: Path, where: Path, row: str, rep: int) -> str:
    """Save the queue's status and the logs of its failed entries (untimed).

    The project is removed after the cell; what failed and why must outlive it.
    Returns "evidence in PATH; " for the cell's note ("" when nothing was saved).
    """
    if tool.name != "tally":
        return ""
    try:
        where.mkdir(parents=True, exist_ok=True)
        dest = where / f"{row}-{tool.name}-rep{rep + 1}.txt"
        status = subprocess.run(tool.argv("queue", "status"), cwd=project, env=tool.env,
                                capture_output=True, text=True, timeout=120).stdout
        parts = [f"$ tally queue status\n{status}"]
        for line in status.splitlines()[1:]:
            cols = line.split()
            if len(cols) > 2 and cols[2] == "failed":
                logs = subprocess.run(tool.argv("queue", "logs", cols[0]), cwd=project,
                                      env=tool.env, capture_output=True, text=True,
                                      timeout=120)
                parts.append(f"$ tally queue logs {cols[0]}\n{logs.stdout}{logs.stderr}")
        dest.write_text("\n".join(parts))
        return f"evidence in {dest}; "
    except (OSError, subprocess.SubprocessError):
        return ""


def _stop_workers(tool: Tool, project: Path) -> None:
    """Stop DVC's queue workers (they outlive ``--run-all`` for a while), untimed.

    A lingering worker would load the machine during the next cell and write into
    the project while it is being removed.
    """
    if tool.name != "dvc" or not (project / ".dvc").is_dir():
        return
    try:
        run_quiet(tool.argv("queue", "stop", "-q"), cwd=project, env=tool.env,
                  timeout=120)
    except CommandFailed:
        pass  # no worker left: nothing to stop


def dvc_states(shown: list) -> dict[str, int]:
    """Experiments by state in ``dvc exp show --json`` output (all baselines).

    An experiment without an executor, or whose executor says "success", has
    finished; its state is "error" when DVC could not read its revision.
    """
    states: dict[str, int] = {}
    for baseline in shown:
        for exp in baseline.get("experiments") or []:
            executor = exp.get("executor") or {}
            state = executor.get("state") or "success"
            revs = exp.get("revs") or [{}]
            if state == "success" and revs[0].get("error"):
                state = "error"
            states[state] = states.get(state, 0) + 1
    return states


def _states_text(states: dict[str, int], count: int) -> str:
    got = ", ".join(f"{n} {s}" for s, n in sorted(states.items())) or "none"
    return f"of {count} queued experiments: {got}"


def _experiment_states(tool: Tool, project: Path) -> dict[str, int]:
    """Experiments on HEAD by state (success, failed, queued, running), untimed.

    tally: ``tally show --json`` (its ``status``). DVC: ``dvc exp show --json``
    (an experiment with a commit and no executor or a "success" executor is a
    success; otherwise its executor's state), cross-checked with the refs DVC keeps
    under refs/exps/ for finished experiments.
    """
    states: dict[str, int] = {}
    if tool.name == "tally":
        shown = run_quiet(tool.argv("show", "--json"), cwd=project, env=tool.env)
        for e in json.loads(shown):
            state = e.get("status") or "unknown"
            states[state] = states.get(state, 0) + 1
        return states
    shown = run_quiet(_cmd(tool, "show", "--json"), cwd=project, env=tool.env,
                      timeout=QUEUE_LIMIT)
    states = dvc_states(json.loads(shown))
    refs, shown_ok = _count_experiments(tool, project), states.get("success", 0)
    if refs != shown_ok:  # trust neither alone
        states["success"] = min(refs, shown_ok)
        states["unconfirmed"] = abs(refs - shown_ok)
    return states


def _count_experiments(tool: Tool, project: Path) -> int:
    """Experiments recorded on the project's HEAD (a sanity check, untimed)."""
    if tool.name == "dvc":
        refs = _git(project, tool, "for-each-ref", "refs/exps/").splitlines()
        return len([r for r in refs if "/exec/" not in r])
    shown = run_quiet(tool.argv("show", "--json"), cwd=project, env=tool.env)
    return len([e for e in json.loads(shown) if e.get("status") == "success"])


def _clone_dvc_experiments(project: Path, tool: Tool, count: int) -> None:
    """Add ``count`` experiments to the baseline by cloning one real DVC experiment.

    Each clone is a commit on the baseline with the real experiment's dvc.lock and
    its own params.yaml and metrics.json, under the same ref namespace DVC uses
    (``refs/exps/<baseline[:2]>/<baseline[2:]>/<name>``).
    """
    base = _git(project, tool, "rev-parse", "HEAD").strip()
    real = [line.split()[-1] for line in
            _git(project, tool, "for-each-ref", f"refs/exps/{base[:2]}/").splitlines()]
    lock = _git(project, tool, "rev-parse", f"{real[0]}:dvc.lock").strip()
    now = int(time.time())
    chunks = []
    for i in range(count):
        params = f"lr: 0.{i + 1:05d}\nepochs: 3\nout_mib: 1\n".encode()
        metrics = f'{{"loss": {1 / (1 + (i + 1) * 3e-5):.6f}, "acc": 0.{i:05d}}}'.encode()
        msg = f"dvc: commit experiment bench{i:064d}"[:86].encode()
        ts = now - count + i  # recent, distinct: DVC sorts and labels by date
        chunks.append(
            b"commit refs/exps/%s/%s/bench-%05d\n" % (base[:2].encode(), base[2:].encode(), i)
            + b"author bench <bench@localhost> %d +0000\n" % ts
            + b"committer bench <bench@localhost> %d +0000\n" % ts
            + b"data %d\n%s\n" % (len(msg), msg)
            + b"from %s\n" % base.encode()
            + b"M 100644 %s dvc.lock\n" % lock.encode()
            + b"M 100644 inline params.yaml\ndata %d\n%s\n" % (len(params), params)
            + b"M 100644 inline metrics.json\ndata %d\n%s\n\n" % (len(metrics), metrics))
    done = subprocess.run(["git", "fast-import", "--quiet"], input=b"".join(chunks),
                          cwd=project, env=tool.env, capture_output=True)
    if done.returncode != 0:
        raise CommandFailed(["git", "fast-import"], done.returncode,
                            done.stderr.decode(errors="replace")[-600:])


def _clone_tally_experiments(project: Path, tool: Tool, count: int) -> None:
    """Add ``count`` clones of the one real tally experiment (``bench.tally_clone``)."""
    base = _git(project, tool, "rev-parse", "HEAD").strip()
    run_quiet([sys.executable, "-m", "bench.tally_clone", str(project), base, str(count)],
              cwd=REPO, env={**tool.env, "PYTHONPATH": str(REPO)})


def exp_show(*, tools, templates, projects: Path, results: Results, counts: list[int],
             reps: int, timeout: float, log) -> None:
    """``show`` with N experiments on one baseline, for each N in ``counts``.

    Two rows per N: ``exp-show-N-first``, the first call after the experiments were
    made (one sample: it can happen only once per setup; DVC then fills its
    collected-experiments cache under .dvc/tmp), and ``exp-show-N``, the calls after
    it (median of ``reps``), as a user's next look at the table would be.
    """
    for count in counts:
        row, first = f"exp-show-{count}", f"exp-show-{count}-first"
        for tool in tools:
            why = _available(tool, row)
            if why:
                results.mark(row, MODE, tool.name, why)
                results.mark(first, MODE, tool.name, why)
        ready = {}
        for tool in tools:
            if results.cell(row, MODE, tool.name).status:
                continue
            log(f"bench: {row}, {tool.name}: creating {count:,} experiments (untimed)")
            try:
                project = _pipeline_project(tool, templates,
                                            projects / f"{tool.name}-show")
                run_quiet(_cmd(tool, "run", "-S", "lr=0.5"), cwd=project, env=tool.env)
                if tool.name == "dvc":
                    _clone_dvc_experiments(project, tool, count - 1)
                else:
                    _clone_tally_experiments(project, tool, count - 1)
            except CommandFailed as exc:
                results.fail(row, MODE, tool.name, exc)
                results.fail(first, MODE, tool.name, exc)
                continue
            log(f"bench: {first}, {tool.name}")
            try:
                results.record(first, MODE, tool.name,
                               run_timed(_cmd(tool, "show"), cwd=project, env=tool.env,
                                         timeout=timeout))
                ready[tool.name] = project
            except CommandFailed as exc:
                results.fail(first, MODE, tool.name, exc)
                results.mark(row, MODE, tool.name, "skipped", "first call failed")
        for rep, tool in _alternating(tools, reps):
            if tool.name not in ready or results.done(row, MODE, tool.name, reps):
                continue
            log(f"bench: {row}, {tool.name}, rep {rep + 1}/{reps}")
            try:
                results.record(row, MODE, tool.name,
                               run_timed(_cmd(tool, "show"), cwd=ready[tool.name],
                                         env=tool.env, timeout=timeout))
            except CommandFailed as exc:
                results.fail(row, MODE, tool.name, exc)
        for tool in tools:
            remove_tree(projects / f"{tool.name}-show")


def exp_restore(*, tools, templates, projects: Path, results: Results, out_mib: int,
                reps: int, timeout: float, log, mode: str = MODE,
                row: str = "exp-restore") -> None:
    """Apply an experiment with an ``out_mib`` MiB output onto the baseline workspace.

    ``mode`` is the link mode both tools are configured with (``cache.type``); the
    projects (and so the stores) are made under ``projects``, which for reflink must
    be on a filesystem that can clone. In hardlink mode the restored ``model.bin``
    must be a hardlink (link count >= 2), or the cell fails: a copy is not what the
    row measures.
    """
    ready = {}
    for tool in tools:
        why = _available(tool, row)
        if why:
            results.mark(row, mode, tool.name, why)
            continue
        log(f"bench: {row}, {tool.name}: running the {out_mib} MiB experiment (untimed)")
        try:
            project = _pipeline_project(tool, templates,
                                        projects / f"{tool.name}-restore-{mode}", mode=mode)
            run_quiet(_cmd(tool, "run", "-n", "big", "-S", f"out_mib={out_mib}"),
                      cwd=project, env=tool.env, timeout=timeout)
            ready[tool.name] = project
        except CommandFailed as exc:
            results.fail(row, mode, tool.name, exc)
    for rep, tool in _alternating(tools, reps):
        if tool.name not in ready or results.done(row, mode, tool.name, reps):
            continue
        project = ready[tool.name]
        log(f"bench: {row}, {tool.name}, rep {rep + 1}/{reps}")
        try:
            _git(project, tool, "reset", "-q", "--hard")
            run_quiet(_cmd(tool, "reset_outputs"), cwd=project, env=tool.env)
            size = (project / "model.bin").stat().st_size
            if size != 1 << 20:
                raise CommandFailed(_cmd(tool, "reset_outputs"), -1,
                                    f"reset to the baseline left a {size}-byte "
                                    "model.bin, expected 1 MiB")
            sample = run_timed(_cmd(tool, "apply", "big"), cwd=project, env=tool.env,
                               timeout=timeout)
            st = (project / "model.bin").stat()
            if st.st_size != out_mib << 20:
                raise CommandFailed(_cmd(tool, "apply", "big"), -1,
                                    f"model.bin is {st.st_size} bytes after apply, "
                                    f"expected {out_mib << 20}")
            if mode == "hardlink" and st.st_nlink < 2:
                raise CommandFailed(_cmd(tool, "apply", "big"), -1,
                                    "model.bin is not a hardlink after apply "
                                    f"(link count {st.st_nlink}) in hardlink mode")
            results.record(row, mode, tool.name, sample)
        except (CommandFailed, OSError) as exc:
            if isinstance(exc, OSError):
                exc = CommandFailed(["apply"], -1, str(exc))
            results.fail(row, mode, tool.name, exc)
    for project in ready.values():
        remove_tree(project)
