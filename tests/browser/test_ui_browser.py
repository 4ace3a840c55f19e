"""`tally ui` in a real Chromium: the table, filtering, compare, live steps, the token."""

from __future__ import annotations

import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from support import plotlab

from support.browserlab import screenshot_path, start_server

EXPERIMENTS = {"alpha": 0.05, "beta": 0.1, "gamma": 0.2, "delta": 0.3}


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory):
    base = tmp_path_factory.mktemp("ui")
    env = plotlab.env(base / "home")
    root = plotlab.make(base / "proj", env)
    for name, lr in EXPERIMENTS.items():
        plotlab.run(root, env, name, lr)
    return root, env


@pytest.fixture(scope="module")
def server(project):
    root, env = project
    srv = start_server(root, env)  # `tally ui --no-browser`, as a user starts it
    try:
        yield srv
    finally:
        code = srv.stop()
    assert code == 130, "Ctrl-C should stop `tally ui` through the funnel (exit 130)"


def _names(page) -> list[str]:
    return page.locator('#exps tbody td[data-col="name"]').all_inner_texts()


def test_the_table_lists_every_experiment(server, page) -> None:
    page.goto(server.url)
    page.wait_for_selector("#exps tbody tr")
    assert sorted(_names(page)) == sorted(EXPERIMENTS)
    # Headers are grouped by file, as DVC's table: metrics.json over acc and loss.
    groups = page.locator("#exps thead tr.groups th").all_inner_texts()
    assert "metrics.json" in groups and "params.yaml" in groups
    # The token left the address bar once read.
    assert "token" not in page.url
    assert page.page_errors == []


def test_a_filter_narrows_the_table_and_a_bad_one_says_where(server, page) -> None:
    page.goto(server.url)
    page.wait_for_selector("#exps tbody tr")
    page.fill("#filter", "lr >= 0.2")
    page.click("#filter-form button[type=submit]")
    page.wait_for_function("document.querySelectorAll('#exps tbody tr').length == 2")
    assert sorted(_names(page)) == ["delta", "gamma"]
    assert "2 of 4" in page.inner_text("#counts")
    page.fill("#filter", "lr >>> 2")
    page.click("#filter-form button[type=submit]")
    page.wait_for_selector("#filter-error:not([hidden])")
    assert "^" in page.inner_text("#filter-error")  # the caret under the offending spot


def test_sorting_by_a_column_header(server, page) -> None:
    page.goto(server.url)
    page.wait_for_selector("#exps tbody tr")
    page.click('#exps thead th[data-col="params:params.yaml:lr"]')  # params: ascending first
    page.wait_for_function("document.querySelector('#exps thead th.sorted') !== null")
    page.wait_for_function(
        "Array.from(document.querySelectorAll('#exps tbody td[data-col=name]')).map(e => e.textContent).join() == 'alpha,beta,gamma,delta'")
    page.click('#exps thead th[data-col="params:params.yaml:lr"]')
    page.wait_for_function(
        "Array.from(document.querySelectorAll('#exps tbody td[data-col=name]')).map(e => e.textContent).join() == 'delta,gamma,beta,alpha'")


def test_hiding_a_column(server, page) -> None:
    page.goto(server.url)
    page.wait_for_selector("#exps tbody tr")
    assert page.locator('#exps thead th[data-col="created"]').count() == 1
    page.click("#columns-button")
    page.locator("#columns-panel label", has_text="created").locator("input").uncheck()
    assert page.locator('#exps thead th[data-col="created"]').count() == 0
    page.locator("#columns-panel label", has_text="created").locator("input").check()


def test_selecting_two_shows_their_diff_and_one_line_each(server, page, tmp_path: Path) -> None:
    page.goto(server.url)
    page.wait_for_selector("#exps tbody tr")
    for name in ("alpha", "gamma"):
        page.locator("#exps tbody tr", has=page.locator(f'td[data-col="name"]:text-is("{name}")')) \
            .locator("input[type=checkbox]").check()
    page.wait_for_selector("#compare:not([hidden]) #diff table")
    diff = page.inner_text("#diff")
    assert "params.yaml:lr" in diff and "0.05" in diff and "0.2" in diff
    # The live loss curve (linear template): one line per experiment, in the first layer.
    plot = page.locator('#plots .plot[data-plot="tally-live/plots/metrics/loss.tsv"]')
    plot.locator("svg g.mark-line path").first.wait_for()
    # Vega draws each series of a line mark as its own group of the mark's class.
    assert plot.locator("svg g.mark-line.layer_0_layer_0_marks path").count() == 2
    legend = plot.locator("svg .role-legend").first.text_content()
    assert "alpha" in legend and "gamma" in legend
    # The record of one, with its outputs and log.
    page.locator("#exps tbody tr", has=page.locator('td[data-col="name"]:text-is("gamma")')).click()
    page.wait_for_selector("#details:not([hidden]) h3")
    assert "tally-live/" in page.inner_text("#details")
    assert "trained with lr 0.2" in page.inner_text("#details pre")
    page.wait_for_timeout(300)  # let the charts settle for the picture
    page.screenshot(path=str(screenshot_path(tmp_path, "ui.png")), full_page=True)
    assert page.page_errors == []


def test_a_request_without_the_token_is_refused(server, browser) -> None:
    for path in ("/", "/api/table", "/static/app.js", "/vendor/vega.min.js"):
        with pytest.raises(urllib.error.HTTPError) as exc:
            urllib.request.urlopen(server.base + path, timeout=10)
        assert exc.value.code == 403, path
    with pytest.raises(urllib.error.HTTPError) as exc:
        urllib.request.urlopen(f"{server.base}/api/table?token=not-{server.token}", timeout=10)
    assert exc.value.code == 403
    # A fresh browser context has no cookie: the bare address is refused there too.
    ctx = browser.browser.new_context() if browser.browser else None
    if ctx is not None:  # a persistent context has no parent browser to open one from
        p = ctx.new_page()
        assert p.goto(server.base + "/").status == 403
        ctx.close()
    # An action with the cookie but without the token header is refused.
    req = urllib.request.Request(f"{server.base}/api/remove?token={server.token}", method="POST",
                                 data=b'{"specs": ["alpha"]}', headers={"Content-Type": "application/json"})
    with pytest.raises(urllib.error.HTTPError) as exc:
        urllib.request.urlopen(req, timeout=10)
    assert exc.value.code == 403


def test_a_running_experiment_advances_without_a_reload(project, server, page) -> None:
    root, env = project
    slow = dict(env, TRAIN_PAUSE="0.4")
    plotlab.sh(root, env, *plotlab.TALLY, "run", "--queue", "-n", "slow", "-S", "epochs=40")
    worker = __import__("subprocess").Popen(
        [sys.executable, "-m", "cli.worker", "--root", str(root)], cwd=root, env=slow,
        stdin=-3, stdout=-3, stderr=-3, start_new_session=True)
    try:
        page.goto(server.url)
        row = page.locator("#exps tbody tr", has=page.locator('td[data-col="name"]:text-is("slow")'))
        status = row.locator('td[data-col="status"]')
        status.wait_for(timeout=30_000)
        page.wait_for_function(
            """() => { const td = Array.from(document.querySelectorAll('#exps tbody tr'))
                 .find(tr => tr.querySelector('td[data-col=name]').textContent == 'slow');
               return td && /step \\d+/.test(td.querySelector('td[data-col=status]').textContent); }""",
            timeout=30_000)
        first = int(status.inner_text().rsplit(" ", 1)[1])
        navigations = []
        page.on("framenavigated", lambda f: navigations.append(f.url))
        deadline = time.time() + 30
        while time.time() < deadline:
            text = status.inner_text()
            if "step" in text and int(text.rsplit(" ", 1)[1]) >= first + 2:
                break
            page.wait_for_timeout(200)
        else:
            raise AssertionError(f"step stayed at {status.inner_text()!r}")
        assert navigations == []  # updated in place: the page never reloaded
    finally:
        worker.terminate()
        worker.wait(20)
