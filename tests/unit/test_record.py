"""cas.objects.record: canonical encoding, exact round trips, decoders raise only FormatError."""

from __future__ import annotations

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cas.objects import envelope
from cas.objects import record
from cas.core.errors import FormatError, UsageError
from cas.objects.record import Record, StageResult

OID = "ab" * 32
OID2 = "cd" * 32
COMMIT = "0123456789abcdef0123456789abcdef01234567"


def full() -> Record:
    return Record(
        name="bold-seal", baseline=COMMIT, created=1_700_000_000_000_000_000, status="failed",
        parent=OID2, host="box", user="ann", exit_code=3, started=1, finished=2_000_000_001,
        workspace=OID, params={"params.yaml": {"train": {"lr": 0.1, "epochs": 10, "tags": ["a", 1]}}},
        deps={"src/train.py": OID, "data/in": OID2}, outs={"model.pkl": (OID, False), "eval": (OID2, True)},
        metrics={"eval/metrics.json": {"acc": 0.9, "n": 3, "ok": True, "none": None}},
        stages=(StageResult("prepare", ("python a.py",), "skipped", None, 0),
                StageResult("train", ("python b.py", "echo x"), "failed", 3, 5)),
        logs=OID, checkpoints=((1, OID), (5, OID2)), message="try lr")


def test_round_trip_is_exact():
    rec = full()
    back = record.decode(record.encode(rec))
    assert back == rec
    lr = back.params["params.yaml"]["train"]["lr"]
    epochs = back.params["params.yaml"]["train"]["epochs"]
    assert type(lr) is float and type(epochs) is int
    assert back.metrics["eval/metrics.json"]["ok"] is True


def test_equal_content_equal_bytes_whatever_the_dict_order():
    a = full()
    b = a._replace(deps=dict(reversed(list(a.deps.items()))),
                   params={"params.yaml": {"train": {"tags": ["a", 1], "epochs": 10, "lr": 0.1}}})
    assert record.encode(a) == record.encode(b)
    assert record.record_id(a) == record.record_id(b)


def test_minimal_record_and_flat_views():
    rec = Record(name="x", baseline=COMMIT, created=5, status="queued")
    assert record.decode(record.encode(rec)) == rec
    f = full()
    assert f.flat_params() == {"params.yaml:train.epochs": 10, "params.yaml:train.lr": 0.1,
                               "params.yaml:train.tags": ["a", 1]}
    assert f.flat_metrics()["eval/metrics.json:acc"] == 0.9
    assert f.to_json()["outs"]["eval"] == {"oid": OID2, "is_dir": True}


@pytest.mark.parametrize("change, message", [
    ({"status": "done"}, "status"),
    ({"baseline": "abc"}, "baseline"),
    ({"workspace": "zz"}, "workspace"),
    ({"params": {"p.yaml": {"big": 2**70}}}, "64 bits"),
    ({"metrics": {"m.json": {"x": object()}}}, "cannot be recorded"),
    ({"stages": (StageResult("s", ("c",), "bogus"),)}, "stage state"),
])
def test_encode_refuses_bad_fields(change, message):
    with pytest.raises(UsageError, match=message):
        record.encode(full()._replace(**change))


def _body(rec: Record) -> list:
    return msgpack.unpackb(record.encode(rec)[envelope.HEADER_SIZE:], raw=False)


def _pack(body) -> bytes:
    return envelope.encode(envelope.KIND_RECORD, 1, body)


@pytest.mark.parametrize("mutate, message", [
    (lambda b: b.pop(), "19 fields"),
    (lambda b: b.__setitem__(1, b"short"), "baseline"),
    (lambda b: b.__setitem__(6, "weird"), "status"),
    (lambda b: b.__setitem__(12, list(reversed(b[12]))), "out of order"),
    (lambda b: b.__setitem__(13, [["a", b"x" * 32, 1]]), "is_dir"),
    (lambda b: b.__setitem__(17, list(reversed(b[17]))), "steps must increase"),
    (lambda b: b.__setitem__(11, [["p", [1, [["b", 1], ["a", 2]]]]]), "out of order"),
    (lambda b: b.__setitem__(11, [["p", [7, []]]]), "container"),
    (lambda b: b.__setitem__(15, [["s", ["c"], "ran", None, -1]]), "duration"),
    (lambda b: b.__setitem__(16, b"\x00" * 31), "logs"),
])
def test_decode_rejects_malformed(mutate, message):
    body = _body(full())
    mutate(body)
    with pytest.raises(FormatError, match=message):
        record.decode(_pack(body))


def test_decode_rejects_wrong_kind_and_version():
    tree_bytes = envelope.encode(envelope.KIND_TREE, 1, [0, 0, []])
    with pytest.raises(FormatError, match="expected a record"):
        record.decode(tree_bytes)
    data = bytearray(record.encode(full()))
    data[4] = 9
    with pytest.raises(FormatError, match="version 9"):
        record.decode(bytes(data))


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=200))
def test_decoder_raises_only_format_error_on_garbage(data):
    try:
        record.decode(b"TLYR\x01" + data)
    except FormatError:
        pass


@settings(max_examples=300, deadline=None)
@given(st.integers(min_value=0, max_value=400), st.integers(min_value=0, max_value=255))
def test_decoder_raises_only_format_error_on_bit_flips(pos, byte):
    data = bytearray(record.encode(full()))
    data[pos % len(data)] = byte
    try:
        record.decode(bytes(data))
    except FormatError:
        pass


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(min_value=-(2**63), max_value=2**64 - 1)
    | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner, max_size=4),
    max_leaves=20)


@settings(max_examples=200, deadline=None)
@given(st.dictionaries(st.text(min_size=1, max_size=10), json_values, max_size=3))
def test_values_round_trip_exactly(params):
    rec = Record(name="n", baseline=COMMIT, created=0, status="success", params=params)
    back = record.decode(record.encode(rec)).params

    def same(a, b):
        assert type(a) is type(b), (a, b)
        if isinstance(a, dict):
            assert list(sorted(a)) == list(sorted(b))
            for k in a:
                same(a[k], b[k])
        elif isinstance(a, list):
            assert len(a) == len(b)
            for x, y in zip(a, b):
                same(x, y)
        else:
            assert a == b
    same(params, back)


def test_store_helpers(tmp_path):
    from cas.store.objectstore import MemoryStore
    store = MemoryStore()
    oid = record.put(store, full())
    assert oid == record.record_id(full())
    assert record.load(store, oid) == full()


@pytest.mark.parametrize("bad", ["../escape", "/etc/passwd", "a/../../b", ".git/config", "", "a//b", "x\0y"])
def test_decode_refuses_paths_outside_the_project(bad: str) -> None:
    """Restore and gc act on deps/outs: a record naming a path outside is hostile."""
    from cas.objects import record as rec_mod
    from cas.core.errors import FormatError

    base = full()
    for field in ("deps", "outs"):
        value = {bad: "a" * 64} if field == "deps" else {bad: ("a" * 64, False)}
        data = rec_mod.encode(base._replace(**{field: value}))
        with pytest.raises(FormatError):
            rec_mod.decode(data)
