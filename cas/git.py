"""The workspace <-> Git linkage: a small, fast wrapper over the git command line.

Every call runs `git` (2.25+) in `root`, the work tree top, with `LC_ALL=C`,
`GIT_TERMINAL_PROMPT=0`, no pager, stdin closed, none of the user's hooks (update-ref
alone would fire `reference-transaction`), and without GIT_DIR, GIT_INDEX_FILE & co.
Writing never touches the user's working tree, index or HEAD, and objects are written
before the ref naming them (a crash leaves at most unreachable objects for `git gc`).
A failing git command raises TallyError with git's stderr. Paths are POSIX, relative
to `root`, decoded like `os.fsdecode` (undecodable bytes survive as surrogates).
"""

from __future__ import annotations

import fcntl
import os
import subprocess
import time
from collections.abc import Callable, Collection, Mapping, Sequence
from contextlib import AbstractContextManager, suppress
from pathlib import Path

from cas.errors import (Conflict, LockBusy, NotFound, StoreError, TallyError, UsageError,
                        from_os_error)

# No pager, no hooks, no fsmonitor command; a split index would scatter
# `sharedindex.*` files next to our temporary indexes.
_GIT_OPTIONS = ("--no-pager", "-c", "core.hooksPath=/dev/null", "-c", "core.fsmonitor=false",
                "-c", "core.splitIndex=false")
_REPO_ENV = ("GIT_DIR", "GIT_WORK_TREE", "GIT_INDEX_FILE", "GIT_OBJECT_DIRECTORY",
             "GIT_ALTERNATE_OBJECT_DIRECTORIES", "GIT_COMMON_DIR", "GIT_PREFIX",
             "GIT_IMPLICIT_WORK_TREE", "GIT_NAMESPACE")
_SAFE_ENV = {"LC_ALL": "C", "GIT_TERMINAL_PROMPT": "0", "GIT_OPTIONAL_LOCKS": "0",
             "GIT_NO_LAZY_FETCH": "1"}
_OID_LENGTHS = (40, 64)  # SHA-1 or SHA-256 repositories, lowercase hex
_GITIGNORE_LOCK_TIMEOUT_S = 5.0  # another `tally add` writing the same .gitignore
_GITIGNORE_LOCK_POLL_S = 0.02
_BLOB_CACHE_MAX_BYTES = 64 * 1024  # pointer files are ~100 B, tally.lock a few KiB
_HISTORY_HINT = "the clone may be shallow or partial, or damaged; run `git fsck`"


def _popen(cwd: Path, args: Sequence[str], *, env: Mapping[str, str] | None = None,
           **kwargs: object) -> subprocess.Popen[bytes]:
    full_env = {k: v for k, v in os.environ.items() if k not in _REPO_ENV}
    full_env.update(_SAFE_ENV, **(env or {}))
    try:
        return subprocess.Popen(["git", *_GIT_OPTIONS, *args], cwd=cwd, env=full_env,
                                **kwargs)  # type: ignore[call-overload]
    except FileNotFoundError as exc:
        if not Path(cwd).is_dir():
            raise NotFound("no such directory", path=cwd) from exc
        raise StoreError("git is not installed or not on PATH", hint="install Git") from exc


def _run(cwd: Path, args: Sequence[str], *, input: bytes | None = None,
         env: Mapping[str, str] | None = None, ok: Collection[int] = (0,)) -> tuple[int, bytes, bytes]:
    """Run one git command; return (exit code, stdout, stderr), raise unless the code is ok."""
    proc = _popen(cwd, args, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                  stdin=subprocess.DEVNULL if input is None else subprocess.PIPE)
    with proc:
        try:
            out, err = proc.communicate(input)
        except BaseException:  # Ctrl-C: leave no git behind
            proc.kill()
            raise
    if proc.returncode not in ok:
        raise _failure(args, err, cwd)
    return proc.returncode, out, err


def _out(cwd: Path, args: Sequence[str], **kwargs: object) -> bytes:
    return _run(cwd, args, **kwargs)[1]  # type: ignore[arg-type]


def _failure(args: Sequence[str], stderr: bytes, cwd: Path) -> TallyError:
    detail = stderr.decode("utf-8", "replace").strip() or "no message"
    return TallyError(f"git {args[0]} failed: {detail}", path=cwd)


def _line(out: bytes) -> str:
    return os.fsdecode(out.removesuffix(b"\n"))


def _check_rev(rev: str) -> None:
    # A leading "-" would be read as an option; a newline would split a batch request.
    if not rev or rev.startswith("-") or "\n" in rev or "\0" in rev:
        raise UsageError(f"invalid Git revision {rev!r}")


def _check_ref(ref: str, *oids: str | None) -> None:
    if not ref.startswith("refs/") or any(c in ref for c in "\0\n "):
        raise UsageError(f"invalid ref name {ref!r}", hint="use a full name such as refs/heads/NAME")
    for oid in oids:
        if oid is not None and not (len(oid) in _OID_LENGTHS and not oid.strip("0123456789abcdef")):
            raise UsageError(f"not a full lowercase Git object id: {oid!r}")


def _check_path(path: str) -> None:
    """Reject what Git refuses in a tree: absolute, empty/`.`/`..` parts, `.git`."""
    if "\0" in path or any(p in ("", ".", "..") or p.lower() == ".git" for p in path.split("/")):
        raise UsageError(f"invalid repository path {path!r}", path=path,
                         hint="use a relative POSIX path inside the work tree, outside .git")


def find_root(start: Path) -> Path:
    """Return the top of the Git work tree containing `start` (a directory or file).

    Returns:
        The work tree's top directory, symlinks resolved (as Git reports it).

    Raises:
        NotFound: `start` does not exist.
        StoreError: `start` is not inside a Git work tree (or Git is not installed).
    """
    start = Path(start)
    where = start if start.is_dir() else start.parent
    if not start.exists() or not where.is_dir():
        raise NotFound("no such file or directory", path=start)
    code, out, err = _run(where, ["rev-parse", "--show-toplevel"], ok=(0, 128))
    if code != 0:
        detail = err.decode("utf-8", "replace").strip()
        if "not a git repository" in detail.lower():
            raise StoreError("not a Git repository", path=start, hint="run `git init` first")
        raise StoreError(f"Git cannot use this directory: {detail}", path=start,
                         hint="run tally inside the working tree of a non-bare Git repository")
    return Path(_line(out))


def head_commit(root: Path) -> str | None:
    """Return the commit HEAD points at, None in a repository with no commit yet.

    Raises:
        TallyError: git failed (e.g. `root` is not a repository).
    """
    code, out, _ = _run(root, ["rev-parse", "-q", "--verify", "HEAD^{commit}"], ok=(0, 1))
    return _line(out) if code == 0 else None


def current_branch(root: Path) -> str | None:
    """Return the checked-out branch (`main`, not `refs/heads/main`), None when detached.

    A repository with no commit yet has one: the branch its first commit will create.
    """
    code, out, _ = _run(root, ["symbolic-ref", "-q", "HEAD"], ok=(0, 1))
    return _line(out).removeprefix("refs/heads/") if code == 0 else None


def list_workspace_files(root: Path) -> list[str]:
    """Return every file Git would see, sorted: tracked plus untracked-not-ignored.

    Tracked files deleted from disk, submodules and nested repositories are left out.
    One git process: 50k files take ~0.1 s.
    """
    return WorkspaceListing(root).result()


class WorkspaceListing:
    """list_workspace_files in two halves: the git process starts now, result() reads it.

    `tally run` starts it as soon as its last stage command has ended and reads it
    after the outputs are stored, so git lists the workspace on the other core while
    tally hashes and writes. The caller must not change the set of files in the
    workspace in between (storing outputs does not), and calls result() or close().
    """

    # -t tags each record (H cached, S skip-worktree, M unmerged, R deleted, ? other) and
    # --stage adds the mode, so one pass also tells deleted files and gitlinks apart.
    ARGS = ("ls-files", "-z", "-t", "--stage", "--cached", "--others", "--deleted",
            "--exclude-standard")

    def __init__(self, root: Path) -> None:
        self.root = root
        self._proc: subprocess.Popen[bytes] | None = _popen(
            root, self.ARGS, stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL)

    def result(self) -> list[str]:
        """The sorted list (as list_workspace_files); raises as it does."""
        proc, self._proc = self._proc, None
        if proc is None:
            raise RuntimeError("WorkspaceListing.result() called twice or after close()")
        with proc:
            try:
                out, err = proc.communicate()
            except BaseException:  # Ctrl-C: leave no git behind
                proc.kill()
                raise
        if proc.returncode != 0:
            raise _failure(self.ARGS, err, self.root)
        root = self.root
        present, deleted = set[bytes](), set[bytes]()
        for rec in filter(None, out.split(b"\0")):
            tag, rest = rec[:1], rec[2:]
            meta, _, name = rest.partition(b"\t")
            if tag == b"?":
                if not rest.endswith(b"/"):  # "dir/" is a nested repository
                    present.add(rest)
            elif meta.startswith(b"160000"):  # gitlink: a submodule's files are not ours
                continue
            elif tag == b"R":
                deleted.add(name)
            elif tag != b"S" or os.path.lexists(os.path.join(root, os.fsdecode(name))):
                present.add(name)  # skip-worktree (sparse) entries only when on disk
        return sorted(os.fsdecode(n) for n in present - deleted)

    def close(self) -> None:
        """Stop the git process if result() was not called (an error on the way)."""
        proc, self._proc = self._proc, None
        if proc is not None:
            with proc:
                proc.kill()
                proc.communicate()


def tracked_files(root: Path, path: str) -> list[str]:
    """Files Git tracks at or below `path` (relative POSIX), sorted; [] when none."""
    _check_path(path)
    out = _out(root, ["ls-files", "-z", "--cached", "--", f":(literal){path}"])
    return sorted(os.fsdecode(n) for n in out.split(b"\0") if n)


def is_ignored(root: Path, paths: Collection[str]) -> set[str]:
    """Return the subset of `paths` (relative to `root`) that Git ignores, spelled as given.

    One `git check-ignore` run. A path inside an ignored directory is ignored; a
    tracked path never is (Git sees it regardless).

    Raises:
        TallyError: git failed (e.g. a path outside the work tree).
    """
    if not paths:
        return set()
    data = b"".join(os.fsencode(p) + b"\0" for p in paths)
    out = _out(root, ["check-ignore", "-z", "--stdin"], input=data, ok=(0, 1))
    return {os.fsdecode(p) for p in out.split(b"\0") if p}


def _relative(root: Path, path: Path | str) -> str:
    absolute = Path(root, path)  # an absolute `path` replaces root
    for base, target in ((Path(root).absolute(), absolute.absolute()),
                         (Path(root).resolve(), absolute.parent.resolve() / absolute.name)):
        try:
            rel = target.relative_to(base).as_posix()
        except ValueError:
            continue
        if rel not in ("", "."):
            _check_path(rel)
            return rel
    raise UsageError("path is not inside the Git work tree", path=path)


def _gitignore_pattern(name: str) -> bytes:
    # Anchored to its directory, as `dvc add` writes it; glob characters and trailing
    # spaces (which Git would trim) are backslash-escaped.
    body = "".join("\\" + c if c in "\\*?[" else c for c in name)
    stripped = body.rstrip(" ")
    return b"/" + os.fsencode(stripped + "\\ " * (len(body) - len(stripped)))


def ensure_ignored(root: Path, path: Path | str) -> bool:
    """Make sure Git ignores `path`, adding `/name` to the `.gitignore` of its directory.

    Idempotent: a path ignored by any rule is left alone. The `.gitignore` keeps its
    content, mode and line endings; it is rewritten atomically under `.gitignore.lock`
    (Git's lock convention), so concurrent callers lose no line.

    Args:
        path: the data path, absolute or relative to `root`.

    Returns:
        True if a `.gitignore` was written, False if the path was already ignored.

    Raises:
        UsageError: the path is outside the work tree, is the root or in `.git`, or
            its name has a newline (which a `.gitignore` cannot express).
        Conflict: the path is tracked by Git, so ignoring it would have no effect.
        NotFound: the path's directory does not exist.
        LockBusy: another process held `.gitignore.lock` for too long.
    """
    rel = _relative(root, path)
    parent, _, name = rel.rpartition("/")
    if "\n" in name or name.endswith("\r"):
        raise UsageError("a .gitignore cannot name a path with a newline in it", path=path,
                         hint="rename the path")
    ignored = rel in is_ignored(root, [rel])
    # check-ignore never reports a tracked file, so an ignored file needs no ls-files
    # (one git process per re-add instead of two). Git 2.39 does not report a directory
    # holding tracked files either, but that is not documented: directories still ask.
    if not (ignored and not Path(root, rel).is_dir()) and \
            _out(root, ["--literal-pathspecs", "ls-files", "-z", "--", rel]):
        raise Conflict("path is tracked by Git, so it cannot be ignored", path=path,
                       hint=f"run `git rm -r --cached -- '{rel}'` and commit, then retry")
    if ignored:
        return False
    if not (directory := Path(root, parent)).is_dir():
        raise NotFound("no such directory", path=directory)
    changed = _append_rule(directory / ".gitignore", _gitignore_pattern(name))
    if rel not in is_ignored(root, [rel]):
        raise TallyError("wrote a .gitignore rule but Git still does not ignore the path",
                         path=path, hint=f"see `git check-ignore -v --no-index -- '{rel}'`")
    return changed


def _append_rule(file: Path, rule: bytes) -> bool:
    """Append `rule` to `file` unless it is already the last rule; atomic, under a lock."""
    # The mutual exclusion is an flock on the directory, which the kernel drops when
    # its holder dies: a SIGKILLed `tally add` can leave a `.gitignore.lock` behind, but
    # never a lock that blocks the next add. `.gitignore.lock` is only the temp file,
    # written (truncating any leftover) by the flock holder alone.
    lock, deadline = file.with_name(file.name + ".lock"), time.monotonic() + _GITIGNORE_LOCK_TIMEOUT_S
    try:
        dirfd = os.open(file.parent, os.O_RDONLY | os.O_DIRECTORY)
    except OSError as exc:
        raise from_os_error(exc, path=file.parent, doing="locking .gitignore") from exc
    try:
        while True:
            try:
                fcntl.flock(dirfd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    raise LockBusy("another process is writing this .gitignore", path=file,
                                   hint="wait for the other tally process to finish") from None
                time.sleep(_GITIGNORE_LOCK_POLL_S)
        try:
            fd = os.open(lock, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o666)
        except OSError as exc:
            raise from_os_error(exc, path=lock, doing="writing .gitignore") from exc
        return _rewrite_rules(file, lock, fd, rule)
    finally:
        os.close(dirfd)  # drops the flock


def _rewrite_rules(file: Path, lock: Path, fd: int, rule: bytes) -> bool:
    try:
        with os.fdopen(fd, "wb") as out:
            try:
                old, mode = file.read_bytes(), os.stat(file).st_mode & 0o7777
            except FileNotFoundError:
                old, mode = b"", None
            rules = [r.rstrip(b"\r") for r in old.split(b"\n") if r.strip()]
            if rules and rules[-1] == rule:  # a concurrent caller just wrote it
                os.unlink(lock)
                return False
            eol = b"\r\n" if b"\r\n" in old else b"\n"
            out.write(old + (eol if old and not old.endswith(b"\n") else b"") + rule + eol)
            out.flush()
            os.fsync(out.fileno())
        if mode is not None:
            os.chmod(lock, mode)
        os.replace(lock, file)
        return True
    except BaseException as exc:
        lock.unlink(missing_ok=True)
        if isinstance(exc, OSError):
            raise from_os_error(exc, path=file, doing="writing .gitignore") from exc
        raise


def hash_objects(root: Path, contents: Sequence[bytes]) -> list[str]:
    """Write blobs into the repository's object database; return their ids in order.

    One `git fast-import` for the whole batch: no temporary files, and from
    `fastimport.unpackLimit` (default 100) objects on, a single pack instead of one
    loose file per blob. Bytes are stored verbatim (no clean or eol filters).
    """
    if not contents:
        return []
    import tempfile  # here, as below: ~3 ms of start-up (random, shutil) `tally run` never needs

    with tempfile.TemporaryDirectory(prefix="tally-git-") as tmp:
        marks = Path(tmp, "marks")
        with open(Path(tmp, "stderr"), "w+b") as err:
            # stdout unused and stderr to a file: our stdin is the only pipe, no deadlock.
            proc = _popen(root, ["fast-import", "--quiet", "--done", f"--export-marks={marks}"],
                          stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=err)
            stdin = proc.stdin
            assert stdin is not None
            try:
                for i, data in enumerate(contents, 1):
                    stdin.write(b"blob\nmark :%d\ndata %d\n" % (i, len(data)))
                    stdin.write(data)  # not concatenated: a blob may be large
                    stdin.write(b"\n")
                stdin.write(b"done\n")
                stdin.close()
            except BrokenPipeError:  # fast-import died; its exit code and stderr say why
                with suppress(BrokenPipeError):
                    stdin.close()  # the first failed close already released the pipe
            except BaseException:
                proc.kill()
                raise
            finally:
                proc.wait()
            if proc.returncode != 0:
                err.seek(0)
                raise _failure(["fast-import"], err.read(), root)
        by_mark = dict(line.split(" ", 1) for line in marks.read_text("ascii").splitlines())
    return [by_mark[f":{i}"] for i in range(1, len(contents) + 1)]


def _resolve_commit(root: Path, rev: str) -> str:
    _check_rev(rev)
    code, out, _ = _run(root, ["rev-parse", "-q", "--verify", f"{rev}^{{commit}}"], ok=(0, 1))
    if code == 0:
        return _line(out)
    raise NotFound(f"no commit named {rev!r} in the Git repository", path=root)


def commit_tree(root: Path, *, base: str, changes: Mapping[str, bytes | None], message: str,
                executable: Collection[str] = ()) -> str:
    """Build a commit on top of `base` with `changes` applied; no ref, index or file moves.

    The tree is built in a temporary index (`read-tree`, `update-index --index-info`,
    `write-tree`), then `commit-tree -p base`; author and committer come from Git's
    config or GIT_AUTHOR_*/GIT_COMMITTER_*. Publish the result with `update_ref`.

    Args:
        base: the parent commit (any revision; resolved once, so a moving ref is safe).
        changes: repository path -> new content, or None to delete that file. A file
            written where base has a directory (or the reverse) replaces it.
        message: the commit message (a final newline is added if missing).
        executable: paths among `changes` to write with mode 100755 instead of 100644.

    Returns:
        The new commit's id.

    Raises:
        UsageError: an invalid path, or an executable path that is not written.
        NotFound: `base` is not a commit.
        TallyError: git failed (e.g. no user.name/user.email configured).
    """
    base_oid = _resolve_commit(root, base)
    for path in changes:
        _check_path(path)
    written, executable = [p for p, c in changes.items() if c is not None], set(executable)
    if stray := executable - set(written):
        raise UsageError(f"executable paths not written by this commit: {sorted(stray)}")
    oids = hash_objects(root, [changes[p] for p in written])  # type: ignore[misc]
    # Deletions first: mode 0 removes an entry; --index-info replaces file/dir clashes.
    records = [f"0 {'0' * len(base_oid)}\t{p}" for p, c in changes.items() if c is None]
    records += [f"{'100755' if p in executable else '100644'} {oid}\t{p}"
                for p, oid in zip(written, oids)]
    import tempfile

    with tempfile.TemporaryDirectory(prefix="tally-index-") as tmp:
        env = {"GIT_INDEX_FILE": str(Path(tmp, "index"))}
        _run(root, ["read-tree", base_oid], env=env)
        if records:
            _run(root, ["update-index", "-z", "--index-info"], env=env,
                 input=b"".join(os.fsencode(r) + b"\0" for r in records))
        tree = _line(_out(root, ["write-tree"], env=env))
    text = message if message.endswith("\n") else message + "\n"
    try:
        return _line(_out(root, ["commit-tree", tree, "-p", base_oid], input=text.encode()))
    except TallyError as exc:
        if "identity" in exc.message.lower():
            exc.hint = "set `git config user.name` and `git config user.email`"
        raise


def resolve_ref(root: Path, ref: str) -> str | None:
    """Return the object id the full ref name `ref` (e.g. refs/heads/x) holds, or None."""
    _check_ref(ref)
    out = _out(root, ["for-each-ref", "--format=%(objectname) %(refname)", ref])
    # for-each-ref also lists the refs under `ref/`; keep the exact name only.
    return next((line.split(" ", 1)[0] for line in os.fsdecode(out).splitlines()
                 if line.split(" ", 1)[1] == ref), None)


def ref_exists(root: Path, ref: str) -> bool:
    """True if the full ref name `ref` (e.g. refs/heads/x) exists."""
    return resolve_ref(root, ref) is not None


def _swap(root: Path, args: list[str], ref: str, old: str | None) -> None:
    code, _, err = _run(root, args, ok=(0, 1, 128))
    if code == 0:
        return
    # Classify by the ref's state rather than git's wording: a lost swap means it moved.
    current = resolve_ref(root, ref)
    if current != old:
        if old is None:
            raise Conflict(f"ref {ref} already exists (at {current})", hint="choose another name")
        if current is None:
            raise NotFound(f"ref {ref} does not exist (expected it at {old})")
        raise Conflict(f"ref {ref} moved: expected {old}, found {current}", hint="re-read it, retry")
    detail = err.decode("utf-8", "replace").strip()
    if "exists; cannot create" in detail:  # refs/heads/a vs refs/heads/a/b
        raise Conflict(f"ref {ref} clashes with an existing ref: {detail}")
    if ".lock': File exists" in detail:
        raise LockBusy(f"ref {ref} is locked by another git process", path=root,
                       hint="wait, or remove the stale .lock file if no git process runs")
    raise _failure(args, err, root)


def update_ref(root: Path, ref: str, new: str, *, old: str | None, message: str | None = None) -> None:
    """Point `ref` at `new` if, and only if, it now points at `old` (compare-and-swap).

    Args:
        ref: a full ref name, e.g. refs/heads/exp-1.
        new: the full object id to store.
        old: the full id the ref must hold now, or None: the ref must not exist.
        message: an optional reflog message.

    Raises:
        Conflict: the ref exists (old=None), moved from `old`, or clashes with another
            name (refs/heads/a vs refs/heads/a/b).
        NotFound: `old` was given but the ref does not exist.
        LockBusy: another git process holds the ref's lock.
        UsageError: a malformed ref name or object id.
        TallyError: git refused otherwise (e.g. a non-commit on a branch).
    """
    _check_ref(ref, new, old)
    _swap(root, ["update-ref", *(["-m", message] if message else []), ref, new,
                 old or "0" * len(new)], ref, old)


def delete_ref(root: Path, ref: str, *, old: str, message: str | None = None) -> None:
    """Delete `ref` if, and only if, it now points at `old` (a full, non-zero id).

    Raises:
        NotFound: the ref does not exist.
        Conflict: the ref points elsewhere.
        LockBusy: another git process holds the ref's lock.
        UsageError: a malformed ref name or object id.
    """
    _check_ref(ref, old)
    if not old.strip("0"):  # git reads a zero old value as "delete whatever is there"
        raise UsageError("delete_ref needs the ref's current id, not the zero id")
    _swap(root, ["update-ref", *(["-m", message] if message else []), "-d", ref, old], ref, old)


def rev_list(root: Path, *, all_branches: bool = False, all_tags: bool = False,
             all_commits: bool = False) -> list[str]:
    """Return the commits of history asked for (gc roots): their union, no duplicates.

    Args:
        all_branches: the tip of every local branch (refs/heads).
        all_tags: the commit every tag points at (peeled; tags of trees/blobs skipped).
        all_commits: every commit reachable from any ref or HEAD (a superset).

    Returns:
        Commit ids, newest first; empty when nothing is asked or there is no commit.
    """
    if all_commits:
        args = ["rev-list", "--all"]
    else:
        args = ["rev-list", "--no-walk", *(["--branches"] if all_branches else []),
                *(["--tags"] if all_tags else [])]
        if len(args) == 2:
            return []
    return list(dict.fromkeys(os.fsdecode(_out(root, args)).split()))


class TreeReader(AbstractContextManager["TreeReader"]):
    """Reads files out of commits through one long-lived `git cat-file --batch` process.

    It walks trees itself and memoizes every (directory, tree id) seen, so reading the
    pointer files of thousands of commits costs only the directories that changed
    between them: reuse one reader, with the same `paths_matching` callable.
    """

    def __init__(self, root: Path) -> None:
        self._root = Path(root)
        import tempfile

        self._stderr = tempfile.TemporaryFile()
        self._proc = _popen(self._root, ["cat-file", "--batch"], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=self._stderr)
        self._matcher: Callable[[str], bool] | None = None
        self._trees: dict[tuple[str, str], list[tuple[str, str]]] = {}
        self._blobs: dict[str, bytes] = {}

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        """Stop the cat-file process (idempotent)."""
        with self._proc:  # closes the pipes (EOF ends cat-file), then waits
            self._stderr.close()

    def _get(self, name: str) -> tuple[str, bytes] | None:
        """Return (type, content) of the object `name`, None if it does not exist."""
        stdin, stdout = self._proc.stdin, self._proc.stdout
        assert stdin and stdout
        try:
            stdin.write(name.encode() + b"\n")
            stdin.flush()
            header = stdout.readline()
        except (BrokenPipeError, ValueError):
            header = b""
        if not header.endswith(b"\n"):
            self._stderr.seek(0)
            raise _failure(["cat-file"], self._stderr.read(), self._root)
        if header.endswith(b" missing\n"):
            return None
        if header.endswith(b" ambiguous\n"):
            raise UsageError(f"ambiguous Git object name {name!r}")
        _, kind, size = header.split()
        data = stdout.read(int(size))
        stdout.read(1)  # the newline after each object
        return kind.decode(), data

    def read_blob(self, oid: str) -> bytes:
        """Return the content of blob `oid`. Raises NotFound if Git does not have it."""
        if (data := self._blobs.get(oid)) is not None:
            return data
        if (obj := self._get(oid)) is None or obj[0] != "blob":
            raise NotFound(f"blob {oid} is missing from the Git repository", path=self._root,
                           hint=_HISTORY_HINT)
        if len(obj[1]) <= _BLOB_CACHE_MAX_BYTES:
            self._blobs[oid] = obj[1]
        return obj[1]

    def _walk(self, prefix: str, tree: str) -> list[tuple[str, str]]:
        if (found := self._trees.get((prefix, tree))) is not None:
            return found
        if (obj := self._get(tree)) is None or obj[0] != "tree":
            raise NotFound(f"tree {tree} ({prefix or '/'}) is missing from the Git repository",
                           path=self._root, hint=_HISTORY_HINT)
        data, raw_len, found, i = obj[1], len(tree) // 2, [], 0
        while i < len(data):  # entries: "<octal mode> <name>\0<binary oid>"
            space = data.index(b" ", i)
            nul = data.index(b"\0", space)
            mode, path = data[i:space], prefix + os.fsdecode(data[space + 1:nul])
            oid, i = data[nul + 1:nul + 1 + raw_len].hex(), nul + 1 + raw_len
            if mode == b"40000":
                found.extend(self._walk(path + "/", oid))
            elif mode.startswith(b"100") and self._matcher(path):  # type: ignore[misc]
                found.append((path, oid))  # regular files only: no symlinks, gitlinks
        self._trees[(prefix, tree)] = found
        return found

    def read_files(self, commit: str, paths_matching: Callable[[str], bool]) -> dict[str, bytes]:
        """Return {path: content} of the regular files at `commit` whose path matches.

        Args:
            commit: a commit id or revision.
            paths_matching: called with each file's path from the root, e.g.
                `lambda p: p.endswith(".tally") or p == "tally.lock"`.

        Raises:
            NotFound: `commit` is not a commit, or an object it names is missing.
        """
        _check_rev(commit)
        if paths_matching is not self._matcher:
            self._matcher, self._trees = paths_matching, {}
        if (obj := self._get(f"{commit}^{{commit}}")) is None:
            raise NotFound(f"no commit named {commit!r} in the Git repository", path=self._root)
        tree = obj[1].split(b"\n", 1)[0].removeprefix(b"tree ").decode()
        return {path: self.read_blob(oid) for path, oid in self._walk("", tree)}


def read_files_at(root: Path, commit: str, paths_matching: Callable[[str], bool]) -> dict[str, bytes]:
    """Return {path: content} of the files at `commit` whose path matches.

    See TreeReader.read_files; for many commits use one TreeReader (shared cache).

    Raises:
        NotFound: `commit` is not a commit, or an object it names is missing.
    """
    with TreeReader(root) as reader:
        return reader.read_files(commit, paths_matching)


def show_file(root: Path, commit: str, path: str) -> bytes | None:
    """Return the content of file `path` at `commit`, None if no file is there.

    Raises:
        NotFound: `commit` is not a commit.
        UsageError: an invalid path.
        TallyError: git failed to read an existing blob.
    """
    _check_rev(commit)
    _check_path(path)
    spec = f"{commit}:{path}"
    code, out, err = _run(root, ["cat-file", "blob", spec], ok=(0, 128))
    if code == 0:
        return out
    _resolve_commit(root, commit)  # NotFound for a bad commit
    code, kind, _ = _run(root, ["cat-file", "-t", spec], ok=(0, 128))
    if code == 0 and kind.strip() == b"blob":
        raise _failure(["cat-file"], err, root)
    return None  # absent, or a directory/submodule rather than a file
