"""cas.pipeline.tallylock: deterministic tally.lock text, fast-path reader == YAML reader."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cas.pipeline import tallylock as lockfile
from cas.core.errors import UsageError
from cas.pipeline.tallylock import FileState, StageLock

OID = "ab" * 32
OID2 = "cd" * 32


def sample() -> dict[str, StageLock]:
    return {
        "train": StageLock(cmd=("python train.py --lr 0.1",),
                           deps=(FileState("data/features", OID2, 2048, 2), FileState("src/train.py", OID, 812)),
                           params={"params.yaml": {"train.lr": 0.1, "train.n": 50, "train.name": "yes",
                                                   "train.tags": ["a", 1], "train.opt": {"b": 1, "a": 2.5}}},
                           outs=(FileState("model.pkl", OID, 40960),)),
        "prep stage": StageLock(cmd=("echo 'a: b' # not a comment", "mkdir -p out"), wdir="sub",
                                outs=(FileState("sub/out dir", OID2, 0, 0),)),
        "true": StageLock(cmd=("true",)),
    }


def test_round_trip_and_determinism(tmp_path):
    stages = sample()
    text = lockfile.dumps(stages)
    assert lockfile.loads(text) == stages
    assert lockfile.dumps(dict(reversed(list(stages.items())))) == text
    # keys sorted: stage names, deps and outs by path
    assert text.index('  prep stage:') < text.index("  train:") < text.index('  "true":')
    assert text.index("data/features") < text.index("src/train.py")
    assert lockfile.write(tmp_path, stages) is True
    assert lockfile.write(tmp_path, stages) is False  # unchanged text is not rewritten
    assert lockfile.read(tmp_path) == stages


def test_fast_reader_agrees_with_ruamel():
    from ruamel.yaml import YAML

    text = lockfile.dumps(sample())
    assert lockfile._fast_parse(text) == YAML(typ="safe", pure=True).load(text)


def test_hand_edited_yaml_falls_back_to_the_full_parser():
    text = (
        "schema: 1\n"
        "stages:\n"
        "  train: {cmd: 'python t.py', deps: [{path: a, oid: '" + OID + "', size: 1}]}\n"
    )
    got = lockfile.loads(text)
    assert got["train"].cmd == ("python t.py",)
    assert got["train"].deps == (FileState("a", OID, 1),)


def test_empty_and_missing(tmp_path):
    assert lockfile.read(tmp_path) == {}
    assert lockfile.loads(lockfile.dumps({})) == {}


@pytest.mark.parametrize("text, message", [
    ("schema: 1\nstages:\n  a:\n    cmd: [\n", "malformed YAML"),
    ("schema: 9\nstages: {}\n", "schema 9"),
    ("schema: 1\nstages:\n  a:\n    deps: []\n", "cmd"),
    ("schema: 1\nstages:\n  a:\n    cmd: x\n    outs:\n    - path: o\n      oid: nothex\n      size: 1\n", "oid"),
    ("schema: 1\nstages:\n  a:\n    cmd: x\n    params: [1]\n", "params"),
    ("- 1\n", "mapping"),
])
def test_malformed(text, message):
    with pytest.raises(UsageError, match=message):
        lockfile.loads(text, path="tally.lock")


def test_malformed_names_the_line():
    with pytest.raises(UsageError, match=r"tally\.lock:\d+"):
        lockfile.loads("schema: 1\nstages:\n  a:\n    cmd: x\n   bad: [\n")


scalars = (st.none() | st.booleans() | st.integers(min_value=-10**12, max_value=10**12)
           | st.floats(allow_nan=False, allow_infinity=True) | st.text(max_size=12))


@settings(max_examples=150, deadline=None)
@given(st.text(min_size=1, max_size=12), st.lists(st.text(min_size=1, max_size=20), min_size=1, max_size=3),
       st.dictionaries(st.text(min_size=1, max_size=8), scalars, max_size=4), st.text(min_size=1, max_size=15))
def test_any_text_round_trips(name, cmds, params, path):
    stages = {name: StageLock(cmd=tuple(cmds), params={"p.yaml": params} if params else {},
                              outs=(FileState(path, OID, 3),))}
    text = lockfile.dumps(stages)
    back = lockfile._stage_map(lockfile._fast_parse(text))  # our own text never needs ruamel
    assert back.keys() == stages.keys()
    got = back[name]
    assert got.cmd == tuple(cmds) and got.outs == stages[name].outs
    for k, v in params.items():
        w = got.params["p.yaml"][k]
        assert type(w) is type(v) and (w == v or (isinstance(v, float) and math.isnan(v)))


def test_an_oid_yaml_would_read_as_a_number_is_quoted(tmp_path) -> None:
    """A hex id of digits only (or digits-e-digits) must come back as the same string."""
    from cas.pipeline import tallylock as lf

    for oid in ("1" * 64, "12" + "e" + "3" * 61):
        lock = {"train": lf.StageLock(cmd=("true",), deps=(lf.FileState("a", oid, 1),))}
        text = lf.dumps(lock)
        assert f'oid: "{oid}"' in text
        assert lf.loads(text)["train"].deps[0].oid == oid
