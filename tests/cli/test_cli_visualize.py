"""CLI end to end for `tally plots show|diff` and `tally ui`: exit codes, stdout/stderr,
the --json document, what is written where, and the server a user starts."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from urllib.parse import unquote, urlparse

import pytest

from cli.main import run
from support.lab import Lab

PIPELINE = """\
plots:
  - roc.csv:
      template: simple
      x: fpr
      y: tpr
  - missing.csv:
      x: a
"""


def tally(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    capsys.readouterr()
    code = run(list(args))
    out, err = capsys.readouterr()
    return code, out, err


def roc(tpr: float) -> str:
    return f"fpr,tpr\n0,0\n0.1,{tpr}\n1,1\n"


@pytest.fixture
def plotted(lab: Lab) -> Lab:
    """A workspace with one plot (roc.csv) and a definition whose file never exists;
    two experiments, each with its own roc.csv."""
    lab.write({"dvc.yaml": PIPELINE, "roc.csv": roc(0.5)})
    lab.commit("plots")
    lab.exp("alpha", changes={"roc.csv": roc(0.6)})
    lab.exp("beta", changes={"roc.csv": roc(0.9)})
    return lab


def page_of(stdout: str) -> Path:
    (uri,) = stdout.split()
    assert uri.startswith("file:///"), stdout
    return Path(unquote(urlparse(uri).path))


# -- plots show / plots diff -------------------------------------------------------------------

def test_plots_show_writes_one_page_under_the_ignored_plots_folder(plotted: Lab, capsys) -> None:
    code, out, err = tally(capsys, "plots", "show")
    assert code == 0
    page = page_of(out)
    assert page == plotted.root / ".tally" / "plots" / "index.html"
    html = page.read_text()
    assert "<title>tally plots show workspace</title>" in html and "vegaEmbed" in html
    assert "https://cdn" not in html  # the Vega libraries are inlined: works offline
    # The definition whose file does not exist: a warning naming it; roc.csv still drawn.
    assert err.startswith("warning: missing.csv workspace missing.csv: ")
    assert '"roc.csv"' in html


def test_plots_show_json_is_dvcs_document_and_writes_nothing(plotted: Lab, capsys) -> None:
    code, out, err = tally(capsys, "plots", "show", "--json")
    assert code == 0
    doc = json.loads(out)
    assert set(doc) == {"data", "errors"}
    assert list(doc["data"]) == ["roc.csv"]
    (entry,) = doc["data"]["roc.csv"]
    assert set(entry) == {"type", "revisions", "content"}
    assert entry["type"] == "vega" and entry["revisions"] == ["workspace"]
    assert entry["content"]["data"]["values"][1] == {"fpr": "0.1", "tpr": "0.5", "rev": "workspace"}
    assert entry["content"]["$schema"].startswith("https://vega.github.io/schema/vega-lite/")
    (problem,) = doc["errors"]
    assert set(problem) >= {"rev", "type", "msg"} and problem["name"] == "missing.csv"
    assert "warning: missing.csv" in err
    assert not (plotted.root / ".tally" / "plots").exists()


def test_plots_show_of_experiments_and_targets(plotted: Lab, capsys) -> None:
    """--exp means what it means in push and pull: the NAMEs are experiment names."""
    code, out, _ = tally(capsys, "plots", "show", "--exp", "alpha", "beta", "--targets", "roc", "--json")
    assert code == 0
    doc = json.loads(out)
    assert "errors" not in doc  # the target leaves missing.csv out
    (entry,) = doc["data"]["roc.csv"]
    assert entry["revisions"] == ["alpha", "beta"]
    tprs = {(v["rev"], v["tpr"]) for v in entry["content"]["data"]["values"] if v["fpr"] == "0.1"}
    assert tprs == {("alpha", "0.6"), ("beta", "0.9")}
    # Without --exp, TARGETs and --targets both choose plots (of the workspace).
    for argv in (["roc"], ["--targets", "roc"], ["nothing", "--targets", "roc.csv"]):
        code, out, _ = tally(capsys, "plots", "show", *argv, "--json")
        assert code == 0 and json.loads(out) == {"data": {"roc.csv": json.loads(out)["data"]["roc.csv"]}}
        assert json.loads(out)["data"]["roc.csv"][0]["revisions"] == ["workspace"]


def test_plots_diff_overlays_experiments_and_one_name_means_against_the_workspace(
        plotted: Lab, capsys) -> None:
    code, out, _ = tally(capsys, "plots", "diff", "alpha", "beta", "--targets", "roc.csv", "--json")
    assert code == 0 and json.loads(out)["data"]["roc.csv"][0]["revisions"] == ["alpha", "beta"]
    code, out, _ = tally(capsys, "plots", "diff", "beta", "--targets", "roc", "--json")
    assert code == 0 and json.loads(out)["data"]["roc.csv"][0]["revisions"] == ["workspace", "beta"]
    code, out, err = tally(capsys, "plots", "diff", "alpha", "beta", "--targets", "roc")
    assert code == 0 and err == ""
    assert "<title>tally plots diff alpha beta</title>" in page_of(out).read_text()


def test_plots_out_is_a_folder_or_an_html_page(plotted: Lab, capsys, tmp_path: Path) -> None:
    code, out, _ = tally(capsys, "plots", "diff", "alpha", "beta", "--out", str(tmp_path / "dir"))
    assert code == 0 and page_of(out) == tmp_path / "dir" / "index.html"
    code, out, _ = tally(capsys, "plots", "diff", "alpha", "beta", "--out", str(tmp_path / "cmp.html"))
    assert code == 0 and page_of(out) == tmp_path / "cmp.html" and page_of(out).is_file()
    os.chdir(plotted.root / ".tally")  # a relative --out is relative to where tally runs
    code, out, _ = tally(capsys, "plots", "show", "roc", "--out", "rel")
    assert code == 0 and page_of(out) == plotted.root / ".tally" / "rel" / "index.html"


@pytest.mark.parametrize("fmt, magic", [("svg", b"<svg"), ("png", b"\x89PNG")])
def test_plots_as_images(plotted: Lab, capsys, tmp_path: Path, fmt: str, magic: bytes) -> None:
    pytest.importorskip("vl_convert")
    code, out, _ = tally(capsys, "plots", "diff", "alpha", "beta", "--targets", "roc",
                         "--format", fmt, "--out", str(tmp_path / "img"))
    assert code == 0
    (written,) = [Path(line) for line in out.splitlines()]
    assert written.parent == tmp_path / "img" and written.suffix == f".{fmt}"
    assert written.read_bytes().startswith(magic)


def test_plots_open_opens_the_page_it_wrote(plotted: Lab, capsys, monkeypatch) -> None:
    import webbrowser

    opened: list[str] = []
    monkeypatch.setattr(webbrowser, "open", lambda url, *a, **k: opened.append(url) or True)
    code, out, _ = tally(capsys, "plots", "show", "roc", "--open")
    assert code == 0 and opened == [out.strip()]


@pytest.mark.parametrize("argv, message", [
    (["show", "--format", "pdf"], "Invalid value for '--format': 'pdf' is not one of html, png, svg"),
    (["show", "--json", "--format", "svg"], "--json prints the document and writes nothing"),
    (["show", "--json", "--open"], "--json prints the document and writes nothing"),
    (["diff", "alpha", "--json", "--out", "x"], "--json prints the document and writes nothing"),
    (["diff", "alpha", "--open", "--format", "png"], "--open opens the HTML page"),
    (["diff"], "Missing argument 'NAME'."),
    (["show", "--exp"], "--exp needs experiment NAMEs"),
])
def test_plots_usage_errors(plotted: Lab, capsys, argv: list[str], message: str) -> None:
    code, out, err = tally(capsys, "plots", *argv)
    assert code == 2 and out == ""
    assert err.startswith(f"tally: error: tally plots {argv[0]}: {message}"), err
    assert not (plotted.root / ".tally" / "plots").exists()


def test_plots_of_an_unknown_experiment_and_of_nothing(plotted: Lab, capsys) -> None:
    code, out, err = tally(capsys, "plots", "diff", "alpha", "nosuch")
    assert code == 3 and out == "" and "nosuch" in err
    code, out, err = tally(capsys, "plots", "show", "nothing-matches")
    assert code == 0 and out == "" and err.startswith("No plots in workspace")
    assert not (plotted.root / ".tally" / "plots").exists()
    code, out, _ = tally(capsys, "plots", "show", "nothing-matches", "--json")
    assert code == 0 and json.loads(out) == {"data": {}}


def test_plots_outside_a_project(tmp_path: Path, capsys, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    code, out, err = tally(capsys, "plots", "show")
    assert code == 6 and out == "" and "tally init" in err


# -- ui ------------------------------------------------------------------------------------------

@pytest.fixture
def served(monkeypatch: pytest.MonkeyPatch) -> list[dict]:
    """cas.ui.app.serve replaced by a recorder: what the command asked for."""
    from cas.ui import app

    calls: list[dict] = []
    monkeypatch.setattr(app, "serve", lambda project, **kw: calls.append({"root": project.root, **kw}))
    return calls


def test_ui_defaults_loopback_a_free_port_and_the_browser(lab: Lab, capsys, served) -> None:
    code, out, err = tally(capsys, "ui")
    assert code == 0 and out == "" and err == ""
    assert served == [{"root": lab.root, "host": "127.0.0.1", "port": 0, "open_browser": True}]
    served.clear()
    code, _, _ = tally(capsys, "ui", "--no-browser", "--port", "8123", "--host", "::1")
    assert served == [{"root": lab.root, "host": "::1", "port": 8123, "open_browser": False}]


@pytest.mark.parametrize("argv, message", [
    (["--port", "65536"], "Invalid value for '--port': '65536' is not between 0 and 65535"),
    (["--port", "http"], "Invalid value for '--port': 'http' is not a port number"),
    (["--browser"], "No such option: --browser"),
])
def test_ui_usage_errors(lab: Lab, capsys, served, argv: list[str], message: str) -> None:
    code, out, err = tally(capsys, "ui", *argv)
    assert code == 2 and out == "" and served == []
    assert err.startswith(f"tally: error: tally ui: {message}"), err


def test_ui_on_a_port_in_use_is_bad_usage(lab: Lab, capsys) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        code, out, err = tally(capsys, "ui", "--no-browser", "--port", str(port))
    assert code == 2 and out == ""
    assert err.startswith(f"tally: error: cannot listen on 127.0.0.1:{port}: ")
    assert "hint: choose another --port" in err


def test_ui_without_its_optional_dependencies_says_what_to_install(lab: Lab, capsys, monkeypatch) -> None:
    import cas.ui
    import uvicorn

    monkeypatch.setattr(uvicorn.Server, "run", lambda self, sockets=None: None)  # never hang
    monkeypatch.delitem(sys.modules, "cas.ui.app", raising=False)
    monkeypatch.delattr(cas.ui, "app", raising=False)
    for name in [m for m in sys.modules if m == "starlette" or m.startswith("starlette.")] + ["starlette"]:
        monkeypatch.setitem(sys.modules, name, None)  # as if not installed
    code, out, err = tally(capsys, "ui", "--no-browser")
    assert code == 2 and out == ""
    assert "tally ui needs starlette" in err and "pip install 'tally[ui]'" in err


def test_ui_warns_off_loopback_and_opens_the_browser(lab: Lab, capsys, monkeypatch) -> None:
    """The real serve, with uvicorn's loop replaced by an immediate return."""
    import uvicorn
    import webbrowser

    opened = threading.Event()
    urls: list[str] = []
    monkeypatch.setattr(webbrowser, "open", lambda url, *a, **k: (urls.append(url), opened.set()))
    monkeypatch.setattr(uvicorn.Server, "run", lambda self, sockets=None: None)
    code, out, err = tally(capsys, "ui", "--host", "0.0.0.0")
    assert code == 0 and out == ""
    warning, address = err.splitlines()
    assert warning.startswith("warning: listening on 0.0.0.0, not only this machine")
    assert re.fullmatch(r"tally ui: http://0\.0\.0\.0:\d+/\?token=\S+", address)
    assert opened.wait(10) and urls == [address.split(": ", 1)[1]]


def test_ui_serves_with_its_token_and_stops_on_ctrl_c(lab: Lab) -> None:
    """`tally ui --no-browser` as a user runs it: the printed URL works, a request without
    the token is refused, and Ctrl-C ends it through the funnel (130, no traceback)."""
    proc = subprocess.Popen([sys.executable, "-m", "cli", "ui", "--no-browser"], cwd=lab.root,
                            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    try:
        line = proc.stderr.readline()
        m = re.fullmatch(r"tally ui: (http://127\.0\.0\.1:(\d+)/\?token=(\S+))\n", line)
        assert m, line
        with urllib.request.urlopen(m.group(1), timeout=10) as resp:
            assert resp.status == 200 and b"<html" in resp.read().lower()
        with urllib.request.urlopen(f"http://127.0.0.1:{m.group(2)}/api/table?token={m.group(3)}",
                                    timeout=10) as resp:
            assert json.load(resp)["total"] == 0
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(f"http://127.0.0.1:{m.group(2)}/api/table", timeout=10)
        assert refused.value.code == 403
        time.sleep(0.2)
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=20)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 130
    assert out == "" and err == "tally: interrupted\n"
