"""Run pipeline stages in the workspace: skip, restore from the run-cache, or execute.

For each selected stage, in the pipeline's order:

1. read its params (a missing file or key is an error before anything runs) and
   snapshot its deps into the store (the stat cache makes unchanged ones free);
2. skip it when cmd, wdir, deps, params and out paths equal its `tally.lock` entry
   and every output is present with the recorded id (`force` disables this);
3. else ask the run-cache (unless `no_run_cache` or `force`, or the run resumes
   from a checkpoint): on a hit, link the outputs out of the store; no command runs;
4. else run each `cmd` with `/bin/sh -c` in the stage's wdir, in its own process
   group, stdout and stderr captured to the run's log (and echoed when asked);
   then store the outputs, update `tally.lock` and add a run-cache entry.

A failing command stops the pipeline: what outputs exist are stored (partial
results), later stages are `not-run`; with `keep_going`, only the stages that depend
on a failed one (directly or transitively) are `not-run`, the others still run. SIGINT/SIGTERM are forwarded to the running
command's process group (a second one kills it); the stage is `interrupted` and no
later stage starts. Nothing is half-written at any instant: objects are published
by the Writer before `tally.lock`, the run-cache index, the record or the ref names
them, and each of those files is replaced atomically.
"""

# No `from __future__ import annotations`: typing.NamedTuple compiles every string
# annotation into a ForwardRef, ~0.3 ms a class of every `tally run` start-up.

import os
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Mapping, NamedTuple

from cas.pipeline import tallylock as lockfile
from cas.pipeline import gitindex, stageproc
from cas.workspace import snapshot as workspace
from cas.core.errors import NotFound, ParamError, TallyError, from_os_error
from cas.core.fsops import remove_tree
from cas.core.paths import check_parents
from cas.pipeline.tallylock import FileState, StageLock
from cas.pipeline.parsecache import ParsedCache
from cas.objects.record import StageResult

if TYPE_CHECKING:
    from cas.workspace.project import Project
    from cas.pipeline import runcache

# After a stage, the run waits this long for the store lock again (a gc's pass B holds
# it exclusive): failing there would lose the record of a run that took hours.
RELOCK_WAIT = 24 * 3600.0  # seconds
Notify = Callable[[str], None]


# A NamedTuple and a plain class, not dataclasses: a dataclass costs ~1 ms of every
# `tally run`'s start-up (tests/test_import_budget.py).
class RunOptions(NamedTuple):
    force: bool = False
    no_run_cache: bool = False
    echo: bool = False  # tee stage output to this process's stderr
    write_lock: bool = True  # update tally.lock (not for a command-line stage)
    env: Mapping[str, str] = {}  # extra environment for the stage commands
    # Paths a resume restored from a checkpoint (files, relative to the root): the
    # outputs holding them are kept for their stage to continue from (as `persist`).
    # A run that resumes neither takes outputs from the run-cache nor adds to it: what
    # it makes depends on the checkpoint, which no run-cache key holds.
    resumed: frozenset = frozenset()


class RunResult:
    """What happened to the selected stages, filled in as they run."""

    __slots__ = ("status", "exit_code", "stages", "deps", "outs", "hashed_outs",
                 "failed_stage", "reason", "started", "finished")

    def __init__(self, *, started: int = 0) -> None:
        self.status = "success"  # success | failed | interrupted
        self.exit_code: int | None = None
        self.stages: list[StageResult] = []
        self.deps: dict[str, FileState] = {}
        self.outs: dict[str, FileState] = {}  # stored outputs only
        self.hashed_outs: dict[str, FileState] = {}  # cache: false ones
        self.failed_stage: str | None = None
        self.reason = ""
        self.started = started
        self.finished = 0


class Runner:
    """Runs stages of one pipeline in one workspace; see the module docstring."""

    def __init__(self, project: "Project", *, writer, log_path: Path, options: RunOptions,
                 baseline: str, notify: Notify | None = None,
                 parsed: "ParsedCache | None" = None, store_lock=None,
                 commands_done: Callable[[], None] | None = None) -> None:
        """`store_lock`: the store lock the caller holds shared; released while each
        stage command runs (after the writer's flush has published the burst and
        written its in-flight file) and taken again after it. None: held throughout.
        `commands_done`: called once, as soon as no stage command of run() will run
        any more (before the last stage's outputs are stored), or when run() ends."""
        self.project = project
        self.store_lock = store_lock
        self.root = project.root
        self.writer = writer
        self.options = options
        self.baseline = baseline
        self.notify = notify or (lambda msg: None)
        self.log_path = log_path
        # No log (and no writer) for plan(), which writes nothing.
        self.log = open(log_path, "ab", buffering=0) if log_path is not None else None
        self.lock = lockfile.read(self.root) if options.write_lock else {}
        self._params_cache: dict[str, Any] = {}
        self.parsed = parsed or ParsedCache(project)
        self._out_ingest: str | None = None
        self._lock_dirty = False
        self._cache_entries: list[tuple[str, str]] = []  # (entry id, key)
        self._commands_done = commands_done
        self._last_stage = False

    def close(self) -> None:
        if self.log is not None:
            self.log.close()

    def prune(self, names: set[str]) -> None:
        """Forget lock entries of stages the pipeline no longer has."""
        for k in list(self.lock):
            if k not in names:
                del self.lock[k]
                self._lock_dirty = True

    # ------------------------------------------------------------ checks before running

    def params_of(self, stage) -> dict[str, dict[str, Any]]:
        """{file: {key: value}} of a stage's params. Raises NotFound / ParamError."""
        out: dict[str, dict[str, Any]] = {}
        for ref in stage.params:
            data = self._params_cache.get(ref.file)
            if data is None:
                path = self.root / ref.file
                if not path.is_file():
                    raise NotFound(f"stage {stage.name!r}: params file {ref.file} does not exist",
                                   path=path, hint="create it, or remove it from the stage's params")
                data = self._params_cache[ref.file] = self.parsed.get(
                    "params:" + ref.file, lambda: (_load_params(path), [ref.file]))
            kv = out.setdefault(ref.file, {})
            if ref.key is None:
                kv.update(data)
            else:
                from cas.pipeline import params as params_mod

                try:
                    kv[ref.key] = params_mod.get_value(data, ref.key, file=ref.file)
                except ParamError as exc:
                    raise ParamError(f"stage {stage.name!r}: {exc.message}", path=ref.file,
                                     hint=f"add {ref.key} to {ref.file}, or fix the stage's params") from None
        return out

    def check(self, stages) -> None:
        """Fail before running anything: a dep nothing provides, a missing param key."""
        produced: set[str] = set()
        for st in stages:
            for dep in st.deps:
                if not os.path.lexists(self.root / dep) and not _under_any(dep, produced):
                    raise NotFound(f"stage {st.name!r}: dependency {dep} does not exist",
                                   path=self.root / dep,
                                   hint="create it, `tally add` it, or add the stage that writes it")
            if not any(_under_any(r.file, produced) for r in st.params):
                self.params_of(st)
            produced.update(o.path for o in st.outs)

    # ------------------------------------------------------------ running

    def run(self, stages, *, keep_going: bool = False,
            upstream: Mapping[str, tuple[str, ...]] = {}) -> RunResult:
        """Run `stages` in order (see the module docstring).

        `keep_going` (DVC's `-k`): a failed stage no longer stops the run; a stage is
        `not-run` when one of its `upstream` stages (the pipeline's direct upstream
        map) failed or is itself `not-run`. The status is still `failed`, with the
        first failure's exit code. An interruption stops the run either way.
        """
        res = RunResult(started=time.time_ns())
        self.check(stages)
        blocked: set[str] = set()  # failed, or not-run because an upstream stage failed
        with stageproc.Signals() as sigs:
            self.sigs = sigs
            for i, st in enumerate(stages):
                self._last_stage = i == len(stages) - 1
                if sigs.received:
                    res.status = "interrupted"
                    res.stages.extend(StageResult(s.name, s.cmd, "not-run") for s in stages[i:])
                    break
                if blocked and any(u in blocked for u in upstream.get(st.name, ())):
                    blocked.add(st.name)
                    self._write_log(f"Stage '{st.name}' not run: an upstream stage failed\n")
                    res.stages.append(StageResult(st.name, st.cmd, "not-run"))
                    continue
                sr = self._stage(st, res)
                res.stages.append(sr)
                if sr.state == "failed" and keep_going:
                    blocked.add(st.name)
                    if res.failed_stage is None:  # the first failure gives the exit code
                        res.status, res.exit_code, res.failed_stage = "failed", sr.exit_code, st.name
                    continue
                if sr.state in ("failed", "interrupted"):
                    res.status = "failed" if sr.state == "failed" else "interrupted"
                    res.exit_code = sr.exit_code
                    res.failed_stage = st.name
                    res.stages.extend(StageResult(s.name, s.cmd, "not-run") for s in stages[i + 1:])
                    break
            if res.status == "success":
                res.exit_code = 0 if any(s.state == "ran" for s in res.stages) else None
        self._fire_commands_done()
        res.finished = time.time_ns()
        return res

    def _fire_commands_done(self) -> None:
        done, self._commands_done = self._commands_done, None
        if done is not None:
            done()

    def plan(self, stages) -> list[dict[str, Any]]:
        """What run(stages) would do, changing nothing (`tally run --dry`).

        Returns one {"name", "cmd", "action", "reason"} per stage, in run order;
        action is "skip" (frozen, or unchanged since `tally.lock` with its outputs
        present), "restore" (from the run-cache) or "run". Nothing is stored, written
        or removed (only the stat cache may learn hashes, as any status check does).
        A stage reading an output of a stage planned to run or restore is "run": its
        inputs are only known once that stage has run. Raises as run() does before
        anything runs (a missing dep or param).
        """
        self.check(stages)
        opts = self.options
        pending: dict[str, str] = {}  # output path -> the stage that would (re)write it
        plan = []
        for st in stages:
            action, reason = "run", ""
            reads = [*st.deps, *{r.file for r in st.params}]
            after = sorted({who for p, who in pending.items()
                            for d in reads if d == p or _under_any(d, {p}) or _under_any(p, {d})})
            if st.frozen:
                action, reason = "skip", "frozen"
            elif opts.force:
                reason = "--force"
            elif after:
                reason = "after upstream " + ", ".join(after) + ", which would change its inputs"
            else:
                action, reason = self._plan_stage(st)
            if action != "skip":
                pending.update((o.path, st.name) for o in st.outs)
            plan.append({"name": st.name, "cmd": list(st.cmd), "action": action, "reason": reason})
        return plan

    def _plan_stage(self, st) -> tuple[str, str]:
        """(action, reason) for a stage whose inputs are all in the workspace now."""
        params = self.params_of(st)
        deps = {d: self._snap(d, store=False) for d in st.deps}
        entry = self.lock.get(st.name)
        if st.always_changed:
            reason = "always_changed"
        elif not self.options.write_lock:
            reason = "a command-line stage"
        elif entry is None:
            reason = "not in tally.lock"
        elif not self._lock_matches(st, entry, deps, params):
            changed = [what for what, same in (
                ("cmd", entry.cmd == st.cmd and entry.wdir == st.wdir),
                ("deps", {f.path: f.oid for f in entry.deps} == {p: f.oid for p, f in deps.items()}),
                ("params", entry.params == params),
                ("outs", sorted(f.path for f in entry.outs) == sorted(o.path for o in st.outs))) if not same]
            reason = ", ".join(changed) + " changed since tally.lock"
        else:
            stale = [f.path for f in entry.outs if not os.path.lexists(self.root / f.path)
                     or self._snap(f.path, store=False).oid != f.oid]
            if not stale:
                return "skip", "unchanged since tally.lock"
            reason = "output(s) missing or modified: " + ", ".join(stale)
        if _replayable(st) and not self.options.no_run_cache:
            from cas.pipeline import runcache

            key = runcache.key(st.cmd, st.wdir, {p: f.oid for p, f in deps.items()}, params,
                               [o.path for o in st.outs])
            hit = runcache.lookup(self.project, key)
            if hit is not None:
                return "restore", f"run-cache entry {hit[0][:12]}"
        return "run", reason

    def pending_lock(self) -> bytes | None:
        """The `tally.lock` bytes finish() will write, or None if it will not write one.

        The workspace snapshot takes these bytes, so the experiment holds the lock of
        its own run even though the file is only written after the objects it names.
        """
        if not (self.options.write_lock and self._lock_dirty):
            return None
        return lockfile.dumps(self.lock).encode("utf-8")

    def stage_lock(self):  # -> fsops.Staged | None
        """`tally.lock`'s new text in a temp file beside it, for the caller to rename
        into place once every object it names is durable (experiments._publish does,
        with the ref); None when the run leaves it unchanged."""
        if self.options.write_lock and self._lock_dirty:
            return lockfile.stage(self.root, self.lock)
        return None

    def write_index(self) -> None:
        """Point the run-cache index at this run's entries: call after the writer's
        flush, so every object they name is already published."""
        if self._cache_entries:
            from cas.pipeline import runcache

            for entry_oid, k in self._cache_entries:
                runcache.write_index(self.project, k, entry_oid)

    def _stage(self, st, res: RunResult) -> StageResult:
        t0 = time.monotonic_ns()
        params = self.params_of(st)
        deps = {d: self._snap(d, store=True, ingest=self._dep_mode()) for d in st.deps}
        res.deps.update(deps)
        entry = self.lock.get(st.name)

        if st.frozen:
            # DVC's `frozen: true`: never run, `-f` included (as `dvc exp run -f`);
            # whatever outputs exist are recorded.
            self._collect(st, self._snap_outs(st, partial=True), res)
            self.notify(f"Stage '{st.name}' is frozen, skipping")
            return StageResult(st.name, st.cmd, "skipped", None, time.monotonic_ns() - t0)

        if not self.options.force and not st.always_changed and entry is not None \
                and self._lock_matches(st, entry, deps, params):
            current = self._outs_match(st, entry)
            if current is not None:
                self._collect(st, current, res)
                self.notify(f"Stage '{st.name}' didn't change, skipping")
                return StageResult(st.name, st.cmd, "skipped", None, time.monotonic_ns() - t0)

        key = None
        if _replayable(st) and not self.options.resumed:
            from cas.pipeline import runcache  # here: a stage without deps or outputs is never cached

            key = runcache.key(st.cmd, st.wdir, {p: f.oid for p, f in deps.items()}, params,
                               [o.path for o in st.outs])
            if not self.options.no_run_cache and not self.options.force:
                hit = runcache.lookup(self.project, key)
                if hit is not None:
                    self.notify(f"Stage '{st.name}' is cached - skipping run, checking out outputs")
                    self._write_log(f"Stage '{st.name}' restored from the run-cache ({hit[0][:12]})\n")
                    outs = self._restore(st, hit[1])
                    self._collect(st, outs, res)
                    self._lock_stage(st, deps, params, outs)
                    return StageResult(st.name, st.cmd, "cache-hit", None, time.monotonic_ns() - t0)

        # Execute.
        self._clear_outs(st)
        self.notify(f"Running stage '{st.name}':")
        code: int | None = 0
        for cmd in st.cmd:
            self.notify(f"> {cmd}")
            self._write_log(f"Running stage '{st.name}':\n> {cmd}\n")
            code = self._exec(st, cmd)
            if code != 0 or self.sigs.received:
                break
        duration = time.monotonic_ns() - t0
        if self._last_stage:
            self._fire_commands_done()
        if self.sigs.received:
            self._write_log(f"Stage '{st.name}' interrupted by signal {self.sigs.received}\n")
            self._collect(st, self._snap_outs(st, partial=True), res)
            return StageResult(st.name, st.cmd, "interrupted", code, duration)
        if code != 0:
            self._write_log(f"Stage '{st.name}' failed with exit code {code}\n")
            _add_reason(res, f"stage '{st.name}' failed with exit code {code}")
            self._collect(st, self._snap_outs(st, partial=True), res)
            return StageResult(st.name, st.cmd, "failed", code, duration)
        missing = [o.path for o in st.outs if not os.path.lexists(self.root / o.path)]
        if missing:
            msg = f"stage '{st.name}' did not create its output(s): {', '.join(missing)}"
            self._write_log(msg + "\n")
            _add_reason(res, msg)
            self._collect(st, self._snap_outs(st, partial=True), res)
            return StageResult(st.name, st.cmd, "failed", None, duration)
        # A replayable stage's `cache: false` outputs are stored too, for its run-cache
        # entry only (DVC does the same): the record keeps them out of its outs.
        outs = self._snap_outs(st, partial=False, store_uncached=key is not None)
        self._collect(st, outs, res)
        self._lock_stage(st, deps, params, outs)
        if key is not None:
            # The entry goes in this Writer batch after the outputs; its index file is
            # written by finish(), after the flush. (runcache was imported with the key.)
            self._cache_entries.append(runcache.put(self.writer, runcache.make_entry(
                st.cmd, st.wdir, {p: f.oid for p, f in deps.items()}, params,
                {p: (f.oid, f.is_dir) for p, f in outs.items()})))
        return StageResult(st.name, st.cmd, "ran", 0, time.monotonic_ns() - t0)

    # ------------------------------------------------------------ helpers

    def _write_log(self, text: str) -> None:
        self.log.write(text.encode("utf-8", "replace"))

    def _exec(self, st, cmd: str) -> int:
        """Run one command with the store lock let go (see __init__); raises with it
        still let go (the caller's writer then gives up and removes its in-flight file)."""
        env = dict(os.environ)
        env.update(self.options.env)
        env.update({"TALLY_ROOT": str(self.root), "TALLY_STAGE": st.name,
                    "TALLY_EXP_BASELINE_REV": self.baseline})
        # What `dvc exp run` tells a stage (DVC_ROOT, DVC_STAGE, DVC_EXP_BASELINE_REV,
        # DVC_EXP_NAME), so dvclive knows it runs inside an experiment: it logs, and
        # neither saves a DVC experiment of its own nor writes dvc.lock (spec/live.md).
        env.update({"DVC_ROOT": str(self.root), "DVC_STAGE": st.name,
                    "DVC_EXP_BASELINE_REV": self.baseline})
        name = env.get("TALLY_EXP_NAME")
        if name:
            env["DVC_EXP_NAME"] = name
        else:
            env.pop("DVC_EXP_NAME", None)  # not the caller's: an outer `dvc exp run`'s
        inflight = self.writer.inflight_path() if self.store_lock is not None else None
        index = gitindex.Guard(self.root, self.project.store.tmp)
        index.take()
        try:
            return self._exec_locked(st, cmd, env, inflight)
        finally:
            put_back = index.put_back(lambda msg: self._write_log(f"warning: {msg}\n"))
            if put_back:
                self._write_log(f"Stage '{st.name}' staged {len(put_back)} path(s) in Git's index; "
                                f"set back: {', '.join(put_back)}\n")

    def _exec_locked(self, st, cmd: str, env: dict, inflight) -> int:
        if inflight is None:
            return stageproc.run(st.name, cmd, cwd=self.root / st.wdir, env=env, log=self.log,
                                 echo=self.options.echo, sigs=self.sigs)
        from cas.store.inflight import ENV_INFLIGHT
        env[ENV_INFLIGHT] = inflight  # cas.live names its checkpoints' objects there
        # Publish the burst and write the in-flight file, then let gc in: everything
        # this run relies on is named in the file, which gc's pass B reads as roots.
        self.writer.flush()
        self.store_lock.release()
        code = stageproc.run(st.name, cmd, cwd=self.root / st.wdir, env=env, log=self.log,
                             echo=self.options.echo, sigs=self.sigs)
        self.store_lock.timeout = RELOCK_WAIT
        self.store_lock.acquire()
        return code

    def _snap(self, rel: str, *, store: bool, ingest: str = "copy") -> FileState:
        abs_p = self.root / rel
        snap = workspace.snapshot(abs_p, statcache=self.project.statcache,
                                  writer=self.writer if store else None, ingest=ingest)
        if store:
            self.writer.keep(snap.oid)  # a directory memo hit is not put: name it anyway
        return FileState(rel, snap.oid, snap.size, snap.files if snap.is_dir else None)

    def _out_mode(self) -> str:
        if self._out_ingest is None:
            self._out_ingest = self.project.ingest_mode()
        return self._out_ingest

    def _dep_mode(self) -> str:
        # Deps are the user's files: clone them in when the filesystem can, never
        # hardlink them (that would make them read-only).
        return "reflink" if self._out_mode() == "reflink" else "copy"

    def _snap_outs(self, st, *, partial: bool, store_uncached: bool = False) -> dict[str, FileState]:
        out = {}
        for o in st.outs:
            if partial and not os.path.lexists(self.root / o.path):
                continue
            # A `cache: false` output stays the user's file: cloned or copied in, never
            # hardlinked (that would make it read-only).
            out[o.path] = self._snap(o.path, store=o.cache or store_uncached,
                                     ingest=self._out_mode() if o.cache else self._dep_mode())
        return out

    def _collect(self, st, outs: dict[str, FileState], res: RunResult) -> None:
        cache = {o.path: o.cache for o in st.outs}
        for p, fs in outs.items():
            (res.outs if cache.get(p, True) else res.hashed_outs)[p] = fs

    def _lock_matches(self, st, entry: StageLock, deps: dict[str, FileState], params) -> bool:
        if entry.cmd != st.cmd or entry.wdir != st.wdir:
            return False
        if {f.path: f.oid for f in entry.deps} != {p: f.oid for p, f in deps.items()}:
            return False
        if entry.params != params:
            return False
        return sorted(f.path for f in entry.outs) == sorted(o.path for o in st.outs)

    def _outs_match(self, st, entry: StageLock) -> dict[str, FileState] | None:
        want = {f.path: f for f in entry.outs}
        current = {}
        cache = {o.path: o.cache for o in st.outs}
        for path, fs in want.items():
            if not os.path.lexists(self.root / path):
                return None
            now = self._snap(path, store=False)
            if now.oid != fs.oid:
                return None
            # writer.has: a present output is kept (in-flight) as a put of it would be.
            if cache.get(path, True) and not self.writer.has(now.oid):
                now = self._snap(path, store=True, ingest=self._out_mode())
            current[path] = now
        return current

    def _lock_stage(self, st, deps, params, outs: dict[str, FileState]) -> None:
        if not self.options.write_lock:
            return
        self._lock_dirty = True
        self.lock[st.name] = StageLock(cmd=st.cmd, wdir=st.wdir, deps=tuple(deps.values()),
                                       params=params, outs=tuple(outs[o.path] for o in st.outs))

    def _clear_outs(self, st) -> None:
        """Remove outputs before a stage runs (as DVC does), unless `persist` or
        restored by a resume (RunOptions.resumed: the stage continues from them).

        Whatever is there is stored first, so even an output the user edited by
        hand can be recovered from the store (it is only deleted, never lost).
        """
        for o in st.outs:
            p = self.root / o.path
            # Never through a symlinked parent: the output would land outside the tree.
            check_parents(self.root, o.path, source=f"stage {st.name!r}'s output")
            if o.persist or self._resumed_out(o.path):
                continue
            if os.path.lexists(p):
                self._snap(o.path, store=True)
                _remove(p)
            p.parent.mkdir(parents=True, exist_ok=True)

    def _resumed_out(self, path: str) -> bool:
        """Whether output `path` holds a file a resume restored (it, or a file under it)."""
        return any(k == path or k.startswith(path + "/") for k in self.options.resumed)

    def _restore(self, st, entry: "runcache.CacheEntry") -> dict[str, FileState]:
        for o in st.outs:
            check_parents(self.root, o.path, source=f"stage {st.name!r}'s output")
            if os.path.lexists(self.root / o.path):
                self._snap(o.path, store=True)  # recoverable before it is replaced
        self.writer.flush()  # ... and published before it is
        from cas.workspace import checkout as co

        links = self.project.config.link_order
        # A `cache: false` output is the user's own file (often committed to Git): it
        # gets independent bytes, never a read-only hardlink or a symlink into the store.
        own = tuple(m for m in links if m in ("reflink", "copy")) or ("copy",)
        uncached = {o.path for o in st.outs if not o.cache}
        outs = {}
        for path, (oid, is_dir) in entry.outs.items():
            self.writer.keep(oid)  # the record will name it: a root until then
            dest = self.root / path
            dest.parent.mkdir(parents=True, exist_ok=True)
            co.checkout(self.project.store, co.Target(oid=oid, is_dir=is_dir), dest,
                        links=own if path in uncached else links,
                        statcache=self.project.statcache, force=True)
            outs[path] = self._snap(path, store=False)
        return outs


def _add_reason(res: RunResult, msg: str) -> None:
    res.reason = f"{res.reason}; {msg}" if res.reason else msg  # several with keep_going


def _replayable(st) -> bool:
    # `cache: false` outputs do not prevent it: they are stored for the entry (_stage).
    return bool(st.cmd and st.deps and st.outs) and not st.always_changed and \
        not any(o.persist for o in st.outs)


def _under_any(path: str, prefixes: set[str]) -> bool:
    return any(path == p or path.startswith(p + "/") for p in prefixes)


def _remove(p: Path) -> None:
    try:
        remove_tree(p)
    except OSError as exc:
        raise from_os_error(exc, path=p, doing="removing an old output") from None


def _load_params(path: Path) -> dict[str, Any]:
    """A params file's content as plain values; JSON and TOML skip the YAML import."""
    suffix = path.suffix.lower()
    if suffix == ".json":
        import json
        try:
            data = json.loads(path.read_text("utf-8"))
        except ValueError as exc:
            raise ParamError(f"{path.name}: malformed JSON: {exc}", path=path) from None
        if not isinstance(data, dict):
            raise ParamError(f"{path.name}: top level must be a mapping", path=path)
        return data
    from cas.pipeline import params as params_mod
    return params_mod.load_params(path)


__all__ = ["Runner", "RunOptions", "RunResult", "TallyError"]
