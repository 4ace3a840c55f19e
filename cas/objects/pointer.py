"""Pointer files: `PATH.tally`, the small text file committed to Git in place of data.

    # tally: data/images is stored in .tally/; `tally checkout` restores it
    format: 1
    oid: 3f2a...64 hex...
    kind: dir
    size: 1073741824
    files: 50000
    mode: 0

One `key: value` per line (so it also reads as YAML), `#` comments and blank lines
ignored, keys in any order, unknown keys ignored (a newer tally may add some), every
known key required. `kind` is `file` or `dir`; `mode` is 0o644/0o755 in octal text for
a file and 0 for a directory.
"""

# No `from __future__ import annotations`: typing.NamedTuple compiles every string
# annotation into a ForwardRef, ~0.3 ms a class of every `tally run` start-up.

import os
import re
from pathlib import Path
from typing import NamedTuple

from cas.core import hashing, paths
from cas.core.errors import NotFound, UsageError, from_os_error
from cas.core.fsops import atomic_write

SUFFIX = ".tally"
# Patterns as text, compiled (and cached by `re`) on first use: `tally run` imports this
# module without ever reading a pointer.
_DECIMAL = r"[0-9]{1,20}"
_OCTAL = r"[0-7]{1,6}"
FORMAT = 1
MAX_POINTER_SIZE = 64 * 1024  # bytes: a pointer is ~200; anything huge is not one


class Pointer(NamedTuple):
    """What a pointer file says: the data at `path` (relative to the project root)."""

    path: str
    oid: str
    is_dir: bool
    size: int
    files: int
    mode: int = 0o644

    def encode(self) -> bytes:
        kind = "dir" if self.is_dir else "file"
        mode = "0" if self.is_dir else oct(self.mode)[2:]
        return (f"# tally: {self.path} is stored in .tally/; `tally checkout` restores it\n"
                f"format: {FORMAT}\noid: {self.oid}\nkind: {kind}\nsize: {self.size}\n"
                f"files: {self.files}\nmode: {mode}\n").encode("utf-8")


def pointer_path(data_path: str | os.PathLike[str]) -> Path:
    """`data/x` -> `data/x.tally`."""
    p = Path(data_path)
    return p.with_name(p.name + SUFFIX)


def data_path(pointer: str | os.PathLike[str]) -> Path:
    """`data/x.tally` -> `data/x`."""
    p = Path(pointer)
    return p.with_name(p.name[: -len(SUFFIX)])


def decode(text: bytes, *, path: str) -> Pointer:
    """Parse a pointer file's bytes; `path` is the data path it describes.

    Raises:
        UsageError: malformed (the message names the file, the line and what is wrong).
    """
    where = str(pointer_path(path))
    if len(text) > MAX_POINTER_SIZE:
        raise UsageError(f"{where} is {len(text)} bytes: not a tally pointer", path=where)
    try:
        # Lines end at LF only (a CR before it is dropped): str.splitlines would also
        # split at VT, FF and U+2028, which no writer of this format produces.
        lines = [ln.removesuffix("\r") for ln in text.decode("utf-8").split("\n")]
    except UnicodeDecodeError:
        raise UsageError(f"{where} is not UTF-8 text: not a tally pointer", path=where) from None
    fields: dict[str, str] = {}
    for n, line in enumerate(lines, 1):
        s = line.strip()
        if not s or s.startswith("#"):
            continue
        key, sep, value = s.partition(":")
        if not sep:
            raise UsageError(f"{where}:{n}: expected `key: value`, got {s[:60]!r}", path=where,
                             hint="restore the file from Git (`git checkout -- FILE`)")
        key = key.strip()
        if key in fields:
            raise UsageError(f"{where}:{n}: `{key}:` appears twice", path=where,
                             hint="a merge conflict? restore the file from Git")
        fields[key] = value.strip()

    def need(key: str) -> str:
        if key not in fields:
            raise UsageError(f"{where}: missing `{key}:`", path=where,
                             hint="restore the file from Git (`git checkout -- FILE`)")
        return fields[key]

    def number(key: str, base: int = 10) -> int:
        text_value = need(key)
        # Plain ASCII digits only: int() would also take "1_000", "+5" and other scripts.
        digits = _OCTAL if base == 8 else _DECIMAL
        if not re.fullmatch(digits, text_value):
            raise UsageError(f"{where}: `{key}: {text_value[:40]}` is not a plain "
                             f"{'octal ' if base == 8 else ''}number", path=where)
        return int(text_value, base)

    fmt = number("format")
    if fmt < 1:
        raise UsageError(f"{where}: pointer format {fmt} does not exist", path=where)
    if fmt > FORMAT:
        raise UsageError(f"{where}: pointer format {fmt} is newer than this tally ({FORMAT})",
                         path=where, hint="upgrade tally")
    oid = need("oid")
    if not hashing.is_oid(oid):
        raise UsageError(f"{where}: `oid: {oid[:80]}` is not a 64-digit lowercase hex id", path=where)
    kind = need("kind")
    if kind not in ("file", "dir"):
        raise UsageError(f"{where}: `kind: {kind}` must be file or dir", path=where)
    mode = number("mode", 8)
    if kind == "file" and mode not in (0o644, 0o755):
        raise UsageError(f"{where}: file mode {oct(mode)} must be 644 or 755", path=where)
    files = number("files")
    if kind == "file" and files != 1:
        raise UsageError(f"{where}: a file pointer must say `files: 1`, not {files}", path=where)
    return Pointer(path=path, oid=oid, is_dir=kind == "dir", size=number("size"),
                   files=files, mode=mode if kind == "file" else 0)


def read(root: Path, rel: str) -> Pointer:
    """Read the pointer for data path `rel` (relative to `root`).

    Raises:
        NotFound: no pointer file. UsageError: malformed. UnsafePath: its data path
            names `.git`, `.tally` or leaves the work tree (cas/core/paths.py).
        StoreError, TallyError: the file cannot be read (permissions, I/O error).
    """
    paths.check_path(rel, source=f"{rel}{SUFFIX}")
    p = root / pointer_path(rel)
    try:
        text = p.read_bytes()
    except FileNotFoundError:
        raise NotFound(f"{p.relative_to(root)} does not exist", path=p,
                       hint=f"`tally add {rel}` to start tracking it") from None
    except OSError as exc:
        raise from_os_error(exc, path=p, doing="reading a pointer file") from None
    return decode(text, path=rel)


def write(root: Path, ptr: Pointer) -> Path:
    """Atomically write the pointer file; returns its path. A crash at any instant
    leaves the old pointer or the new one, whole (failpoints `pointer:*`).

    Raises:
        StoreError, TallyError: the file cannot be written (full disk, permissions,
            I/O error); the old pointer, if any, is left as it was.
    """
    p = root / pointer_path(ptr.path)
    try:
        atomic_write(p, ptr.encode(), failpoints="pointer")
    except OSError as exc:
        raise from_os_error(exc, path=p, doing="writing a pointer file") from None
    return p


def find_all(root: Path) -> list[str]:
    """Data paths (relative, POSIX) of every `*.tally` pointer under `root`, sorted.

    Skips `.git`, `.tally` and the insides of directories that are themselves
    tracked data (their pointer sits beside them).
    """
    found: list[str] = []
    stack = [root]
    while stack:
        d = stack.pop()
        try:
            entries = list(os.scandir(d))
        except OSError:
            continue
        names = {e.name for e in entries}
        for e in entries:
            if e.name in (".git", ".tally"):
                continue
            if e.name.endswith(SUFFIX) and e.name != SUFFIX and e.is_file(follow_symlinks=False):
                found.append(Path(e.path).relative_to(root).as_posix()[: -len(SUFFIX)])
            elif e.is_dir(follow_symlinks=False) and (e.name + SUFFIX) not in names:
                stack.append(Path(e.path))
    return sorted(found)
