"""A live directory's files as tally reads them, and the runner's contract with a stage.

The layout (dvclive's, spec/live.md) and the environment a stage is started with are
named here once; the readers serve `tally run` (the checkpoints a stage appended),
`tally show` and `tally queue status` (what a running experiment has logged so far).
cas.live holds the writing side, the `Live` API a training script imports, and
re-exports these readers as part of that API.

Split from cas.live so that `tally run`, which only needs the names and
read_checkpoints, does not import the writer (and `json`) on every run: its
start-up budget is 100 ms.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Iterable

from cas.core.errors import UsageError

DEFAULT_DIR = "tally-live"
SUMMARY_FILE = "metrics.json"
PARAMS_FILE = "params.yaml"
PLOTS_DIR = ("plots", "metrics")
TSV_SUFFIX = ".tsv"
STEP_KEY = "step"
# log_metric refreshes metrics.json at most this often (next_step and end always do):
# a per-batch logger calling it 10^5 times must not pay a rename each time.
SUMMARY_INTERVAL = 0.5  # seconds

# The contract with the runner (cas/pipeline/runner.py sets these for every stage it starts).
ENV_RUN_DIR = "TALLY_ROOT"  # the run's workspace root (set by cas.pipeline.runner): checkpoint paths are relative to it
ENV_STORE = "TALLY_STORE"  # the `.tally` directory of the store to write checkpoints into
ENV_CHECKPOINTS = "TALLY_CHECKPOINTS"  # the file `<step>\t<tree>` lines are appended to
ENV_EXP = "TALLY_EXP_NAME"  # the experiment's name
ENV_RESUME_STEP = "TALLY_RESUME_STEP"  # set by `tally run --resume`: the step restored
# A checkpoint waits this long for the store lock (a gc's pass B holds it exclusive).
CHECKPOINT_LOCK_WAIT = 3600.0  # seconds


def read_summary(live_dir: Path) -> dict[str, Any] | None:
    """The parsed metrics.json of `live_dir`, or None when absent or unreadable."""
    import json  # only `show` and `queue status` read summaries
    try:
        doc = json.loads((Path(live_dir) / SUMMARY_FILE).read_bytes())
    except (OSError, ValueError):
        return None
    return doc if isinstance(doc, dict) else None


def read_history(live_dir: Path, name: str) -> list[tuple[int, float | int]]:
    """The (step, value) rows of metric `name`; a last line without newline is ignored."""
    parts = _split_name(name)
    path = Path(live_dir).joinpath(*PLOTS_DIR, *parts[:-1], parts[-1] + TSV_SUFFIX)
    try:
        data = path.read_text("utf-8")
    except (OSError, UnicodeDecodeError):
        return []
    lines = data.split("\n")[:-1]  # the piece after the last "\n" is unfinished
    if not lines:
        return []
    cols = lines[0].split("\t")
    try:
        si, vi = cols.index(STEP_KEY), len(cols) - 1
    except ValueError:
        return []
    rows = []
    for ln in lines[1:]:
        cells = ln.split("\t")
        if len(cells) != len(cols):
            continue
        try:
            rows.append((int(cells[si]), _parse_num(cells[vi])))
        except ValueError:
            continue
    return rows


def read_checkpoints(path: Path) -> list[tuple[int, str]]:
    """The (step, tree id) pairs of a checkpoints file, one per step (the last line for
    a step wins), sorted by step; malformed or unfinished lines are skipped."""
    from cas.core.hashing import is_oid
    try:
        data = Path(path).read_text("ascii", errors="replace")
    except OSError:
        return []
    by_step: dict[int, str] = {}
    for ln in data.split("\n")[:-1]:
        step, _, oid = ln.partition("\t")
        if step.isdigit() and is_oid(oid):
            by_step[int(step)] = oid
    return sorted(by_step.items())


def find_live_dirs(run_dir: Path, *, extra: Iterable[str] = ()) -> list[str]:
    """Live directories in `run_dir`: those of `extra` (paths relative to it) plus every
    top-level directory holding a metrics.json (a live directory may have no history
    yet). Only the top level is scanned: one stat per directory there, never a walk of
    a large data directory; pass nested live directories in `extra`."""
    run_dir = Path(run_dir)
    found: list[str] = [e for e in dict.fromkeys(extra) if (run_dir / e / SUMMARY_FILE).is_file()]
    try:
        it = os.scandir(run_dir)
    except OSError:
        return sorted(found)
    with it:
        for ent in it:
            if ent.name.startswith(".") or ent.name in found or not ent.is_dir(follow_symlinks=False):
                continue
            if os.path.isfile(os.path.join(ent.path, SUMMARY_FILE)):
                found.append(ent.name)
    return sorted(found)


def read_live(run_dir: str | os.PathLike[str], *, live_dirs: Iterable[str] = (),
              checkpoints: str | os.PathLike[str] | None = None) -> dict[str, Any]:
    """Everything live about the run in `run_dir`, for `tally show` and `queue status`.

    Args:
        live_dirs: live directories to read (relative to run_dir); others are found
            by find_live_dirs.
        checkpoints: the run's checkpoints file, if known.
    Returns:
        {"step": latest step of any live dir or None, "updated": newest summary mtime
         (unix seconds) or None, "metrics": {"<dir>/metrics.json": summary without
         "step"}, "params": {"<dir>/params.yaml": params}, "checkpoints": [[step, tree]]}.
        Never raises for missing or half-written files: they are simply absent.
    """
    run_dir = Path(run_dir)
    out: dict[str, Any] = {"step": None, "updated": None, "metrics": {}, "params": {},
                           "checkpoints": []}
    for d in find_live_dirs(run_dir, extra=live_dirs):
        live = run_dir / d
        doc = read_summary(live)
        if doc is None:
            continue
        step = doc.pop(STEP_KEY, None)
        if type(step) is int and (out["step"] is None or step > out["step"]):
            out["step"] = step
        out["metrics"][f"{d}/{SUMMARY_FILE}"] = doc
        try:
            mtime = (live / SUMMARY_FILE).stat().st_mtime
            out["updated"] = max(out["updated"] or 0.0, mtime)
        except OSError:
            pass
        try:
            from ruamel.yaml import YAML
            params = YAML(typ="safe", pure=True).load((live / PARAMS_FILE).read_text())
            if isinstance(params, dict):
                out["params"][f"{d}/{PARAMS_FILE}"] = params
        except Exception:  # noqa: BLE001 - absent or being replaced: skip
            pass
    if checkpoints is not None:
        out["checkpoints"] = [[s, t] for s, t in read_checkpoints(Path(checkpoints))]
    return out


# ---------------------------------------------------------------- helpers

def _split_name(name: str) -> list[str]:
    parts = name.split("/") if isinstance(name, str) else []
    if not parts or any(p in ("", ".", "..") or "\0" in p or "\t" in p or "\n" in p for p in parts):
        raise UsageError(f"bad metric name {name!r}",
                         hint="use names like 'loss' or 'train/loss' (no empty parts, '..', tabs)")
    return parts


def _parse_num(text: str) -> float | int:
    try:
        return int(text)
    except ValueError:
        return float(text)


__all__ = ["read_live", "read_summary", "read_history", "read_checkpoints", "find_live_dirs",
           "DEFAULT_DIR", "SUMMARY_FILE", "PARAMS_FILE", "PLOTS_DIR", "TSV_SUFFIX", "STEP_KEY",
           "ENV_RUN_DIR", "ENV_STORE", "ENV_CHECKPOINTS", "ENV_EXP", "ENV_RESUME_STEP",
           "CHECKPOINT_LOCK_WAIT", "SUMMARY_INTERVAL"]
