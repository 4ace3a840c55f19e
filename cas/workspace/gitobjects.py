"""Git's objects and refs through plumbing: files at commits, new commits and branches.

Reading: TreeReader (one `git cat-file --batch` for many commits, small blobs cached),
read_files_at and show_file give the content of files at a commit, for gc's roots in
history, `books` and promote. Writing: hash_objects (one `git fast-import`),
commit_tree (a commit on top of a base, built in a temporary index) and
update_ref/delete_ref (compare-and-swap) let `tally promote` create branches without
touching the user's working tree, index or HEAD. Objects are written before the ref
naming them: a crash leaves at most unreachable objects for `git gc`.

Every call goes through cas/workspace/git.py's plumbing (its environment, options and errors).
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Callable, Collection, Mapping, Sequence
from contextlib import AbstractContextManager, suppress
from pathlib import Path

from cas.workspace import git
from cas.core.errors import Conflict, LockBusy, NotFound, TallyError, UsageError

_BLOB_CACHE_MAX_BYTES = 64 * 1024  # pointer files are ~100 B, tally.lock a few KiB
_HISTORY_HINT = "the clone may be shallow or partial, or damaged; run `git fsck`"


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
            proc = git.popen(root, ["fast-import", "--quiet", "--done", f"--export-marks={marks}"],
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
                raise git.failure(["fast-import"], err.read(), root)
        by_mark = dict(line.split(" ", 1) for line in marks.read_text("ascii").splitlines())
    return [by_mark[f":{i}"] for i in range(1, len(contents) + 1)]


def _resolve_commit(root: Path, rev: str) -> str:
    git.check_rev(rev)
    code, out, _ = git.run(root, ["rev-parse", "-q", "--verify", f"{rev}^{{commit}}"], ok=(0, 1))
    if code == 0:
        return git.decode_line(out)
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
        git.check_path(path)
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
        git.run(root, ["read-tree", base_oid], env=env)
        if records:
            git.run(root, ["update-index", "-z", "--index-info"], env=env,
                 input=b"".join(os.fsencode(r) + b"\0" for r in records))
        tree = git.decode_line(git.output(root, ["write-tree"], env=env))
    text = message if message.endswith("\n") else message + "\n"
    try:
        return git.decode_line(git.output(root, ["commit-tree", tree, "-p", base_oid], input=text.encode()))
    except TallyError as exc:
        if "identity" in exc.message.lower():
            exc.hint = "set `git config user.name` and `git config user.email`"
        raise


def resolve_ref(root: Path, ref: str) -> str | None:
    """Return the object id the full ref name `ref` (e.g. refs/heads/x) holds, or None."""
    git.check_ref(ref)
    out = git.output(root, ["for-each-ref", "--format=%(objectname) %(refname)", ref])
    # for-each-ref also lists the refs under `ref/`; keep the exact name only.
    return next((line.split(" ", 1)[0] for line in os.fsdecode(out).splitlines()
                 if line.split(" ", 1)[1] == ref), None)


def ref_exists(root: Path, ref: str) -> bool:
    """True if the full ref name `ref` (e.g. refs/heads/x) exists."""
    return resolve_ref(root, ref) is not None


def _swap(root: Path, args: list[str], ref: str, old: str | None) -> None:
    code, _, err = git.run(root, args, ok=(0, 1, 128))
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
    raise git.failure(args, err, root)


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
    git.check_ref(ref, new, old)
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
    git.check_ref(ref, old)
    if not old.strip("0"):  # git reads a zero old value as "delete whatever is there"
        raise UsageError("delete_ref needs the ref's current id, not the zero id")
    _swap(root, ["update-ref", *(["-m", message] if message else []), "-d", ref, old], ref, old)


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
        self._proc = git.popen(self._root, ["cat-file", "--batch"], stdin=subprocess.PIPE,
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
            raise git.failure(["cat-file"], self._stderr.read(), self._root)
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
        git.check_rev(commit)
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
    git.check_rev(commit)
    git.check_path(path)
    spec = f"{commit}:{path}"
    code, out, err = git.run(root, ["cat-file", "blob", spec], ok=(0, 128))
    if code == 0:
        return out
    _resolve_commit(root, commit)  # NotFound for a bad commit
    code, kind, _ = git.run(root, ["cat-file", "-t", spec], ok=(0, 128))
    if code == 0 and kind.strip() == b"blob":
        raise git.failure(["cat-file"], err, root)
    return None  # absent, or a directory/submodule rather than a file


def ignored_under(root: Path, gitignores: Mapping[str, bytes], paths: Collection[str]) -> set[str]:
    """The subset of `paths` that Git would ignore in a work tree whose `.gitignore`
    files are `gitignores` ({path of the .gitignore: its content}), with this
    repository's `info/exclude` and `core.excludesFile`. Tracked-ness is not looked
    at (the caller knows which paths a commit tracks: those Git commits regardless).

    Promote asks this of an experiment's workspace, whose `.gitignore` files may differ
    from the current work tree's: the rules are laid out in a temporary directory
    that stands in for the work tree (`git check-ignore --no-index` reads no file but
    the rules, so the paths themselves need not exist).

    Raises:
        UsageError: a `.gitignore` path that is not a plain relative path.
        TallyError: git failed.
    """
    if not paths:
        return set()
    import tempfile

    git_dir = git.decode_line(git.output(root, ["rev-parse", "--absolute-git-dir"]))
    with tempfile.TemporaryDirectory(prefix="tally-ignore-") as tmp:
        for rel, content in gitignores.items():
            git.check_path(rel)
            if rel.rsplit("/", 1)[-1] != ".gitignore":
                raise UsageError(f"not a .gitignore file: {rel}")
            dest = Path(tmp, rel)
            dest.parent.mkdir(parents=True, exist_ok=True)
            dest.write_bytes(content)
        data = b"".join(os.fsencode(p) + b"\0" for p in paths)
        out = git.output(Path(tmp), [f"--git-dir={git_dir}", f"--work-tree={tmp}", "check-ignore",
                                     "--no-index", "-z", "--stdin"], input=data, ok=(0, 1))
    return {os.fsdecode(p) for p in out.split(b"\0") if p}
