"""Params files (YAML, JSON, TOML) and `-S` overrides.

A params file is a mapping of (possibly nested) keys to values. The format is chosen
by suffix: `.yaml`/`.yml`, `.json`, `.toml`; anything else is a ParamError. YAML is
read as YAML 1.2 (ruamel.yaml), so `yes`/`on` are strings and `1e-3` is a float.

Keys are dotted paths: `train.lr`, and list items by index, `layers.0.size` (the
DVC templating form `layers[0].size` means the same). A mapping key that itself
contains dots (`"a.b": 1`) is found too: lookup tries the longest dotted prefix
that names a key at each level.

Overrides follow DVC's `-S/--set-param` (Hydra basic grammar):

    [FILE:]KEY=VALUE     change an existing key (FILE defaults to params.yaml)
    [FILE:]+KEY=VALUE    add a key that must not exist yet (parents are created)
    [FILE:]++KEY=VALUE   add or change
    [FILE:]~KEY          delete an existing key

VALUE is read as a YAML scalar (`0.1` float, `true` bool, `null` None, `[1,2]` a
list, `{a: 1}` a mapping, `'a,b'` a quoted string, anything else the text as is).
A VALUE may also be a sweep of several values (`lr=0.1,0.01`, `choice(...)`,
`range(...)`): parse_override gives one Override per value; the sweep syntax and the
grid of several specs are cas/pipeline/sweepspec.py.

YAML files of plain `key: value` lines are read and edited without ruamel.yaml
(cas/core/yamlsubset.py), with the same result; everything else goes through ruamel's round
trip, keeping comments, key order and quoting.
"""

# No `from __future__ import annotations`: typing.NamedTuple compiles every string
# annotation into a ForwardRef, ~0.3 ms a class of every `tally run` start-up.

import datetime
import functools
import io
import os
import posixpath
import re
from collections.abc import Iterable, Mapping, MutableMapping, MutableSequence, Sequence
from pathlib import Path
from typing import Any, Literal, NamedTuple

from cas.core.errors import NotFound, ParamError, from_os_error
from cas.core.fsops import atomic_write
from cas.core.yamlsubset import NOT_PLAIN, edit_flat, parse_flat, plain_scalar
from cas.pipeline.stages import DEFAULT_PARAMS_FILE  # defined with the pipeline types; part of this API

FORMATS = {".yaml": "yaml", ".yml": "yaml", ".json": "json", ".toml": "toml"}

Op = Literal["set", "add", "force", "delete"]
_MISSING = object()


class Override(NamedTuple):  # not a dataclass: ~1 ms less start-up for `tally run -S`
    """One edit to one params file: `op` on dotted `key`, with `value` (None for delete)."""

    key: str
    file: str = DEFAULT_PARAMS_FILE
    op: Op = "set"
    value: Any = None


# ---------------------------------------------------------------- reading

def params_format(path: str | os.PathLike[str]) -> Literal["yaml", "json", "toml"]:
    """The format of a params file, from its suffix. Raises ParamError for any other suffix."""
    suffix = Path(path).suffix.lower()
    try:
        return FORMATS[suffix]  # type: ignore[return-value]
    except KeyError:
        raise ParamError(f"{path}: unsupported params file format {suffix or '(no suffix)'!r}",
                         path=path, hint="use a .yaml, .yml, .json or .toml file") from None


def load_params(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read a params file into plain nested Python values (dict, list, str, int, float, ...).

    An empty YAML file is `{}`. Raises NotFound if the file is missing, ParamError
    (naming the file and line) if it is malformed or its top level is not a mapping.
    """
    path = Path(path)
    if params_format(path) == "yaml":
        flat = parse_flat(_read_text(path))
        if flat is not None:
            return flat
    return to_plain(_read(path)[1])


def get_value(data: Any, key: str, *, default: Any = _MISSING, file: str | None = None) -> Any:
    """The value at dotted `key` in `data`. Missing: `default` if given, else ParamError."""
    try:
        keys = _locate(data, split_key(key, file=file))
    except _Missing as exc:
        if default is not _MISSING:
            return default
        where = f"{file}: " if file else ""
        raise ParamError(f"{where}key {key!r} not found (no {exc.at!r})", path=file) from None
    node = data
    for k in keys:
        node = node[k]
    return node


def flatten(data: Mapping[str, Any], *, prefix: str = "") -> dict[str, Any]:
    """`{"train": {"lr": 0.1}}` -> `{"train.lr": 0.1}`. Lists and empty mappings are leaves."""
    out: dict[str, Any] = {}
    for k, v in data.items():
        name = f"{prefix}{k}"
        if isinstance(v, Mapping) and v:
            out.update(flatten(v, prefix=f"{name}."))
        else:
            out[name] = v
    return out


def split_key(key: str, *, file: str | None = None) -> list[str]:
    """`"a.b[0].c"` -> `["a", "b", "0", "c"]`. Raises ParamError for an empty part."""
    key_text = key.strip()
    if "[" in key_text:  # `layers[0]` -> `layers.0`; no regex compiled for plain keys
        key_text = re.sub(r"\[(\d+)\]", r".\1", key_text)
    parts = key_text.split(".")
    if not key.strip() or any(p == "" for p in parts):
        where = f"{file}: " if file else ""
        raise ParamError(f"{where}malformed key {key!r}", hint="keys look like train.lr or layers.0.size")
    return parts


def to_plain(node: Any) -> Any:
    """ruamel/tomlkit containers and scalar subclasses -> plain dict/list/str/int/float/bool."""
    if hasattr(node, "unwrap"):  # tomlkit items and documents
        return node.unwrap()
    if isinstance(node, Mapping):
        return {to_plain(k): to_plain(v) for k, v in node.items()}
    if isinstance(node, (list, tuple)):
        return [to_plain(v) for v in node]
    if isinstance(node, bool) or node is None:
        return node
    for kind in (int, float, str):
        if isinstance(node, kind):
            return kind(node)
    return node


# ---------------------------------------------------------------- overrides

def parse_value(text: str) -> Any:
    """Read one override value as a YAML scalar, flow list or flow mapping (see module doc)."""
    s = text.strip()
    if not s:
        return ""  # `key=` sets the empty string, as in Hydra
    value = plain_scalar(s)
    if value is not NOT_PLAIN:
        return value
    try:
        value = _safe_yaml().load(s)
    except Exception as exc:  # ruamel raises several unrelated classes here
        if s[0] in "[{'\"":
            raise ParamError(f"cannot parse value {s!r}: {_yaml_problem(exc)}") from None
        return s
    if s[0] in "[{'\"":
        return _dates_to_str(value)
    # Plain text keeps its exact spelling unless YAML reads it as a number, bool or null:
    # `2020-01-01` stays a string, and so do `a: b` and `x #y` (no mapping, no comment).
    if value is None or isinstance(value, (bool, int, float)):
        return value
    return s


def parse_override(spec: str, *, default_file: str = DEFAULT_PARAMS_FILE) -> list[Override]:
    """Parse one `-S` spec into its overrides: one, or one per value of a sweep.

    Raises ParamError (quoting the spec) for a malformed spec: empty key, missing `=`,
    bad value or range, an unsupported file suffix, a file path outside the project.
    """
    try:
        body, op = _strip_op(spec.strip())
        file = default_file
        if ":" in body.split("=", 1)[0]:
            file, body = body.split(":", 1)
            body, op = _strip_op(body.strip(), op)
        file = _check_file(file.strip())
        if op == "delete":
            if "=" in body:
                raise ParamError("delete takes no value; write ~KEY", hint="e.g. -S '~train.dropout'")
            return [Override(file=file, key=".".join(split_key(body)), op="delete")]
        if "=" not in body:
            raise ParamError("expected KEY=VALUE", hint="e.g. -S train.lr=0.01 or -S other.yaml:lr=0.1")
        key_text, raw = body.split("=", 1)
        key = ".".join(split_key(key_text))
        return [Override(file=file, key=key, op=op, value=v) for v in _values(raw)]
    except ParamError as exc:
        raise ParamError(f"-S {spec!r}: {exc.message}", hint=exc.hint) from None


def check_overrides(root: str | os.PathLike[str], overrides: Iterable[Override]) -> None:
    """Raise what apply_overrides would raise for `overrides`, writing nothing (a
    queued run, or `--queue --dry-run`, is checked against the workspace as DVC checks
    it: a missing params file or key fails before anything is queued)."""
    apply_overrides(root, overrides, write=False)


def apply_overrides(root: str | os.PathLike[str], overrides: Iterable[Override], *,
                    write: bool = True) -> list[str]:
    """Edit params files under `root` in place, keeping comments, key order and quoting.

    Overrides are applied in order, grouped by file. Every file is read and every edit
    checked before anything is written, so a bad override leaves all files untouched.
    Each file is then replaced atomically (temp file in the same directory, fsync,
    os.replace), keeping its permission bits; a file whose text does not change is not
    rewritten. Returns the files written (POSIX, relative to root).

    Raises NotFound if a params file does not exist; ParamError if a file is malformed
    or unsupported, `key=v` names a missing key, `+key=v` an existing one, `~key` a
    missing one, or a value cannot be stored in the format (null in TOML).
    """
    root = Path(root)
    by_file: dict[str, list[Override]] = {}
    for ov in overrides:
        by_file.setdefault(_check_file(ov.file), []).append(ov)
    pending: list[tuple[Path, str, str]] = []
    for rel, ovs in by_file.items():
        path = root / rel
        text = None
        if params_format(path) == "yaml":  # most edits need no YAML library (cas/core/yamlsubset.py)
            original = _read_text(path)
            if all(ov.op == "set" for ov in ovs):
                text = edit_flat(original, [(ov.key, ov.value) for ov in ovs])
        if text is None:
            fmt, data, original = _read(path)
            for ov in ovs:
                data = _apply_one(data, ov, fmt=fmt, file=rel)
            text = _dump(fmt, data, original)
        if text != original:
            pending.append((path, rel, text))
    if write:
        for path, _, text in pending:
            _atomic_write(path, text)
    return [rel for _, rel, _ in pending]


# ---------------------------------------------------------------- internals: keys

class _Missing(Exception):
    def __init__(self, at: str, depth: int, node: Any) -> None:
        super().__init__(at)
        self.at, self.depth, self.node = at, depth, node


def _locate(node: Any, parts: list[str]) -> list[Any]:
    """The real keys/indices of `parts` in `node`; raises _Missing where the path stops."""
    keys: list[Any] = []
    i = 0
    while i < len(parts):
        if isinstance(node, Mapping):
            # Longest dotted prefix first, so a key spelled "a.b" is found as one key.
            for j in range(len(parts), i, -1):
                cand: Any = ".".join(parts[i:j])
                if cand not in node and cand.isdigit() and int(cand) in node:
                    cand = int(cand)
                if cand in node:
                    keys.append(cand)
                    node = node[cand]
                    i = j
                    break
            else:
                raise _Missing(".".join(parts[: i + 1]), i, node)
        elif isinstance(node, Sequence) and not isinstance(node, str):
            p = parts[i]
            if not p.isdigit() or int(p) >= len(node):
                raise _Missing(".".join(parts[: i + 1]), i, node)
            keys.append(int(p))
            node = node[int(p)]
            i += 1
        else:
            raise _Missing(".".join(parts[: i + 1]), i, node)
    return keys


def _strip_op(body: str, op: Op = "set") -> tuple[str, Op]:
    for prefix, new_op in (("++", "force"), ("+", "add"), ("~", "delete")):
        if body.startswith(prefix):
            return body[len(prefix):].lstrip(), new_op  # type: ignore[return-value]
    return body, op


# In any sweep, in any value whose quotes or brackets must balance, and `=` (which
# must be quoted: `-S lr==0.1` is an error, as in DVC's Hydra grammar).
_SWEEP_CHARS = ",'\"()[]{}="


def _values(raw: str) -> list[Any]:
    """The value, or a sweep's values, of the text after `=` (cas/pipeline/sweepspec.py).

    Text without any of `,'"()[]{}` is one value: sweepspec.sweep_values would split
    nothing, balance nothing and see no range() or choice(), and give [parse_value].
    That is every `tally run -S lr=0.1`, which so skips importing the sweep syntax.
    """
    if not any(c in raw for c in _SWEEP_CHARS):
        return [parse_value(raw)]
    from cas.pipeline.sweepspec import sweep_values

    return sweep_values(raw, parse_value=parse_value)


# A safety net against grids nobody meant to queue: one this large is almost
# certainly a typo, and expanding it would exhaust memory.
MAX_GRID_POINTS = 100_000


def expand_grid(specs: Iterable[str], *, default_file: str = DEFAULT_PARAMS_FILE) -> list[list[Override]]:
    """The cartesian product of every spec's values, in a stable order.

    The order is that of nested loops over the specs as given, the last spec varying
    fastest. Specs without sweeps contribute their single override to every point. No
    specs gives one empty point `[[]]`. Raises ParamError if two specs name the same
    file and key (ambiguous in a sweep), or if the grid exceeds MAX_GRID_POINTS.
    """
    specs = list(specs)
    axes = [parse_override(s, default_file=default_file) for s in specs]
    seen: dict[tuple[str, str], str] = {}
    total = 1
    for spec, axis in zip(specs, axes):
        ident = (axis[0].file, axis[0].key)
        if ident in seen:
            raise ParamError(f"-S {spec!r}: {ident[0]}:{ident[1]} is already set by -S {seen[ident]!r}")
        seen[ident] = spec
        total *= len(axis)
    if total > MAX_GRID_POINTS:
        raise ParamError(f"the sweep expands to {total} runs (limit {MAX_GRID_POINTS})",
                         hint="narrow the ranges or split the sweep")
    import itertools

    return [list(point) for point in itertools.product(*axes)]


def _check_file(file: str) -> str:
    rel = posixpath.normpath(file.replace("\\", "/")) if file else ""
    if not rel or rel.startswith("/") or rel == ".." or rel.startswith("../") or (rel[1:2] == ":" and rel[:1].isascii() and rel[:1].isalpha()):
        raise ParamError(f"params file {file!r} is not a path inside the project")
    params_format(rel)
    return rel


# ---------------------------------------------------------------- internals: files

_REPRESENTER: Any = None


def _yaml_rt() -> Any:
    global _REPRESENTER
    from ruamel.yaml import YAML

    if _REPRESENTER is None:
        from ruamel.yaml.representer import RoundTripRepresenter
        from ruamel.yaml.scalarfloat import ScalarFloat

        class ExactFloatRepresenter(RoundTripRepresenter):
            # ruamel rebuilds a float's text from its parsed width/precision, which can
            # drop a digit (4.380572351291849e+16 -> ...848e+16): an edit would silently
            # change a value nobody touched. Keep that text only if it reads back equal.
            def represent_scalar_float(self, data: Any) -> Any:
                node = super().represent_scalar_float(data)
                try:
                    exact = data != data or float(node.value.replace("_", "")) == float(data)
                except ValueError:
                    exact = node.value in (".inf", "-.inf", "+.inf", ".nan")
                return node if exact else self.represent_float(float(data))

        ExactFloatRepresenter.add_representer(ScalarFloat, ExactFloatRepresenter.represent_scalar_float)
        _REPRESENTER = ExactFloatRepresenter
    yaml = YAML()  # round-trip: keeps comments, order, quoting, flow style
    yaml.Representer = _REPRESENTER
    yaml.preserve_quotes = True
    yaml.width = 4096  # never re-wrap long strings the user wrote on one line
    return yaml


@functools.cache
def _safe_yaml() -> Any:
    from ruamel.yaml import YAML

    return YAML(typ="safe", pure=True)


def _yaml_problem(exc: Exception) -> str:
    return str(getattr(exc, "problem", None) or exc).strip()


def _read_text(path: Path) -> str:
    """A params file's text; the read errors load_params documents."""
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise NotFound(f"params file {path} does not exist", path=path) from None
    except IsADirectoryError:
        raise ParamError(f"{path}: is a directory, not a params file", path=path) from None
    except UnicodeDecodeError as exc:
        raise ParamError(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start})", path=path) from None
    except OSError as exc:
        raise from_os_error(exc, path=path, doing="reading params") from None


def _read(path: Path) -> tuple[str, Any, str]:
    """(format, round-trip data, text) of a params file; the errors load_params documents."""
    fmt = params_format(path)
    text = _read_text(path)
    if fmt == "yaml":
        try:
            data = _yaml_rt().load(text)
        except Exception as exc:
            mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
            line = f":{mark.line + 1}" if mark is not None else ""
            raise ParamError(f"{path}{line}: malformed YAML: {_yaml_problem(exc)}", path=path) from None
        if data is None:
            from ruamel.yaml.comments import CommentedMap

            data = CommentedMap()
    elif fmt == "json":
        import json  # here: a run whose params are YAML never needs it (~1.7 ms of start-up)
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ParamError(f"{path}:{exc.lineno}: malformed JSON: {exc.msg} (column {exc.colno})",
                             path=path) from None
    else:
        import tomlkit
        from tomlkit.exceptions import ParseError as TomlParseError

        try:
            data = tomlkit.parse(text)
        except TomlParseError as exc:
            raise ParamError(f"{path}:{exc.line}: malformed TOML: {exc}", path=path) from None
    if not isinstance(data, Mapping):
        raise ParamError(f"{path}: top level must be a mapping of keys, not {type(data).__name__}", path=path)
    return fmt, data, text


def _dates_to_str(node: Any) -> Any:
    if isinstance(node, (datetime.date, datetime.datetime)):
        return node.isoformat()
    if isinstance(node, dict):
        return {k: _dates_to_str(v) for k, v in node.items()}
    if isinstance(node, list):
        return [_dates_to_str(v) for v in node]
    return node


def _apply_one(data: Any, ov: Override, *, fmt: str, file: str) -> Any:
    parts = split_key(ov.key, file=file)
    try:
        keys = _locate(data, parts)
    except _Missing as miss:
        if ov.op in ("set", "delete"):
            raise ParamError(
                f"{file}: key {ov.key!r} does not exist (no {miss.at!r})", path=file,
                hint=f"to add it, write +{ov.key}=..." if ov.op == "set" else None) from None
        _create(miss.node, parts[miss.depth:], _convert(ov.value, None, fmt=fmt, file=file, key=ov.key),
                file=file, key=ov.key)
        return data
    if ov.op == "add":
        raise ParamError(f"{file}: key {ov.key!r} already exists (+KEY only adds new keys)", path=file,
                         hint=f"to change it, write {ov.key}=...; to add or change, ++{ov.key}=...")
    parent = data
    for k in keys[:-1]:
        parent = parent[k]
    if ov.op == "delete":
        del parent[keys[-1]]
    else:
        parent[keys[-1]] = _convert(ov.value, parent[keys[-1]], fmt=fmt, file=file, key=ov.key)
    return data


def _create(node: Any, rest: list[str], value: Any, *, file: str, key: str) -> None:
    for i, part in enumerate(rest):
        last = i == len(rest) - 1
        if isinstance(node, MutableMapping):
            if last:
                node[part] = value
            else:
                node[part] = {}
                node = node[part]
        elif isinstance(node, MutableSequence) and part.isdigit() and int(part) == len(node):
            node.append(value if last else {})  # `+layers.3=...` on a 3-item list appends
            node = node[-1]
        else:
            raise ParamError(f"{file}: cannot add {key!r}: {'.'.join(rest[:i]) or 'its parent'} "
                             f"is a {type(node).__name__}, not a mapping", path=file)


def _convert(value: Any, old: Any, *, fmt: str, file: str, key: str) -> Any:
    """Fit a new value to the file: keep the old quoting or flow style in YAML."""
    if fmt == "toml" and value is None:
        raise ParamError(f"{file}: cannot set {key!r} to null: TOML has no null", path=file)
    if fmt == "yaml":
        from ruamel.yaml.comments import CommentedSeq
        from ruamel.yaml.scalarstring import ScalarString

        if isinstance(old, ScalarString) and isinstance(value, str):
            return type(old)(value)
        if isinstance(old, CommentedSeq) and old.fa.flow_style() and isinstance(value, list):
            seq = CommentedSeq(value)
            seq.fa.set_flow_style()
            return seq
    return value


def _dump(fmt: str, data: Any, original: str) -> str:
    if fmt == "yaml":
        yaml = _yaml_rt()
        mapping, sequence, offset = _yaml_indent(original)
        yaml.indent(mapping=mapping, sequence=sequence, offset=offset)
        buf = io.StringIO()
        yaml.dump(data, buf)
        return buf.getvalue()
    if fmt == "json":
        import json
        indent = _json_indent(original)
        text = json.dumps(data, indent=indent, ensure_ascii=False)
        return text + "\n" if original.endswith("\n") or not original else text
    import tomlkit

    return tomlkit.dumps(data)


def _yaml_indent(text: str) -> tuple[int, int, int]:
    """(mapping, sequence, offset) indents as the file uses them, so a dump keeps its look."""
    from ruamel.yaml.util import load_yaml_guess_indent

    from ruamel.yaml.error import YAMLError

    try:
        _, seq_indent, seq_offset = load_yaml_guess_indent(text)
    except YAMLError:  # no guess from a file ruamel cannot read: the defaults below
        seq_indent, seq_offset = None, None
    # ruamel guesses sequences only; a mapping's indent is the smallest nesting seen.
    indents = [len(ln) - len(ln.lstrip(" ")) for ln in text.splitlines()
               if ln.strip() and not ln.lstrip().startswith(("#", "-")) and ln.startswith(" ")]
    mapping = min(indents) if indents else None
    offset = seq_offset or 0
    sequence = seq_indent or (offset + 2)
    if mapping is None:
        mapping = max(sequence - offset, 2)
    return mapping, sequence, offset


def _json_indent(text: str) -> int | str | None:
    for ln in text.splitlines()[1:]:
        if ln.strip():
            ws = ln[: len(ln) - len(ln.lstrip())]
            return ws if "\t" in ws else (len(ws) or None)
    return None if text.strip() else 2


def _atomic_write(path: Path, text: str) -> None:
    # A reader sees the old file or the new one, never half of either; a symlink or a
    # hardlink is replaced, never written through (it may be a read-only store object).
    try:
        mode = path.stat().st_mode & 0o7777
    except FileNotFoundError:
        mode = 0o644
    try:
        atomic_write(path, text.encode("utf-8"), mode=mode)
    except OSError as exc:
        raise from_os_error(exc, path=path, doing="writing params") from None


__all__ = ["DEFAULT_PARAMS_FILE", "FORMATS", "MAX_GRID_POINTS", "Override", "apply_overrides", "expand_grid", "flatten", "get_value",
           "load_params", "params_format", "parse_override", "parse_value", "split_key", "to_plain"]
