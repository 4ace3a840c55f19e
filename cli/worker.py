"""`python -m cli.worker --root ROOT [--keep-alive] [-j SLOTS]`: one detached queue worker.

`tally queue start` launches this (cas/workers/supervisor.py, spawn) in a new session with its
stdout and stderr going to `.tally/queue/workers/*.log`; so everything said here is
the worker's own log, one timestamped line per event. The worker itself (claiming,
executors, heartbeats) is cas.workers.supervisor.Worker; this module only parses and reports.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

# The command cas.workers.supervisor.spawn runs for each worker: the same interpreter, this module.
LAUNCHER = (sys.executable, "-m", "cli.worker")


def main(argv: list[str] | None = None) -> int:
    from cas.workspace.project import open_project
    from cas.workers.supervisor import Worker

    ap = argparse.ArgumentParser(prog="cli.worker", description=__doc__.splitlines()[0])
    ap.add_argument("--root", required=True, help="the project's root directory")
    ap.add_argument("--keep-alive", action="store_true",
                    help="keep waiting for new entries until `tally queue stop`")
    ap.add_argument("-j", "--slots", type=int, default=1, help="runs at a time")
    args = ap.parse_args(argv)
    project = open_project(Path(args.root))

    def say(msg: str) -> None:
        print(f"{time.strftime('%H:%M:%S')} [{os.getpid()}] {msg}", flush=True)

    w = Worker(project, slots=args.slots, keep_alive=args.keep_alive, notify=say)
    say(f"worker {w.wid} started")
    stats = w.run()
    say(f"worker {w.wid} exiting: {len(stats.done)} done, {len(stats.failed)} failed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
