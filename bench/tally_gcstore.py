"""Clone tally's real gc experiment into N-1 experiments with their own outputs.

``python -m bench.tally_gcstore PROJECT BASELINE EXPERIMENTS FILES FILE_SIZE KEEP``
(run by ``gcbench`` as a child with this checkout's interpreter, so the harness
never imports ``cas``). The tally half of the gc setup; the DVC half writes DVC's
cache and ``git fast-import``s commits in ``gcbench``.

The experiment ``real`` on BASELINE (made by ``tally run``) is the template. Clone
``i`` gets what ``tally run -S seed=<s> -S acc=<a>`` would have stored: its own
``out/`` tree of FILES blobs (``gcworkload.file_bytes``), metrics.json and
params.yaml blobs, a tally.lock blob naming those, a workspace tree with the four
entries replaced, and a record (other params, metrics, outs, workspace, created),
named by a ref: the calls ``tally run`` makes (``Writer.put_bytes``,
``tree.encode``, ``record.put``, ``refs.update``). Everything is written through
one Writer, flushed every CHUNK experiments (objects durable before their refs).

Prints one JSON line: ``{"clones": n, "objects_per_clone": k}`` where k counts the
distinct objects one clone adds (FILES + 6).
"""

from __future__ import annotations

import json
import re
import sys
import time
from pathlib import Path

CHUNK = 100  # experiments per Writer flush: bounded memory, few barriers


def _sub_param(text: str, key: str, value: object) -> str:
    """``key: <old>`` -> ``key: <value>`` on every line naming the param."""
    return re.sub(rf"(?m)^(\s*){re.escape(key)}: .*$", rf"\g<1>{key}: {value}", text)


def clone(project_dir: Path, baseline: str, spec) -> dict[str, int]:
    from cas.objects import record
    from cas.store import refs
    from cas.objects import tree
    from cas.workspace.project import open_project

    from bench import gcworkload as g

    project = open_project(project_dir)
    found = [r for r in refs.list_refs(project, baseline) if r[1] == g.REAL]
    if not found:
        raise SystemExit(f"no experiment {g.REAL!r} on baseline {baseline}")
    real = record.load(project.store, found[0][2])
    ws = tree.decode(project.store.get(real.workspace))
    real_out = ws.get("out")
    real_metrics = ws.get("metrics.json")
    lock_entry = ws.get("tally.lock")
    lock_text = project.store.get(lock_entry.oid).decode()
    names = g.file_names(spec)
    now = time.time_ns()
    per_clone = spec.files + 6  # blobs, out tree, metrics, params, lock, ws tree, record
    done = 0
    for start in range(0, spec.clones, CHUNK):
        made = []
        with project.store.writer() as w:
            for i in range(start, min(start + CHUNK, spec.clones)):
                entries = [tree.Entry(n, tree.FILE, w.put_bytes(g.file_bytes(spec, i, j)),
                                      spec.file_size, 0o644)
                           for j, n in enumerate(names)]
                out_t = tree.make(entries, subtree_files={}, names_checked=True)
                out_oid = w.put_bytes(tree.encode(out_t), compress=True)
                params = g.clone_params(spec, i)
                metrics = g.metrics_text(params["acc"]).encode()
                metrics_oid = w.put_bytes(metrics)
                params_bytes = g.params_text(params).encode()
                params_oid = w.put_bytes(params_bytes)
                lock = lock_text.replace(real_out.oid, out_oid).replace(
                    real_metrics.oid, metrics_oid)
                for key in ("seed", "acc"):
                    lock = _sub_param(lock, key, params[key])
                lock_bytes = lock.encode()
                lock_oid = w.put_bytes(lock_bytes)
                repl = {
                    "out": tree.Entry("out", tree.DIR, out_oid, out_t.total_bytes, 0),
                    "metrics.json": tree.Entry("metrics.json", tree.FILE, metrics_oid,
                                               len(metrics), 0o644),
                    "params.yaml": tree.Entry("params.yaml", tree.FILE, params_oid,
                                              len(params_bytes), 0o644),
                    "tally.lock": tree.Entry("tally.lock", tree.FILE, lock_oid,
                                             len(lock_bytes), 0o644),
                }
                ws_entries = [repl.get(e.name, e) for e in ws.entries]
                ws_t = tree.make(ws_entries, subtree_files={"out": out_t.total_files},
                                 names_checked=True)
                ws_oid = w.put_bytes(tree.encode(ws_t), compress=True)
                params_file = next(iter(real.params), "params.yaml")
                metrics_file = next(iter(real.metrics), "metrics.json")
                rec = real._replace(
                    name=g.clone_name(i), created=now - (spec.clones - i) * 1_000_000,
                    workspace=ws_oid, outs={**real.outs, "out": (out_oid, True)},
                    params={**real.params, params_file: params},
                    metrics={**real.metrics, metrics_file: {"acc": params["acc"]}})
                made.append((rec.name, record.put(w, rec)))
        for name, oid in made:  # after the flush: objects are durable before refs
            refs.update(project, baseline, name, oid, None)
            done += 1
    return {"clones": done, "objects_per_clone": per_clone}


def main(argv: list[str]) -> int:
    from bench.gcworkload import GcSpec

    project_dir, baseline = Path(argv[0]), argv[1]
    experiments, files, file_size, keep = map(int, argv[2:6])
    spec = GcSpec(experiments=experiments, files=files, file_size=file_size, keep=keep)
    print(json.dumps(clone(project_dir, baseline, spec)))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
