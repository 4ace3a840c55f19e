"""One plot's Vega-Lite spec: rows from each revision's files, then a filled template.

Two steps, as DVC takes them (dvc/render/converter/vega.py, dvc-render vega.py), so
that a definition gives the chart DVC gives:

1. `flat_datapoints(plot_id, files, props, rev)`: the rows of one revision. `y` (and
   `x`) may be a field, a list of fields, or a mapping of file to field(s); a missing
   `y` is the last field of the data, a missing `x` is the row index (`step`). Rows
   get `rev`, `filename` and `field`; several `y` fields are copied into
   `dvc_inferred_y_value` (and several `x` fields into `dvc_inferred_x_value`).
2. `fill_spec(template, rows, props)`: the template's anchors filled. Revisions are
   told apart by color; several y sources by stroke dash or shape (`filename`,
   `field`, or both joined with `::` when both vary), as dvc-render does.
"""

from __future__ import annotations

import os
import posixpath
from collections.abc import Mapping
from typing import Any, Iterator

from cas.plots import data as plotdata
from cas.plots import templates
from cas.plots.data import PlotDataError

INDEX = "step"  # the x field when none is given: the row's index
REV, FILENAME, FIELD = "rev", "filename", "field"
SEP = "::"
INFERRED_X, INFERRED_Y = "dvc_inferred_x_value", "dvc_inferred_y_value"


def _file_fields(*axes: Any) -> Iterator[tuple[str, str]]:
    for axis in axes:
        if isinstance(axis, Mapping):
            for file, val in axis.items():
                if isinstance(val, str):
                    yield file, val
                elif isinstance(val, list):
                    for f in val:
                        yield file, f


def infer_axes(plot_id: str, files: Mapping[str, Any], props: Mapping[str, Any]) -> dict[str, Any]:
    """`props` with `x` and `y` as mappings of file to field(s), and the axis labels.

    `files` holds the parsed content of the revision's files, by path.
    """
    x, y = props.get("x"), props.get("y")
    out = dict(props)
    if isinstance(x, str):
        if isinstance(y, Mapping):  # one x per y file (and per field of a list)
            out["x"] = {f: [x] * len(v) if isinstance(v, list) else x for f, v in y.items()}
        else:
            out["x"] = {plot_id: x}
    if y is None:
        field = plotdata.last_field(files[plot_id]) if plot_id in files else None
        out["y"] = {plot_id: field} if field is not None else None
    elif not isinstance(y, Mapping):
        out["y"] = {plot_id: y}
    out["y_label"] = _y_label(out)
    out["x_label"] = _x_label(out)
    return out


def _y_label(props: Mapping[str, Any]) -> str | None:
    if props.get("y_label") is not None:
        return props["y_label"]
    y = props.get("y")
    if isinstance(y, str):
        return y
    if isinstance(y, list):
        return "y"
    if not isinstance(y, Mapping):
        return None
    fields = list(dict.fromkeys(f for _, f in _file_fields(y)))
    return fields[0] if len(fields) == 1 else "y"


def _x_label(props: Mapping[str, Any]) -> str:
    if props.get("x_label") is not None:
        return props["x_label"]
    x = props.get("x")
    if not isinstance(x, Mapping):
        return INDEX
    fields = list(dict.fromkeys(f for _, f in _file_fields(x)))
    return fields[0] if len(fields) == 1 else "x"


def flat_datapoints(plot_id: str, files: Mapping[str, Any], props: Mapping[str, Any],
                    rev: str) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """(rows of revision `rev`, the props to fill the template with).

    Raises:
        PlotDataError: a field named in x or y is not in its file's rows, or x and y
            sources cannot be paired.
    """
    props = infer_axes(plot_id, files, props)
    rows_of = {f: plotdata.datapoints(c) for f, c in files.items()}

    def checked(axis: Any) -> list[tuple[str, str]]:
        out = []
        for file, field in _file_fields(axis):
            rows = rows_of.get(file)
            if rows and field not in rows[0]:
                raise PlotDataError(f"could not find provided field ('{field}') in data fields "
                                    f"('{', '.join(rows[0])}') of {file}", path=file)
            out.append((file, field))
        return out

    xs, ys = checked(props.get("x")), checked(props.get("y"))
    update: dict[str, Any] = {}
    x_file, x_field = xs[0] if xs else (None, INDEX)
    several_x = len(xs) > 1 and len({f for _, f in xs}) > 1
    update["x"] = INFERRED_X if several_x else x_field
    if len(xs) > 1 and len(xs) != len(ys):
        raise PlotDataError(f"cannot have different number of x and y data sources: found "
                            f"{len(xs)} x and {len(ys)} y data sources")
    y_files = {f for f, _ in ys}
    y_fields = list(dict.fromkeys(f for _, f in ys))
    update["y"] = INFERRED_Y if len(y_fields) > 1 else (y_fields[0] if y_fields else None)
    prefix = len(os.path.commonpath(sorted(y_files))) if len(y_files) > 1 else 0
    update["anchors_y_definitions"] = [{FILENAME: _short(f, prefix), FIELD: fld} for f, fld in ys]

    out: list[dict[str, Any]] = []
    for i, (y_file, y_field) in enumerate(ys):
        if len(xs) > 1:
            x_file, x_field = xs[i]
        rows = [dict(r) for r in rows_of.get(y_file, [])]
        if update["y"] == INFERRED_Y:
            for r in rows:
                if y_field in r:
                    r[INFERRED_Y] = r[y_field]
        if x_field == INDEX and x_file is None:
            for n, r in enumerate(rows):
                r[INDEX] = n
        else:
            source = rows_of.get(x_file, [])  # type: ignore[arg-type]
            if len(source) != len(rows):
                raise PlotDataError(f"cannot join '{x_field}' from '{x_file}' and '{y_field}' "
                                    f"from '{y_file}': they have to have the same length")
            target = INFERRED_X if several_x else x_field
            for r, s in zip(rows, source):
                if x_field in s:
                    r[target] = s[x_field]
        for r in rows:
            r[REV] = rev
            r[FILENAME] = _short(y_file, prefix)
            r[FIELD] = y_field
        out.extend(rows)
    if not out:
        return [], {}
    return out, {**props, **update}


def _short(path: str, prefix: int) -> str:
    return path[prefix:].strip("/\\")


# -- filling the template ----------------------------------------------------------------

def fill_spec(template: dict[str, Any], rows: list[dict[str, Any]], props: Mapping[str, Any],
              *, strict: bool = True) -> dict[str, Any]:
    """The template with every anchor filled from `rows` and `props` ({} without rows).

    `rows` are changed in place (the `filename`/`field` columns that do not vary are
    dropped, as dvc-render does); they become the spec's data.

    Raises:
        PlotDataError: with `strict`, x or y is not a field of any row; the template
            has no data anchor.
    """
    if not rows:
        return {}
    props = dict(props)
    if strict:
        for axis in ("x", "y"):
            f = props.get(axis)
            if f and not any(f in r for r in rows):
                raise PlotDataError(f"field '{f}' does not exist in provided data")
    props.setdefault("title", "")
    props.setdefault("x_label", props.get("x"))
    props.setdefault("y_label", props.get("y"))
    spec: Any = template
    spec, varied = _optional_anchors(spec, rows, props)
    _drop_constant_columns(rows, varied)
    for name in ("title", "x", "y", "x_label", "y_label"):
        value = props.get(name)
        if value is None:
            continue
        if name in ("x", "y"):
            value = templates.escape_field(value)
        spec = templates.fill(spec, name, value)
    if not templates.has_anchor(spec, "data"):
        raise PlotDataError(f"template '{props.get('template', templates.DEFAULT)}' is not using "
                            f"'{templates.anchor('data')}' anchor")
    return templates.fill(spec, "data", rows)


def revisions_of(rows: list[dict[str, Any]]) -> list[str]:
    return list(dict.fromkeys(r[REV] for r in rows if r.get(REV)))


def _optional_anchors(spec: Any, rows: list[dict[str, Any]],
                      props: Mapping[str, Any]) -> tuple[Any, list[str] | None]:
    """Fill the optional anchors the template has; returns (spec, the varied y keys:
    None when the template has no optional anchor at all)."""
    todo = [a for a in templates.OPTIONAL if templates.has_anchor(spec, a)]
    if not todo:
        return spec, None

    def put(name: str, value: Any) -> None:
        nonlocal spec
        if name in todo:
            todo.remove(name)
            spec = templates.fill(spec, name, value)

    revs = props.get("revs_with_datapoints") or revisions_of(rows)
    put("color", templates.mapping(REV, "color", list(revs)))
    put("zoom_and_pan", templates.ZOOM_AND_PAN)
    put("plot_height", templates.PLOT_SIZE)
    put("plot_width", templates.PLOT_SIZE)
    x, y = props.get("x"), props.get("y")
    y_defs = props.get("anchors_y_definitions") or []
    if len(y_defs) <= 1:
        put("group_by", [REV])
        put("group_by_x", [REV, x])
        put("group_by_y", [REV, y])
        put("pivot_field", "datum.rev")
        put("tooltip", [{"field": REV}, {"field": x}, {"field": y}])
        for name in list(todo):
            put(name, {})
        return spec, []
    values: dict[str, set[str]] = {FILENAME: set(), FIELD: set(), SEP: set()}
    for d in y_defs:
        values[FILENAME].add(d.get(FILENAME))
        values[FIELD].add(d.get(FIELD))
        values[SEP].add(SEP.join([d.get(FILENAME, ""), d.get(FIELD, "")]))
    varied = [k for k in (FILENAME, FIELD) if len(values[k]) > 1]
    if len(varied) == 2:
        domain = sorted(values[SEP])
    elif varied:
        domain = sorted(values[varied[0]])
    else:
        domain = []
    concat = SEP.join(varied)
    put("group_by", [REV, concat])
    put("group_by_x", [REV, concat, x])
    put("group_by_y", [REV, concat, y])
    put("pivot_field", f" + '{SEP}' + ".join(f"datum.{k}" for k in [REV, *varied]))
    put("row", {"field": concat, "sort": []})
    put("column", {"field": concat, "sort": []})
    put("tooltip", [{"field": REV}, {"field": x}, {"field": y}, {"field": concat}])
    for name in ("stroke_dash", "shape"):
        put(name, templates.mapping(concat, name, domain))
    return spec, varied


def _drop_constant_columns(rows: list[dict[str, Any]], varied: list[str] | None) -> None:
    if varied is None:
        return
    if len(varied) == 2:
        key = SEP.join(varied)
        for r in rows:
            r[key] = SEP.join(str(r.get(k)) for k in varied)
            for k in varied:
                r.pop(k, None)
        return
    for r in rows:
        for k in (FILENAME, FIELD):
            if k not in varied:
                r.pop(k, None)


def image_source(path: str, content: bytes) -> str:
    """A data URI of an image (DVC's `data:image;base64,...`, with the real type)."""
    import base64
    mime = plotdata.MIME.get(posixpath.splitext(path)[1].lower(), "image")
    return f"data:{mime};base64,{base64.b64encode(content).decode()}"


__all__ = ["INDEX", "REV", "FILENAME", "FIELD", "infer_axes", "flat_datapoints", "fill_spec",
           "revisions_of", "image_source"]
