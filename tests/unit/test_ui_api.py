"""`tally ui`'s HTTP surface without a browser: the guard, each route, each action."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from support import plotlab

from cas.experiments import listing
from cas.experiments import lookup
from cas.store import refs
from cas.ui import app as ui_app
from cas.ui import security
from cas.ui.listing import ListingCache
from cas.workspace.project import open_project

TOKEN = "t0ken-for-tests"
PORT = 8123


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Path:
    base = tmp_path_factory.mktemp("uiapi")
    env = plotlab.env(base / "home")
    root = plotlab.make(base / "proj", env)
    for name, lr in (("one", 0.1), ("two", 0.2), ("three", 0.3)):
        plotlab.run(root, env, name, lr)
    return root


@pytest.fixture
def root(built: Path, tmp_path: Path) -> Path:
    """A fresh copy of the built project per test: actions change it."""
    import shutil
    dest = tmp_path / "proj"
    shutil.copytree(built, dest, symlinks=True)
    return dest


@pytest.fixture
def client(root: Path):
    from starlette.testclient import TestClient
    guard = security.Guard.for_server(token=TOKEN, host="127.0.0.1", port=PORT)
    app = ui_app.create_app(open_project(root), guard)
    with TestClient(app, base_url=f"http://127.0.0.1:{PORT}") as c:
        yield c


H = {"X-Tally-Token": TOKEN}
POST = {"X-Tally-Token": TOKEN, "Content-Type": "application/json"}


def spec(root: Path, name: str) -> str:
    b, n, _ = lookup.find(open_project(root), name)
    return f"{b}/{n}"


def test_every_route_wants_the_token(client) -> None:
    for path in ("/", "/api/table", "/api/live", "/static/app.js", "/vendor/vega.min.js", "/nope"):
        assert client.get(path).status_code == 403, path
        assert client.get(path, headers={"X-Tally-Token": "wrong"}).status_code == 403, path
    assert client.get("/api/table", headers=H).status_code == 200


def test_the_page_sets_a_strict_cookie_that_then_serves(client) -> None:
    r = client.get(f"/?token={TOKEN}")
    assert r.status_code == 200 and "<table id=\"exps\">" in r.text
    cookie = r.headers["set-cookie"]
    assert "HttpOnly" in cookie and "SameSite=strict" in cookie.replace("Strict", "strict")
    assert "script-src 'self'" in r.headers["content-security-policy"]
    assert client.get("/static/app.js").status_code == 200  # the cookie now carries it
    assert client.get("/vendor/vega-lite.min.js").text.startswith("!function")


def test_a_foreign_host_header_is_refused(client) -> None:
    r = client.get("/api/table", headers={**H, "Host": f"attacker.example:{PORT}"})
    assert r.status_code == 403
    assert client.get("/api/table", headers={**H, "Host": f"localhost:{PORT}"}).status_code == 200
    assert client.get("/api/table", headers={**H, "Host": "127.0.0.1:9"}).status_code == 403


def test_actions_need_post_the_header_and_json(client, root: Path) -> None:
    body = {"specs": [spec(root, "one")]}
    client.get(f"/?token={TOKEN}")  # a cookie alone must not be enough
    assert client.post("/api/remove", json=body).status_code == 403
    assert client.get("/api/remove", headers=H).status_code == 403
    assert client.post("/api/remove", content=b"specs=x", headers={**H, "Content-Type": "text/plain"}).status_code == 403
    assert client.post("/api/remove", content=b"[1]", headers=POST).status_code == 400
    assert client.post("/api/nothing", json={}, headers=POST).status_code == 404
    assert refs.read(open_project(root), *spec(root, "one").split("/")) is not None


def test_no_path_outside_the_package_is_served(client) -> None:
    for path in ("/static/../app.py", "/static/%2e%2e/app.py", "/static/..%2fapp.py",
                 "/vendor/../../app.py", "/vendor/app.js"):
        assert client.get(path, headers=H).status_code == 404, path


def test_table_filter_sort_and_paging(client) -> None:
    t = client.get("/api/table", headers=H).json()
    assert t["total"] == 3 and t["matched"] == 3
    assert {c["file"] for c in t["columns"]} >= {"metrics.json", "params.yaml"}
    t = client.get("/api/table", params={"filter": "lr >= 0.2", "sort": "lr:desc"}, headers=H).json()
    assert [r["name"] for r in t["rows"]] == ["three", "two"] and t["matched"] == 2
    assert t["rows"][0]["cells"]["params:params.yaml:lr"] == 0.3
    t = client.get("/api/table", params={"sort": "lr", "offset": 1, "limit": 1}, headers=H).json()
    assert [r["name"] for r in t["rows"]] == ["two"]
    bad = client.get("/api/table", params={"filter": "lr >>> 1"}, headers=H)
    assert bad.status_code == 400 and "^" in bad.json()["message"]
    assert client.get("/api/table", params={"limit": 0}, headers=H).status_code == 400


def test_experiment_record_with_outputs_and_log(client, root: Path) -> None:
    r = client.get("/api/experiment", params={"spec": spec(root, "two")}, headers=H).json()
    assert r["name"] == "two" and r["status"] == "success"
    assert r["stages"][0]["cmd"][0].endswith("train.py")
    outs = {o["path"]: o for o in r["outs"]}
    assert outs["tally-live"]["is_dir"] and outs["tally-live"]["size"] > 0
    assert "trained with lr 0.2" in r["log"]["text"]
    assert client.get("/api/experiment", params={"spec": "../../etc/passwd"}, headers=H).status_code == 400
    assert client.get("/api/experiment", params={"spec": "nope"}, headers=H).status_code == 404


def test_diff_and_plots_of_three(client, root: Path) -> None:
    specs = [("spec", spec(root, n)) for n in ("one", "two", "three")]
    d = client.get("/api/diff", params=specs, headers=H).json()
    lr = next(r for r in d["rows"] if r["key"] == "params.yaml:lr")
    assert lr["values"] == [0.1, 0.2, 0.3] and lr["changed"]
    p = client.get("/api/plots", params=specs, headers=H).json()
    loss = p["data"]["tally-live/plots/metrics/loss.tsv"][0]
    assert loss["revisions"] == ["one", "two", "three"]
    assert {row["rev"] for row in loss["content"]["data"]["values"]} == {"one", "two", "three"}
    assert client.get("/api/diff", params=specs[:1], headers=H).status_code == 400


def test_remove_deletes_the_ref(client, root: Path) -> None:
    s = spec(root, "one")
    r = client.post("/api/remove", json={"specs": [s]}, headers=POST)
    assert r.status_code == 200 and r.json()["removed"] == [s]
    assert refs.read(open_project(root), *s.split("/")) is None
    t = client.get("/api/table", headers=H).json()
    assert sorted(x["name"] for x in t["rows"]) == ["three", "two"]


def test_queue_a_variation_starts_from_the_experiments_workspace(client, root: Path) -> None:
    from cas.objects import record
    from cas.queue import directory as queue
    s = spec(root, "two")
    r = client.post("/api/queue", json={"spec": s, "set": ["epochs=3"], "name": "two-longer"}, headers=POST)
    assert r.status_code == 200, r.text
    [item] = queue.items(open_project(root), states=("pending",))
    rec = record.load(open_project(root).store, refs.read(open_project(root), *s.split("/")))
    assert item.name == "two-longer" and item.entry.workspace == rec.workspace
    assert [(o[2], o[3]) for o in item.entry.overrides] == [("epochs", 3)]
    live = client.get("/api/live", headers=H).json()
    assert [(x["name"], x["status"]) for x in live["experiments"]] == [("two-longer", "queued")]
    assert client.post("/api/queue", json={"spec": s, "set": []}, headers=POST).status_code == 400


def test_restore_writes_the_workspace_and_promote_makes_a_branch(client, root: Path) -> None:
    s = spec(root, "three")
    r = client.post("/api/restore", json={"spec": s}, headers=POST)
    assert r.status_code == 200, r.text
    assert "lr: 0.3" in (root / "params.yaml").read_text()
    r = client.post("/api/promote", json={"spec": s}, headers=POST)
    assert r.status_code == 200 and r.json()["results"][0]["branch"] == "exp/three"
    assert (root / ".git" / "refs" / "heads" / "exp" / "three").exists() or \
        "exp/three" in (root / ".git" / "packed-refs").read_text()


def test_the_listing_is_kept_until_something_changes(root: Path, monkeypatch) -> None:
    import time
    project = open_project(root)
    cache = ListingCache(project)
    calls = []
    real = listing.list_rows
    monkeypatch.setattr(listing, "list_rows", lambda *a, **k: calls.append(1) or real(*a, **k))
    # Refs older than the racy window: a second get() reuses the first listing.
    old = time.time() - 5
    for d, _, _ in os.walk(project.store_dir / "refs"):
        os.utime(d, (old, old))
    a = cache.get()
    assert cache.get() is a and len(calls) == 1
    b, n, oid = lookup.find(project, "one")
    refs.update(project, b, "copy", oid, None)
    c = cache.get()
    assert c is not a and len(calls) == 2 and "copy" in {e.name for e in c.experiments}
