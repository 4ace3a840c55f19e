"""A pipeline as tally runs it: stages, their outputs and params, in run order.

Pure values. cas.pipeline.pipelinefile's loader builds them from `tally.yaml` / `dvc.yaml` (see
there for the semantics), and `tally run -- CMD` builds a one-stage pipeline from the
command line. Kept apart from the loader so that a run which parses nothing (a
command-line stage, or a parse reused from the cache in `.tally/runcache/`, which
is read back into these classes) imports neither the loader nor cas.pipeline.params.
"""

# No `from __future__ import annotations`: typing.NamedTuple compiles every string
# annotation into a ForwardRef, ~0.3 ms a class of every `tally run` start-up.

from collections.abc import Iterable, Mapping
from typing import Any, Literal, NamedTuple

from cas.core.errors import NotFound

PIPELINE_FILES = ("tally.yaml", "dvc.yaml")  # first found wins
DEFAULT_PARAMS_FILE = "params.yaml"  # DVC's: read as vars, and where a bare param key lives


# NamedTuples, not dataclasses: a dataclass costs ~1 ms of every `tally run`'s start-up.
class ParamRef(NamedTuple):
    """A param dependency: `key` (dotted) in `file`; key None means every param in the file."""

    file: str
    key: str | None = None


class Out(NamedTuple):
    """A stage output. `cache` defaults to True for every kind, metrics and plots too, as in DVC."""

    path: str
    kind: Literal["out", "metric", "plot"] = "out"
    cache: bool = True
    persist: bool = False
    push: bool = True
    remote: str | None = None


class Stage(NamedTuple):
    """One runnable stage. Paths are POSIX, relative to the project root; cmd runs in order."""

    name: str
    cmd: tuple[str, ...]
    wdir: str = "."
    deps: tuple[str, ...] = ()
    params: tuple[ParamRef, ...] = ()  # declared deps (`params:`)
    tracked_params: tuple[ParamRef, ...] = ()  # read through ${...}; not deps
    outs: tuple[Out, ...] = ()
    frozen: bool = False
    always_changed: bool = False
    desc: str | None = None
    line: int = 0  # where it is defined in the pipeline file

    @property
    def group(self) -> str:
        """The foreach/matrix entry a generated stage came from (its own name otherwise)."""
        return self.name.split("@", 1)[0]


class Plot(NamedTuple):
    """A plot definition: its id, the data files it reads, and its display properties."""

    id: str
    files: tuple[str, ...]
    props: Mapping[str, Any] = {}  # never changed in place


class Pipeline(NamedTuple):
    """A loaded pipeline. `stages` is in run order: topological, ties broken by file order.

    `upstream` maps each stage name to the names of the stages it directly depends on.
    `params`, `metrics` are the files of the top-level sections followed by those the
    stages use, first-seen order; `plots` the top-level plots then the stages' plots.
    """

    path: str
    stages: tuple[Stage, ...]
    upstream: Mapping[str, tuple[str, ...]] = {}  # never changed in place
    params: tuple[str, ...] = ()
    metrics: tuple[str, ...] = ()
    plots: tuple[Plot, ...] = ()

    def stage(self, name: str) -> Stage:
        """The stage called `name`. Raises NotFound naming the known stages."""
        for st in self.stages:
            if st.name == name:
                return st
        raise self._not_found(name)

    def select(self, names: Iterable[str], *, single: bool = False,
               downstream: bool = False) -> tuple[Stage, ...]:
        """The stages a run of `names` runs, in run order.

        A name is a stage name or a foreach/matrix group (`train` selects every
        `train@...`). By default: the named stages plus everything upstream of them;
        no names selects every stage. `single` (DVC's `-s/--single-item`): only the
        named stages. `downstream` (DVC's `--downstream`): the named stages plus every
        stage that depends on them, directly or transitively. Both need names.

        Raises NotFound for an unknown name; UsageError for `single` with
        `downstream`, or either without a name.
        """
        names = list(names)
        if single or downstream:
            from cas.core.errors import UsageError  # only the selection flags need it

            flag = "-s/--single-item" if single else "--downstream"
            if single and downstream:
                raise UsageError("-s/--single-item and --downstream cannot be used together",
                                 hint="-s runs only the named stages; --downstream adds what follows them")
            if not names:
                raise UsageError(f"{flag} needs the stages to run", hint=f"tally run {flag.split('/')[-1]} STAGE")
        named = {st.name for name in names for st in self._named(name)}
        if single:
            return tuple(st for st in self.stages if st.name in named)
        wanted: set[str] = set()
        if downstream:
            for st in self.stages:  # run order: a stage's upstream stages come first
                if st.name in named or any(u in wanted for u in self.upstream.get(st.name, ())):
                    wanted.add(st.name)
            return tuple(st for st in self.stages if st.name in wanted)
        todo = list(named)
        while todo:
            name = todo.pop()
            if name not in wanted:
                wanted.add(name)
                todo.extend(self.upstream.get(name, ()))
        return tuple(st for st in self.stages if st.name in wanted or not wanted)

    def _named(self, name: str) -> list[Stage]:
        hits = [st for st in self.stages if st.name == name or ("@" not in name and st.group == name)]
        if not hits:
            raise self._not_found(name)
        return hits

    def _not_found(self, name: str) -> NotFound:
        known = [st.name for st in self.stages]
        import difflib  # only an error message needs it

        close = difflib.get_close_matches(name, known, n=3)
        hint = f"did you mean {', '.join(close)}?" if close else f"stages: {', '.join(known) or '(none)'}"
        return NotFound(f"{self.path}: no stage named {name!r}", path=self.path, hint=hint)


__all__ = ["PIPELINE_FILES", "DEFAULT_PARAMS_FILE", "ParamRef", "Out", "Stage", "Plot", "Pipeline"]
