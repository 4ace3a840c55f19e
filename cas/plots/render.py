"""Plots out of tally: one offline HTML page, JSON specs, or PNG/SVG files.

- `html(plots)`: one self-contained page. The vendored Vega, Vega-Lite and
  vega-embed (cas/plots/vendor/, see its README) are inlined, so the page works
  with no network and from any folder; images are data URIs.
- `to_json(plots)`: DVC's `plots show --json` document (collect.Plots.to_json).
- `write_images(plots, folder, fmt)`: one PNG or SVG per chart through vl-convert
  (Vega-Lite rendered by a bundled Deno/V8, no browser), images copied as they are.
"""

from __future__ import annotations

import base64
import html as html_mod
import json
import re
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Any

from cas.core.errors import UsageError
from cas.core.fsops import atomic_write
from cas.plots.collect import Plots

VENDOR_SCRIPTS = ("vega.min.js", "vega-lite.min.js", "vega-embed.min.js")  # load order
VL_VERSION = "6.4"  # the Vega-Lite vl-convert renders with: the vendored one's major.minor
FORMATS = ("html", "json", "png", "svg")
PNG_SCALE = 2.0  # device pixels per CSS pixel in PNGs: sharp on high-density screens
# The embed options of every chart: SVG (so the page can be inspected and tested as
# markup) and an actions menu without the entries that go online (editor, source).
EMBED_OPTIONS = {"renderer": "svg", "actions": {"export": True, "source": False,
                                                "compiled": False, "editor": False}}


@lru_cache(maxsize=None)
def vendor_script(name: str) -> str:
    """The text of one vendored JavaScript file."""
    if name not in VENDOR_SCRIPTS:
        raise KeyError(name)
    return resources.files("cas.plots").joinpath("vendor", name).read_text("utf-8")


def script_json(value: Any) -> str:
    """JSON safe inside a <script> element: `</` and `<!--` cannot end or bend it."""
    return (json.dumps(value, ensure_ascii=False, separators=(",", ":"))
            .replace("</", "<\\/").replace("<!--", "<\\!--")
            .replace("\u2028", "\\u2028").replace("\u2029", "\\u2029"))


def _dom_id(plot_id: str, i: int) -> str:
    return f"plot-{i}-" + re.sub(r"[^A-Za-z0-9_-]", "_", plot_id)


PAGE = """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>{title}</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 1.5em; color: #222; }}
h1 {{ font-size: 1.3em; margin: 0 0 .3em; }}
.revs {{ color: #555; margin-bottom: 1em; }}
.plots {{ display: flex; flex-wrap: wrap; gap: 2em; }}
.plot h2 {{ font-size: .95em; font-weight: 600; margin: 0 0 .4em; font-family: monospace; }}
.images {{ display: flex; flex-wrap: wrap; gap: 1em; }}
.images figure {{ margin: 0; }} .images img {{ max-width: 420px; border: 1px solid #ddd; }}
.errors {{ color: #a00; white-space: pre-wrap; font-family: monospace; font-size: .85em; }}
</style>
{scripts}
</head>
<body>
<h1>{title}</h1>
<div class="revs">{revs}</div>
{errors}
<div class="plots">
{plots}
</div>
<script>
(function () {{
  var specs = {specs};
  var options = {options};
  specs.forEach(function (s) {{
    vegaEmbed("#" + s.id, s.spec, options).catch(function (e) {{
      document.getElementById(s.id).textContent = "could not draw this plot: " + e;
    }});
  }});
}})();
</script>
</body>
</html>
"""


def html(plots: Plots, *, title: str = "tally plots") -> str:
    """The whole page for `plots` (see the module docstring)."""
    scripts = "\n".join(f"<script>{vendor_script(n)}</script>" for n in VENDOR_SCRIPTS)
    blocks, specs = [], []
    for i, p in enumerate(plots.plots):
        dom = _dom_id(p.id, i)
        head = f'<h2 title="{html_mod.escape(p.id)}">{html_mod.escape(p.id)}</h2>'
        if p.kind == "vega":
            blocks.append(f'<div class="plot">{head}<div id="{dom}" class="chart"></div></div>')
            specs.append({"id": dom, "spec": p.spec})
        else:
            figs = "".join(
                f'<figure><img alt="{html_mod.escape(rev)}" src="{src}">'
                f"<figcaption>{html_mod.escape(rev)}</figcaption></figure>"
                for rev, _, src in p.images)
            blocks.append(f'<div class="plot">{head}<div class="images">{figs}</div></div>')
    errors = ""
    if plots.errors:
        lines = "\n".join(html_mod.escape(_error_line(e)) for e in plots.errors)
        errors = f'<div class="errors">{lines}</div>'
    revs = "revisions: " + ", ".join(html_mod.escape(r) for r in plots.revisions)
    if not plots.plots:
        blocks.append("<p>No plots: no plot definitions, live step files or targets with data.</p>")
    return PAGE.format(title=html_mod.escape(title), scripts=scripts, revs=revs, errors=errors,
                       plots="\n".join(blocks), specs=script_json(specs),
                       options=script_json(EMBED_OPTIONS))


def _error_line(e: dict[str, Any]) -> str:
    where = " ".join(str(e[k]) for k in ("name", "rev", "source") if e.get(k))
    return f"{where}: {e.get('msg')}" if where else str(e.get("msg"))


def to_json(plots: Plots) -> dict[str, Any]:
    return plots.to_json()


def write_html(plots: Plots, path: Path, *, title: str = "tally plots") -> Path:
    """Write the page to `path` (atomically; parent folders made). Returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, html(plots, title=title).encode("utf-8"))
    return path


def convert(spec: dict[str, Any], fmt: str) -> bytes:
    """One Vega-Lite spec as PNG or SVG bytes (vl-convert).

    Raises:
        UsageError: an unknown format, or vl-convert missing or refusing the spec.
    """
    try:
        import vl_convert as vlc
    except ImportError:
        raise UsageError("PNG and SVG output need vl-convert-python",
                         hint="pip install vl-convert-python") from None
    try:
        if fmt == "svg":
            return vlc.vegalite_to_svg(spec, vl_version=VL_VERSION).encode("utf-8")
        if fmt == "png":
            return bytes(vlc.vegalite_to_png(spec, vl_version=VL_VERSION, scale=PNG_SCALE))
    except (ValueError, RuntimeError) as exc:
        raise UsageError(f"vl-convert could not render the plot: {exc}") from None
    raise UsageError(f"unknown image format {fmt!r}: use png or svg")


def write_images(plots: Plots, folder: Path, fmt: str) -> list[Path]:
    """One file per chart (and per image of an image plot) in `folder`; returns them."""
    if fmt not in ("png", "svg"):
        raise UsageError(f"unknown image format {fmt!r}: use png or svg")
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    out = []
    for i, p in enumerate(plots.plots):
        if p.kind == "vega":
            target = folder / f"{_dom_id(p.id, i)}.{fmt}"
            atomic_write(target, convert(p.spec or {}, fmt))
            out.append(target)
            continue
        for rev, file, src in p.images:
            data = base64.b64decode(src.split(",", 1)[1])
            target = folder / re.sub(r"[^A-Za-z0-9_.-]", "_", f"{rev}_{file}")
            atomic_write(target, data)
            out.append(target)
    return out


__all__ = ["html", "to_json", "write_html", "write_images", "convert", "vendor_script",
           "script_json", "VENDOR_SCRIPTS", "VL_VERSION", "FORMATS", "EMBED_OPTIONS"]
