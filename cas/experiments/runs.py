"""Use cases: `run` a pipeline as a new experiment, `save` the workspace as one.

Both end the same way (spec/experiments.md, "Write ordering"): every object the
experiment names (deps, outputs, the workspace tree, the log) is published by the
store Writer; then the record; then the ref `.tally/refs/exps/<baseline>/<name>`.
A crash at any instant leaves at most unreferenced objects, which gc removes.

After `run`, the workspace holds the results (as after `dvc exp run`): outputs,
`tally.lock`, edited params.
"""

# No `from __future__ import annotations`: typing.NamedTuple compiles every string
# annotation into a ForwardRef, ~0.3 ms a class of every `tally run` start-up.

import os
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, NamedTuple, Sequence

from cas.workspace import git
from cas.store import refs
from cas.pipeline import runner
from cas.workspace import fullsnapshot as worktree
from cas.core.errors import Conflict, LockBusy, NotFound, ParamError, TallyError, UsageError
from cas.pipeline.tallylock import FileState
from cas.pipeline.metrics import collect_metrics
from cas.pipeline.parsecache import ParsedCache
from cas.objects.record import Record, put as put_record, record_id
from cas.core.fsops import unlink_quiet
from cas.experiments.request import QuickStage, RunRequest
from cas.experiments import workspacerun

if TYPE_CHECKING:
    from cas.workspace.project import Project

Notify = Callable[[str], None]
WORKSPACE_LOCK = "workspace"


class RunOutcome(NamedTuple):
    """A recorded experiment: its ref name, record id and record."""

    name: str
    oid: str
    record: Record
    reason: str = ""  # why it failed, when it did

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "oid": self.oid, "reason": self.reason, **self.record.to_json()}


def run(project: "Project", request: RunRequest = RunRequest(), *, echo: bool = False, wait: float = 0.0,
        notify: Notify | None = None, env: dict[str, str] | None = None,
        checkpoints_file: Path | None = None, resumed: Sequence[str] = ()) -> RunOutcome:
    """Run the pipeline (or a quick stage) in the workspace and record it as an experiment.

    Args:
        request: what to run (cas/experiments/request.py). Its `resume` must already
            be resolved into `parent` (cas/experiments/checkpoints.py run_resumed).
            After a failed stage with `keep_going`, the stages that depend on it are
            `not-run` and the status is still failed.
        echo: copy the stage commands' output to this process's stdout and stderr.
        wait: seconds to wait for another run in this workspace to finish.
        env: extra environment for the stage commands.
        checkpoints_file: where cas.live appends the run's checkpoints (default: a
            temp file); they become the record's `checkpoints`.
        resumed: the files a resume restored from a checkpoint (relative paths): a
            stage whose outputs hold them continues from them (they are not removed
            before it runs, and it bypasses the run-cache; spec/live.md, "Resuming").
    Returns:
        The experiment; its record's status is success, failed or interrupted (the
        caller maps failed to exit 8 and interrupted to 130: the record is written).
    Raises:
        StoreError: not a Git repository, or no commit yet.
        Conflict: `name` is taken for this baseline.
        PipelineError, ParamError, NotFound: a malformed pipeline, a bad override, a
            missing dep, params file or key, an unknown stage (nothing has run).
        UsageError: `single` with `downstream`, or either without stages, or with
            a quick stage.
        LockBusy: another run holds the workspace lock past `wait`.
    """
    stages, set_params, name, message = request.stages, request.set_params, request.name, request.message
    force, no_run_cache, quick_stage = request.force, request.no_run_cache, request.quick_stage
    single, downstream, keep_going, parent = request.single, request.downstream, request.keep_going, request.parent
    if request.resume is not None and parent is None:
        raise UsageError("a run that resumes goes through checkpoints.run_resumed")
    notify = notify or (lambda msg: None)
    if quick_stage is not None and (single or downstream):
        raise UsageError("-s/--single-item and --downstream select stages of the pipeline, "
                         "not a command-line stage")
    baseline = worktree.baseline_commit(project.root)
    _check_free(project, baseline, name)
    overrides = _parse_overrides(set_params)
    edited = {o.file for o in overrides}
    with _workspace_lock(project, wait, notify):
        parsed = ParsedCache(project)
        if quick_stage is not None:
            pipeline = _quick_pipeline(quick_stage)
            selected = pipeline.stages
        else:
            # Malformed: fails before any edit.
            pipeline = _load_pipeline(project, parsed, edited=edited)
            selected = pipeline.select(stages, single=single, downstream=downstream)
        if overrides:
            from cas.pipeline import params as params_mod
            params_mod.apply_overrides(project.root, overrides)
            if quick_stage is None and _templated(project):
                # `${...}` in cmds or paths may read the new values: load it again.
                pipeline = _load_pipeline(project, parsed, edited=edited)
                selected = pipeline.select(stages, single=single, downstream=downstream)
        created = time.time_ns()
        # The store lock is held shared for each burst of puts, not while a stage
        # command runs (Runner._exec lets go of it): what the run has put or reused
        # is named in this writer's in-flight file, which gc reads as roots, until
        # the ref is written and the writer closes (spec/experiments.md, "Write
        # ordering"; spec/gc.md, "In-flight roots").
        store_lock = project.lock("store", shared=True, timeout=60, purpose="tally run")
        with store_lock, project.store.writer(inflight=True) as writer:
            project.store.ensure_dirs()
            log_path = project.store.tmp / f"run-{os.getpid()}-{os.urandom(4).hex()}.log"
            env = {**({"TALLY_EXP_NAME": name} if name else {}), **(env or {})}
            # cas.live.Live.checkpoint() stores outputs and appends (step, tree) here.
            from cas.pipeline import livefiles as live
            ckpt_path = checkpoints_file or project.store.tmp / f"checkpoints-{os.getpid()}-{os.urandom(4).hex()}"
            env[live.ENV_STORE] = os.fspath(project.store_dir)
            env[live.ENV_CHECKPOINTS] = os.fspath(ckpt_path)
            # `tally show` lists the run while it runs (cas/experiments/workspacerun.py).
            marker = workspacerun.Marker.create(project.store_dir, root=project.root, baseline=baseline,
                                                name=name, started=created, checkpoints=ckpt_path)
            try:
                listing: list[git.WorkspaceListing] = []  # started when the last command ends
                r = runner.Runner(project, writer=writer, log_path=log_path, baseline=baseline,
                                  notify=notify, parsed=parsed, store_lock=store_lock,
                                  commands_done=lambda: listing.append(git.WorkspaceListing(project.root)),
                                  options=runner.RunOptions(
                                      force=force, no_run_cache=no_run_cache, echo=echo,
                                      write_lock=quick_stage is None, env=env,
                                      resumed=frozenset(resumed)))
                try:
                    if quick_stage is None:
                        r.prune({s.name for s in pipeline.stages})
                    result = r.run(selected, keep_going=keep_going, upstream=pipeline.upstream)
                except BaseException:
                    # Refused before anything ran (a missing dep or param), or a third
                    # Ctrl-C: no record, and no temp files left behind.
                    for pending in listing:
                        pending.close()
                    r.close()
                    unlink_quiet(log_path)
                    if checkpoints_file is None:
                        unlink_quiet(ckpt_path)
                    raise
                r.close()
                try:
                    try:
                        logs = writer.put_file(log_path)
                    finally:
                        unlink_quiet(log_path)
                    checkpoints = tuple(live.read_checkpoints(ckpt_path))  # trees already durable
                    if checkpoints_file is None:
                        unlink_quiet(ckpt_path)
                    ws = _snapshot(project, writer, result.deps, result.outs, ignore_outs=True, notify=notify,
                                   lock_bytes=r.pending_lock(), listing=listing[0] if listing else None)
                finally:
                    for pending in listing:
                        pending.close()  # consumed by _snapshot, unless an error came first
                rec = Record(
                    name=name or "", baseline=baseline, created=created, status=result.status,
                    host=_host(), user=_user(), exit_code=result.exit_code,
                    started=result.started, finished=result.finished, workspace=ws,
                    params=_all_params(project, pipeline, r),
                    deps={p: f.oid for p, f in sorted(result.deps.items())},
                    outs={p: (f.oid, f.is_dir) for p, f in sorted(result.outs.items())},
                    metrics=collect_metrics(project.root, pipeline.metrics),
                    stages=tuple(result.stages), logs=logs, message=message, parent=parent,
                    checkpoints=checkpoints)
                exp = _publish(project, writer, rec, run=r)
            finally:
                if marker is not None:
                    marker.close()
        parsed.save()
    return exp._replace(reason=result.reason)


def plan(project: "Project", request: RunRequest = RunRequest()) -> list[dict[str, Any]]:
    """What `run` with the same request would do to each selected stage, in run
    order, changing nothing (`tally run --dry`; see Runner.plan for the entries).

    No params file is edited, nothing is stored, tally.lock, the run-cache index,
    the parsed-pipeline cache, refs and outputs are left alone, and no lock is
    taken (a plan made while another run works may be out of date as it prints).

    Raises:
        UsageError: `request.set_params` (a plan with overrides would need the edited
            params, and `-S` edits the files), or the selection errors of `run`.
        PipelineError, ParamError, NotFound: as `run` before anything runs: a
            malformed pipeline, an unknown stage, a missing dep, params file or key.
    """
    stages, set_params, force, no_run_cache = request.stages, request.set_params, request.force, request.no_run_cache
    quick_stage, single, downstream = request.quick_stage, request.single, request.downstream
    if set_params:
        raise UsageError("--dry cannot be combined with -S: the overrides are applied by editing "
                         "the params files, which a dry run never does",
                         hint="drop -S to see the plan for the params as they are")
    if quick_stage is not None and (single or downstream):
        raise UsageError("-s/--single-item and --downstream select stages of the pipeline, "
                         "not a command-line stage")
    parsed = ParsedCache(project)  # read, never saved here
    if quick_stage is not None:
        pipeline = _quick_pipeline(quick_stage)
        selected = pipeline.stages
    else:
        pipeline = _load_pipeline(project, parsed)
        selected = pipeline.select(stages, single=single, downstream=downstream)
    r = runner.Runner(project, writer=None, log_path=None, baseline="", parsed=parsed,
                      options=runner.RunOptions(force=force, no_run_cache=no_run_cache,
                                                write_lock=quick_stage is None))
    try:
        return r.plan(selected)
    finally:
        r.close()


def save(project: "Project", *, name: str | None = None, message: str = "",
         notify: Notify | None = None) -> RunOutcome:
    """Record the workspace as it is, as an experiment, without running anything.

    Pipeline outputs and deps present in the workspace are stored too, so the
    experiment can be restored even though Git ignores them.
    """
    baseline = worktree.baseline_commit(project.root)
    _check_free(project, baseline, name)
    pipeline = _try_pipeline(project)
    with _workspace_lock(project, 0.0, notify or (lambda m: None)), \
            project.lock("store", shared=True, timeout=60, purpose="tally save"), \
            project.store.writer() as writer:
        created = time.time_ns()
        deps: dict[str, FileState] = {}
        outs: dict[str, FileState] = {}
        metrics_files: tuple[str, ...] = ()
        r = None
        if pipeline is not None:
            from cas.workspace import snapshot as workspace
            for st in pipeline.stages:
                for p, store_it, bucket in ([(d, True, deps) for d in st.deps] +
                                            [(o.path, o.cache, outs) for o in st.outs]):
                    if os.path.lexists(project.root / p) and (store_it or bucket is deps):
                        snap = workspace.snapshot(project.root / p, statcache=project.statcache,
                                                  writer=writer)
                        bucket[p] = FileState(p, snap.oid, snap.size, snap.files if snap.is_dir else None)
            metrics_files = pipeline.metrics
        ws = _snapshot(project, writer, deps, outs)
        rec = Record(name=name or "", baseline=baseline, created=created, status="success",
                     host=_host(), user=_user(), started=created,
                     finished=time.time_ns(), workspace=ws,
                     params=_all_params(project, pipeline, r),
                     deps={p: f.oid for p, f in sorted(deps.items())},
                     outs={p: (f.oid, f.is_dir) for p, f in sorted(outs.items())},
                     metrics=collect_metrics(project.root, metrics_files), message=message)
        return _publish(project, writer, rec)


# ---------------------------------------------------------------- pieces

def _check_free(project: "Project", baseline: str, name: str | None) -> None:
    if name is None:
        return
    refs.check_name(name)
    if refs.read(project, baseline, name) is not None:
        raise Conflict(f"experiment {name!r} already exists for baseline {baseline[:12]}",
                       hint="choose another name, or `tally remove` / `tally rename` the old one")


def _pipeline_text(project: "Project") -> str:
    from cas.pipeline.stages import PIPELINE_FILES

    for f in PIPELINE_FILES:
        try:
            return (project.root / f).read_text("utf-8", "replace")
        except FileNotFoundError:
            continue
    return ""


def _templated(project: "Project") -> bool:
    """Does the pipeline file use `${...}` (so its stages depend on params values)?"""
    return "${" in _pipeline_text(project)


def _load_pipeline(project: "Project", parsed, *, edited: set[str] = frozenset()):
    """The pipeline, parsed or from the parsed cache.

    The loader always reads params.yaml (DVC's default vars), but what it returns
    depends on params values only through `${...}`, and on other files' keys only
    through `vars`. Without either, the cached parse stays valid when params change,
    which is every run after a `-S` (no YAML parse of the pipeline then); only the
    errors of a malformed params.yaml remain, so it is still read here, unless it is
    in `edited`: the files overrides are about to edit, which that edit reads.
    """
    from cas.pipeline.stages import DEFAULT_PARAMS_FILE, PIPELINE_FILES

    def load():
        from cas.pipeline.pipelinefile import load_pipeline  # the loader: only when the cache misses

        p = load_pipeline(project.root)
        files = [f for f in PIPELINE_FILES if (project.root / f).exists()][:1]
        text = _pipeline_text(project)
        params = [DEFAULT_PARAMS_FILE, *p.params] if "${" in text or "vars" in text else []
        return p, [*files, *PIPELINE_FILES, *params]

    pipeline = parsed.get("pipeline", load)
    path = project.root / DEFAULT_PARAMS_FILE
    if DEFAULT_PARAMS_FILE not in edited and path.is_file():
        # Shared with the runner's params cache: the stages reading it reuse this parse.
        parsed.get("params:" + DEFAULT_PARAMS_FILE,
                   lambda: (runner._load_params(path), [DEFAULT_PARAMS_FILE]))
    return pipeline


class _WorkspaceLock:
    def __init__(self, project: "Project", wait: float, notify: Notify) -> None:
        self.lock = project.lock(WORKSPACE_LOCK, timeout=0.0, purpose="tally run")
        self.wait, self.notify = wait, notify

    def __enter__(self):
        try:
            self.lock.acquire()
        except LockBusy as exc:
            if self.wait <= 0:
                raise LockBusy(f"another run is using this workspace: {self.lock.holder()}",
                               path=exc.path, hint="wait for it to finish, or pass --wait SECONDS "
                                                   "to queue behind it") from None
            self.notify(f"waiting for the workspace lock held by {self.lock.holder()}")
            self.lock.timeout = self.wait
            self.lock.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.lock.release()


def _workspace_lock(project: "Project", wait: float, notify: Notify) -> _WorkspaceLock:
    return _WorkspaceLock(project, wait, notify)


def _parse_overrides(specs: Sequence[str]):
    if not specs:
        return []
    from cas.pipeline import params as params_mod

    out = []
    for spec in specs:
        ovs = params_mod.parse_override(spec)
        if len(ovs) > 1:
            raise ParamError(f"-S {spec!r} is a sweep of {len(ovs)} values; a workspace run takes one",
                             hint="queue the sweep instead (`tally queue`), or give a single value")
        out.extend(ovs)
    return out


def _quick_pipeline(q: QuickStage):
    from cas.pipeline.stages import Out, Pipeline, Stage

    if not q.cmd:
        raise UsageError("no command given", hint="tally run -o OUT -d DEP -- CMD ...")
    if len(q.cmd) == 1:
        cmd = q.cmd[0]
    else:
        import shlex  # only for a multi-word command
        cmd = shlex.join(q.cmd)
    for p in (*q.deps, *q.outs, *q.metrics):
        if os.path.isabs(p) or p.startswith("../") or p in ("", ".", ".."):
            raise UsageError(f"{p!r}: paths must be relative to the project root, inside it")
    norm = os.path.normpath
    outs = tuple(Out(path=norm(p)) for p in q.outs) + \
        tuple(Out(path=norm(p), cache=False) for p in q.outs_no_cache) + \
        tuple(Out(path=norm(p), kind="metric", cache=False) for p in q.metrics)
    paths = [o.path for o in outs]
    if len(set(paths)) != len(paths):
        raise UsageError("the same output is named twice")
    stage = Stage(name="run", cmd=(cmd,), deps=tuple(norm(d) for d in q.deps), outs=outs)
    return Pipeline(path="(command line)", stages=(stage,), upstream={"run": ()},
                    metrics=tuple(norm(m) for m in q.metrics))


def _try_pipeline(project: "Project"):
    from cas.pipeline.pipelinefile import PIPELINE_FILES, load_pipeline

    if not any((project.root / f).is_file() for f in PIPELINE_FILES):
        return None
    return load_pipeline(project.root)


def _snapshot(project: "Project", writer, deps: dict[str, FileState], outs: dict[str, FileState], *,
              ignore_outs: bool = False, notify: Notify | None = None,
              lock_bytes: bytes | None = None, listing: git.WorkspaceListing | None = None) -> str:
    """The workspace tree: `listing` (a started `git ls-files`) or a new listing, plus
    what the run already knows (deps, outs, the tally.lock it will write)."""
    files = listing.result() if listing is not None else git.list_workspace_files(project.root)
    if ignore_outs and outs and _gitignore_outs(project, files, set(outs), notify):
        files = git.list_workspace_files(project.root)
    known = {}
    for p, f in (*deps.items(), *outs.items()):
        known[p] = worktree.Known(f.oid, f.is_dir, f.size, f.files or 0 if f.is_dir else 1,
                                  _mode(project.root / p) if not f.is_dir else 0)
    # A dep inside another known path is already in that subtree.
    known = {p: k for p, k in known.items()
             if not any(p.startswith(q + "/") for q in known if known[q].is_dir)}
    if lock_bytes is not None:
        from cas.pipeline.tallylock import LOCK_FILE
        known[LOCK_FILE] = worktree.Known(writer.put_bytes(lock_bytes), False, len(lock_bytes), 1,
                                          _mode(project.root / LOCK_FILE))
    # ingest=None: reflink when the store can clone, probed only if a file is unseen.
    oid = worktree.snapshot(project, writer=writer, extra=known, ingest=None, files=files).oid
    writer.keep(oid)  # the root tree may come from the directory memo, without a put
    return oid


def _gitignore_outs(project: "Project", files: list[str], outs: set[str], notify: Notify | None) -> bool:
    """Add stored outputs that Git still sees to .gitignore (as DVC does). True if any was."""
    visible = set()
    for f in files:
        if f in outs:
            visible.add(f)
            continue
        i = f.find("/")
        while i != -1:
            if f[:i] in outs:
                visible.add(f[:i])
                break
            i = f.find("/", i + 1)
    changed = False
    for p in sorted(visible):
        try:
            changed = git.ensure_ignored(project.root, p) or changed
        except Conflict:
            if notify:
                notify(f"warning: output {p} is tracked by Git; `git rm -r --cached {p}` to let tally store it")
    return changed


def _mode(p: Path) -> int:
    try:
        return 0o755 if os.stat(p).st_mode & 0o111 else 0o644
    except OSError:
        return 0o644


def _all_params(project: "Project", pipeline, r) -> dict[str, Any]:
    """Every params file of the pipeline (and params.yaml if present), whole."""
    files = list(pipeline.params) if pipeline is not None else []
    if (project.root / "params.yaml").is_file() and "params.yaml" not in files:
        files.insert(0, "params.yaml")
    out: dict[str, Any] = {}
    for f in files:
        path = project.root / f
        if not path.is_file():
            continue
        try:
            data = r._params_cache.get(f) if r is not None else None
            out[f] = data if data is not None else runner._load_params(path)
        except TallyError:
            continue  # a params file broken by the run itself: the record still gets written
    return out


def _host() -> str:
    try:
        return os.uname().nodename
    except OSError:
        return ""


def _user() -> str:
    """getpass.getuser()'s answer, without importing getpass (and termios) at every run."""
    for var in ("LOGNAME", "USER", "LNAME", "USERNAME"):
        if os.environ.get(var):
            return os.environ[var]
    try:
        import pwd
        return pwd.getpwuid(os.getuid()).pw_name
    except (ImportError, KeyError):  # no passwd entry (containers)
        return ""


def _publish(project: "Project", writer, rec: Record, *, run: runner.Runner | None = None) -> RunOutcome:
    """Publish the record and what names it, in the write order of spec/experiments.md.

    The objects and the record are one Writer batch. The new `tally.lock` (when `run`
    changed it) and the ref are written to temp files first and made durable in that
    batch's barrier; they are renamed into place (tally.lock, then the ref, under the
    refs lock) only after every object is durable and linked, and their directories
    are fsynced together: two rounds of concurrent fsyncs for the whole publish,
    instead of two more per file. The run-cache index follows. A generated name that
    another run takes meanwhile is retried with the next candidate; when no ref is
    written, the staged tally.lock is dropped with it.
    """
    from cas.core.fsops import discard_staged

    lock = run.stage_lock() if run is not None else None
    companions = [lock] if lock is not None else []
    synced = False  # the companions' temp files are durable
    seed = None
    try:
        for attempt in range(1 if rec.name else refs.GENERATE_TRIES):
            if rec.name:
                name, named = rec.name, rec
            else:
                seed = seed or record_id(rec)
                name = refs.candidate_name(seed, attempt)
                if refs.read(project, rec.baseline, name) is not None:
                    continue
                named = rec.with_name(name)
            oid = put_record(writer, named)
            ref = refs.stage(project, rec.baseline, name, oid)
            try:
                writer.flush(also_sync=[ref.tmp] + ([] if synced else [c.tmp for c in companions]))
                synced = True
                refs.commit(project, rec.baseline, name, ref, None, companions=companions,
                            synced=True)
            except Conflict:
                discard_staged([ref])
                if rec.name:
                    raise
                continue  # another run took it between our read and our write
            except BaseException:
                discard_staged([ref])
                raise
            companions = []  # renamed into place
            if run is not None:
                run.write_index()
            return RunOutcome(name, oid, named)
        raise Conflict("could not find a free experiment name", hint="give one with -n NAME")
    finally:
        discard_staged(companions)  # no ref was written: nor is tally.lock


def list_experiments(project: "Project", *, baseline: str | None = None) -> list[tuple[str, str, str]]:
    """(baseline, name, record id) of the experiments of `baseline` (default: HEAD)."""
    b = baseline or worktree.baseline_commit(project.root)
    return refs.list_refs(project, b)


__all__ = ["run", "plan", "save", "QuickStage", "RunRequest", "RunOutcome", "list_experiments",
           "NotFound"]
