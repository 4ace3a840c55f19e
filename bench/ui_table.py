"""The UI's table endpoint with N experiments: ``python -m bench.ui_table [--count N]``.

DESIGN.md's row "UI table, 10,000 experiments": the first page in under 1 s, sorting
and filtering answered in under 300 ms server-side (issue 16). DVC has no local UI
(Studio is hosted), so there is no DVC column.

Setup (untimed): a project with the E pipeline's shape (bench.workload), one real
`tally run`, then N-1 clones of it (bench.tally_clone, as the exp-show rows do). Then
`tally ui --no-browser` (cas.ui.app.serve: a real uvicorn process on a loopback port) is
started, and each request below is timed from the client (wall, loopback HTTP) and by
the server itself (its `Server-Timing` header):

- ``first page, cold``: the first request after the server started: the listing
  is read from the summary index (built by a `tally show` before, as a user's
  earlier look at the table would have), one sample;
- ``first page``: the same request again (the server keeps its listing);
- ``sort``: by a metric, descending; ``filter``: a comparison on a metric;
  ``filter + sort``: both; each a different query, so nothing is cached but the
  listing; ``page 50``: offset 4,900 of the sorted rows.

Each non-cold row is the median of ``--reps`` requests. With ``--append TEXT`` the
table is appended to bench/RESULTS.md as a dated section, like bench.run's.
"""

from __future__ import annotations

import argparse
import datetime
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
RESULTS = REPO / "bench" / "RESULTS.md"
GOALS = {"first page, cold": 1.0, "first page": 1.0, "sort": 0.3, "filter": 0.3,
         "filter + sort": 0.3, "page 50": 0.3}
QUERIES = [
    ("first page", {}),
    ("sort", {"sort": "metrics.json:acc:desc"}),
    ("filter", {"filter": "acc > 0.5"}),
    ("filter + sort", {"filter": "acc > 0.25 and lr < 0.05", "sort": "lr:asc"}),
    ("page 50", {"sort": "metrics.json:acc:desc", "offset": 4900}),
]

TRAIN = """\
import json
params = dict(l.split(": ") for l in open("params.yaml").read().splitlines() if l)
open("model.bin", "wb").write(b"m" * 1024)
json.dump({"acc": 0.5, "loss": 0.5}, open("metrics.json", "w"))
"""


def _run(args: list[str], cwd: Path, env: dict[str, str]) -> str:
    res = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True)
    if res.returncode != 0:
        raise SystemExit(f"{' '.join(args)} failed:\n{res.stdout}\n{res.stderr}")
    return res.stdout


def make_project(root: Path, count: int, env: dict[str, str]) -> None:
    root.mkdir(parents=True)
    (root / "train.py").write_text(TRAIN)
    (root / "params.yaml").write_text("lr: 0.5\n")
    (root / "dvc.yaml").write_text(
        f"stages:\n  train:\n    cmd: {sys.executable} train.py\n    deps: [train.py]\n"
        "    params: [lr]\n    outs: [model.bin]\n    metrics: [metrics.json]\n")
    (root / ".gitignore").write_text("/model.bin\n/metrics.json\n")
    tally = [sys.executable, "-m", "cli"]
    _run(["git", "init", "-q"], root, env)
    _run(["git", "add", "-A"], root, env)
    _run(["git", "commit", "-qm", "bench"], root, env)
    _run([*tally, "init"], root, env)
    _run([*tally, "run", "-q", "-S", "lr=0.5"], root, env)
    head = _run(["git", "rev-parse", "HEAD"], root, env).strip()
    _run([sys.executable, "-m", "bench.tally_clone", str(root), head, str(count - 1)], REPO,
         {**env, "PYTHONPATH": str(REPO)})
    _run([*tally, "show", "--all", "--json"], root, env)  # builds the summary index


def start(root: Path, env: dict[str, str]) -> tuple[subprocess.Popen, str]:
    proc = subprocess.Popen([sys.executable, "-m", "cli", "ui", "--no-browser"], cwd=root, env=env,
                            text=True, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE)
    assert proc.stderr is not None
    for line in proc.stderr:
        m = re.search(r"(http://\S+)", line)
        if m:
            return proc, m.group(1)
    raise SystemExit("the server printed no URL")


def fetch(url: str, token: str, query: dict) -> tuple[float, float]:
    """(client wall seconds, server seconds) of one /api/table request."""
    qs = urllib.parse.urlencode({**query, "token": token})
    t0 = time.perf_counter()
    with urllib.request.urlopen(f"{url}/api/table?{qs}", timeout=60) as r:
        r.read()
        timing = r.headers.get("Server-Timing", "")
    wall = time.perf_counter() - t0
    m = re.search(r"dur=([0-9.]+)", timing)
    return wall, (float(m.group(1)) / 1000 if m else float("nan"))


def measure(count: int, reps: int, work: Path) -> list[tuple[str, float, float, int]]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TALLY_")}
    env.update(GIT_AUTHOR_NAME="bench", GIT_AUTHOR_EMAIL="b@example.com",
               GIT_COMMITTER_NAME="bench", GIT_COMMITTER_EMAIL="b@example.com")
    root = work / "ui-table"
    print(f"bench: ui-table: creating {count:,} experiments (untimed)", file=sys.stderr)
    make_project(root, count, env)
    proc, url = start(root, env)
    try:
        base, token = url.split("/?token=")
        rows = []
        wall, server = fetch(base, token, {})
        rows.append(("first page, cold", wall, server, 1))
        for label, query in QUERIES:
            samples = [fetch(base, token, query) for _ in range(reps)]
            rows.append((label, statistics.median(s[0] for s in samples),
                         statistics.median(s[1] for s in samples), reps))
        return rows
    finally:
        proc.terminate()
        proc.wait(10)


def table(rows: list[tuple[str, float, float, int]], count: int) -> str:
    out = ["| request (10,000 experiments)".replace("10,000", f"{count:,}") +
           " | client wall s | server s | samples | goal | goal |", "|---|---:|---:|---:|---|---|"]
    for label, wall, server, n in rows:
        goal = GOALS[label]
        measured = server if label not in ("first page, cold", "first page") else wall
        verdict = "met" if measured <= goal else "not met"
        which = "server" if label not in ("first page, cold", "first page") else "wall"
        out.append(f"| {label} | {wall:.3f} | {server:.3f} | {n} | <= {goal} s ({which}) | {verdict} |")
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="bench.ui_table", description=__doc__.splitlines()[0])
    ap.add_argument("--count", type=int, default=10_000)
    ap.add_argument("--reps", type=int, default=9)
    ap.add_argument("--append", metavar="TEXT", help="append the table to bench/RESULTS.md under TEXT")
    args = ap.parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="tally-bench-ui-"))
    try:
        t0 = time.time()
        rows = measure(args.count, args.reps, work)
        text = table(rows, args.count)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(text)
    if args.append:
        load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
        date = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
        with open(RESULTS, "a") as f:
            f.write(f"\n## {args.append}\n\nProduced by `bench/ui_table.py` (see its docstring). Only measured "
                    f"figures.\n\n- Date: {date}\n- Command: `python -m bench.ui_table --count {args.count} "
                    f"--reps {args.reps}` (took {time.time() - t0:.0f} s)\n- Machine: {os.cpu_count()} cores, "
                    f"load average at the end {load}\n- Client wall: the HTTP request over loopback; server: "
                    f"the endpoint's own `Server-Timing`. The first page's goal is on the wall time, "
                    f"sort and filter's on the server's.\n\n{text}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
