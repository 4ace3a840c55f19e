"""Hypothesis properties: codecs round-trip, decoders raise only their one error class on
any input (random, or a valid encoding flipped, truncated or extended), and the store
gives back exactly what it was given under every compression policy."""

from __future__ import annotations

import tempfile
from pathlib import Path

import msgpack
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cas.objects import envelope
from cas.core import hashing
from cas.objects import pointer
from cas.objects import tree
from cas.store import writer
from cas.core.errors import FormatError, UsageError
from cas.store.objectstore import FileStore, StoreOptions
from cas.objects.tree import DIR, FILE, SYMLINK, Entry

# Per test, not a global profile: other modules' Hypothesis tests keep their settings.
FAST = settings(deadline=None, max_examples=100, suppress_health_check=[HealthCheck.too_slow])

names = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="/\0"),
                min_size=1, max_size=12).filter(lambda n: n not in tree.RESERVED_NAMES)
oids = st.binary(min_size=32, max_size=32).map(bytes.hex)
sizes = st.integers(0, tree.MAX_SIZE)


@st.composite
def trees(draw) -> tree.Tree:
    n = draw(st.integers(0, 12))
    chosen = draw(st.lists(names, min_size=n, max_size=n, unique=True))
    entries, sub_files = [], {}
    for name in chosen:
        kind = draw(st.sampled_from((FILE, DIR, SYMLINK)))
        size = draw(st.integers(0, 2**40))
        mode = draw(st.sampled_from((0o644, 0o755))) if kind == FILE else 0
        entries.append(Entry(name, kind, draw(oids), size, mode))
        if kind == DIR:
            sub_files[name] = draw(st.integers(0, 10**6))
    return tree.make(entries, subtree_files=sub_files)


def valid_tree_bytes() -> st.SearchStrategy[bytes]:
    return trees().map(tree.encode)


@st.composite
def mutated(draw, valid: st.SearchStrategy[bytes]) -> bytes:
    data = bytearray(draw(valid))
    how = draw(st.sampled_from(("flip", "truncate", "extend", "splice")))
    if how == "flip":
        i = draw(st.integers(0, len(data) - 1))
        data[i] ^= draw(st.integers(1, 255))
    elif how == "truncate":
        del data[draw(st.integers(0, len(data) - 1)):]
    elif how == "extend":
        data += draw(st.binary(min_size=1, max_size=40))
    else:
        i = draw(st.integers(0, len(data)))
        data[i:i] = draw(st.binary(min_size=1, max_size=8))
    return bytes(data)


# msgpack values of any shape, to reach the field checks behind a valid header.
msgpack_values = st.recursive(
    st.none() | st.booleans() | st.integers(-2**63, 2**64 - 1) | st.floats()
    | st.text(max_size=10) | st.binary(max_size=40),
    lambda inner: st.lists(inner, max_size=6)
    | st.dictionaries(st.text(max_size=5), inner, max_size=4),
    max_leaves=12)


def packed_tree_like(value) -> bytes:
    return b"TLYT\x01" + msgpack.packb(value, use_bin_type=True)


# -- trees ----------------------------------------------------------------------------------

@FAST
@given(trees())
def test_tree_round_trip(t: tree.Tree) -> None:
    data = tree.encode(t)
    assert tree.decode(data) == t
    assert tree.encode(tree.decode(data)) == data  # canonical: one encoding per tree


@FAST
@given(trees(), st.randoms())
def test_tree_encoding_ignores_input_order(t: tree.Tree, rnd) -> None:
    entries = list(t.entries)
    rnd.shuffle(entries)
    sub = {e.name: t.total_files for e in entries if e.kind == DIR}  # any consistent counts
    a = tree.make(entries, subtree_files=sub)
    b = tree.make(sorted(entries, key=lambda e: e.name), subtree_files=sub)
    assert tree.encode(a) == tree.encode(b)


def _decode_tree_or_format_error(data: bytes) -> None:
    try:
        t = tree.decode(data)
    except FormatError:
        return
    # Whatever decodes is a valid tree: it re-encodes and decodes to itself.
    assert tree.decode(tree.encode(t)) == t


@FAST
@given(st.binary(max_size=300))
def test_tree_decode_raises_only_format_error_on_random_bytes(data: bytes) -> None:
    _decode_tree_or_format_error(data)


@FAST
@given(st.binary(max_size=300))
def test_tree_decode_random_bodies_behind_a_valid_header(body: bytes) -> None:
    _decode_tree_or_format_error(b"TLYT\x01" + body)


@FAST
@given(msgpack_values)
def test_tree_decode_any_msgpack_shape(value) -> None:
    _decode_tree_or_format_error(packed_tree_like(value))


@FAST
@given(st.lists(st.lists(msgpack_values, min_size=5, max_size=5), max_size=4),
       st.integers(-3, 2**64 - 1), st.integers(-3, 2**64 - 1))
def test_tree_decode_entry_shaped_garbage(rows, total_bytes: int, total_files: int) -> None:
    _decode_tree_or_format_error(packed_tree_like([total_bytes, total_files, rows]))


@FAST
@given(mutated(valid_tree_bytes()))
def test_tree_decode_mutated_encodings(data: bytes) -> None:
    _decode_tree_or_format_error(data)


# -- envelopes ------------------------------------------------------------------------------

kinds = st.sampled_from(sorted(envelope.KINDS))


@FAST
@given(st.binary(max_size=200), kinds, st.lists(st.integers(1, 255), min_size=1, max_size=3))
def test_envelope_decode_raises_only_format_error(data: bytes, kind: bytes, versions) -> None:
    try:
        version, _ = envelope.decode(data, kind=kind, versions=tuple(versions))
    except FormatError:
        return
    assert data[:3] == envelope.MAGIC and data[3:4] == kind and version in versions


@FAST
@given(kinds, st.integers(1, 255), msgpack_values, st.data())
def test_envelope_round_trip_and_mutations(kind: bytes, version: int, body, data) -> None:
    encoded = envelope.encode(kind, version, body)
    v, decoded = envelope.decode(encoded, kind=kind, versions=(version,))
    assert v == version
    assert msgpack.packb(decoded, use_bin_type=True) == msgpack.packb(body, use_bin_type=True)
    bad = data.draw(mutated(st.just(encoded)))
    try:
        envelope.decode(bad, kind=kind, versions=(version,))
    except FormatError:
        pass


# -- pointers -------------------------------------------------------------------------------

pointers = st.one_of(
    st.builds(pointer.Pointer, path=st.just("data/x"), oid=oids, is_dir=st.just(True),
              size=st.integers(0, 2**63), files=st.integers(0, 10**9), mode=st.just(0)),
    # A file pointer always names exactly one file.
    st.builds(pointer.Pointer, path=st.just("data/x"), oid=oids, is_dir=st.just(False),
              size=st.integers(0, 2**63), files=st.just(1), mode=st.sampled_from((0o644, 0o755))),
)


@FAST
@given(pointers)
def test_pointer_round_trip(p: pointer.Pointer) -> None:
    got = pointer.decode(p.encode(), path=p.path)
    assert got == (p if not p.is_dir else pointer.Pointer(p.path, p.oid, True, p.size, p.files, 0))


@FAST
@given(st.text(max_size=300))
def test_pointer_decode_raises_only_usage_error_on_text(text: str) -> None:
    try:
        pointer.decode(text.encode("utf-8", "surrogatepass"), path="data/x")
    except UsageError:
        pass


@FAST
@given(st.binary(max_size=300))
def test_pointer_decode_raises_only_usage_error_on_bytes(data: bytes) -> None:
    try:
        pointer.decode(data, path="data/x")
    except UsageError:
        pass


line = st.sampled_from(["format", "oid", "kind", "size", "files", "mode", "junk", "#"]).flatmap(
    lambda k: st.text(max_size=80).map(lambda v: f"{k}: {v}"))


@FAST
@given(st.lists(line, max_size=10))
def test_pointer_decode_key_value_garbage(lines: list[str]) -> None:
    try:
        p = pointer.decode("\n".join(lines).encode("utf-8", "surrogatepass"), path="d")
    except UsageError as exc:
        assert exc.path == "d.tally"
        return
    assert hashing.is_oid(p.oid)


@FAST
@given(pointers, st.data())
def test_pointer_decode_mutated(p: pointer.Pointer, data) -> None:
    bad = data.draw(mutated(st.just(p.encode())))
    try:
        pointer.decode(bad, path=p.path)
    except UsageError:
        pass


# -- hashing and the store ------------------------------------------------------------------

@settings(deadline=None, max_examples=60)
@given(st.binary(max_size=3 * 64 * 1024))
def test_hash_file_equals_hash_bytes_across_the_mmap_threshold(data: bytes) -> None:
    with tempfile.NamedTemporaryFile() as f:
        f.write(data)
        f.flush()
        assert hashing.hash_file(f.name) == hashing.hash_bytes(data)


@pytest.fixture(scope="module")
def store_root():
    with tempfile.TemporaryDirectory(prefix="tally-prop-") as d:
        yield Path(d)


@pytest.mark.parametrize("policy", ["auto", "zstd", "none"])
@settings(deadline=None, max_examples=60,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(data=st.binary(max_size=200_000) | st.text(max_size=5000).map(str.encode),
       as_file=st.booleans())
def test_store_round_trip(store_root: Path, policy: str, data: bytes, as_file: bool) -> None:
    s = FileStore(store_root / policy, options=StoreOptions(compression=policy))
    if as_file:
        src = store_root / f"src-{policy}"
        src.write_bytes(data)
        oid = s.put_file(src)
    else:
        oid = s.put_bytes(data)
    assert oid == hashing.hash_bytes(data)
    assert s.get(oid) == data
    with s.open(oid) as f:
        assert f.read() == data
    s.verify(oid)
    if policy == "none" or len(data) <= writer.RAW_MAX:  # small: raw whatever the policy
        assert not s.info(oid).compressed
    elif policy == "zstd":
        assert s.info(oid).compressed
