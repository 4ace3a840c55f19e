"""`tally plots show|diff` pages in Chromium with the network cut: every chart draws offline."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from support import plotlab
from support.browserlab import screenshot_path

from cas.plots import collect, render
from cas.workspace.project import open_project

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "plots" / "project"


def _offline(page) -> list[str]:
    """Refuse every request that is not the file itself; return what was tried."""
    tried: list[str] = []

    def handle(route):
        if route.request.url.startswith(("file:", "data:")):
            route.continue_()
        else:
            tried.append(route.request.url)
            route.abort()
    page.route("**/*", handle)
    return tried


def _written(stdout: str) -> Path:
    """The page `tally plots show|diff` wrote: the file:// address it printed."""
    (uri,) = stdout.split()
    assert uri.startswith("file://"), stdout
    from urllib.parse import unquote, urlparse
    return Path(unquote(urlparse(uri).path))


def _drawn(page, count: int) -> None:
    page.wait_for_function(f"document.querySelectorAll('.chart svg.marks .role-mark').length > 0 && "
                           f"document.querySelectorAll('.chart svg.marks').length >= {count}", timeout=20_000)


def test_every_template_draws_offline(page, tmp_path: Path) -> None:
    root = tmp_path / "proj"
    shutil.copytree(FIXTURE, root)
    env = plotlab.env(tmp_path / "home")
    plotlab.sh(root, env, "git", "init", "-q")
    plotlab.sh(root, env, *plotlab.TALLY, "init")
    plots = collect.collect(open_project(root), ["workspace"])
    vega = [p for p in plots.plots if p.kind == "vega"]
    out = _written(plotlab.sh(root, env, *plotlab.TALLY, "plots", "show", "--out", str(tmp_path)))
    assert out == (tmp_path / "index.html").resolve()
    tried = _offline(page)
    page.goto(out.as_uri())
    _drawn(page, len(vega))
    charts = page.locator(".chart")
    assert charts.count() == len(vega)
    for i in range(charts.count()):
        c = charts.nth(i)
        assert c.locator("svg.marks").count() == 1, c.get_attribute("id")
        assert c.locator("svg.marks .role-mark path, svg.marks .role-mark text").count() > 0, c.get_attribute("id")
    assert page.locator(".images img").count() == 1
    assert page.evaluate("document.querySelector('.images img').naturalWidth") == 6
    assert tried == [] and page.page_errors == []


def test_plots_diff_of_two_experiments(page, tmp_path: Path) -> None:
    env = plotlab.env(tmp_path / "home")
    root = plotlab.make(tmp_path / "proj", env)
    plotlab.run(root, env, "lr-small", 0.05)
    plotlab.run(root, env, "lr-large", 0.3)
    plots = collect.collect(open_project(root), ["lr-small", "lr-large"])
    out = _written(plotlab.sh(root, env, *plotlab.TALLY, "plots", "diff", "lr-small", "lr-large",
                              "--out", str(tmp_path / "diff.html")))
    assert out == (tmp_path / "diff.html").resolve()
    tried = _offline(page)
    page.set_viewport_size({"width": 1300, "height": 900})
    page.goto(out.as_uri())
    _drawn(page, len(plots.plots))
    loss = page.locator(".chart[id$='loss_tsv']")
    assert loss.locator("svg g.mark-line.layer_0_layer_0_marks path").count() == 2
    page.wait_for_timeout(300)
    page.screenshot(path=str(screenshot_path(tmp_path, "plots-diff.png")), full_page=True)
    assert tried == [] and page.page_errors == []


@pytest.mark.parametrize("fmt,magic", [("svg", b"<svg"), ("png", b"\x89PNG")])
def test_images_through_vl_convert(tmp_path: Path, fmt: str, magic: bytes) -> None:
    root = tmp_path / "proj"
    shutil.copytree(FIXTURE, root)
    env = plotlab.env(tmp_path / "home")
    plotlab.sh(root, env, "git", "init", "-q")
    plotlab.sh(root, env, *plotlab.TALLY, "init")
    plots = collect.collect(open_project(root), ["workspace"], targets=["confusion$", "roc.csv"])
    files = render.write_images(plots, tmp_path / "out", fmt)
    assert len(files) == 2
    for f in files:
        assert f.read_bytes()[:5].startswith(magic)
