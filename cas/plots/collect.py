"""`tally plots show/diff`: plot definitions and data of some revisions, as Vega-Lite.

A **revision** is `workspace` (the files on disk), an experiment (`NAME` or
`BASELINE/NAME`, read from its workspace tree in the store), or a running queued
experiment (read from its run directory, so its curves grow while it runs).

Each revision's own pipeline file (`tally.yaml`, else `dvc.yaml`) says which plots
there are, as DVC reads them (cas/pipeline/pipelinefile.py parses `plots:`):

- a top-level plot whose id is a file (or a directory: one plot per file in it),
  or whose `y` (and `x`) map files to fields;
- every output a stage declares under `plots:`;
- and, declared or not, the step files of each live directory (dvclive's layout,
  spec/live.md: `<dir>/plots/metrics/*.tsv` next to `<dir>/metrics.json`), with
  `x: step`, as dvclive declares them for DVC.

TARGETS narrow the plots to ids matching one of them (a regular expression matched
at the start, as DVC does); a target naming a data file no definition covers is
plotted with the default template. The same plot id across revisions becomes one
chart with one color per revision; its properties come from the first revision
that defines it.
"""

from __future__ import annotations

import re
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping, Sequence

from cas.core.errors import NotFound, TallyError, UsageError
from cas.pipeline import livefiles
from cas.plots import data as plotdata
from cas.plots import templates
from cas.plots import vega
from cas.plots.sources import DirSource, Source, TreeSource, tree_source

if TYPE_CHECKING:
    from cas.workspace.project import Project

WORKSPACE = "workspace"
MAX_PIPELINE_FILE = 4 * 1024 * 1024  # bytes: a pipeline or params file read from a tree
PARAMS_SUFFIXES = (".yaml", ".yml", ".json", ".toml")
LIVE_X = {"x": livefiles.STEP_KEY}  # dvclive's definition of its step plots


@dataclass(frozen=True)
class Revision:
    """Where one revision's files are, and what it is called on the charts."""

    label: str
    source: Source
    kind: str  # workspace | experiment | running
    baseline: str | None = None
    record: str | None = None  # the record id of an experiment


@dataclass
class Plot:
    """One chart: a Vega-Lite spec over every revision's rows, or a list of images."""

    id: str
    kind: str  # vega | image
    revisions: list[str]
    spec: dict[str, Any] | None = None
    images: list[tuple[str, str, str]] = field(default_factory=list)  # (rev, file, data URI)

    def to_json(self) -> list[dict[str, Any]]:
        """DVC's `plots show --json` entries for this plot."""
        if self.kind == "vega":
            return [{"type": "vega", "revisions": self.revisions, "content": self.spec}]
        return [{"type": "image", "revisions": [rev], "url": src} for rev, _, src in self.images]


@dataclass
class Plots:
    """What `plots show/diff` renders."""

    revisions: list[str]
    plots: list[Plot]
    errors: list[dict[str, Any]]  # {"name"?, "rev", "source"?, "type", "msg"}

    def to_json(self) -> dict[str, Any]:
        """DVC's `plots show --json` document: {"data": {id: [...]}, "errors": [...]}."""
        out: dict[str, Any] = {}
        if self.errors:
            out["errors"] = self.errors
        out["data"] = {p.id: p.to_json() for p in self.plots}
        return out


# -- revisions ---------------------------------------------------------------------------

def resolve(project: Project, specs: Sequence[str]) -> list[Revision]:
    """The revisions `specs` name (`workspace`, experiment names, running entries).

    Raises:
        NotFound: a spec is neither `workspace`, an experiment, nor a running entry.
        UsageError: an ambiguous or malformed experiment name.
    """
    from cas.experiments import lookup
    from cas.objects import record

    out: list[Revision] = []
    for spec in dict.fromkeys(specs):
        if spec == WORKSPACE:
            out.append(Revision(WORKSPACE, DirSource(project.root), WORKSPACE))
            continue
        try:
            baseline, name, oid = lookup.find(project, spec)
        except NotFound:
            running = _running(project, spec)
            if running is None:
                raise
            out.append(running)
            continue
        rec = record.load(project.store, oid)
        src = tree_source(project.store, rec.workspace)
        if src is None:
            raise NotFound(f"experiment {spec!r} has no workspace tree to plot (status {rec.status})")
        out.append(Revision(name, src, "experiment", baseline, oid))
    labels = [r.label for r in out]
    # Names are unique per baseline only: two of one name are told apart by baseline.
    return [r if labels.count(r.label) == 1 or r.baseline is None else
            Revision(f"{r.baseline[:7]}/{r.label}", r.source, r.kind, r.baseline, r.record) for r in out]


def _running(project: Project, name: str) -> Revision | None:
    if not (project.store_dir / "queue").is_dir():
        return None
    from cas.queue import directory as queue

    for it in queue.items(project, states=("running",)):
        if it.name == name:
            d = queue.run_dir(project, it.id)
            if d.is_dir():
                return Revision(name, DirSource(d), "running", it.entry.baseline)
    return None


# -- definitions -------------------------------------------------------------------------

_pipeline_cache: dict[tuple[tuple[str, str], ...], Any] = {}


def pipeline_of(source: Source) -> Any | None:
    """The revision's parsed pipeline (None when it has no pipeline file).

    A tree's pipeline file and its top-level params files are written to a temporary
    directory for the one parser (cas.pipeline.pipelinefile); equal files give the
    same parse, so experiments of one baseline parse it once.

    Raises:
        PipelineError, ParamError: the pipeline file is malformed.
    """
    from cas.pipeline.pipelinefile import load_pipeline
    from cas.pipeline.stages import PIPELINE_FILES

    if isinstance(source, DirSource):
        if not any((source.root / f).is_file() for f in PIPELINE_FILES):
            return None
        return load_pipeline(source.root)
    assert isinstance(source, TreeSource)
    if not any(source.kind(f) == "file" for f in PIPELINE_FILES):
        return None
    names = [n for n in source.files_under_top()
             if n in PIPELINE_FILES or n.endswith(PARAMS_SUFFIXES)]
    key = tuple((n, e.oid) for n in names if (e := source.entry(n)) is not None and e.kind == 0)
    if key in _pipeline_cache:
        return _pipeline_cache[key]
    with tempfile.TemporaryDirectory(prefix="tally-plots-") as tmp:
        for n, _ in key:
            content = source.read(n, max_size=MAX_PIPELINE_FILE)
            if content is not None:
                Path(tmp, n).write_bytes(content)
        pipeline = load_pipeline(Path(tmp))
    if len(_pipeline_cache) > 64:
        _pipeline_cache.clear()
    _pipeline_cache[key] = pipeline
    return pipeline


def definitions(source: Source, targets: Sequence[str] = ()) -> dict[str, dict[str, Any]]:
    """Plot id -> properties, for one revision, in the order they are declared.

    Raises:
        PipelineError, ParamError: the revision's pipeline file is malformed.
    """
    found: dict[str, dict[str, Any]] = {}

    def add(pid: str, props: Mapping[str, Any]) -> None:
        if pid not in found:
            found[pid] = dict(props)

    pipeline = pipeline_of(source)
    for plot in pipeline.plots if pipeline is not None else ():
        props = dict(plot.props)
        if isinstance(props.get("y"), Mapping):
            if _matches(targets, plot.id):
                add(plot.id, props)
            continue
        path = plot.files[0]
        if not _matches(targets, plot.id) and not _matches(targets, path):
            continue
        if source.kind(path) == "dir":
            for f in source.files_under(path):
                add(f, props)
        else:
            add(path, props)
    for d in live_dirs(source):
        for f in source.files_under(f"{d}/{'/'.join(livefiles.PLOTS_DIR)}"):
            if f.endswith(livefiles.TSV_SUFFIX) and _matches(targets, f):
                add(f, LIVE_X)
    for t in targets:  # a data file no definition covers, named on the command line
        if not any(re.match(t, pid) for pid in found):
            kind = source.kind(t.strip("/"))
            if kind == "dir":
                for f in source.files_under(t.strip("/")):
                    add(f, {})
            elif kind == "file":
                add(t.strip("/"), {})
    return found


def live_dirs(source: Source) -> list[str]:
    """Top-level directories holding a live summary (spec/live.md)."""
    return [d for d in source.top_dirs()
            if source.kind(f"{d}/{livefiles.SUMMARY_FILE}") == "file"]


def _matches(targets: Sequence[str], pid: str) -> bool:
    if not targets:
        return True
    for t in targets:
        try:
            if re.match(t, pid):
                return True
        except re.error:
            if pid == t or pid.startswith(t.rstrip("/") + "/"):
                return True
    return False


def sources_of(pid: str, props: Mapping[str, Any]) -> list[str]:
    """The files a plot reads: the keys of `y` (else the id itself), then of `x`."""
    y, x = props.get("y"), props.get("x")
    files = list(y) if isinstance(y, Mapping) else [pid]
    if isinstance(x, Mapping) and x:
        files.append(next(iter(x)))
    return list(dict.fromkeys(files))


# -- assembling --------------------------------------------------------------------------

def collect(project: Project, revisions: Sequence[str] = (WORKSPACE,), *, targets: Sequence[str] = (),
            props: Mapping[str, Any] | None = None) -> Plots:
    """The plots of `revisions` (see the module docstring), each a filled spec.

    Args:
        revisions: `workspace`, experiment names, or running entries' names.
        targets: regular expressions; only plots whose id matches one are kept.
        props: properties overriding every definition's (template, x, y, title, ...).
    Raises:
        NotFound, UsageError: a revision that cannot be resolved. Problems with one
        plot or one revision's files are in `errors` instead, and the rest is drawn.
    """
    revs = resolve(project, revisions)
    return collect_revisions(revs, targets=targets, props=props)


def collect_revisions(revs: Sequence[Revision], *, targets: Sequence[str] = (),
                      props: Mapping[str, Any] | None = None) -> Plots:
    """collect() for revisions already resolved."""
    errors: list[dict[str, Any]] = []
    groups: dict[str, list[tuple[Revision, dict[str, Any]]]] = {}
    for rev in revs:
        try:
            defs = definitions(rev.source, targets)
        except TallyError as exc:
            errors.append(_error(exc, rev=rev.label))
            continue
        for pid, p in defs.items():
            groups.setdefault(pid, []).append((rev, {**p, **(props or {})}))
    plots = []
    for pid, group in groups.items():
        plot = _one_plot(pid, group, errors)
        if plot is not None:
            plots.append(plot)
    return Plots([r.label for r in revs], plots, errors)


def _one_plot(pid: str, group: list[tuple[Revision, dict[str, Any]]],
              errors: list[dict[str, Any]]) -> Plot | None:
    squashed: dict[str, Any] = {}
    for _, p in reversed(group):  # the first revision defining a property wins
        squashed.update(p)
    if plotdata.is_image(pid):
        images = []
        for rev, _ in group:
            content = rev.source.read(pid, max_size=plotdata.MAX_DATA_SIZE)
            if content is None:
                errors.append({"name": pid, "rev": rev.label, "source": pid, "type": "FileNotFoundError",
                               "msg": f"{pid} does not exist"})
                continue
            images.append((rev.label, pid, vega.image_source(pid, content)))
        return Plot(pid, "image", [r for r, _, _ in images], images=images) if images else None
    rows: list[dict[str, Any]] = []
    first: dict[str, Any] = {}
    revs_with_rows: list[str] = []
    for rev, _ in group:
        files: dict[str, Any] = {}
        for path in sources_of(pid, squashed):
            try:
                content = rev.source.read(path, max_size=plotdata.MAX_DATA_SIZE)
                if content is None:
                    raise NotFound(f"{path} does not exist in {rev.label}", path=path)
                files[path] = plotdata.parse(path, content, header=squashed.get("header", True))
            except TallyError as exc:
                errors.append(_error(exc, name=pid, rev=rev.label, source=path))
        try:
            points, rev_props = vega.flat_datapoints(pid, files, squashed, rev.label)
        except TallyError as exc:
            errors.append(_error(exc, name=pid, rev=rev.label))
            continue
        if points and rev.label not in revs_with_rows:
            revs_with_rows.append(rev.label)
        if not first and rev_props:
            first = rev_props
        rows.extend(points)
    if not rows:
        return None
    first.setdefault("title", pid)
    first["revs_with_datapoints"] = revs_with_rows
    try:
        template = _template(first.get("template"), [rev for rev, _ in group])
        spec = vega.fill_spec(template, rows, first)
    except TallyError as exc:
        errors.append(_error(exc, name=pid))
        return None
    return Plot(pid, "vega", revs_with_rows, spec=spec)


def _template(name: str | None, revs: list[Revision]) -> dict[str, Any]:
    if name is None:
        return templates.builtin(templates.DEFAULT)
    if name in templates.BUILTIN:
        return templates.builtin(name)
    for rev in revs:
        for path in templates.custom_paths(name):
            content = rev.source.read(path, max_size=templates.MAX_TEMPLATE_SIZE)
            if content is not None:
                return templates.parse_custom(content, path=path)
    raise NotFound(f"template '{name}' not found",
                   hint=f"built-in templates: {', '.join(templates.BUILTIN)}; or a JSON file in the project")


def _error(exc: Exception, **where: str) -> dict[str, Any]:
    return {**where, "type": type(exc).__name__, "msg": str(exc)}


def default_output(project: Project) -> Path:
    """Where `plots show/diff` write their page unless told: inside `.tally/`, which
    Git ignores (cas/workspace/project.py writes its .gitignore)."""
    return project.store_dir / "plots" / "index.html"


def check_props(props: Mapping[str, Any]) -> dict[str, Any]:
    """Command-line plot properties, checked: only DVC's display properties."""
    allowed = {"template", "x", "y", "x_label", "y_label", "title"}
    bad = sorted(set(props) - allowed)
    if bad:
        raise UsageError(f"unknown plot properties: {', '.join(bad)}",
                         hint=f"known: {', '.join(sorted(allowed))}")
    return {k: v for k, v in props.items() if v is not None}


__all__ = ["WORKSPACE", "Revision", "Plot", "Plots", "resolve", "collect", "collect_revisions",
           "definitions", "live_dirs", "pipeline_of", "sources_of", "default_output", "check_props"]
