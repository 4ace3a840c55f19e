"""The remote rows: push and pull with tally and DVC side by side, to the same kind of
remote, on the same generated data, in the same run.

``python -m bench.remotebench [--quick] [--reps N] [--kinds dir,s3] [--only ROW] [--no-dvc]
[--append TITLE]``

Remotes: a local directory, and the moto S3 server (bench/s3server.py, its own
process on 127.0.0.1). Each repetition gets a fresh project, a fresh remote (a new
directory, a new bucket) and a fresh clone to pull into; tools alternate first place.

Rows (S: 50,000 files of 1-4 KiB in 100 folders; L: 4 files of 256 MiB; --quick
shrinks both as bench/workload.py does):

    push-S, noop-push-S, pull-S     push to an empty remote, push again, pull into a
                                    fresh clone (fetch + checkout)
    push-L, pull-L                  the same for L, next to a plain copy (directory)
                                    or a boto3 upload_file/download_file loop (S3)
    exp-push, exp-pull              one experiment with a 200 MiB output (`dvc exp
                                    push/pull` against a bare Git remote plus the DVC
                                    remote; tally needs only its remote)

Timed: the push or pull command alone, as a child process (wall seconds, peak RSS by
GNU time). Not timed: making projects, `add`, the run that makes the experiment,
cloning. tally is this checkout's `tally` (push, pull, push --exp, pull --exp); DVC
is 3.67.1 from its own venv with dvc-s3 installed beside it.

Goals (issue 14): small files at least 20x faster than DVC; large files within 1.5x of
the baseline; a no-op push of 50,000 files at most 1 s.
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

from bench import workload
from bench.dvc_env import DVC_VERSION, DvcUnavailable, ensure_dvc
from bench.measure import CommandFailed, Sample, run_quiet, run_timed
from bench.s3server import ACCESS_KEY, REGION, SECRET_KEY, S3Server
from bench.tools import bench_env, remove_tree

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
EXP_MIB = 200
GOALS = {"push-S": "DVC/tally >= 20", "pull-S": "DVC/tally >= 20", "noop-push-S": "<= 1 s",
         "push-L": "<= 1.5x baseline", "pull-L": "<= 1.5x baseline"}


def _log(line: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {line}", file=sys.stderr, flush=True)


class Bench:
    def __init__(self, work: Path, *, quick: bool, reps: int, use_dvc: bool) -> None:
        self.work = work
        self.quick = quick
        self.reps = reps
        self.env = bench_env(work)
        (work / "tmp").mkdir(parents=True, exist_ok=True)
        self.python = str(REPO / ".venv" / "bin" / "python")
        self.tally_bin = str(REPO / ".venv" / "bin" / "tally")
        self.dvc = None
        if use_dvc:
            try:
                self.dvc = ensure_dvc(log=_log)
                run_quiet([str(self.dvc.python), "-c", "import dvc_s3"], cwd=work, env=self.env)
            except (DvcUnavailable, CommandFailed) as exc:
                _log(f"DVC unavailable: {exc}")
                self.dvc = None
        self.samples: dict[tuple[str, str, str], list[Sample]] = {}
        self.notes: list[str] = []
        self.s3: S3Server | None = None

    # -- helpers -------------------------------------------------------------------
    def tool_env(self, tool: str) -> dict[str, str]:
        env = dict(self.env)
        if self.s3 is not None:
            env.update(self.s3.env())
        if tool == "dvc":
            env["PATH"] = f"{self.dvc.exe.parent}:{env['PATH']}"
        else:
            env["PATH"] = f"{Path(self.tally_bin).parent}:{env['PATH']}"
        return env

    def sh(self, argv: list[str], cwd: Path, tool: str = "tally") -> None:
        run_quiet(argv, cwd=cwd, env=self.tool_env(tool))

    def timed(self, row: str, kind: str, tool: str, argv: list[str], cwd: Path) -> Sample:
        s = run_timed(argv, cwd=cwd, env=self.tool_env(tool))
        self.samples.setdefault((row, kind, tool), []).append(s)
        _log(f"{row} {kind} {tool}: {s.seconds:.2f} s, {s.maxrss_kib} KiB")
        return s

    def remote_url(self, kind: str, tag: str) -> str:
        if kind == "dir":
            d = self.work / "remotes" / tag
            if d.exists():
                remove_tree(d)
            d.parent.mkdir(parents=True, exist_ok=True)
            return os.fspath(d)
        bucket = f"bench-{tag}".lower().replace("_", "-")[:60]
        self.s3.make_bucket(bucket)
        return f"s3://{bucket}/store"

    def project(self, tool: str, dest: Path, remote: str, kind: str) -> Path:
        if dest.exists():
            remove_tree(dest)
        dest.mkdir(parents=True)
        bare = dest.parent / f"{dest.name}.git"
        if bare.exists():
            remove_tree(bare)
        self.sh(["git", "init", "-q", "--bare", "-b", "main", os.fspath(bare)], dest.parent, tool)
        self.sh(["git", "init", "-q", "-b", "main"], dest, tool)
        self.sh(["git", "remote", "add", "origin", os.fspath(bare)], dest, tool)
        if tool == "tally":
            self.sh([self.tally_bin, "init"], dest)
            self.sh([self.tally_bin, "remote", "add", "origin", remote, "--default"], dest)
            if kind == "s3":
                for k, v in (("endpoint_url", self.s3.endpoint), ("region", REGION)):
                    self.sh([self.tally_bin, "remote", "modify", "origin", k, v], dest)
        else:
            dvc = str(self.dvc.exe)
            self.sh([dvc, "init", "-q"], dest, "dvc")
            for key in ("core.analytics", "core.autostage", "core.check_update"):
                self.sh([dvc, "config", key, "false"], dest, "dvc")
            self.sh([dvc, "remote", "add", "-d", "origin", remote], dest, "dvc")
            if kind == "s3":
                self.sh([dvc, "remote", "modify", "origin", "endpointurl", self.s3.endpoint],
                        dest, "dvc")
        self.sh(["git", "add", "-A"], dest, tool)
        self.sh(["git", "commit", "-q", "--allow-empty", "-m", "init"], dest, tool)
        return dest

    def clone(self, tool: str, src: Path, dest: Path) -> Path:
        if dest.exists():
            remove_tree(dest)
        self.sh(["git", "clone", "-q", os.fspath(src.parent / f"{src.name}.git"),
                 os.fspath(dest)], src.parent, tool)
        return dest

    def add_and_commit(self, tool: str, proj: Path, paths: list[str]) -> None:
        exe = self.tally_bin if tool == "tally" else str(self.dvc.exe)
        self.sh([exe, "add", *(["-q"] if tool == "dvc" else []), *paths], proj, tool)
        self.sh(["git", "add", "-A"], proj, tool)
        self.sh(["git", "commit", "-q", "-m", "data"], proj, tool)
        self.sh(["git", "push", "-q", "origin", "main"], proj, tool)

    def push_argv(self, tool: str, proj: Path) -> list[str]:
        if tool == "tally":
            return [self.tally_bin, "push"]
        return [str(self.dvc.exe), "push", "-q"]

    def pull_argv(self, tool: str, proj: Path) -> list[str]:
        if tool == "tally":
            return [self.tally_bin, "pull"]
        return [str(self.dvc.exe), "pull", "-q"]

    def tools(self, rep: int) -> list[str]:
        both = ["tally"] + (["dvc"] if self.dvc else [])
        return both if rep % 2 == 0 else both[::-1]

    # -- rows ------------------------------------------------------------------------
    def data_rows(self, kind: str, fs: workload.FileSet, src: Path) -> None:
        for rep in range(self.reps):
            for tool in self.tools(rep):
                tag = f"{tool}-{kind}-{fs.name}-{rep}-{os.getpid()}"
                remote = self.remote_url(kind, tag)
                proj = self.project(tool, self.work / "projects" / tag, remote, kind)
                workload.copy_into(src, proj)
                targets = [fs.dirname] if fs.folders else \
                    [f"{fs.dirname}/{r}" for r in fs.relpaths()]
                self.add_and_commit(tool, proj, targets)
                # PYTHONPATH: the driver module lives in bench/, beside cas/
                self.timed(f"push-{fs.name}", kind, tool, self.push_argv(tool, proj), proj)
                if fs.name == "S":
                    self.timed(f"noop-push-{fs.name}", kind, tool, self.push_argv(tool, proj), proj)
                other = self.clone(tool, proj, self.work / "projects" / f"{tag}-clone")
                self.timed(f"pull-{fs.name}", kind, tool, self.pull_argv(tool, other), other)
                got = workload.tree_size(other / fs.dirname)
                want = workload.tree_size(proj / fs.dirname)
                if got != want:
                    raise CommandFailed(["pull"], 1, f"{tool} pulled {got}, expected {want}")
                remove_tree(other)
                remove_tree(proj)
                if kind == "dir":
                    remove_tree(Path(remote))

    def baseline_rows(self, kind: str, fs: workload.FileSet, src: Path) -> None:
        """A plain copy (directory remote) or a boto3 loop (S3), up and down."""
        for rep in range(self.reps):
            tag = f"base-{kind}-{rep}-{os.getpid()}"
            if kind == "dir":
                dst = self.work / "remotes" / tag
                back = self.work / "remotes" / f"{tag}-back"
                dst.parent.mkdir(parents=True, exist_ok=True)
                for d in (dst, back):
                    if d.exists():
                        remove_tree(d)
                self.timed(f"push-{fs.name}", kind, "baseline", ["cp", "-r", os.fspath(src),
                                                                 os.fspath(dst)], self.work / "tmp")
                self.timed(f"pull-{fs.name}", kind, "baseline", ["cp", "-r", os.fspath(dst),
                                                                 os.fspath(back)], self.work / "tmp")
                remove_tree(dst)
                remove_tree(back)
            else:
                bucket = f"bench-{tag}"
                self.s3.make_bucket(bucket)
                code = ("import boto3, os, sys\n"
                        "c = boto3.client('s3', endpoint_url=sys.argv[1])\n"
                        "src, bucket, way = sys.argv[2], sys.argv[3], sys.argv[4]\n"
                        "for n in sorted(os.listdir(src)):\n"
                        "    if way == 'up': c.upload_file(os.path.join(src, n), bucket, n)\n"
                        "    else: c.download_file(bucket, n, os.path.join(sys.argv[5], n))\n")
                back = self.work / "tmp" / f"{tag}-back"
                back.mkdir(parents=True, exist_ok=True)
                for way in ("up", "down"):
                    self.timed(f"{'push' if way == 'up' else 'pull'}-{fs.name}", kind, "baseline",
                               [self.python, "-c", code, self.s3.endpoint, os.fspath(src), bucket,
                                way, os.fspath(back)], self.work / "tmp")
                remove_tree(back)

    def exp_rows(self, kind: str) -> None:
        for rep in range(self.reps):
            for tool in self.tools(rep):
                tag = f"{tool}-{kind}-exp-{rep}-{os.getpid()}"
                remote = self.remote_url(kind, tag)
                proj = self.project(tool, self.work / "projects" / tag, remote, kind)
                workload.write_pipeline(proj, out_mib=EXP_MIB, python=sys.executable)
                self.sh(["git", "add", "-A"], proj, tool)
                self.sh(["git", "commit", "-q", "-m", "pipeline"], proj, tool)
                self.sh(["git", "push", "-q", "origin", "main"], proj, tool)
                exe = self.tally_bin if tool == "tally" else str(self.dvc.exe)
                if tool == "tally":
                    self.sh([exe, "run", "-n", "big"], proj, tool)
                    push = [exe, "push", "--exp", "big"]
                else:
                    self.sh([exe, "exp", "run", "-n", "big"], proj, tool)
                    push = [exe, "exp", "push", "origin", "big"]
                self.timed("exp-push", kind, tool, push, proj)
                other = self.clone(tool, proj, self.work / "projects" / f"{tag}-clone")
                if tool == "tally":
                    pull = [exe, "pull", "--exp", "big"]
                else:
                    pull = [exe, "exp", "pull", "origin", "big"]
                self.timed("exp-pull", kind, tool, pull, other)
                remove_tree(other)
                remove_tree(proj)

    # -- report ------------------------------------------------------------------------
    def table(self) -> str:
        def med(key):
            ss = self.samples.get(key)
            return statistics.median(s.seconds for s in ss) if ss else None

        def rss(key):
            ss = self.samples.get(key) or []
            vals = [s.maxrss_kib for s in ss if s.maxrss_kib]
            return f"{max(vals) / 1024:.0f} MiB" if vals else "—"

        rows = sorted({(r, k) for r, k, _ in self.samples}, key=lambda x: (x[1], x[0]))
        out = ["| operation | remote | tally s | DVC s | DVC/tally | baseline s | tally/baseline "
               "| tally peak RSS | DVC peak RSS | goal | goal |",
               "|---|---|---:|---:|---:|---:|---:|---:|---:|---|---|"]
        for row, kind in rows:
            t, d, b = med((row, kind, "tally")), med((row, kind, "dvc")), med((row, kind, "baseline"))
            if t is None:
                continue
            goal = GOALS.get(row, "—")
            verdict = "—"
            if row in ("push-S", "pull-S") and d:
                verdict = "met" if d / t >= 20 else "not met"
            elif row == "noop-push-S":
                verdict = "n/a (quick)" if self.quick else ("met" if t <= 1.0 else "not met")
            elif row in ("push-L", "pull-L") and b:
                verdict = "met" if t <= 1.5 * b else "not met"
            f = lambda x: f"{x:.2f}" if x is not None else "—"  # noqa: E731
            out.append(f"| {row} | {kind} | {f(t)} | {f(d)} | "
                       f"{f'{d / t:.1f}x' if d else '—'} | {f(b)} | "
                       f"{f'{t / b:.2f}x' if b else '—'} | {rss((row, kind, 'tally'))} | "
                       f"{rss((row, kind, 'dvc'))} | {goal} | {verdict} |")
        return "\n".join(out) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.remotebench", description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true")
    p.add_argument("--reps", type=int, default=None)
    p.add_argument("--kinds", default="dir,s3")
    p.add_argument("--only", action="append", default=[], help="S, L, exp (repeatable)")
    p.add_argument("--no-dvc", action="store_true")
    p.add_argument("--append", metavar="TITLE")
    a = p.parse_args(argv)
    reps = a.reps or (1 if a.quick else 3)
    base = Path(os.environ["TALLY_BENCH_DIR"]) / "tally-bench" if os.environ.get("TALLY_BENCH_DIR") \
        else HERE / ".work"
    b = Bench(base, quick=a.quick, reps=reps, use_dvc=not a.no_dvc)
    sets = workload.sets(quick=a.quick, scale=False)
    only = set(a.only) or {"S", "L", "exp"}
    t0 = time.perf_counter()
    os.environ.setdefault("PYTHONPATH", os.fspath(REPO))
    b.env["PYTHONPATH"] = os.fspath(REPO)
    with S3Server(python=b.python) as srv:
        b.s3 = srv
        for kind in a.kinds.split(","):
            for name in ("S", "L"):
                if name not in only:
                    continue
                fs = sets[name]
                _log(f"generating {fs.describe()}")
                src = workload.generate(fs, base)
                b.data_rows(kind, fs, src)
                if name == "L":
                    b.baseline_rows(kind, fs, src)
            if "exp" in only:
                b.exp_rows(kind)
    load = os.getloadavg()
    head = (f"- Date: {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC; "
            f"`python -m bench.remotebench {' '.join(argv or sys.argv[1:])}` took "
            f"{time.perf_counter() - t0:.0f} s; {os.cpu_count()} cores, load at the end "
            f"{load[0]:.2f}/{load[1]:.2f}/{load[2]:.2f} (shared machine: preliminary figures)\n"
            f"- Tools: tally (this checkout's CLI); DVC "
            f"{DVC_VERSION if b.dvc else 'unavailable'} with dvc-s3; Python {platform.python_version()}\n"
            f"- Data: S = {sets['S'].describe()}; L = {sets['L'].describe()}; experiment output "
            f"{EXP_MIB} MiB. Median of {reps} (tools alternating); S3 = moto in its own process.\n"
            f"- Baseline: `cp -r` (dir) or a boto3 upload_file/download_file loop (s3)\n\n")
    text = head + b.table()
    sys.stdout.write(text)
    if a.append:
        with open(HERE / "RESULTS.md", "a", encoding="utf-8") as f:
            f.write(f"\n## {a.append}\n\n{text}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
