"""cas.plots: data files, revisions from the store, definitions, errors, the page."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from support import plotlab

from cas.experiments import lookup
from cas.core.errors import NotFound
from cas.plots import collect, data, render, templates, vega
from cas.plots.sources import DirSource, TreeSource, safe_parts
from cas.workspace.project import open_project


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Path:
    base = tmp_path_factory.mktemp("plots")
    env = plotlab.env(base / "home")
    root = plotlab.make(base / "proj", env)
    plotlab.run(root, env, "low", 0.05)
    plotlab.run(root, env, "high", 0.3)
    return root


def test_csv_cells_stay_text_and_headerless_columns_are_numbered() -> None:
    assert data.parse("a.csv", b"x,y\n1,2.5\n") == [{"x": "1", "y": "2.5"}]
    assert data.parse("a.tsv", b"1\t2\n3\t4\n", header=False) == [{"0": "1", "1": "2"}, {"0": "3", "1": "4"}]


def test_json_tables_at_any_depth_are_merged_row_by_row() -> None:
    doc = {"a": [{"x": 1}, {"x": 2}], "b": {"c": [{"y": 3}, {"y": 4}]}, "bad": [{"z": 1}, 5]}
    assert data.datapoints(doc) == [{"x": 1, "y": 3}, {"x": 2, "y": 4}]
    assert data.last_field(doc) == "x"


def test_unknown_types_and_broken_files_are_plot_errors() -> None:
    with pytest.raises(data.PlotDataError):
        data.parse("model.bin", b"\0")
    with pytest.raises(data.PlotDataError):
        data.parse("m.json", b"{nope")


def test_fields_are_escaped_for_vega_but_labels_are_not() -> None:
    rows = [{"a.b": 1, "c[0]": 2}]
    spec = vega.fill_spec(templates.builtin("simple"),
                          *vega.flat_datapoints("f.json", {"f.json": rows}, {"x": "a.b", "y": "c[0]"}, "ws"))
    assert spec["encoding"]["x"] == {"field": "a\\.b", "type": "quantitative", "title": "a.b"}
    assert spec["encoding"]["y"]["field"] == "c\\[0\\]"


def test_a_missing_field_is_an_error_entry_not_an_exception(built: Path) -> None:
    project = open_project(built)
    plots = collect.collect(project, ["low"], props={"y": "nope"}, targets=["roc.csv"])
    assert plots.plots == [] and plots.errors[0]["rev"] == "low"
    assert "nope" in plots.errors[0]["msg"]


def test_experiments_are_read_from_the_store_without_touching_the_workspace(built: Path) -> None:
    project = open_project(built)
    before = {p: (built / p).stat().st_mtime_ns for p in os.listdir(built) if p != ".tally"}
    plots = collect.collect(project, ["low", "high"])
    ids = [p.id for p in plots.plots]
    assert ids == ["ROC", "classes.json", "roc.csv", "tally-live/plots/metrics/acc.tsv",
                   "tally-live/plots/metrics/loss.tsv"]
    loss = next(p for p in plots.plots if p.id.endswith("loss.tsv"))
    assert loss.revisions == ["low", "high"]
    values = loss.spec["data"]["values"]
    assert [r["loss"] for r in values if r["rev"] == "high"][:2] == ["1.3", "0.8"]
    assert loss.spec["encoding"]["color"]["scale"]["domain"] == ["low", "high"]
    after = {p: (built / p).stat().st_mtime_ns for p in os.listdir(built) if p != ".tally"}
    assert before == after


def test_targets_narrow_and_unknown_revisions_are_not_found(built: Path) -> None:
    project = open_project(built)
    plots = collect.collect(project, ["low"], targets=["tally-live/"])
    assert [p.id for p in plots.plots] == ["tally-live/plots/metrics/acc.tsv",
                                           "tally-live/plots/metrics/loss.tsv"]
    with pytest.raises(NotFound):
        collect.collect(project, ["nobody"])


def test_no_path_leaves_the_revision(built: Path, tmp_path: Path) -> None:
    for bad in ("../x", "/etc/passwd", "a/../../x", ".git/config", ".tally/config", "a//b"):
        assert safe_parts(bad) is None, bad
    (tmp_path / "outside.json").write_text("[]")
    ws = tmp_path / "ws"
    ws.mkdir()
    os.symlink(tmp_path / "outside.json", ws / "link.json")
    src = DirSource(ws)
    assert src.read("link.json", max_size=100) is None and src.kind("../outside.json") is None
    project = open_project(built)
    _, _, rec = lookup.load(project, "low")
    tree = TreeSource(project.store, rec.workspace)
    assert tree.read("params.yaml", max_size=100) == b"lr: 0.05\nepochs: 5\n"
    assert tree.read(".tally/config", max_size=100) is None and tree.kind("../params.yaml") is None


def test_the_page_is_self_contained(built: Path) -> None:
    page = render.html(collect.collect(open_project(built), ["low", "high"]))
    assert "<script src=" not in page and "cdn" not in page.lower()
    assert page.count("<script>") == 4  # three vendored libraries and the charts
    assert render.script_json({"a": "</script><!--"}) == '{"a":"<\\/script><\\!--"}'
