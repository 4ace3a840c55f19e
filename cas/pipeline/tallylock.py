"""`tally.lock`: what each stage last ran with and produced, committed with the code.

Like DVC's `dvc.lock`, one entry per stage under `stages:`, sorted by stage name, every
mapping's keys sorted, so the text is deterministic and diffs stay small:

    # tally.lock: written by `tally run`; commit it with your code
    schema: 1
    stages:
      train:
        cmd: python src/train.py data/features model.pkl
        deps:
        - path: data/features
          oid: 5e0c...        (tree id for a directory)
          size: 2048
          files: 2            (directories only)
        - path: src/train.py
          oid: 9a1f...
          size: 812
        params:
          params.yaml:
            train.lr: 0.1
        outs:
        - path: model.pkl
          oid: 77b2...
          size: 40960

`cmd` is a string, or a list when the stage has several commands; `wdir` appears
only when it is not `.`. Scalars are plain when that is unambiguous YAML and
double-quoted JSON strings otherwise; nested values (a list, a whole mapping of
params) are written as JSON flow collections, which YAML reads the same.

Reading takes a fast path that parses exactly this subset (no ruamel import, which
costs ~25 ms of the 100 ms a run may add); a file edited by hand into some other
valid YAML is read by ruamel instead. Writing is atomic (temp file, fsync, rename).
"""

# No `from __future__ import annotations`: typing.NamedTuple compiles every string
# annotation into a ForwardRef, ~0.3 ms a class of every `tally run` start-up.

import math
from pathlib import Path
from typing import Any, NamedTuple

from cas.core import yamlsubset
from cas.core.errors import UsageError
from cas.core.fsops import Staged, commit_staged, stage_file

LOCK_FILE = "tally.lock"
SCHEMA = 1
HEADER = "# tally.lock: written by `tally run`; commit it with your code\n"


# NamedTuples, not dataclasses: a dataclass costs ~1 ms of `tally run`'s start-up each.
class FileState(NamedTuple):
    """A dep or out as recorded: its id, size and, for a directory, its file count."""

    path: str
    oid: str
    size: int
    files: int | None = None  # None for a file

    @property
    def is_dir(self) -> bool:
        return self.files is not None


class StageLock(NamedTuple):
    """One stage's entry (a value: its params dict is never changed in place)."""

    cmd: tuple[str, ...]
    wdir: str = "."
    deps: tuple[FileState, ...] = ()
    params: dict[str, dict[str, Any]] = {}  # file -> {key: value}
    outs: tuple[FileState, ...] = ()


# ---------------------------------------------------------------- writing

def _scalar(v: Any) -> str:
    if v is None:
        return "null"
    if v is True:
        return "true"
    if v is False:
        return "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        if math.isnan(v):
            return ".nan"
        if math.isinf(v):
            return ".inf" if v > 0 else "-.inf"
        return repr(v)
    if isinstance(v, str):
        # Plain exactly when the one resolver reads it back as this string (ids too).
        return v if yamlsubset.is_plain(v) else _quote(v)
    if isinstance(v, (list, tuple, dict)):
        import json  # nested values are rare: not worth json's start-up on every run
        return json.dumps(v, ensure_ascii=True, sort_keys=True, separators=(", ", ": ")).replace("\x7f", "\\u007f")
    raise UsageError(f"a {type(v).__name__} cannot be written to {LOCK_FILE}")


# Characters YAML treats as line breaks or does not allow raw in a stream: such a
# string is written all-ASCII, escaped (JSON escapes are valid YAML escapes).
_UNSAFE_CHARS = frozenset("\x00\x01\x02\x03\x04\x05\x06\x07\x08\x0b\x0c\x0e\x0f\x10\x11\x12"
                          "\x13\x14\x15\x16\x17\x18\x19\x1a\x1b\x1c\x1d\x1e\x1f"
                          "\u2028\u2029\ufeff\ufffe\uffff")


def _quote(s: str) -> str:
    import json  # only for a string that cannot be plain: most locks never need it
    if any(c in _UNSAFE_CHARS or "\x7f" <= c <= "\x9f" or "\ud800" <= c <= "\udfff" for c in s):
        return json.dumps(s, ensure_ascii=True).replace("\x7f", "\\u007f")
    return json.dumps(s, ensure_ascii=False)


def _key(k: str) -> str:
    s = _scalar(str(k))
    return s


def dumps(stages: dict[str, StageLock]) -> str:
    """The canonical text of a lock file holding `stages`."""
    out = [HEADER, f"schema: {SCHEMA}\n", "stages:\n" if stages else "stages: {}\n"]
    for name in sorted(stages):
        st = stages[name]
        out.append(f"  {_key(name)}:\n")
        cmd = st.cmd[0] if len(st.cmd) == 1 else list(st.cmd)
        if isinstance(cmd, str):
            out.append(f"    cmd: {_scalar(cmd)}\n")
        else:
            out.append("    cmd:\n" + "".join(f"    - {_scalar(c)}\n" for c in cmd))
        for section, items in (("deps", st.deps), ("outs", st.outs)):
            if section == "outs" and st.params:
                out.append("    params:\n")
                for file in sorted(st.params):
                    out.append(f"      {_key(file)}:\n")
                    for k in sorted(st.params[file]):
                        out.append(f"        {_key(k)}: {_scalar(st.params[file][k])}\n")
            if not items:
                continue
            out.append(f"    {section}:\n")
            for fs in sorted(items, key=lambda f: f.path):
                out.append(f"    - path: {_scalar(fs.path)}\n      oid: {_scalar(fs.oid)}\n      size: {fs.size}\n")
                if fs.files is not None:
                    out.append(f"      files: {fs.files}\n")
        if st.wdir != ".":
            out.append(f"    wdir: {_scalar(st.wdir)}\n")
    return "".join(out)


def write(root: Path, stages: dict[str, StageLock]) -> bool:
    """Write `tally.lock` atomically unless its text would not change. Returns True if written."""
    staged = stage(root, stages)
    if staged is None:
        return False
    commit_staged([staged])
    return True


def stage(root: Path, stages: dict[str, StageLock]) -> Staged | None:
    """`tally.lock`'s new text in a temp file beside it (fsops.commit_staged renames it
    into place), or None when the text would not change."""
    text = dumps(stages)
    path = Path(root) / LOCK_FILE
    try:
        if path.read_text(encoding="utf-8") == text:
            return None
    except (FileNotFoundError, UnicodeDecodeError):
        pass
    return stage_file(path, text.encode("utf-8"))


# ---------------------------------------------------------------- reading

class _Unsupported(Exception):
    """The fast parser met YAML outside the subset it writes."""


def _parse_scalar(s: str) -> Any:
    if not s:
        raise _Unsupported
    if s[0] in "\"[{":  # a JSON string token or flow collection: JSON is YAML here
        import json
        try:
            return json.loads(s)
        except ValueError:
            raise _Unsupported from None
    value = yamlsubset.plain_scalar(s)
    if value is yamlsubset.NOT_PLAIN:
        raise _Unsupported
    return value


def _fast_parse(text: str) -> Any:
    """Parse the block subset dumps() writes: mappings, `- ` sequences, flow scalars."""
    lines = []
    for raw in text.split("\n"):
        raw = raw.removesuffix("\r")
        stripped = raw.strip()
        if not stripped or stripped.startswith("#"):
            continue
        if "\t" in raw[: len(raw) - len(raw.lstrip())]:
            raise _Unsupported
        lines.append((len(raw) - len(raw.lstrip(" ")), stripped))
    pos = 0

    def block(indent: int) -> Any:
        if pos >= len(lines):
            return None
        ind, s = lines[pos]
        if s.startswith("- ") or s == "-":
            return seq(ind)
        return mapping(ind)

    def mapping(indent: int) -> dict:
        nonlocal pos
        out: dict = {}
        while pos < len(lines):
            ind, s = lines[pos]
            if ind < indent:
                break
            if ind > indent or s.startswith("- "):
                raise _Unsupported
            key, value = _split_kv(s)
            pos += 1
            if key in out:
                raise _Unsupported
            if value == "":
                if pos < len(lines) and (lines[pos][0] > indent or
                                         (lines[pos][0] == indent and lines[pos][1].startswith("- "))):
                    out[key] = block(lines[pos][0])
                else:
                    out[key] = None
            else:
                out[key] = _parse_scalar(value)
        return out

    def seq(indent: int) -> list:
        nonlocal pos
        out: list = []
        while pos < len(lines):
            ind, s = lines[pos]
            if ind < indent or not (s.startswith("- ") or s == "-"):
                break
            if ind > indent:
                raise _Unsupported
            rest = s[2:].strip()
            if not rest:
                raise _Unsupported
            if _is_kv(rest):
                # A mapping item: its first key on the dash line, the rest indented by 2.
                lines[pos] = (ind + 2, rest)
                out.append(mapping(ind + 2))
            else:
                pos += 1
                out.append(_parse_scalar(rest))
        return out

    result = block(0)
    if pos != len(lines):
        raise _Unsupported
    return result


def _is_kv(s: str) -> bool:
    if s[0] in "\"[{":
        return s[0] == '"' and _quoted_key_end(s) is not None
    return ": " in s or s.endswith(":")


def _quoted_key_end(s: str) -> int | None:
    import json
    try:
        _, end = json.JSONDecoder().raw_decode(s)
    except ValueError:
        return None
    return end if s[end:end + 1] == ":" else None


def _split_kv(s: str) -> tuple[str, str]:
    if s.startswith('"'):
        end = _quoted_key_end(s)
        if end is None:
            raise _Unsupported
        import json
        return json.loads(s[:end]), s[end + 1:].strip()
    if s.endswith(":"):
        key, value = s[:-1], ""
    else:
        key, sep, value = s.partition(": ")
        if not sep:
            raise _Unsupported
    key = key.strip()
    if not key or key[0] in "'&*!|>%@`#?[{":
        raise _Unsupported
    return key, value.strip()


def _slow_parse(text: str, path: Path) -> Any:
    from ruamel.yaml import YAML

    try:
        return YAML(typ="safe", pure=True).load(text)
    except Exception as exc:
        mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
        line = f":{mark.line + 1}" if mark is not None else ""
        problem = str(getattr(exc, "problem", None) or exc).strip()
        raise UsageError(f"{path}{line}: malformed YAML: {problem}", path=path,
                         hint="restore it from Git, or delete it to re-run every stage") from None


def loads(text: str, *, path: str | Path = LOCK_FILE) -> dict[str, StageLock]:
    """Parse lock-file text into {stage: StageLock}.

    Raises:
        UsageError: malformed (the message names the file, the line or key, and what).
    """
    path = Path(path)
    try:
        data = _fast_parse(text)
    except _Unsupported:
        data = _slow_parse(text, path)
    return _stage_map(data, path)


def _stage_map(data: Any, path: str | Path = LOCK_FILE) -> dict[str, StageLock]:
    path = Path(path)
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise UsageError(f"{path}: top level must be a mapping", path=path)
    schema = data.get("schema")
    if schema != SCHEMA:
        raise UsageError(f"{path}: schema {schema!r} is not supported (this tally reads {SCHEMA})",
                         path=path, hint="upgrade tally, or delete the file to re-run every stage")
    stages = data.get("stages") or {}
    if not isinstance(stages, dict):
        raise UsageError(f"{path}: stages must be a mapping", path=path)
    return {str(name): _stage(str(name), raw, path) for name, raw in stages.items()}


def _stage(name: str, raw: Any, path: Path) -> StageLock:
    where = f"{path}: stages.{name}"
    if not isinstance(raw, dict):
        raise UsageError(f"{where}: expected a mapping", path=path)
    cmd = raw.get("cmd")
    cmds = (cmd,) if isinstance(cmd, str) else tuple(cmd) if isinstance(cmd, list) else None
    if not cmds or not all(isinstance(c, str) for c in cmds):
        raise UsageError(f"{where}.cmd: expected a command or a list of commands", path=path)
    wdir = raw.get("wdir", ".")
    if not isinstance(wdir, str):
        raise UsageError(f"{where}.wdir: expected a path", path=path)
    params = raw.get("params") or {}
    if not isinstance(params, dict) or not all(isinstance(v, dict) for v in params.values()):
        raise UsageError(f"{where}.params: expected {{file: {{key: value}}}}", path=path)
    return StageLock(cmd=cmds, wdir=wdir, deps=_states(raw.get("deps"), f"{where}.deps", path),
                     params={str(f): {str(k): v for k, v in kv.items()} for f, kv in params.items()},
                     outs=_states(raw.get("outs"), f"{where}.outs", path))


def _states(items: Any, where: str, path: Path) -> tuple[FileState, ...]:
    from cas.core.hashing import is_oid

    if items is None:
        return ()
    if not isinstance(items, list):
        raise UsageError(f"{where}: expected a list", path=path)
    out = []
    for i, it in enumerate(items):
        ok = isinstance(it, dict) and isinstance(it.get("path"), str) and isinstance(it.get("oid"), str) \
            and is_oid(it["oid"]) and type(it.get("size")) is int \
            and (it.get("files") is None or type(it.get("files")) is int)
        if not ok:
            raise UsageError(f"{where}[{i}]: expected path, a 64-hex oid, size (and files for a directory)",
                             path=path)
        out.append(FileState(it["path"], it["oid"], it["size"], it.get("files")))
    return tuple(out)


def read(root: Path) -> dict[str, StageLock]:
    """Read `tally.lock` at `root`; {} when there is none."""
    path = Path(root) / LOCK_FILE
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return {}
    except UnicodeDecodeError:
        raise UsageError(f"{LOCK_FILE} is not UTF-8 text", path=path) from None
    return loads(text, path=LOCK_FILE)
