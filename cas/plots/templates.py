"""DVC's plot templates and how their anchors are filled (spec/plots.md, "Templates").

A template is a Vega-Lite spec holding anchors, strings `<DVC_METRIC_NAME>`, where
the data, the fields and the labels go. The built-in ones are DVC's own (dvc-render
`vega_templates.py`, Apache-2.0), kept byte for byte as JSON in `templates/` beside
this module so a DVC user's plot definition gives the same chart here:

    simple, linear, smooth, scatter, scatter_jitter, confusion,
    confusion_normalized, bar_horizontal, bar_horizontal_sorted

A definition's `template` may also name a JSON file of the revision (a custom
template), as in DVC; `.dvc/plots/NAME.json` is looked up too, DVC's templates folder.

Filling follows dvc-render's VegaRenderer exactly: an anchor that is a whole string
value is replaced by the value (any JSON); one inside a longer string is replaced by
text (only when the value is text); `x` and `y` are escaped for Vega field names
(`.`, `[`, `]`), labels are not.
"""

from __future__ import annotations

import json
from functools import lru_cache
from importlib import resources
from typing import Any

from cas.core.errors import NotFound, UsageError

BUILTIN = ("simple", "linear", "smooth", "scatter", "scatter_jitter", "confusion",
           "confusion_normalized", "bar_horizontal", "bar_horizontal_sorted")
DEFAULT = "linear"  # DVC's default template
TEMPLATES_DIR = ".dvc/plots"  # where DVC keeps a project's own templates
MAX_TEMPLATE_SIZE = 1024 * 1024  # bytes; DVC's templates are ~4 KiB

# Anchors a template may leave out (dvc-render OPTIONAL_ANCHORS).
OPTIONAL = ("color", "column", "group_by_x", "group_by_y", "group_by", "pivot_field",
            "plot_height", "plot_width", "row", "shape", "stroke_dash", "tooltip", "zoom_and_pan")
# The values a varied field is mapped onto: one per revision (color), or per y source.
RANGES: dict[str, list[Any]] = {
    "stroke_dash": [[1, 0], [8, 8], [8, 4], [4, 4], [4, 2], [2, 1], [1, 1]],
    "color": ["#945dd6", "#13adc7", "#f46837", "#48bb78", "#4299e1", "#ed8936", "#f56565"],
    "shape": ["circle", "square", "triangle", "diamond"],
}
ZOOM_AND_PAN = {"name": "grid", "select": "interval", "bind": "scales"}
PLOT_SIZE = 300  # pixels, width and height, DVC's default


def anchor(name: str) -> str:
    """`x_label` -> `<DVC_METRIC_X_LABEL>`."""
    return f"<DVC_METRIC_{name.upper()}>"


@lru_cache(maxsize=None)
def _builtin_text(name: str) -> str:
    return resources.files("cas.plots").joinpath("templates", f"{name}.json").read_text("utf-8")


def builtin(name: str) -> dict[str, Any]:
    """A fresh copy of built-in template `name`.

    Raises:
        NotFound: no built-in template has that name.
    """
    if name not in BUILTIN:
        raise NotFound(f"no plot template named {name!r}",
                       hint=f"built-in templates: {', '.join(BUILTIN)}; or a path to a JSON template")
    return json.loads(_builtin_text(name))


def parse_custom(data: bytes, *, path: str) -> dict[str, Any]:
    """A custom template's content (a JSON object), checked to be one.

    Raises:
        UsageError: too big, not JSON, or not an object.
    """
    if len(data) > MAX_TEMPLATE_SIZE:
        raise UsageError(f"plot template {path} is over {MAX_TEMPLATE_SIZE} bytes", path=path)
    try:
        content = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise UsageError(f"plot template {path} is not JSON: {exc}", path=path) from None
    if not isinstance(content, dict):
        raise UsageError(f"plot template {path} must be a JSON object", path=path)
    return content


def custom_paths(name: str) -> list[str]:
    """Where a template named `name` may be in a revision, first found wins (DVC's
    order: the templates folder, with or without `.json`, then the path itself)."""
    out = [f"{TEMPLATES_DIR}/{name}"]
    if not name.endswith(".json"):
        out.append(f"{TEMPLATES_DIR}/{name}.json")
    out.append(name)
    return out


# -- filling -----------------------------------------------------------------------------

def has_anchor(content: Any, name: str) -> bool:
    """True when anchor `name` is a whole string value somewhere in `content`."""
    a = anchor(name)
    stack = [content]
    while stack:
        node = stack.pop()
        if isinstance(node, dict):
            stack.extend(node.values())
        elif isinstance(node, list):
            stack.extend(node)
        elif node == a:
            return True
    return False


def fill(content: Any, name: str, value: Any) -> Any:
    """`content` with anchor `name` replaced by `value` (a new structure).

    A string that is exactly the anchor becomes `value`; inside a longer string of a
    mapping the anchor is replaced by `value` when that is text (dvc-render's rule:
    list items are replaced only when whole).
    """
    return _fill(content, anchor(name), value)


def _fill(node: Any, a: str, value: Any) -> Any:
    if isinstance(node, dict):
        out = {}
        for k, v in node.items():
            if isinstance(v, str):
                if v == a:
                    out[k] = value
                    continue
                if a in v and isinstance(value, str):
                    v = v.replace(a, value)
                out[k] = v
            else:
                out[k] = _fill(v, a, value)
        return out
    if isinstance(node, list):
        return [value if (isinstance(e, str) and e == a) else
                _fill(e, a, value) if isinstance(e, (dict, list)) else e for e in node]
    return node


def escape_field(name: str) -> str:
    """A data field name as Vega reads it: `.`, `[` and `]` are path syntax there."""
    for c in (".", "[", "]"):
        name = name.replace(c, "\\" + c)
    return name


def mapping(field: str, name: str, domain: list[str]) -> dict[str, Any]:
    """An encoding mapping `field`'s values (`domain`) onto `name`'s range, cycling."""
    full = RANGES.get(name, [])
    values = [full[i % len(full)] for i in range(len(domain))] if full else []
    enc: dict[str, Any] = {"field": field, "scale": {"domain": domain, "range": values}}
    if name != "color":  # empty symbols, so the legend shows dash or shape, not color
        enc["legend"] = {"symbolFillColor": "transparent", "symbolStrokeColor": "grey"}
    return enc


__all__ = ["BUILTIN", "DEFAULT", "OPTIONAL", "RANGES", "ZOOM_AND_PAN", "PLOT_SIZE", "anchor",
           "builtin", "parse_custom", "custom_paths", "has_anchor", "fill", "escape_field", "mapping"]
