"""The workspace <-> Git linkage: a small, fast wrapper over the git command line.

Every call runs `git` (2.25+) in `root`, the work tree top, with `LC_ALL=C`,
`GIT_TERMINAL_PROMPT=0`, no pager, stdin closed, none of the user's hooks (update-ref
alone would fire `reference-transaction`), and without GIT_DIR, GIT_INDEX_FILE & co.
A failing git command raises TallyError with git's stderr. Paths are POSIX, relative
to `root`, decoded like `os.fsdecode` (undecodable bytes survive as surrogates).

This module is the plumbing (popen, run, output, the argument checks) and what every
command asks of the repository: its root, HEAD, the files Git sees, `.gitignore`, the
commits that exist. Reading files at commits and writing commits and refs (promote,
gc's roots, `books`) is cas/workspace/gitobjects.py, kept off `tally run`'s start-up.
"""

from __future__ import annotations

import fcntl
import os
import subprocess
import time
from collections.abc import Collection, Mapping, Sequence
from pathlib import Path

from cas.core.errors import Conflict, LockBusy, NotFound, StoreError, TallyError, UsageError, from_os_error

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
# Seconds `ensure_ignored` waits for another `tally add` writing the same .gitignore
# before LockBusy (tests shorten it to see a stuck lock fail fast), and its poll interval.
GITIGNORE_LOCK_TIMEOUT_S = 5.0
GITIGNORE_LOCK_POLL_S = 0.02


def popen(cwd: Path, args: Sequence[str], *, env: Mapping[str, str] | None = None,
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


def run(cwd: Path, args: Sequence[str], *, input: bytes | None = None,
         env: Mapping[str, str] | None = None, ok: Collection[int] = (0,)) -> tuple[int, bytes, bytes]:
    """Run one git command; return (exit code, stdout, stderr), raise unless the code is ok."""
    proc = popen(cwd, args, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                  stdin=subprocess.DEVNULL if input is None else subprocess.PIPE)
    with proc:
        try:
            out, err = proc.communicate(input)
        except BaseException:  # Ctrl-C: leave no git behind
            proc.kill()
            raise
    if proc.returncode not in ok:
        raise failure(args, err, cwd)
    return proc.returncode, out, err


def output(cwd: Path, args: Sequence[str], **kwargs: object) -> bytes:
    return run(cwd, args, **kwargs)[1]  # type: ignore[arg-type]


def failure(args: Sequence[str], stderr: bytes, cwd: Path) -> TallyError:
    detail = stderr.decode("utf-8", "replace").strip() or "no message"
    return TallyError(f"git {args[0]} failed: {detail}", path=cwd)


def decode_line(out: bytes) -> str:
    return os.fsdecode(out.removesuffix(b"\n"))


def check_rev(rev: str) -> None:
    # A leading "-" would be read as an option; a newline would split a batch request.
    if not rev or rev.startswith("-") or "\n" in rev or "\0" in rev:
        raise UsageError(f"invalid Git revision {rev!r}")


def check_ref(ref: str, *oids: str | None) -> None:
    if not ref.startswith("refs/") or any(c in ref for c in "\0\n "):
        raise UsageError(f"invalid ref name {ref!r}", hint="use a full name such as refs/heads/NAME")
    for oid in oids:
        if oid is not None and not (len(oid) in _OID_LENGTHS and not oid.strip("0123456789abcdef")):
            raise UsageError(f"not a full lowercase Git object id: {oid!r}")


def check_path(path: str) -> None:
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
    code, out, err = run(where, ["rev-parse", "--show-toplevel"], ok=(0, 128))
    if code != 0:
        detail = err.decode("utf-8", "replace").strip()
        if "not a git repository" in detail.lower():
            raise StoreError("not a Git repository", path=start, hint="run `git init` first")
        raise StoreError(f"Git cannot use this directory: {detail}", path=start,
                         hint="run tally inside the working tree of a non-bare Git repository")
    return Path(decode_line(out))


def head_commit(root: Path) -> str | None:
    """Return the commit HEAD points at, None in a repository with no commit yet.

    Raises:
        TallyError: git failed (e.g. `root` is not a repository).
    """
    code, out, _ = run(root, ["rev-parse", "-q", "--verify", "HEAD^{commit}"], ok=(0, 1))
    return decode_line(out) if code == 0 else None


def current_branch(root: Path) -> str | None:
    """Return the checked-out branch (`main`, not `refs/heads/main`), None when detached.

    A repository with no commit yet has one: the branch its first commit will create.
    """
    code, out, _ = run(root, ["symbolic-ref", "-q", "HEAD"], ok=(0, 1))
    return decode_line(out).removeprefix("refs/heads/") if code == 0 else None


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
        self._proc: subprocess.Popen[bytes] | None = popen(
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
            raise failure(self.ARGS, err, self.root)
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
    check_path(path)
    out = output(root, ["ls-files", "-z", "--cached", "--", f":(literal){path}"])
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
    out = output(root, ["check-ignore", "-z", "--stdin"], input=data, ok=(0, 1))
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
            check_path(rel)
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
            output(root, ["--literal-pathspecs", "ls-files", "-z", "--", rel]):
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
    lock, deadline = file.with_name(file.name + ".lock"), time.monotonic() + GITIGNORE_LOCK_TIMEOUT_S
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
                time.sleep(GITIGNORE_LOCK_POLL_S)
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
    return list(dict.fromkeys(os.fsdecode(output(root, args)).split()))
