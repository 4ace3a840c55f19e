"""Experiment refs: `.tally/refs/exps/<baseline-commit>/<name>`, one text file each.

A ref file holds an experiment record's id and a newline (65 bytes). Readers take no
lock: a ref is replaced by rename, so a reader sees the old content or the new, never
a torn file. Writers compare-and-swap under the `refs` lock (`.tally/locks/refs`):
read the current value, check it is what the caller expected, write a temp file in
the same directory, fsync, rename. A ref is written only after the record it names is
published (objects -> record -> ref), so a ref never names a missing record.

Names follow Git's ref-name rules for one component, and a little more: not empty,
at most 200 bytes, no `/` `\\` whitespace or control characters, none of `~ ^ : ? * [`,
no `..` or `@{`, not `@`, no leading `-` or `.`, no `.lock` suffix. So a name is
always a safe file name and would be a valid Git ref component too.
"""

from __future__ import annotations

import os
from pathlib import Path

from cas.core import hashing
from cas.core.errors import Conflict, FormatError, NotFound, UsageError
from cas.core.fsops import Staged, commit_staged, fsync_dir, stage_file

REFS_DIR = ("refs", "exps")  # under .tally/
REF_SIZE = hashing.OID_HEX_LEN + 1  # 64 hex digits + "\n"
MAX_NAME_BYTES = 200
LOCK_TIMEOUT = 30.0  # seconds: ref updates take milliseconds; waiting beats failing
_BAD_CHARS = frozenset("/\\~^:?*[") | {chr(c) for c in range(0x20)} | {"\x7f"}

Ref = tuple[str, str, str]  # (baseline, name, record oid)


def refs_root(project) -> Path:
    return project.store_dir.joinpath(*REFS_DIR)


def check_name(name: str) -> str:
    """Return `name` if it is a valid experiment name; raise UsageError saying why not."""
    why = name_problem(name)
    if why:
        raise UsageError(f"invalid experiment name {name!r}: {why}",
                         hint="use letters, digits, '-', '_' and '.', e.g. lr-0.01")
    return name


def name_problem(name: str) -> str | None:
    """Why `name` is not a valid experiment name, or None."""
    if not isinstance(name, str) or not name:
        return "it is empty"
    try:
        size = len(name.encode("utf-8", "surrogateescape"))  # as the file name's bytes
    except UnicodeEncodeError:  # a lone surrogate no file name decodes to
        return "it is not valid UTF-8"
    if size > MAX_NAME_BYTES:
        return f"longer than {MAX_NAME_BYTES} bytes"
    # Fast path, exact: whitespace other than " " is never printable, and neither are
    # the control characters of _BAD_CHARS (`show` checks every name it lists).
    clean = name.isprintable() and " " not in name and _BAD_CHARS.isdisjoint(name)
    if not clean and any(c in _BAD_CHARS or c.isspace() for c in name):
        return "it contains '/', '\\', whitespace, a control character or one of ~^:?*["
    if ".." in name or "@{" in name or name == "@":
        return "it contains '..' or '@{' or is '@'"
    if name[0] in "-.":
        return "it starts with '-' or '.'"
    if name.endswith(".lock"):
        return "it ends with '.lock'"
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        return "it is not valid UTF-8"
    return None


def check_baseline(baseline: str) -> str:
    if not isinstance(baseline, str) or len(baseline) not in (40, 64) or \
            any(c not in "0123456789abcdef" for c in baseline):
        raise UsageError(f"{baseline!r} is not a full lowercase Git commit id")
    return baseline


def ref_path(project, baseline: str, name: str) -> Path:
    return refs_root(project) / check_baseline(baseline) / check_name(name)


# ---------------------------------------------------------------- reading

def _parse(data: bytes, path: Path | str) -> str:
    text = data.decode("ascii", "replace")
    if len(data) != REF_SIZE or not text.endswith("\n") or not hashing.is_oid(text[:-1]):
        raise FormatError(f"ref {path} is not an object id and a newline ({len(data)} bytes)",
                          path=path, hint="delete the ref file or restore it from a backup")
    return text[:-1]


def read(project, baseline: str, name: str) -> str | None:
    """The record id `baseline`/`name` points at, or None when there is no such ref.

    Raises:
        UsageError: a malformed baseline or name. FormatError: a damaged ref file.
    """
    p = ref_path(project, baseline, name)
    try:
        with open(p, "rb") as f:
            data = f.read(REF_SIZE + 1)
    except (FileNotFoundError, NotADirectoryError):
        return None
    return _parse(data, p)


def list_baselines(project) -> list[str]:
    """Every baseline commit that has at least a directory of refs, sorted."""
    try:
        with os.scandir(refs_root(project)) as it:
            return sorted(e.name for e in it if e.is_dir(follow_symlinks=False)
                          and len(e.name) in (40, 64) and not e.name.strip("0123456789abcdef"))
    except FileNotFoundError:
        return []


def list_refs(project, baseline: str | None = None) -> list[Ref]:
    """Every ref, as (baseline, name, oid) sorted by baseline then name.

    One scandir per baseline directory plus one small read per ref. Temp files
    (leading '.') and anything that is not a valid name are skipped; a damaged ref
    file raises FormatError naming it.
    """
    baselines = [check_baseline(baseline)] if baseline is not None else list_baselines(project)
    root = refs_root(project)
    out: list[Ref] = []
    for b in baselines:
        d = root / b
        try:
            with os.scandir(d) as it:
                names = sorted(e.name for e in it if not e.name.startswith(".")
                               and e.is_file(follow_symlinks=False))
        except (FileNotFoundError, NotADirectoryError):
            continue
        ds = os.fspath(d)
        for n in names:
            if name_problem(n):
                continue
            try:
                with open(f"{ds}/{n}", "rb") as f:
                    data = f.read(REF_SIZE + 1)
            except FileNotFoundError:
                continue  # deleted while we listed
            out.append((b, n, _parse(data, f"{ds}/{n}")))
    return out


def find(project, name: str, *, baseline: str | None = None) -> list[Ref]:
    """The refs called `name` (under `baseline`, or under any baseline)."""
    check_name(name)
    baselines = [check_baseline(baseline)] if baseline is not None else list_baselines(project)
    out = []
    for b in baselines:
        oid = read(project, b, name)
        if oid is not None:
            out.append((b, name, oid))
    return out


# ---------------------------------------------------------------- writing

def _lock(project):
    return project.lock("refs", timeout=LOCK_TIMEOUT, purpose="updating experiment refs")


def _write(p: Path, oid: str) -> None:
    commit_staged([_stage(p, oid)])


def _stage(p: Path, oid: str) -> Staged:
    """The ref's new content in a temp file beside it; a new baseline directory (and
    its name in refs/exps/) is made durable here, before any ref is renamed into it."""
    for _ in range(3):
        try:
            return stage_file(p, (oid + "\n").encode("ascii"))
        except FileNotFoundError:
            # No baseline directory yet, or a concurrent delete of its last ref just
            # removed it (rmdir fails once our temp file is inside): make it again.
            p.parent.mkdir(parents=True, exist_ok=True)
            fsync_dir(p.parent.parent)
    return stage_file(p, (oid + "\n").encode("ascii"))


def stage(project, baseline: str, name: str, new: str) -> Staged:
    """Write ref `baseline`/`name`'s new content `new` to a temp file, for `commit`.

    Staging takes no lock: the temp file is private until `commit` renames it. The
    caller makes it durable (alone, or in the barrier of the objects it names:
    Writer.flush(also_sync=...)) or lets `commit` do it.
    Raises:
        UsageError: a malformed baseline, name or id.
    """
    if not hashing.is_oid(new):
        raise UsageError(f"{new!r} is not an object id")
    return _stage(ref_path(project, baseline, name), new)


def commit(project, baseline: str, name: str, staged: Staged, old: str | None, *,
           companions: list[Staged] = (), synced: bool = False) -> None:
    """Rename a staged ref into place if, and only if, the ref now holds `old`.

    `companions` (say, tally.lock) are renamed in the same step, just before the ref,
    and their directories fsynced with the ref's: one barrier for all of them. With
    `synced`, every temp file is already durable. On Conflict nothing is renamed and
    the staged files stay, for the caller to commit under another name or discard.
    Raises:
        Conflict: the name is taken (old None) or the ref moved.
        NotFound: `old` was given but the ref does not exist.
        LockBusy: the refs lock timed out.
    """
    p = ref_path(project, baseline, name)
    if staged.path != os.fspath(p):
        raise UsageError(f"staged ref {staged.path} is not {p}")
    with _lock(project):
        _expect(p, baseline, name, _current(p), old)
        commit_staged([*companions, staged], synced=synced)


def _current(p: Path) -> str | None:
    try:
        return _parse(p.read_bytes(), p)
    except (FileNotFoundError, NotADirectoryError):
        return None


def _expect(p: Path, baseline: str, name: str, current: str | None, old: str | None) -> None:
    if current == old:
        return
    if old is None:
        raise Conflict(f"experiment {name!r} already exists for baseline {baseline[:12]}",
                       path=p, hint="choose another name (-n), or remove/rename the existing one")
    if current is None:
        raise NotFound(f"experiment {name!r} does not exist for baseline {baseline[:12]}", path=p)
    raise Conflict(f"experiment {name!r} changed meanwhile: expected {old[:12]}, found {current[:12]}",
                   path=p, hint="another process updated it; re-read and retry")


def update(project, baseline: str, name: str, new: str, old: str | None) -> None:
    """Point `baseline`/`name` at record `new` if, and only if, it now holds `old`.

    Args:
        new: the record id (its object must already be in the store).
        old: the id the ref must hold now, or None: the ref must not exist yet.
    Raises:
        Conflict: the name is taken (old None) or the ref moved.
        NotFound: `old` was given but the ref does not exist.
        UsageError: a malformed baseline, name or id. LockBusy: the refs lock timed out.
    """
    p = ref_path(project, baseline, name)
    for oid in (new, old):
        if oid is not None and not hashing.is_oid(oid):
            raise UsageError(f"{oid!r} is not an object id")
    with _lock(project):
        _expect(p, baseline, name, _current(p), old)
        _write(p, new)


def delete(project, baseline: str, name: str, old: str) -> None:
    """Delete `baseline`/`name` if, and only if, it now holds `old`.

    Raises:
        NotFound: no such ref. Conflict: it points elsewhere.
    """
    p = ref_path(project, baseline, name)
    with _lock(project):
        current = _current(p)
        if current is None:
            raise NotFound(f"experiment {name!r} does not exist for baseline {baseline[:12]}", path=p)
        _expect(p, baseline, name, current, old)
        os.unlink(p)
        fsync_dir(p.parent)
        try:
            p.parent.rmdir()  # the last ref of a baseline takes its directory with it
        except OSError:
            pass


def rename(project, baseline: str, old_name: str, new_name: str, *, oid: str | None = None) -> str:
    """Rename an experiment's ref; the record keeps its id. Returns that id.

    Args:
        oid: when given, the ref must hold it (compare-and-swap); else whatever it holds.
    Raises:
        NotFound: no ref `old_name`. Conflict: `new_name` is taken, or the ref moved.
    """
    src = ref_path(project, baseline, old_name)
    dst = ref_path(project, baseline, new_name)
    with _lock(project):
        current = _current(src)
        if current is None:
            raise NotFound(f"experiment {old_name!r} does not exist for baseline {baseline[:12]}", path=src)
        if oid is not None:
            _expect(src, baseline, old_name, current, oid)
        if _current(dst) is not None:
            raise Conflict(f"experiment {new_name!r} already exists for baseline {baseline[:12]}",
                           path=dst, hint="choose another name")
        # link() never overwrites: even a ref created behind the lock's back is safe.
        try:
            os.link(src, dst)
        except FileExistsError:
            raise Conflict(f"experiment {new_name!r} already exists for baseline {baseline[:12]}",
                           path=dst) from None
        os.unlink(src)
        fsync_dir(src.parent)
    return current


# ---------------------------------------------------------------- generated names

_ADJECTIVES = (
    "agile amber ample azure bald bland bold brave brisk broad calm chewy civic coral "
    "crisp curly dandy dense dusty eager early famed fancy fiery fleet fond frank fresh "
    "furry gaunt giddy glad grand gummy handy hardy hasty hazel hefty humid icy jaunty "
    "jolly jumpy keen known lanky lean lofty loyal lucid lunar mazy merry messy minty "
    "mossy muted naive neat nifty noble nutty oaken olive pale peppy perky plush poky "
    "proud puffy quick quiet rapid regal rocky rosy rowdy ruddy rusty sandy sassy shaky "
    "sharp shady silky sleek slick snowy solid spicy stark stony sunny swift tame tangy "
    "tawny teal tense tidy tiny topaz vital vivid wacky warm wary wavy windy witty woody "
    "zany zesty").split()
_NOUNS = (
    "acre alps anvil apex aunt bank bard barn bead beam bees bell bend bird bolt bone "
    "boot brim buck bulb bump cake calf cape cart cask cell chip clam clay clog coat "
    "comb cone cork crab crow cube curd dais dale dart deck dell dent dirk dock dome "
    "dove drum duck dune dusk fawn fern fife film fish flax foal fork fowl frog gale "
    "gaze gear gill glen goat gown gulf hare hawk heap herb hive hood horn hull iris "
    "jade jamb jazz kiln kite knot lamb lark leaf lime lynx mace mare mast mesa mink "
    "moat moss moth mule nave newt nook oath oboe oryx owls pail pear pike plum pond "
    "pram quay raft reed rook ruff sage seal silo skua slab sloe swan tarn teak toad "
    "tuba vale vole wasp weir wren yak yawl").split()
GENERATE_TRIES = 64


def candidate_name(seed: str, attempt: int) -> str:
    """The `attempt`-th generated name for `seed` (a hex id): `adjective-noun`.

    Attempts beyond the first few add a numeric suffix so the sequence never runs dry.
    """
    h = hashing.hash_bytes(f"{seed}:{attempt}".encode()) if attempt else seed
    n = int(h[:12], 16)
    name = f"{_ADJECTIVES[n % len(_ADJECTIVES)]}-{_NOUNS[(n // len(_ADJECTIVES)) % len(_NOUNS)]}"
    return name if attempt < 8 else f"{name}-{attempt}"


def generate_name(project, baseline: str, seed: str) -> str:
    """A readable name, unique under `baseline` right now, deterministic from `seed`.

    Callers still create the ref with update(..., old=None) and retry with the next
    name on Conflict, since another run may take the name in between.
    """
    check_baseline(baseline)
    for attempt in range(GENERATE_TRIES):
        name = candidate_name(seed, attempt)
        if read(project, baseline, name) is None:
            return name
    raise Conflict("could not find a free experiment name", hint="give one with -n NAME")


# ---------------------------------------------------------------- gc / fsck roots

def roots(project):
    """fsck/gc roots: every ref's record, and the workspace tree, outputs, logs and
    checkpoints it names (deps are inside the workspace tree)."""
    from cas.objects import record
    from cas.core.errors import TallyError

    for baseline, name, oid in list_refs(project):
        label = f"experiment {name} ({baseline[:12]})"
        yield label, oid, False
        try:
            rec = record.load(project.store, oid)
        except TallyError:
            continue  # fsck reports the record itself as missing or corrupt
        if rec.workspace:
            yield f"{label} workspace", rec.workspace, True
        for path, (o, is_dir) in rec.outs.items():
            yield f"{label}:{path}", o, is_dir
        if rec.logs:
            yield f"{label} logs", rec.logs, False
        for step, t in rec.checkpoints:
            yield f"{label} checkpoint {step}", t, True


__all__ = ["read", "list_refs", "list_baselines", "find", "update", "delete", "rename",
           "check_name", "name_problem", "generate_name", "candidate_name",
           "ref_path", "refs_root", "roots"]
