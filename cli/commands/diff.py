"""`tally diff`: two experiments' params and metrics side by side."""

from __future__ import annotations

from ..flags import ALL, JSON, PRECISION
from ..output import emit_json, err, out, table
from ..spec import OPTIONAL, REQUIRED, Arg, Command
from .push import REMOTE
from .show import DEFAULT_PRECISION


def body(a) -> None:
    from cas.experiments import compare
    from cas.experiments.table import format_value
    from cas.workspace.project import open_project

    if a.remote is not None:  # either side may be the remote's (read, not pulled)
        from cas.sync import exps
        d = exps.diff(open_project(), a.a, a.b, remote=a.remote)
    else:
        d = compare.diff(open_project(), a.a, a.b)
    for note in d.notes:
        err(f"note: {note}")
    rows = [r for r in d.rows if a.all or r.changed]
    if a.json:
        emit_json({"a": d.a, "b": d.b, "rows": [r.to_json() for r in rows]})
        return
    if not rows:
        err(f"No params or metrics differ between {d.a} and {d.b}.")
        return
    p = DEFAULT_PRECISION if a.precision is None else a.precision
    cells = [[r.group, r.key, format_value(r.a, p), format_value(r.b, p),
              "-" if r.delta is None else (("+" if r.delta > 0 else "") + format_value(r.delta, p))]
             for r in rows]
    out(table(["", "key", d.a, d.b, "change"], cells))


COMMAND = Command(
    "diff", "Params and metrics of A and B side by side; the change is A - B for numbers.",
    body,
    args=(Arg("a", "A", REQUIRED, "An experiment (NAME or BASELINE/NAME)."),
          Arg("b", "B", OPTIONAL, "Another experiment or a Git revision (default: A's baseline commit).")),
    opts=(ALL._replace(help="Every row: also the params and metrics that did not change."),
          REMOTE._replace(help="Look experiments up on the remote NAME too (here first)."),
          PRECISION._replace(help=f"Significant digits of floats, 1-30 (default {DEFAULT_PRECISION})."),
          JSON),
    exits=((2, "bad usage, or a NAME under several baselines (write BASELINE/NAME)"),
           (3, "no such experiment or revision")))
