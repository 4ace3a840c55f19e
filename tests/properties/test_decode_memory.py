"""Decoding is bounded by its input (issue 13, item 2; spec/objects.md, "Invalid values").

A valid-looking structured object of a few KiB could expand to millions of empty
arrays (64 bytes of Python for each byte of msgpack): fsck and checkout once used
2.4 GB on a 1 KB tree. Every decoder of a structured object (tree, record, run-cache
entry, queue entry) now stops once the body holds more arrays and maps than its size
allows, so peak memory stays within a small multiple of the object's size, whatever
the bytes.
"""

from __future__ import annotations

import tracemalloc

import msgpack
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from cas.core.errors import FormatError
from cas.objects import envelope, queue_entry, record, tree
from cas.pipeline import runcache

DECODERS = {envelope.KIND_TREE: tree.decode, envelope.KIND_RECORD: record.decode,
            envelope.KIND_RUNCACHE: runcache.decode, envelope.KIND_QUEUE: queue_entry.decode}
FACTOR = 32  # peak bytes of Python per byte of object, at most
SLACK = 64 * 1024  # bytes: the decoder's own small allocations


def _envelope(kind: bytes, body: bytes) -> bytes:
    return envelope.MAGIC + kind + b"\x01" + body


def _bomb(n: int, shape: str) -> bytes:
    """A msgpack body of about n bytes that expands as much as msgpack allows."""
    if shape == "arrays":  # [[], [], ...]
        return b"\xdd" + n.to_bytes(4, "big") + b"\x90" * n
    if shape == "maps":  # [{}, {}, ...]
        return b"\xdd" + n.to_bytes(4, "big") + b"\x80" * n
    if shape == "nested":  # [[[...]]] as deep as msgpack goes, then empties
        depth = 1000
        return b"\x92" * depth + b"\xdd" + n.to_bytes(4, "big") + b"\x90" * n + b"\x90" * depth
    if shape == "floats":  # [1.5, 1.5, ...]: 9 bytes -> a 24-byte float and a slot
        return msgpack.packb([1.5] * max(1, n // 9))
    raise AssertionError(shape)


def _peak(fn, data: bytes) -> int:
    tracemalloc.start()
    try:
        try:
            fn(data)
        except FormatError:
            pass
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(kind=st.sampled_from(sorted(DECODERS)), n=st.integers(1, 200_000),
       shape=st.sampled_from(["arrays", "maps", "nested", "floats"]))
@example(kind=envelope.KIND_TREE, n=1_000_000, shape="arrays")
@example(kind=envelope.KIND_RECORD, n=1_000_000, shape="maps")
def test_peak_memory_is_a_small_multiple_of_the_object(kind: bytes, n: int, shape: str) -> None:
    data = _envelope(kind, _bomb(n, shape))
    assert _peak(DECODERS[kind], data) <= FACTOR * len(data) + SLACK


@settings(max_examples=200, deadline=None)
@given(kind=st.sampled_from(sorted(DECODERS)),
       body=st.recursive(st.none() | st.booleans() | st.integers(-2**63, 2**64 - 1) | st.floats() | st.text(max_size=8)
                         | st.binary(max_size=40),
                         lambda inner: st.lists(inner, max_size=8)
                         | st.dictionaries(st.text(max_size=4), inner, max_size=4), max_leaves=60))
def test_any_body_decodes_or_raises_format_error_within_the_bound(kind: bytes, body) -> None:
    data = _envelope(kind, msgpack.packb(body, use_bin_type=True))
    assert _peak(DECODERS[kind], data) <= FACTOR * len(data) + SLACK


def test_a_one_kilobyte_tree_of_a_million_empty_arrays_is_refused_cheaply() -> None:
    """The reported bomb: a zstd tree of ~1 KB whose body is millions of empty arrays."""
    import zstandard

    data = _envelope(envelope.KIND_TREE, _bomb(4_000_000, "arrays"))
    small = zstandard.ZstdCompressor(level=19).compress(data)
    assert len(small) < 2048
    try:
        tree.decode(data)
    except FormatError as exc:
        assert "arrays and maps" in exc.message
    else:
        raise AssertionError("the bomb decoded")
    assert _peak(tree.decode, data) <= 4 * len(data)  # refusing costs a few times the body, no more
