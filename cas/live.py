"""Live metrics: a small logging API writing plain files in dvclive's layout (spec/live.md).

    <dir>/metrics.json              summary: the latest value of every metric, plus "step"
    <dir>/plots/metrics/<name>.tsv  history: header "step\\t<leaf>", one row per log_metric
    <dir>/params.yaml               params logged with log_param (YAML block style)

Any language can write the same files; tally only reads them. Names with "/" nest:
`train/loss` is `plots/metrics/train/loss.tsv` (header `step\\tloss`) and
`{"train": {"loss": ...}}` in the summary, as dvclive does.

Write rules, so a reader never sees a torn file: metrics.json and params.yaml are
replaced whole (temp file in the same directory, then rename); a TSV is only ever
appended to, one whole row per write(2), and readers ignore a last line that has no
newline yet (a row being written). Rewriting a history per step would cost O(steps)
per step; appending keeps a 100k-step run linear.

Under tally (the runner sets TALLY_ROOT, TALLY_STORE and TALLY_CHECKPOINTS; see
ENV_* below), `checkpoint(paths)` stores the named outputs, plus this live directory,
as one tree in the store and appends `<step>\\t<tree id>` to the checkpoints file,
which the runner folds into the experiment record. The tree is durable before the
line is written, so a line never names a missing tree. Outside tally it only writes
the summary and returns None, so a script runs the same way everywhere.

This module imports nothing heavy at load: a training script pays for the store
(zstd, sqlite) only when it first checkpoints.
"""

from __future__ import annotations

import json
import math
import os
import time
from pathlib import Path
from typing import Any, Iterable

from cas.core.errors import UsageError
# The layout, the runner's contract and the readers live in cas.pipeline.livefiles (the run
# path imports only that); they are part of this module's API as well.
from cas.pipeline.livefiles import CHECKPOINT_LOCK_WAIT, DEFAULT_DIR, ENV_CHECKPOINTS, ENV_EXP, ENV_RESUME_STEP, ENV_RUN_DIR, ENV_STORE, PARAMS_FILE, PLOTS_DIR, STEP_KEY, SUMMARY_FILE, SUMMARY_INTERVAL, TSV_SUFFIX, _split_name, find_live_dirs, read_checkpoints, read_history, read_live, read_summary
from cas.core.fsops import unlink_quiet


class Live:
    """Log metrics and params of one run into `dir`; usable as a context manager.

    Args:
        dir: where the files go (relative to the current directory).
        resume: keep the existing files and continue after the step in metrics.json.
            None (the default) resumes exactly when tally restored a checkpoint for
            this run (`tally run --resume`), and starts afresh otherwise.
    Attributes:
        step: the current step; log_metric rows and checkpoints are at this step.
        summary: the latest value per metric (nested by "/"), plus "step".
        resumed: True when the run continues an earlier one.
    """

    def __init__(self, dir: str | os.PathLike[str] = DEFAULT_DIR, *,
                 resume: bool | None = None) -> None:
        self.dir = Path(dir)
        self.summary: dict[str, Any] = {}
        self.params: dict[str, Any] = {}
        self.resumed = False
        self._last_summary = 0.0
        self._logged = False  # a value was logged at the current step
        if resume is None:
            resume = bool(os.environ.get(ENV_RESUME_STEP))
        self.step = 0
        if resume and (self.dir / SUMMARY_FILE).is_file():
            self._resume()
        else:
            if self.dir.exists():
                # As dvclive: a fresh run does not inherit an old run's history.
                for name in (SUMMARY_FILE, PARAMS_FILE):
                    unlink_quiet(self.dir / name)
                import shutil  # here: the training script's import of cas.live stays lean
                shutil.rmtree(self.dir.joinpath(*PLOTS_DIR), ignore_errors=True)
            self.dir.mkdir(parents=True, exist_ok=True)

    # -- logging -----------------------------------------------------------------------
    def log_metric(self, name: str, value: float | int, *, timestamp: bool = False) -> None:
        """Append `value` at the current step to `name`'s history and the summary.

        Args:
            name: "loss" or nested "train/loss".
            value: an int or float (bools and other types are refused).
            timestamp: also write a `timestamp` column (milliseconds since the epoch);
                it applies from the file's first row on.
        Raises:
            UsageError: a bad name or a non-numeric value.
        """
        parts = _split_name(name)
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise UsageError(f"metric {name!r}: {value!r} is not a number",
                             hint="log ints or floats; use log_param for other values")
        path = self.dir.joinpath(*PLOTS_DIR, *parts[:-1], parts[-1] + TSV_SUFFIX)
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            header = ("timestamp\t" if timestamp else "") + f"{STEP_KEY}\t{parts[-1]}\n"
            _append(path, header)
            with_ts = timestamp
        else:
            with_ts = _has_timestamp(path)
        row = f"{self.step}\t{_fmt(value)}\n"
        if with_ts:
            row = f"{int(time.time() * 1000)}\t{row}"
        _append(path, row)
        node = self.summary
        for p in parts[:-1]:
            child = node.get(p)
            if not isinstance(child, dict):
                child = node[p] = {}
            node = child
        node[parts[-1]] = value
        self._logged = True
        if time.monotonic() - self._last_summary >= SUMMARY_INTERVAL:
            self.make_summary()

    def log_param(self, name: str, value: Any) -> None:
        """Record one param (int, float, str, bool, None, list or dict) in params.yaml."""
        self.log_params({name: value})

    def log_params(self, params: dict[str, Any]) -> None:
        """Record several params at once (one rewrite of params.yaml)."""
        for k, v in params.items():
            if not isinstance(k, str) or not k:
                raise UsageError(f"param name {k!r} must be a non-empty string")
            _check_param(k, v)
            self.params[k] = v
        from ruamel.yaml import YAML  # only scripts that log params pay for it
        import io
        buf = io.StringIO()
        yaml = YAML(typ="safe", pure=True)
        yaml.default_flow_style = False
        yaml.dump(self.params, buf)
        _replace(self.dir / PARAMS_FILE, buf.getvalue().encode("utf-8"))

    def next_step(self) -> None:
        """Close the current step: write the summary at it, then move to the next."""
        self.make_summary()
        self.step += 1
        self._logged = False

    def make_summary(self) -> None:
        """Write metrics.json now (atomically).

        Its "step" is the step of the latest values: the current step once something
        was logged at it, else the one before (after next_step, nothing is new yet), so
        a resumed run continues right after the last step that has values.
        """
        doc = dict(self.summary)
        doc[STEP_KEY] = self.step if self._logged or self.step == 0 else self.step - 1
        _replace(self.dir / SUMMARY_FILE, json.dumps(_finite(doc), indent=4).encode("utf-8") + b"\n")
        self._last_summary = time.monotonic()

    def end(self) -> None:
        """Write the final summary (also done on leaving a `with` block)."""
        self.make_summary()

    def __enter__(self) -> "Live":
        return self

    def __exit__(self, *exc: object) -> None:
        self.end()

    # -- checkpoints -----------------------------------------------------------------------
    def checkpoint(self, paths: str | os.PathLike[str] | Iterable[str | os.PathLike[str]]) -> str | None:
        """Store `paths` (files or directories) and this live directory at the current step.

        Returns the checkpoint's tree id, or None when not running under tally (the
        summary is still written). Checkpointing the same step twice keeps the later one.
        Raises:
            UsageError: a path outside the run directory. NotFound: a missing path.
        """
        self.make_summary()
        env = _tally_env()
        if env is None:
            return None
        run_dir, store_dir, ckpt_file = env
        if isinstance(paths, (str, os.PathLike)):
            paths = [paths]
        rels = [_rel_to(run_dir, Path(p)) for p in paths]
        rels.append(_rel_to(run_dir, self.dir))
        oid = store_paths(store_dir, run_dir, rels)
        line = f"{self.step}\t{oid}\n"
        fd = os.open(ckpt_file, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        try:
            os.write(fd, line.encode("ascii"))
            os.fsync(fd)
        finally:
            os.close(fd)
        return oid

    # -- internals ---------------------------------------------------------------------
    def _resume(self) -> None:
        try:
            doc = json.loads((self.dir / SUMMARY_FILE).read_text())
        except (OSError, ValueError):
            doc = {}
        step = doc.pop(STEP_KEY, None) if isinstance(doc, dict) else None
        self.summary = doc if isinstance(doc, dict) else {}
        if type(step) is int and step >= 0:
            # The summary was written at `step` (next_step writes, then moves on), so
            # the run continues at the step after it, as dvclive's resume does.
            self.step = step + 1
        try:
            from ruamel.yaml import YAML
            loaded = YAML(typ="safe", pure=True).load((self.dir / PARAMS_FILE).read_text())
            if isinstance(loaded, dict):
                self.params = loaded
        except (OSError, Exception):  # noqa: BLE001 - params are best effort on resume
            pass
        self.resumed = True


# ---------------------------------------------------------------- storing checkpoints

def store_paths(store_dir: Path, run_dir: Path, rels: list[str]) -> str:
    """Store the files/directories `rels` (POSIX, relative to `run_dir`) as one tree.

    Returns the id of a tree rooted at `run_dir` holding exactly those paths (and the
    directories leading to them). Blobs, then subtrees, then the root are published in
    that order by one Writer, so the id returned names only durable objects.

    The runner does not hold the store lock while its stage runs, so this takes it
    shared for the burst, and names every object it puts or reuses in the runner's
    in-flight file (ENV_INFLIGHT) before the lock is let go: gc keeps them until the
    runner has recorded the experiment (spec/live.md).
    """
    from cas.store import config as config_mod
    from cas.objects import tree
    from cas.workspace import snapshot as workspace
    from cas.store.inflight import ENV_INFLIGHT, InFlight
    from cas.workspace.project import Project

    project = Project(root=Path(store_dir).parent, config=config_mod.load(Path(store_dir) / "config"))
    rels = sorted(set(rels))
    # A path inside another listed path is already covered by it.
    kept = [r for r in rels if not any(r != o and (o == "." or r.startswith(o + "/")) for o in rels)]
    runner_file = os.environ.get(ENV_INFLIGHT)
    # The runner's file when it is there; else one of our own (no runner left to
    # record the checkpoint: it only has to survive until this put is done).
    inflight = (InFlight.attach(runner_file) if runner_file else None) or True
    with project.lock("store", shared=True, timeout=CHECKPOINT_LOCK_WAIT,
                      purpose="tally checkpoint"), \
            project.store.writer(inflight=inflight) as w:
        snaps = {r: workspace.snapshot(run_dir / r if r != "." else run_dir,
                                       statcache=project.statcache, writer=w) for r in kept}
        if "." in snaps:
            snap = snaps["."]
            if not snap.is_dir:
                raise UsageError("the run directory itself must be a directory")
            w.keep(snap.oid)  # a directory memo hit is not put: name it anyway
            return snap.oid
        root: dict[str, Any] = {}
        for r, s in snaps.items():
            node = root
            parts = r.split("/")
            for p in parts[:-1]:
                node = node.setdefault(p, {})
            node[parts[-1]] = s

        def build(node: dict[str, Any]) -> tuple[str, int, int]:
            entries, sub_files = [], {}
            for name, v in node.items():
                if isinstance(v, dict):
                    oid, nbytes, nfiles = build(v)
                    entries.append(tree.Entry(name, tree.DIR, oid, nbytes, 0))
                    sub_files[name] = nfiles
                elif v.is_dir:
                    entries.append(tree.Entry(name, tree.DIR, v.oid, v.size, 0))
                    sub_files[name] = v.files
                else:
                    entries.append(tree.Entry(name, tree.FILE, v.oid, v.size, v.mode))
            t = tree.make(entries, subtree_files=sub_files)
            return w.put_bytes(tree.encode(t), compress=True), t.total_bytes, t.total_files

        oid, _, _ = build(root)
    project.statcache.close()
    return oid


# ---------------------------------------------------------------- helpers

def _tally_env() -> tuple[Path, Path, Path] | None:
    run_dir = os.environ.get(ENV_RUN_DIR)
    store = os.environ.get(ENV_STORE)
    ckpt = os.environ.get(ENV_CHECKPOINTS)
    if not (run_dir and store and ckpt):
        return None
    return Path(run_dir).resolve(), Path(store), Path(ckpt)


def _rel_to(run_dir: Path, p: Path) -> str:
    absolute = Path(os.path.normpath(Path.cwd() / p)).resolve() if not p.is_absolute() else p.resolve()
    try:
        rel = absolute.relative_to(run_dir)
    except ValueError:
        raise UsageError(f"checkpoint path {p} is outside the run directory {run_dir}",
                         path=p) from None
    return rel.as_posix() if rel.parts else "."


def _fmt(v: float | int) -> str:
    if isinstance(v, int):
        return str(v)
    return repr(float(v)) if math.isfinite(v) else ("nan" if math.isnan(v) else ("inf" if v > 0 else "-inf"))


def _finite(node: Any) -> Any:
    """JSON has no NaN or infinity: such values are written as null in the summary."""
    if isinstance(node, dict):
        return {k: _finite(v) for k, v in node.items()}
    if isinstance(node, float) and not math.isfinite(node):
        return None
    return node


def _check_param(name: str, v: Any, depth: int = 0) -> None:
    if depth > 32:
        raise UsageError(f"param {name!r} is nested too deeply")
    if v is None or isinstance(v, (bool, int, float, str)):
        return
    if isinstance(v, (list, tuple)):
        for x in v:
            _check_param(name, x, depth + 1)
        return
    if isinstance(v, dict):
        for k, x in v.items():
            if not isinstance(k, str):
                raise UsageError(f"param {name!r}: key {k!r} is not a string")
            _check_param(name, x, depth + 1)
        return
    raise UsageError(f"param {name!r}: a {type(v).__name__} cannot be logged",
                     hint="params are int, float, str, bool, None, list or dict")


def _has_timestamp(path: Path) -> bool:
    try:
        with open(path, "rb") as f:
            return f.readline().startswith(b"timestamp\t")
    except OSError:
        return False


def _append(path: Path, text: str) -> None:
    # O_APPEND + one write(2): rows never interleave, and a reader sees whole rows or
    # an unfinished last line, which read_history ignores.
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    try:
        data = text.encode("utf-8")
        n = os.write(fd, data)
        while n < len(data):
            n += os.write(fd, data[n:])
    finally:
        os.close(fd)


def _replace(path: Path, data: bytes) -> None:
    from cas.core.fsops import atomic_write
    # Not fsync'ed: a live summary lost to a power cut is rewritten at the next step,
    # and a per-step fsync would dominate a fast training loop.
    atomic_write(path, data, durable=False)


__all__ = ["Live", "read_live", "read_summary", "read_history", "read_checkpoints",
           "find_live_dirs", "store_paths", "ENV_RUN_DIR", "ENV_STORE", "ENV_CHECKPOINTS",
           "ENV_EXP", "ENV_RESUME_STEP"]
