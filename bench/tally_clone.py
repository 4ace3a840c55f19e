"""Clone one real tally experiment N times: the tally half of the exp-show-N setup.

``python -m bench.tally_clone PROJECT BASELINE COUNT`` (run by ``experiments`` as a
child, with this checkout's interpreter, so the harness never imports ``cas``).

The DVC half clones a real ``dvc exp run`` with ``git fast-import``; this is the same
for tally, through its own library: the one experiment recorded on BASELINE is loaded
and re-recorded COUNT times with another name, ``lr`` param, metrics and creation
time, each stored with ``cas.objects.record.put`` and named with ``cas.store.refs.update``, exactly
the calls ``tally run`` makes. Creating 10,000 experiments by running them would take
hours here; ``show`` only reads records, so clones exercise it the same way.

Exit status 0 on success; 3 when BASELINE has no experiment to clone; any other
failure (the cas API changed under us) propagates with its traceback.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path


def clone(project_dir: Path, baseline: str, count: int) -> int:
    """Record ``count`` clones of the experiment on ``baseline``; return how many."""
    from cas.objects import record
    from cas.store import refs
    from cas.workspace.project import open_project

    project = open_project(project_dir)
    existing = refs.list_refs(project, baseline)
    if not existing:
        return -1
    _, _, oid = existing[0]
    real = record.load(project.store, oid)
    params_file = next(iter(real.params), "params.yaml")
    metrics_file = next(iter(real.metrics), "metrics.json")
    now = time.time_ns()
    for i in range(count):
        lr = round((i + 1) * 1e-5, 8)
        rec = real._replace(
            name=f"bench-{i:05d}",
            created=now - (count - i) * 1_000_000,  # distinct, recent, in order
            params={**real.params, params_file: {**real.params.get(params_file, {}),
                                                 "lr": lr}},
            metrics={**real.metrics, metrics_file: {"loss": round(1 / (1 + 3 * lr), 6),
                                                    "acc": round(i / count, 6)}})
        refs.update(project, baseline, rec.name, record.put(project.store, rec), None)
    return count


def main(argv: list[str]) -> int:
    project_dir, baseline, count = Path(argv[0]), argv[1], int(argv[2])
    done = clone(project_dir, baseline, count)
    if done < 0:
        print(f"no experiment on baseline {baseline} to clone", file=sys.stderr)
        return 3
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
