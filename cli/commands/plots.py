"""`tally plots show|diff`: the plots of the workspace or of experiments, as one offline
HTML page, DVC's `--json` document, or PNG/SVG files.

Each command parses, calls cas.plots.collect.collect, and renders through
cas/plots/render.py (spec/plots.md says what is drawn from which files).
"""

from __future__ import annotations

from ..flags import JSON
from ..output import emit_json, err, out
from ..spec import ANY, FLAG, MANY, ONE, SOME, Arg, Command, Group, Opt
from .push import EXP  # one --exp: NAMEs are experiment names (push, pull, plots show)

FORMATS = ("html", "png", "svg")


def output_format(value: str) -> str:
    """One of FORMATS."""
    if value not in FORMATS:
        raise ValueError(f"{value!r} is not one of {', '.join(FORMATS)}")
    return value


def _render(a, name: str, revisions: list[str], targets: list[str]) -> None:
    from pathlib import Path

    from cas.core.errors import UsageError
    from cas.plots import collect, render
    from cas.workspace.project import open_project

    fmt = a.format or "html"
    if a.json and (a.format or a.out is not None or a.open):
        raise UsageError(f"tally {name}: --json prints the document and writes nothing: "
                         "not with --format, --out or --open")
    if a.open and fmt != "html":
        raise UsageError(f"tally {name}: --open opens the HTML page: not with --format {fmt}")
    title = f"tally {name} " + " ".join(revisions)
    project = open_project()
    plots = collect.collect(project, revisions, targets=targets)
    for e in plots.errors:
        where = " ".join(str(e[k]) for k in ("name", "rev", "source") if e.get(k))
        err(f"warning: {where}: {e.get('msg')}" if where else f"warning: {e.get('msg')}")
    if a.json:
        emit_json(render.to_json(plots))
        return
    if not plots.plots:
        err(f"No plots in {', '.join(plots.revisions)}: no plot definitions, live step files "
            "or targets with data; nothing written.")
        return
    page = collect.default_output(project)
    if a.out is not None:
        chosen = Path(a.out)
        # DVC's -o is a folder; a path ending in .html names the page itself.
        page = chosen if fmt == "html" and chosen.suffix == ".html" else chosen / page.name
    if fmt == "html":
        written = render.write_html(plots, page, title=title).resolve()
        out(written.as_uri())
        if a.open:
            import webbrowser
            webbrowser.open(written.as_uri())
        return
    for f in render.write_images(plots, page.parent, fmt):
        out(str(f))


def show(a) -> None:
    from cas.core.errors import UsageError

    if not a.exp:
        _render(a, "plots show", ["workspace"], a.names + a.targets)
        return
    if not a.names:
        raise UsageError("tally plots show: --exp needs experiment NAMEs",
                         hint="`tally plots show --exp NAME...`; `tally show` lists them")
    _render(a, "plots show", a.names, a.targets)


def diff(a) -> None:
    revisions = a.revisions if len(a.revisions) > 1 else ["workspace", *a.revisions]
    _render(a, "plots diff", revisions, a.targets)


TARGETS = Opt(("--targets",), "targets", MANY,
              "Only plots whose id matches (a regular expression, matched at the start), or a "
              "data file to plot with the default template. Repeatable.", metavar="TARGET")
OUT = Opt(("--out",), "out", ONE,
          "Where to write: a folder (DVC's -o), or for HTML a file ending in .html "
          "(default: .tally/plots/, which Git ignores).", metavar="PATH")
FORMAT = Opt(("--format",), "format", ONE,
             "html: one page that works offline; png or svg: one file per chart "
             "(needs vl-convert-python). Default: html.", metavar="html|png|svg",
             type=output_format)
OPEN = Opt(("--open",), "open", FLAG, "Open the page in the web browser once written.")
PLOTS_JSON = JSON._replace(help="DVC's `plots show --json` document on stdout: "
                                "{\"data\": {id: [Vega-Lite spec with its data, ...]}, "
                                "\"errors\": [...]}; nothing is written (images are data: URIs).")
EXITS = ((2, "bad usage: an unknown --format, --exp without NAMEs, --json with "
             "--format/--out/--open, --open with png/svg, an ambiguous experiment name, "
             "vl-convert missing or refusing a chart"),
         (3, "no such experiment (nor running queued one)"),
         (5, "an object in the store is corrupt"))
MORE = ("\n\nA problem with one chart or one revision's files is a warning on stderr (and "
        "in --json's errors); the other charts are still drawn. Prints the page's file:// "
        "address (or each image's path) on stdout.")

GROUP = Group(
    "plots",
    "Plots of the workspace and of experiments: Vega-Lite, offline HTML, PNG or SVG.\n\n"
    "Plots are what dvc.yaml or tally.yaml declare (top-level and stage `plots:`, as DVC "
    "reads them) and every live directory's step files; an experiment's are read from "
    "the store, without restoring anything (spec/plots.md).",
    (
        Command("plots show",
                "Write the plots of the workspace (or, with --exp, of experiments) to one "
                "page." + MORE, show,
                args=(Arg("names", "TARGET", ANY,
                          "Only plots whose id matches (a regular expression, matched at the "
                          "start), or a data file to plot with the default template; with "
                          "--exp, experiment names (NAME or BASELINE/NAME; a running queued "
                          "one is read as it runs), one color each."),),
                opts=(EXP._replace(help="Experiments instead of the workspace: NAMEs are "
                                        "experiment names (choose plots with --targets)."),
                      TARGETS, OUT, FORMAT, OPEN, PLOTS_JSON),
                exits=EXITS),
        Command("plots diff",
                "Overlay the plots of several experiments: one chart per plot, one color per "
                "experiment.\n\nWith one NAME, the workspace against it (as `dvc plots diff`)."
                + MORE, diff,
                args=(Arg("revisions", "NAME", SOME,
                          "Experiments (NAME or BASELINE/NAME), running queued ones, or "
                          "`workspace`."),),
                opts=(TARGETS, OUT, FORMAT, OPEN, PLOTS_JSON),
                exits=EXITS),
    ))
