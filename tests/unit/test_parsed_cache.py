"""The parsed-pipeline cache (.tally/runcache/parsed.cache): a parse reused exactly.

It is only a cache, so the contract is narrow: what comes back is equal to what the
loader returned, with the same classes (the runner matches on them); a value it cannot
store, a damaged file or one written by another version is a miss, never an error.
"""

from __future__ import annotations

import datetime
from pathlib import Path

from support import helpers
from cas.pipeline.parsecache import ParsedCache
from cas.pipeline.pipelinefile import load_pipeline
from cas.pipeline.stages import Out, Pipeline, Plot, Stage

PIPELINE = """\
stages:
  prepare:
    cmd: python prepare.py
    deps: [data.csv]
    params: [prepare.split]
    outs: [data/prepared]
  train:
    cmd:
    - python train.py
    - echo done
    deps: [data/prepared]
    params: [train.lr, {other.yaml: [seed]}]
    outs: [{model.bin: {cache: true, persist: true}}]
    metrics: [{metrics.json: {cache: false}}]
    plots: [{plots/loss.csv: {x: step, y: loss}}]
"""


def _write(root: Path) -> None:
    (root / "dvc.yaml").write_text(PIPELINE)
    (root / "params.yaml").write_text("prepare:\n  split: 0.2\ntrain:\n  lr: 0.1\n")
    (root / "other.yaml").write_text("seed: 7\n")


def _load(root: Path):
    return load_pipeline(root), ["dvc.yaml", "params.yaml"]


def test_a_parse_comes_back_equal_and_with_its_classes(project) -> None:
    _write(project.root)
    helpers.settle(project.statcache, [project.root / "dvc.yaml", project.root / "params.yaml"])
    first = ParsedCache(project)
    parsed = first.get("pipeline", lambda: _load(project.root))
    first.save()
    assert (project.store_dir / "runcache" / "parsed.cache").is_file()

    again = ParsedCache(project)
    calls = []
    got = again.get("pipeline", lambda: calls.append(1) or _load(project.root))
    assert calls == []  # a hit: the loader did not run
    assert got == parsed and type(got) is Pipeline
    for a, b in zip(got.stages, parsed.stages):
        assert type(a) is Stage and a == b
        assert all(type(o) is Out for o in a.outs)
        assert type(a.params) is tuple and all(type(p) is type(q) for p, q in zip(a.params, b.params))
    assert all(type(p) is Plot for p in got.plots)


def test_an_edited_file_is_a_miss(project) -> None:
    _write(project.root)
    helpers.settle(project.statcache, [project.root / "dvc.yaml", project.root / "params.yaml"])
    cache = ParsedCache(project)
    cache.get("pipeline", lambda: _load(project.root))
    cache.save()
    (project.root / "dvc.yaml").write_text(PIPELINE.replace("echo done", "echo again"))
    got = ParsedCache(project).get("pipeline", lambda: _load(project.root))
    assert got.stages[1].cmd == ("python train.py", "echo again")


def test_a_value_marshal_cannot_write_is_not_cached(project) -> None:
    helpers.settle(project.statcache, [project.root / ".tally" / "config"])
    cache = ParsedCache(project)
    cache.get("params:p.yaml", lambda: ({"when": datetime.date(2024, 1, 2)}, []))
    cache.save()  # no error: the cache just stays unwritten
    assert not (project.store_dir / "runcache" / "parsed.cache").exists()


def test_a_damaged_or_foreign_cache_is_a_miss(project) -> None:
    _write(project.root)
    path = project.store_dir / "runcache" / "parsed.cache"
    path.parent.mkdir(parents=True, exist_ok=True)
    import marshal
    for blob in (b"", b"\x00garbage", marshal.dumps(((999, 3, 11), {})),
                 marshal.dumps((ParsedCache._version(),
                                {"pipeline": ((), (), ("\0namedtuple", "NoSuchClass", ()))}))):
        path.write_bytes(blob)
        calls = []
        ParsedCache(project).get("pipeline", lambda: calls.append(1) or _load(project.root))
        assert calls == [1], blob
