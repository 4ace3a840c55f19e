"""The gc rows (issue 5): gc of a store with 1,000 experiments and 50,000 objects.

Workload (``gcworkload``): 1,000 experiments on one baseline, each with an output
directory of 50 files of 1 KiB (50,000 distinct data objects); keep the 50 best by
``acc``, drop the other 950 (47,500 data objects become garbage).

Setup, untimed, once per tool (a *template* project, copied with ``cp -a`` for each
repetition because gc is destructive):

1. The gc pipeline (one stage writing ``out/`` and ``metrics.json``) is committed
   and reproduced as the baseline (``dvc repro`` / ``tally run``), then committed.
2. One experiment ``real`` is run for real (``exp run`` / ``run -n real -S seed=7
   -S acc=1.0``); the workspace is put back to the baseline (``git reset --hard`` +
   ``dvc checkout --force`` / ``tally run``, a run-cache hit); tally's extra
   experiments from the baseline runs are removed, so both tools hold exactly one.
3. 999 clones of ``real`` with their own outputs. DVC: the cache files
   (``.dvc/cache/files/md5/..``, mode 0444) and each clone's ``.dir`` object are
   written directly in DVC's layout, and one commit per clone (dvc.lock naming them,
   params.yaml, metrics.json) is made under ``refs/exps/`` with ``git fast-import``;
   running 1,000 ``dvc exp run`` would take about 25 minutes here. tally:
   ``bench.tally_gcstore`` stores what ``tally run`` would, through cas.
4. A first gc (``tally gc --grace 0 --yes`` / ``dvc gc -w --all-experiments -f``)
   removes what the real runs left unreferenced (DVC caches ``cache: false``
   metrics of experiments, then never names them), so the timed gcs start clean;
   the objects each clone adds are counted (tally 56, DVC 51 at full size).

Timed, per repetition, in a fresh copy of the template:

- ``gc-noop``: gc with nothing to delete, on the full store (all 1,000 experiments
  are roots): ``tally gc --grace 0 --yes`` / ``dvc gc -w --all-experiments -f``.
  Checked: the object count is unchanged.
- ``gc``: keep the 50 best, delete the rest: ``tally gc --keep-best 50 --sort-by
  acc:max --grace 0 --yes`` (one command drops the refs and sweeps) vs ``dvc exp
  remove --keep <the 50 names>`` + ``dvc gc -w --all-experiments -f`` (DVC has no
  retention policy; the names are computed untimed; the figure is the sum of both
  commands, each split in the notes). Checked: each cache lost exactly the dropped
  experiments' objects (950 x per-clone count) and 50 experiments remain.

``--grace 0``: the objects were made seconds ago, and DVC has no grace period.
"""

from __future__ import annotations

import json
import os
import re
import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from bench import gcworkload as g
from bench.measure import CommandFailed, Results, Sample, run_quiet, run_timed
from bench.tools import DEFAULT_MODE, REPO, Templates, Tool, remove_tree
from bench.workload import stage_python

MODE = DEFAULT_MODE
ROWS = ("gc-noop", "gc")
REAL_SEED = 7


def _git(project: Path, tool: Tool, *args: str) -> str:
    return run_quiet(["git", *args], cwd=project, env=tool.env)


def count_objects(tool: Tool, project: Path) -> int:
    """Files in the tool's object store (tally .tally/objects, DVC .dvc/cache/files)."""
    root = project / (".tally/objects" if tool.name == "tally" else ".dvc/cache/files")
    return sum(len(names) for _, _, names in os.walk(root))


def _gc_argv(tool: Tool, spec: g.GcSpec, *, drop: bool) -> list[list[str]]:
    """The timed commands of one cell (their times are summed)."""
    if tool.name == "tally":
        policy = ["--keep-best", str(spec.keep), "--sort-by", "acc:max"] if drop else []
        return [tool.argv("gc", *policy, "--grace", "0", "--yes")]
    gc = tool.argv("gc", "-w", "--all-experiments", "-f", "-q")
    if not drop:
        return [gc]
    return [tool.argv("exp", "remove", "-q", "--keep", *g.kept_names(spec)), gc]


def _experiments(tool: Tool, project: Path) -> list[str]:
    """Names of the experiments on HEAD (untimed check)."""
    if tool.name == "dvc":
        return [r.rsplit("/", 1)[1] for r in
                _git(project, tool, "for-each-ref", "--format=%(refname)",
                     "refs/exps/").splitlines() if "/exec/" not in r]
    shown = run_quiet(tool.argv("show", "--json", "-A"), cwd=project, env=tool.env)
    return [e["name"] for e in json.loads(shown)]


def _template(tool: Tool, templates: Templates, dest: Path, spec: g.GcSpec,
              log) -> dict[str, int]:
    """Build the full store in ``dest`` (steps 1-4 of the module doc)."""
    project = templates.project(tool, MODE, dest)
    for name, text in g.pipeline_files(spec, stage_python()).items():
        (project / name).write_text(text)
    _git(project, tool, "add", "-A")
    _git(project, tool, "commit", "-q", "-m", "bench: gc pipeline")
    base_cmd = ("repro", "-q") if tool.name == "dvc" else ("run", "-q")
    run_quiet(tool.argv(*base_cmd), cwd=project, env=tool.env)
    _git(project, tool, "add", "-A")
    _git(project, tool, "commit", "-q", "-m", "bench: gc baseline")
    base = _git(project, tool, "rev-parse", "HEAD").strip()
    run_cmd = ("exp", "run", "-q") if tool.name == "dvc" else ("run", "-q")
    run_quiet(tool.argv(*run_cmd, "-n", g.REAL, "-S", f"seed={REAL_SEED}",
                        "-S", f"acc={g.REAL_ACC}"), cwd=project, env=tool.env)
    _git(project, tool, "reset", "-q", "--hard")
    reset = ("checkout", "--force", "-q") if tool.name == "dvc" else ("run", "-q")
    run_quiet(tool.argv(*reset), cwd=project, env=tool.env)
    if tool.name == "tally":  # the baseline runs made experiments of their own
        shown = json.loads(run_quiet(tool.argv("show", "--json", "-A"), cwd=project,
                                     env=tool.env))
        extra = [f"{e['baseline']}/{e['name']}" for e in shown if e["name"] != g.REAL]
        if extra:
            run_quiet(tool.argv("remove", "-A", *extra), cwd=project, env=tool.env)
    for argv in _gc_argv(tool, spec, drop=False):
        run_quiet(argv, cwd=project, env=tool.env)
    before = count_objects(tool, project)
    log(f"bench: gc, {tool.name}: cloning {spec.clones:,} experiments (untimed)")
    if tool.name == "dvc":
        per_clone = _clone_dvc(project, tool, base, spec)
    else:
        out = run_quiet([sys.executable, "-m", "bench.tally_gcstore", str(project), base,
                         str(spec.experiments), str(spec.files), str(spec.file_size),
                         str(spec.keep)], cwd=REPO, env={**tool.env, "PYTHONPATH": str(REPO)})
        per_clone = json.loads(out.strip().splitlines()[-1])["objects_per_clone"]
    for argv in _gc_argv(tool, spec, drop=False):  # must find nothing to delete
        run_quiet(argv, cwd=project, env=tool.env)
    full = count_objects(tool, project)
    if full - before != spec.clones * per_clone:
        raise CommandFailed(["gc setup"], -1,
                            f"{tool.name}: the clones added {full - before} objects, "
                            f"expected {spec.clones} x {per_clone}")
    names = _experiments(tool, project)
    if len(names) != spec.experiments:
        raise CommandFailed(["gc setup"], -1, f"{tool.name}: {len(names)} experiments "
                            f"after setup, expected {spec.experiments}")
    return {"objects": full, "per_clone": per_clone}


def _clone_dvc(project: Path, tool: Tool, base: str, spec: g.GcSpec) -> int:
    """DVC half of step 3; returns the objects each clone adds (files + .dir)."""
    real_ref = f"refs/exps/{base[:2]}/{base[2:]}/{g.REAL}"
    lock = _git(project, tool, "show", f"{real_ref}:dvc.lock")
    real_dir = re.search(r"md5: ([0-9a-f]{32}\.dir)", lock).group(1)
    metrics = re.search(r"path: metrics\.json\n\s+hash: md5\n\s+md5: ([0-9a-f]{32})\n"
                        r"\s+size: (\d+)", lock)
    cache = project / ".dvc" / "cache"
    names = g.file_names(spec)
    chunks = []
    ts = int(_git(project, tool, "log", "-1", "--format=%ct", real_ref).strip())
    for i in range(spec.clones):
        entries = []
        for j, name in enumerate(names):
            data = g.file_bytes(spec, i, j)
            h = g.md5(data)
            _write_ro(cache / g.dvc_cache_relpath(h), data)
            entries.append((name, h))
        dir_hash, listing = g.dvc_dir_object(entries)
        _write_ro(cache / g.dvc_cache_relpath(dir_hash), listing)
        params = g.clone_params(spec, i)
        mtext = g.metrics_text(params["acc"]).encode()
        text = lock.replace(real_dir, dir_hash)
        text = text.replace(metrics.group(0), metrics.group(0)
                            .replace(metrics.group(1), g.md5(mtext))
                            .replace(f"size: {metrics.group(2)}", f"size: {len(mtext)}"))
        for key in ("seed", "acc"):
            text = re.sub(rf"(?m)^(\s*){key}: .*$", rf"\g<1>{key}: {params[key]}", text)
        ptext = g.params_text(params).encode()
        ltext = text.encode()
        msg = f"dvc: commit experiment bench-gc-{i:05d}".encode()
        when = ts - spec.clones + i
        chunks.append(
            b"commit %s/%s\n" % (real_ref.rsplit("/", 1)[0].encode(),
                                 g.clone_name(i).encode())
            + b"author bench <bench@localhost> %d +0000\n" % when
            + b"committer bench <bench@localhost> %d +0000\n" % when
            + b"data %d\n%s\n" % (len(msg), msg)
            + b"from %s\n" % base.encode()
            + b"M 100644 inline dvc.lock\ndata %d\n%s\n" % (len(ltext), ltext)
            + b"M 100644 inline params.yaml\ndata %d\n%s\n" % (len(ptext), ptext)
            + b"M 100644 inline metrics.json\ndata %d\n%s\n\n" % (len(mtext), mtext))
    done = subprocess.run(["git", "fast-import", "--quiet"], input=b"".join(chunks),
                          cwd=project, env=tool.env, capture_output=True)
    if done.returncode != 0:
        raise CommandFailed(["git", "fast-import"], done.returncode,
                            done.stderr.decode(errors="replace")[-600:])
    return spec.files + 1


def _write_ro(path: Path, data: bytes) -> None:
    """Write a read-only cache file as DVC leaves them (0444), shard made if needed."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o444)
    try:
        os.write(fd, data)
    finally:
        os.close(fd)


def _timed_cell(tool: Tool, project: Path, argvs: list[list[str]],
                timeout: float) -> tuple[Sample, list[float]]:
    """Run the cell's commands in order; the sample is their summed time, max RSS."""
    parts = [run_timed(a, cwd=project, env=tool.env, timeout=timeout) for a in argvs]
    rss = [p.maxrss_kib for p in parts if p.maxrss_kib is not None]
    return (Sample(seconds=sum(p.seconds for p in parts), maxrss_kib=max(rss) if rss else None),
            [p.seconds for p in parts])


def run(*, spec: g.GcSpec, rows: set[str], tools: list[Tool], templates: Templates,
        projects: Path, results: Results, reps: int, timeout: float, log) -> list[str]:
    """Measure the selected gc rows; return lines for the report's notes."""
    rows = [r for r in ROWS if r in rows]
    ready: dict[str, tuple[Path, dict[str, int]]] = {}
    for tool in tools:
        why = tool.missing or (None if tool.name == "dvc" or tool.has_command("gc")
                               else "pending")
        if why:
            for row in rows:
                results.mark(row, MODE, tool.name, why)
            continue
        log(f"bench: gc, {tool.name}: building the store (untimed)")
        dest = projects / f"{tool.name}-gc-template"
        try:
            ready[tool.name] = (dest, _template(tool, templates, dest, spec, log))
        except CommandFailed as exc:
            for row in rows:
                results.fail(row, MODE, tool.name, exc)
            remove_tree(dest)
    splits: dict[str, list[list[float]]] = {}
    for rep in range(reps):
        for tool in (tools if rep % 2 == 0 else tools[::-1]):
            if tool.name not in ready or all(results.done(r, MODE, tool.name, reps)
                                             for r in rows):
                continue
            template, info = ready[tool.name]
            project = projects / f"{tool.name}-gc"
            log(f"bench: gc, {tool.name}, rep {rep + 1}/{reps}")
            _rep(tool, spec, rows, template, info, project, results, reps, timeout,
                 splits)
            remove_tree(project)
    floor = None
    if "gc" in rows and ready:
        template, info = ready.get("tally") or ready["dvc"]  # tally's count if it ran
        floor = _unlink_floor(template, projects / "gc-floor",
                              spec.dropped * info["per_clone"])
    for tool in tools:
        remove_tree(projects / f"{tool.name}-gc-template")
    return _notes(spec, ready, splits, floor)


def _unlink_floor(template: Path, scratch: Path, count: int) -> tuple[int, float] | None:
    """(files, seconds) to unlink ``count`` object files of a copy of ``template``.

    The least time the ``gc`` row can take here: deleting is most of it. 8 threads,
    1,000 files per task (the fastest of the ways tried on this machine).
    """
    store = next((template / d for d in (".tally/objects", ".dvc/cache/files")
                  if (template / d).is_dir()), None)
    if store is None:
        return None
    try:
        remove_tree(scratch)
        subprocess.run(["cp", "-a", str(store), str(scratch)], check=True)
        paths = [os.path.join(d, n) for d, _, names in os.walk(scratch)
                 for n in names][:count]
        os.sync()
        t0 = time.perf_counter()
        with ThreadPoolExecutor(max_workers=8) as pool:
            list(pool.map(_unlink_all, [paths[i:i + 1000]
                                        for i in range(0, len(paths), 1000)]))
        return len(paths), time.perf_counter() - t0
    except (OSError, subprocess.CalledProcessError):
        return None
    finally:
        remove_tree(scratch)


def _unlink_all(paths: list[str]) -> None:
    for p in paths:
        os.unlink(p)


def _rep(tool: Tool, spec: g.GcSpec, rows: list[str], template: Path,
         info: dict[str, int], project: Path, results: Results, reps: int,
         timeout: float, splits: dict[str, list[list[float]]]) -> None:
    """One repetition of the gc rows for ``tool`` in a fresh copy of its template."""
    try:
        remove_tree(project)
        run_quiet(["cp", "-a", str(template), str(project)], cwd=project.parent,
                  env=tool.env)
    except CommandFailed as exc:
        for row in rows:
            results.fail(row, MODE, tool.name, exc)
        return
    for row in rows:
        if results.done(row, MODE, tool.name, reps):
            continue
        drop = row == "gc"
        argvs = _gc_argv(tool, spec, drop=drop)
        try:
            sample, parts = _timed_cell(tool, project, argvs, timeout)
            left = count_objects(tool, project)
            want = info["objects"] - (spec.dropped * info["per_clone"] if drop else 0)
            if left != want:
                raise CommandFailed(argvs[-1], -1, f"{left:,} objects left in the store, "
                                    f"expected {want:,} ({info['objects']:,} before)")
            names = _experiments(tool, project)
            kept = spec.keep if drop else spec.experiments
            if len(names) != kept or (drop and set(names) != set(g.kept_names(spec))):
                raise CommandFailed(argvs[0], -1, f"{len(names)} experiments left, "
                                    f"expected {kept}")
        except CommandFailed as exc:
            results.fail(row, MODE, tool.name, exc)
            if not drop:  # the store may be damaged: the gc row would measure garbage
                return
            continue
        results.record(row, MODE, tool.name, sample)
        splits.setdefault(f"{row}/{tool.name}", []).append(parts)


def _notes(spec: g.GcSpec, ready: dict, splits: dict[str, list[list[float]]],
           floor: tuple[int, float] | None) -> list[str]:
    out = [f"- gc: {spec.describe()}. Setup untimed: one real experiment per tool, "
           "the others cloned (DVC: cache files and `.dir` objects written in DVC's "
           "layout plus one `git fast-import` commit each under refs/exps/; tally: "
           "bench/tally_gcstore.py through cas); see bench/gcbench.py."]
    for name, (_, info) in sorted(ready.items()):
        out.append(f"- gc, {name}: {info['objects']:,} objects in the full store, "
                   f"{info['per_clone']} per experiment; the `gc` row must delete "
                   f"exactly {spec.dropped * info['per_clone']:,} (checked).")
    dvc = splits.get("gc/dvc")
    if dvc:
        rm = statistics.median(p[0] for p in dvc)
        sweep = statistics.median(p[1] for p in dvc)
        out.append(f"- gc, dvc: `dvc exp remove --keep <{spec.keep} names>` "
                   f"{rm:.2f} s + `dvc gc -w --all-experiments -f` {sweep:.2f} s "
                   "(medians); the row's figure is their sum per repetition. tally: "
                   f"`tally gc --keep-best {spec.keep} --sort-by acc:max --grace 0 "
                   "--yes`, one command.")
    if floor:
        out.append(f"- gc floor: unlinking {floor[0]:,} object files of a copy of the "
                   f"store takes {floor[1]:.2f} s here (8 threads, one sample, warm "
                   "cache): the least a sweep of that many files can take.")
    return out
