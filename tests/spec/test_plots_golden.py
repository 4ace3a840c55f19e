"""Golden: tally's plots --json equals DVC's, template by template.

tests/fixtures/plots/project/ has one plot per DVC template (and dvclive step files,
several y sources, an image); golden.json is what DVC 3.67.1's `dvc plots show
--json` printed for it (tests/fixtures/plots/make_golden.sh). Every Vega-Lite spec,
data included, must be the same document.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from cas.plots import collect, templates
from cas.workspace.project import init_project

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "plots"
GOLDEN = json.loads((FIXTURES / "golden.json").read_text())["data"]


@pytest.fixture(scope="module")
def ours(tmp_path_factory: pytest.TempPathFactory) -> dict:
    root = tmp_path_factory.mktemp("golden") / "proj"
    shutil.copytree(FIXTURES / "project", root)
    subprocess.run(["git", "init", "-q"], cwd=root, check=True)
    project, _ = init_project(root)
    return collect.collect(project, ["workspace"]).to_json()


def test_the_same_plots_in_the_same_order(ours: dict) -> None:
    assert "errors" not in ours
    assert list(ours["data"]) == list(GOLDEN)


@pytest.mark.parametrize("plot_id", [k for k, v in GOLDEN.items() if v[0]["type"] == "vega"])
def test_spec_equals_dvcs(ours: dict, plot_id: str) -> None:
    assert ours["data"][plot_id] == GOLDEN[plot_id]


def test_every_builtin_template_is_covered() -> None:
    from ruamel.yaml import YAML
    doc = YAML(typ="safe").load((FIXTURES / "project" / "dvc.yaml").read_text())
    used = set()
    for item in doc["plots"]:
        props = next(iter(item.values())) if isinstance(item, dict) else {}
        if not str(next(iter(item)) if isinstance(item, dict) else item).endswith(".png"):
            used.add((props or {}).get("template", templates.DEFAULT))
    assert used == set(templates.BUILTIN)


def test_images_are_listed_per_revision(ours: dict) -> None:
    [entry] = ours["data"]["sample.png"]
    assert entry["type"] == "image" and entry["revisions"] == ["workspace"]
    assert entry["url"].startswith("data:image/png;base64,")


def test_the_worked_example_of_spec_plots(tmp_path: Path) -> None:
    """spec/plots.md's files give exactly the JSON document the page shows."""
    import re
    page = (Path(__file__).resolve().parents[2] / "spec" / "plots.md").read_text()
    files = re.findall(r"```\w+ spec:plots-file path=(\S+)\n(.*?)```", page, re.S)
    [doc] = re.findall(r"```json spec:plots-json\n(.*?)```", page, re.S)
    assert [p for p, _ in files] == ["roc.csv", "dvc.yaml"]
    root = tmp_path / "proj"
    root.mkdir()
    for path, text in files:
        (root / path).write_text(text)
    subprocess.run(["git", "init", "-q"], cwd=root, check=True)
    project, _ = init_project(root)
    assert collect.collect(project, ["workspace"]).to_json() == json.loads(doc)
