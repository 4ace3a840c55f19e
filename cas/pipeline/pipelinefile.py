"""The pipeline file: `tally.yaml`, else `dvc.yaml`, with DVC 3.x's schema.

`load_pipeline(root)` reads the file, expands templating (`${...}` from params.yaml
and `vars`), `foreach`/`do` and `matrix` stages, checks the schema, normalizes every
path to POSIX relative to the project root, builds the stage graph and orders it.
It reads the pipeline and params files and nothing else (no store, no Git).

Semantics follow DVC (dvc/parsing, dvc/schema.py, dvc/repo/graph.py):

- A stage's paths are relative to its `wdir`, which is relative to the pipeline file.
- Stage B depends on stage A when a dep of B (a path or a params file) equals, is
  inside, or contains an output of A. A stage overlapping its own output is a cycle.
- Generated names: `name@value` for a foreach list of scalars, `name@index` for a list
  holding lists/mappings, `name@key` for a mapping; matrix stages join one fragment per
  axis with `-` (`train@adam-0.1`), a list/mapping value giving `axis<index>`.
- Params read through `${...}` from a params file are the stage's `tracked_params`
  (DVC's tracked vars: shown and compared, not deps; their values already shape the
  cmd and paths). Values from inline `vars` and `item`/`key` are not tracked.

Every schema error is a PipelineError whose message reads `FILE:LINE: WHERE: what`.
"""

from __future__ import annotations

import heapq
import itertools
import posixpath
import re
import shlex
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from cas.pipeline import params as params_mod
from cas.core.paths import RESERVED
from cas.core.errors import NotFound, ParamError, PipelineError
# The value types live in cas.pipeline.stages (light to import); re-exported as this module's API.
from cas.pipeline.stages import PIPELINE_FILES, Out, ParamRef, Pipeline, Plot, Stage

TOP_KEYS = {"stages", "vars", "params", "metrics", "plots", "artifacts", "datasets"}
STAGE_KEYS = {"cmd", "wdir", "deps", "params", "outs", "metrics", "plots", "frozen",
              "always_changed", "meta", "desc", "vars"}
OUT_KEYS = {"cache", "persist", "remote", "push", "desc", "type", "labels", "meta"}
PLOT_KEYS = OUT_KEYS | {"template", "x", "y", "x_label", "y_label", "title", "header"}
SECTIONS = {"out": "outs", "metric": "metrics", "plot": "plots"}
BAD_NAME_CHARS = set("@:/\\,")  # `@` is reserved for generated names, as in DVC
_EXPR = re.compile(r"(?<!\\)\$\{(?P<inner>[^}]*)\}")
_URL = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")
_MISS = object()


def load_pipeline(root: str | Path) -> Pipeline:
    """Read `tally.yaml` (else `dvc.yaml`) at `root` into a checked, ordered Pipeline.

    Raises NotFound if neither file exists; PipelineError (`FILE:LINE: WHERE: what`) for
    malformed YAML, an unknown key, a missing or empty cmd, a bad `${...}`, a path outside
    the project, overlapping outputs or a cycle; ParamError/NotFound for a vars file.
    """
    root = Path(root)
    for name in PIPELINE_FILES:
        if (root / name).is_file():
            return _Loader(root, name).load()
    raise NotFound(f"no {' or '.join(PIPELINE_FILES)} in {root}", path=root,
                   hint="create tally.yaml (same schema as dvc.yaml's stages), or run from the project root")


# ---------------------------------------------------------------- loading

def _line(node: Any, *path: Any) -> int:
    """1-based line of the key/index at the end of `path` (one or more steps) in a ruamel node, else 0."""
    try:
        for step in path[:-1]:
            node = node[step]
        key = path[-1]
        return (node.lc.item(key) if isinstance(key, int) else node.lc.key(key))[0] + 1
    except Exception:  # plain values (interpolated, generated) carry no marks
        return 0


class _Loader:
    def __init__(self, root: Path, name: str) -> None:
        self.root, self.name = root, name
        self.ctx: dict[str, Any] = {}
        self.sources: list[tuple[str, Any]] = []  # (params file, its data): for tracking
        self.loaded = {params_mod.DEFAULT_PARAMS_FILE}  # vars files loaded whole, globally
        self.reserved: tuple[str, ...] = ()  # `item`/`key` while a generated stage resolves
        self.stage_plots: list[Plot] = []
        self.out_lines: dict[tuple[str, str], int] = {}  # (stage, out path) -> line

    def fail(self, line: int, where: str, msg: str, hint: str | None = None) -> PipelineError:
        loc = f"{self.name}:{line}" if line else self.name
        return PipelineError(f"{loc}: {where}: {msg}", path=self.root / self.name, hint=hint)

    def load(self) -> Pipeline:
        from ruamel.yaml import YAML

        try:
            data = YAML().load((self.root / self.name).read_text(encoding="utf-8"))
        except Exception as exc:  # ruamel's errors carry a mark; decoding errors do not
            mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
            problem = str(getattr(exc, "problem", None) or exc).strip()
            raise self.fail(0 if mark is None else mark.line + 1, "YAML", f"malformed: {problem}") from None
        data = {} if data is None else data
        if not isinstance(data, Mapping):
            raise self.fail(1, "top level", f"expected a mapping, got {type(data).__name__}")
        for key in data:
            if key not in TOP_KEYS:
                raise self.fail(_line(data, key), str(key), "unknown top-level key", _suggest(key, TOP_KEYS))
        if (self.root / params_mod.DEFAULT_PARAMS_FILE).is_file():
            self._load_vars_file(params_mod.DEFAULT_PARAMS_FILE, None, self.ctx, 0, "params.yaml")
        self._load_vars(data.get("vars"), self.ctx, ".", data, "vars", loaded=self.loaded)
        stages_raw = data.get("stages") or {}
        if not isinstance(stages_raw, Mapping):
            raise self.fail(_line(data, "stages"), "stages", "expected a mapping of stage names")
        stages = [st for name, raw in stages_raw.items()
                  for st in self._entry(str(name), raw, _line(stages_raw, name))]
        return self._graph(stages, data)

    # ------------------------------------------------------------ vars and interpolation

    def _load_vars(self, items: Any, ctx: dict, wdir: str, node: Any, where: str, *, loaded: set[str]) -> None:
        if items is not None and not isinstance(items, list):
            raise self.fail(_line(node, "vars"), where, "expected a list of files and mappings")
        for i, item in enumerate(items or []):
            line, at = _line(items, i), f"{where}[{i}]"
            if isinstance(item, Mapping):
                self._merge(ctx, params_mod.to_plain(item), line, at)
                continue
            if not isinstance(item, str):
                raise self.fail(line, at, "expected a params file path or a mapping")
            if _EXPR.search(item):
                raise self.fail(line, at, "interpolation is not allowed in vars")
            file, _, keys = item.partition(":")
            rel = self._path(file, wdir, line, at)
            wanted = [k.strip() for k in keys.split(",") if k.strip()] or None
            if rel not in loaded or wanted is not None:  # a whole file listed again is skipped
                loaded.add(rel)
                self._load_vars_file(rel, wanted, ctx, line, at)

    def _load_vars_file(self, rel: str, keys: list[str] | None, ctx: dict, line: int, where: str) -> None:
        data = params_mod.load_params(self.root / rel)
        if keys is not None:
            picked: dict[str, Any] = {}
            for key in keys:
                value = params_mod.get_value(data, key, default=_MISS)
                if value is _MISS:
                    raise self.fail(line, where, f"{rel} has no key {key!r}")
                *parents, last = key.split(".")
                node = picked
                for p in parents:
                    node = node.setdefault(p, {})
                node[last] = value
            data = picked
        self.sources.append((rel, data))
        self._merge(ctx, data, line, where)

    def _merge(self, dst: dict, src: Mapping, line: int, where: str, prefix: str = "") -> None:
        # DVC merges mappings key by key but refuses to redefine a value (MergeError).
        # A mapping is copied before merging into it, so no loaded file is ever mutated.
        for k, v in src.items():
            if k in dst and isinstance(dst[k], dict) and isinstance(v, Mapping):
                dst[k] = dict(dst[k])
                self._merge(dst[k], v, line, where, f"{prefix}{k}.")
            elif k in dst:
                raise self.fail(line, where, f"cannot redefine {prefix}{k!s}: it is already defined")
            else:
                dst[k] = v

    def _interp(self, value: Any, ctx: dict, line: int, where: str, used: list, *, cmd: bool = False) -> Any:
        """Resolve `${...}` in strings (and mapping keys) anywhere inside `value`."""
        if isinstance(value, Mapping):
            return {self._interp(k, ctx, line, where, used): self._interp(v, ctx, line, where, used, cmd=cmd)
                    for k, v in value.items()}
        if isinstance(value, list):
            return [self._interp(v, ctx, _line(value, i) or line, f"{where}[{i}]", used, cmd=cmd)
                    for i, v in enumerate(value)]
        if not isinstance(value, str):
            return params_mod.to_plain(value)
        matches = list(_EXPR.finditer(value))
        if len(matches) == 1 and matches[0].group(0) == value and not cmd:
            return self._select(matches[0]["inner"], ctx, line, where, used)  # keeps the type
        out, pos = [], 0
        for m in matches:
            found = self._select(m["inner"], ctx, line, where, used)
            if isinstance(found, (list, dict)) and not (cmd and isinstance(found, dict)):
                raise self.fail(line, where, f"cannot interpolate a {type(found).__name__} "
                                f"(${{{m['inner']}}}) into a string")
            out.append(value[pos:m.start()] + _to_str(found))
            pos = m.end()
        out.append(value[pos:])
        return "".join(out).replace("\\${", "${")

    def _select(self, expr: str, ctx: dict, line: int, where: str, used: list) -> Any:
        expr = expr.strip()
        try:
            found = params_mod.get_value(ctx, expr, default=_MISS)
        except ParamError:
            raise self.fail(line, where, f"malformed reference ${{{expr}}}") from None
        if found is _MISS:
            raise self.fail(line, where, f"${{{expr}}} is not defined in params.yaml or vars",
                            "define it in params.yaml or in vars")
        key = ".".join(params_mod.split_key(expr))
        if key.split(".", 1)[0] not in self.reserved:
            for file, data in self.sources:  # the first params file that has it, as ctx merged them
                if params_mod.get_value(data, key, default=_MISS) is not _MISS:
                    used.append(ParamRef(file=file, key=key))
                    break
        return found

    # ------------------------------------------------------------ stages

    def _entry(self, name: str, raw: Any, line: int) -> list[Stage]:
        where = f"stages.{name}"
        if not name or BAD_NAME_CHARS & set(name):
            raise self.fail(line, where, f"invalid stage name {name!r}: it may not contain any of @ : / \\ ,")
        if not isinstance(raw, Mapping):
            raise self.fail(line, where, "expected a mapping with at least cmd")
        if "foreach" in raw:
            for key in raw:
                if key not in ("foreach", "do"):
                    raise self.fail(_line(raw, key), f"{where}.{key}", "a foreach stage takes only foreach and do")
            if not isinstance(raw.get("do"), Mapping):
                raise self.fail(line, f"{where}.do", "foreach needs a do: mapping with the stage to repeat")
            data = self._interp(raw["foreach"], self.ctx, _line(raw, "foreach"), f"{where}.foreach", [])
            if isinstance(data, Mapping):
                items = [(str(k), {"item": v, "key": k}) for k, v in data.items()]
            elif isinstance(data, list):
                composite = any(isinstance(v, (list, dict)) for v in data)
                items = [(str(i) if composite else _to_str(v), {"item": v}) for i, v in enumerate(data)]
            else:
                raise self.fail(_line(raw, "foreach"), f"{where}.foreach",
                                f"expected a list or mapping, got {type(data).__name__}")
            return [self._stage(f"{name}@{suffix}", raw["do"], raw["do"], line, extra) for suffix, extra in items]
        if "matrix" in raw:
            mline = _line(raw, "matrix")
            matrix = self._interp(raw["matrix"], self.ctx, mline, f"{where}.matrix", [])
            if not isinstance(matrix, Mapping) or not matrix:
                raise self.fail(mline, f"{where}.matrix", "expected a mapping of names to lists of values")
            for axis, values in matrix.items():
                if not isinstance(values, list):
                    raise self.fail(mline, f"{where}.matrix.{axis}", "expected a list of values")
            template = {k: v for k, v in raw.items() if k != "matrix"}
            stages = []
            for combo in itertools.product(*(list(enumerate(v)) for v in matrix.values())):
                key = "-".join(f"{axis}{i}" if isinstance(v, (list, dict)) else _to_str(v)
                               for axis, (i, v) in zip(matrix, combo))
                item = {axis: v for axis, (_, v) in zip(matrix, combo)}
                stages.append(self._stage(f"{name}@{key}", template, raw, line, {"item": item, "key": key}))
            return stages
        return [self._stage(name, raw, raw, line, {})]

    def _stage(self, name: str, raw: Mapping, node: Any, line: int, extra: dict) -> Stage:
        """Build one stage from its definition `raw`; `node` is the ruamel node for line numbers."""
        where = f"stages.{name}"
        for key in raw:
            if key not in STAGE_KEYS:
                raise self.fail(_line(node, key) or line, f"{where}.{key}", "unknown stage key",
                                _suggest(key, STAGE_KEYS))
        ctx, used = {**self.ctx, **extra}, []
        self.reserved = tuple(extra)

        def get(key: str, *, cmd: bool = False) -> Any:
            return self._interp(raw.get(key), ctx, _line(node, key) or line, f"{where}.{key}", used, cmd=cmd)

        def items(key: str) -> list[tuple[int, int, Any]]:
            value = get(key)
            if value is not None and not isinstance(value, list):
                raise self.fail(_line(node, key) or line, f"{where}.{key}",
                                f"expected a list, got {type(value).__name__}")
            return [(i, _line(node, key, i) or _line(node, key) or line, v) for i, v in enumerate(value or [])]

        try:
            wdir_raw, wline = get("wdir"), _line(node, "wdir") or line
            if wdir_raw is not None and not isinstance(wdir_raw, str):
                raise self.fail(wline, f"{where}.wdir", "expected a path")
            wdir = self._path(wdir_raw or ".", ".", wline, f"{where}.wdir")
            if raw.get("vars") is not None:  # after wdir: local vars files are relative to it
                self._load_vars(raw["vars"], ctx, wdir, node, f"{where}.vars", loaded=set(self.loaded))
            if raw.get("cmd") is None:
                raise self.fail(line, where, "missing cmd", "every stage needs cmd: the command(s) to run")
            cmd = get("cmd", cmd=True)
            cmds = [cmd] if isinstance(cmd, str) else cmd
            if not isinstance(cmds, list) or not cmds or not all(isinstance(c, str) and c.strip() for c in cmds):
                raise self.fail(_line(node, "cmd") or line, f"{where}.cmd",
                                "expected a non-empty command or list of commands")
            deps = tuple(self._path(p, wdir, ln, f"{where}.deps[{i}]") for i, ln, p in items("deps"))
            refs: list[ParamRef] = []
            for i, ln, item in items("params"):
                at = f"{where}.params[{i}]"
                if isinstance(item, str):
                    refs.append(ParamRef(file=self._path(params_mod.DEFAULT_PARAMS_FILE, wdir, ln, at), key=item))
                    continue
                if not isinstance(item, Mapping):
                    raise self.fail(ln, at, "expected a key or {file: [keys]}")
                for file, keys in item.items():
                    rel = self._path(str(file), wdir, ln, at)
                    if not keys:  # `file:` / `file: []`: every param in the file
                        refs.append(ParamRef(file=rel, key=None))
                    elif isinstance(keys, list) and all(isinstance(k, str) for k in keys):
                        refs.extend(ParamRef(file=rel, key=k) for k in keys)
                    else:
                        raise self.fail(ln, at, f"{file}: expected a list of keys or nothing")
            outs = [out for kind, section in SECTIONS.items() for i, ln, item in items(section)
                    for out in self._outs(name, item, kind, wdir, ln, f"{where}.{section}[{i}]",
                                          _child(node, section, i))]
            flags = {}
            for key in ("frozen", "always_changed"):
                value = get(key)
                if value is not None and not isinstance(value, bool):
                    raise self.fail(_line(node, key) or line, f"{where}.{key}", "expected true or false")
                flags[key] = bool(value)
            desc = get("desc")
        finally:
            self.reserved = ()
        return Stage(name=name, cmd=tuple(cmds), wdir=wdir, deps=deps, params=tuple(refs), outs=tuple(outs),
                     tracked_params=tuple(dict.fromkeys(used)), desc=None if desc is None else str(desc),
                     line=line, **flags)

    def _outs(self, stage: str, item: Any, kind: str, wdir: str, line: int, where: str, raw: Any) -> list[Out]:
        allowed = PLOT_KEYS if kind == "plot" else OUT_KEYS
        if not isinstance(item, (str, Mapping)):
            raise self.fail(line, where, "expected a path or {path: {options}}")
        # The raw node, when the entry has one, knows the exact line of each option.
        raw_props = next(iter(raw.values()), None) if isinstance(raw, Mapping) and len(raw) == 1 else None
        outs = []
        for path, props in ([(item, None)] if isinstance(item, str) else item.items()):
            props = props or {}
            if not isinstance(props, Mapping):
                raise self.fail(line, f"{where}.{path}", "expected a mapping of options")
            for k, v in props.items():
                if k not in allowed:
                    raise self.fail(_line(raw_props, k) or line, f"{where}.{path}.{k}", "unknown output option",
                                    _suggest(k, allowed))
                if k in ("cache", "persist", "push") and not isinstance(v, bool):
                    raise self.fail(_line(raw_props, k) or line, f"{where}.{path}.{k}", "expected true or false")
            rel = self._path(str(path), wdir, line, where)
            if rel == ".":
                raise self.fail(line, where, "an output cannot be the whole project")
            if rel == self.name or self.name.startswith(rel + "/"):
                raise self.fail(line, where, f"output {rel!r} would contain {self.name}")
            outs.append(Out(path=rel, kind=kind, cache=props.get("cache", True),  # type: ignore[arg-type]
                            persist=props.get("persist", False), push=props.get("push", True),
                            remote=props.get("remote")))
            self.out_lines[(stage, rel)] = line
            if kind == "plot":
                self.stage_plots.append(Plot(id=rel, files=(rel,),
                                             props={k: v for k, v in props.items() if k not in OUT_KEYS}))
        return outs

    def _path(self, path: Any, wdir: str, line: int, where: str) -> str:
        if not isinstance(path, str) or not path:
            raise self.fail(line, where, f"expected a path, got {path!r}")
        if _URL.match(path):
            raise self.fail(line, where, f"{path!r}: external (URL) paths are not supported")
        if path.startswith("/") or re.match(r"^[A-Za-z]:[\\/]", path):
            raise self.fail(line, where, f"{path!r}: absolute paths are not allowed; use a path inside the project")
        rel = posixpath.normpath(posixpath.join(wdir, path))
        if rel == ".." or rel.startswith("../"):
            raise self.fail(line, where, f"{path!r} escapes the project root")
        if "\0" in rel:
            raise self.fail(line, where, f"{path!r} contains a NUL byte")
        for part in rel.split("/"):
            if part.lower() in RESERVED:  # cas/core/paths.py: never read, written or deleted
                raise self.fail(line, where, f"{path!r} names {part!r}, a directory tally never touches")
        return rel

    # ------------------------------------------------------------ top level and graph

    def _graph(self, stages: list[Stage], data: Mapping) -> Pipeline:
        seen: set[str] = set()
        for st in stages:
            if st.name in seen:
                raise self.fail(st.line, f"stages.{st.name}", "two stages have this name")
            seen.add(st.name)
        # Outputs, and the directories above them: each overlap check is a dict lookup, not a scan.
        owner: dict[str, Stage] = {}
        below: dict[str, list[str]] = {}
        for st in stages:
            for out in st.outs:
                line = self.out_lines.get((st.name, out.path), st.line)
                at = f"stages.{st.name}.{SECTIONS[out.kind]}"
                for anc in _ancestors(out.path):
                    if anc in owner:
                        what = "another output of the same stage" if owner[anc] is st else \
                            f"an output of stage {owner[anc].name!r}"
                        raise self.fail(line, at, f"output {out.path!r} is inside {anc!r}, {what}")
                clash = out.path if out.path in owner else (below.get(out.path) or [None])[0]
                if clash is not None:
                    who = "this stage" if owner[clash] is st else f"stage {owner[clash].name!r}"
                    raise self.fail(line, at, f"output {out.path!r} overlaps {clash!r}, also written by {who}")
                owner[out.path] = st
                for anc in _ancestors(out.path):
                    below.setdefault(anc, []).append(out.path)
        upstream: dict[str, list[str]] = {st.name: [] for st in stages}
        for st in stages:
            for dep in (*st.deps, *sorted({r.file for r in st.params})):
                inside = list(owner) if dep == "." else below.get(dep, [])
                for out_path in [a for a in (*_ancestors(dep), dep) if a in owner] + inside:
                    if owner[out_path] is st:
                        raise self.fail(st.line, f"stages.{st.name}",
                                        f"cycle: the stage depends on its own output ({dep!r} / {out_path!r})")
                    if owner[out_path].name not in upstream[st.name]:
                        upstream[st.name].append(owner[out_path].name)
        ordered = self._toposort(stages, upstream)
        return self._top_level(data, ordered, {k: tuple(v) for k, v in upstream.items()})

    def _toposort(self, stages: list[Stage], upstream: dict[str, list[str]]) -> list[Stage]:
        index = {st.name: i for i, st in enumerate(stages)}
        waiting = {st.name: len(upstream[st.name]) for st in stages}
        down: dict[str, list[str]] = {st.name: [] for st in stages}
        for name, ups in upstream.items():
            for up in ups:
                down[up].append(name)
        ready = [index[n] for n, w in waiting.items() if w == 0]
        heapq.heapify(ready)  # Kahn's algorithm, lowest file position first: deterministic
        out: list[Stage] = []
        while ready:
            st = stages[heapq.heappop(ready)]
            out.append(st)
            for nxt in down[st.name]:
                waiting[nxt] -= 1
                if waiting[nxt] == 0:
                    heapq.heappush(ready, index[nxt])
        if len(out) < len(stages):
            left = {n for n, w in waiting.items() if w > 0}
            cycle = _find_cycle(left, upstream, min(left, key=index.__getitem__))
            first = stages[index[cycle[0]]]
            raise self.fail(first.line, f"stages.{first.name}", "cycle: " + " -> ".join(cycle),
                            "each stage in the cycle depends on an output of the one before it")
        return out

    def _top_level(self, data: Mapping, stages: list[Stage], upstream: dict) -> Pipeline:
        def entries(key: str) -> list[tuple[int, int, Any]]:
            value = self._interp(data.get(key), self.ctx, _line(data, key), key, [])
            if isinstance(value, Mapping) and key == "plots":  # older DVC: plots as a mapping
                value = [{k: v} for k, v in value.items()]
            if value is not None and not isinstance(value, list):
                raise self.fail(_line(data, key), key, f"expected a list, got {type(value).__name__}")
            return [(i, _line(data, key, i) or _line(data, key), v) for i, v in enumerate(value or [])]

        params_files = [self._path(p, ".", ln, f"params[{i}]") for i, ln, p in entries("params")]
        params_files += [r.file for st in stages for r in (*st.params, *st.tracked_params)]
        metrics = [self._path(p, ".", ln, f"metrics[{i}]") for i, ln, p in entries("metrics")]
        metrics += [o.path for st in stages for o in st.outs if o.kind == "metric"]
        plots: list[Plot] = []
        for i, line, item in entries("plots"):
            if not isinstance(item, (str, Mapping)):
                raise self.fail(line, f"plots[{i}]", "expected a path or {id: {options}}")
            for pid, props in ([(item, None)] if isinstance(item, str) else item.items()):
                props = props or {}
                if not isinstance(props, Mapping):
                    raise self.fail(line, f"plots[{i}].{pid}", "expected a mapping of plot options")
                # A plot id is a data file, unless y (and x) map files to fields.
                files = [f for axis in ("y", "x") if isinstance(props.get(axis), Mapping) for f in props[axis]]
                norm = tuple(dict.fromkeys(self._path(str(f), ".", line, f"plots[{i}]") for f in files or [pid]))
                plots.append(Plot(id=str(pid), files=norm, props=dict(props)))
        return Pipeline(path=self.name, stages=tuple(stages), upstream=upstream,
                        params=tuple(dict.fromkeys(params_files)), metrics=tuple(dict.fromkeys(metrics)),
                        plots=tuple(plots + self.stage_plots))


def _child(node: Any, key: str, i: int) -> Any:
    try:
        return node[key][i]
    except Exception:  # no such raw node (generated, interpolated): no finer line numbers
        return None


def _ancestors(path: str) -> list[str]:
    """Proper parent directories of a root-relative POSIX path: a/b/c -> [a, a/b]."""
    parts = path.split("/")
    return ["/".join(parts[:i]) for i in range(1, len(parts))]


def _find_cycle(left: set[str], upstream: dict[str, list[str]], start: str) -> list[str]:
    """A cycle through the stages left after a topological sort, as names, closed."""
    path, seen, node = [], {}, start
    while node not in seen:
        seen[node] = len(path)
        path.append(node)
        node = next(u for u in upstream[node] if u in left)
    return (path[seen[node]:] + [node])[::-1]  # reads as "a -> b": a runs before b


def _suggest(key: Any, known: Iterable[str]) -> str | None:
    import difflib

    close = difflib.get_close_matches(str(key), sorted(known), n=1)
    return f"did you mean {close[0]!r}?" if close else f"known keys: {', '.join(sorted(known))}"


def _to_str(value: Any) -> str:
    """A value as DVC writes it into a string; a mapping (in cmd) unpacks to `--key value`."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if not isinstance(value, dict):
        return str(value)
    args = []
    for k, v in params_mod.flatten(value).items():
        if isinstance(v, bool):
            args += [f"--{k}"] if v else []  # argparse store_true: false is left out
        else:
            vals = v if isinstance(v, list) else [v]
            args.append(" ".join([f"--{k}", *(shlex.quote(x) if isinstance(x, str) else _to_str(x) for x in vals)]))
    return " ".join(args)
