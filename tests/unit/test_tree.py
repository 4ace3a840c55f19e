"""The tree codec (canonical msgpack in the envelope), its validation, walk and diff."""

from __future__ import annotations

import random

import pytest

from cas.objects import envelope
from cas.core import hashing
from cas.objects import tree
from cas.core.errors import FormatError
from cas.store.objectstore import MemoryStore
from cas.objects.tree import DIR, FILE, SYMLINK, Entry

A, B, C, D = ("a" * 64, "b" * 64, "c" * 64, "d" * 64)


def enc(total_bytes: int, total_files: int, rows: list) -> bytes:
    """A tree object built by hand, bypassing tree.make's checks."""
    return envelope.encode(envelope.KIND_TREE, 1, [total_bytes, total_files, rows])


def row(name: str, kind: int = FILE, oid: str = A, size: int = 1, mode: int | None = None) -> list:
    if mode is None:
        mode = 0o644 if kind == FILE else 0
    return [name, kind, bytes.fromhex(oid), size, mode]


class Trees:
    """A store of trees built from nested dicts, counting how often each is loaded."""

    def __init__(self) -> None:
        self.store = MemoryStore()
        self.loads: list[str] = []

    def put(self, spec: dict) -> str:
        """spec: name -> bytes (file), ("x", bytes) (executable), ("l", target), or dict."""
        entries, sub_files = [], {}
        for name, v in spec.items():
            if isinstance(v, dict):
                oid = self.put(v)
                t = tree.decode(self.store.get(oid))
                entries.append(Entry(name, DIR, oid, t.total_bytes))
                sub_files[name] = t.total_files
            elif isinstance(v, tuple) and v[0] == "l":
                entries.append(Entry(name, SYMLINK, self.store.put_bytes(v[1]), len(v[1])))
            elif isinstance(v, tuple):
                entries.append(Entry(name, FILE, self.store.put_bytes(v[1]), len(v[1]), 0o755))
            else:
                entries.append(Entry(name, FILE, self.store.put_bytes(v), len(v), 0o644))
        return self.store.put_bytes(tree.encode(tree.make(entries, subtree_files=sub_files)))

    def load(self, oid: str) -> tree.Tree:
        self.loads.append(oid)
        return tree.decode(self.store.get(oid))


# -- encode / decode ------------------------------------------------------------------------

def test_round_trip_and_totals() -> None:
    t = tree.make([Entry("b.txt", FILE, A, 5, 0o644), Entry("a", DIR, B, 100),
                   Entry("l", SYMLINK, C, 3), Entry("x", FILE, D, 7, 0o755)],
                  subtree_files={"a": 4})
    assert [e.name for e in t.entries] == ["a", "b.txt", "l", "x"]
    assert t.total_bytes == 5 + 100 + 7  # symlinks are not counted as data
    assert t.total_files == 4 + 2
    assert tree.decode(tree.encode(t)) == t


def test_worked_example_bytes_are_stable() -> None:
    """The canonical encoding, byte for byte: changing it changes every tree id."""
    t = tree.make([Entry("b.txt", FILE, "11" * 32, 5, 0o644), Entry("a", DIR, "22" * 32, 100),
                   Entry("l", SYMLINK, "33" * 32, 3)], subtree_files={"a": 4})
    data = tree.encode(t)
    assert data.hex() == (
        "544c5954019369059395a16101c420" + "22" * 32 + "640095a5622e74787400c420" + "11" * 32
        + "05cd01a495a16c02c420" + "33" * 32 + "0300")
    assert hashing.hash_bytes(data) == \
        "bec62629cd313f1d00eaaa7738a205d6e01a1c0ff51305f123453711125d73b2"


def test_canonical_whatever_the_input_order() -> None:
    names = ["Zeta", "alpha", "é-accent", "a", "a.b", "a-b", "B", "日本", "~tilde", "0"]
    entries = [Entry(n, FILE, A, i, 0o644) for i, n in enumerate(names)]
    encodings = set()
    for seed in range(5):
        random.Random(seed).shuffle(entries)
        encodings.add(tree.encode(tree.make(entries, subtree_files={})))
    assert len(encodings) == 1
    decoded = [e.name for e in tree.decode(encodings.pop()).entries]
    assert decoded == sorted(names, key=lambda n: n.encode("utf-8"))


def test_get_finds_by_name() -> None:
    t = tree.make([Entry(n, FILE, A, 1, 0o644) for n in ("c", "a", "é", "b")], subtree_files={})
    assert t.get("b") == Entry("b", FILE, A, 1, 0o644)
    assert t.get("é").name == "é"
    assert t.get("d") is None and t.get("") is None


@pytest.mark.parametrize("name", ["", ".", "..", "a/b", "a\0b", "/"])
def test_make_refuses_unsafe_names(name: str) -> None:
    with pytest.raises(FormatError, match="tree entry"):
        tree.make([Entry(name, FILE, A, 1, 0o644)], subtree_files={})


def test_make_refuses_duplicates() -> None:
    with pytest.raises(FormatError, match="duplicate name 'x'"):
        tree.make([Entry("x", FILE, A, 1, 0o644), Entry("x", DIR, B, 1)], subtree_files={"x": 1})


def test_encode_refuses_names_that_are_not_utf8() -> None:
    t = tree.make([Entry("bad\udcff", FILE, A, 1, 0o644)], subtree_files={})
    with pytest.raises(FormatError, match="not valid UTF-8"):
        tree.encode(t)


@pytest.mark.parametrize("data,message", [
    (enc(2, 2, [row("b"), row("a")]), "tree entry 1: 'a' is out of order or duplicated"),
    (enc(2, 2, [row("a"), row("a")]), "tree entry 1: 'a' is out of order or duplicated"),
    (enc(1, 1, [row("..")]), "tree entry: reserved name '..'"),
    (enc(1, 1, [row(".")]), "tree entry: reserved name '.'"),
    (enc(1, 1, [row("a/b")]), "contains '/' or NUL"),
    (enc(1, 1, [row("a\0b")]), "contains '/' or NUL"),
    (enc(1, 1, [row("")]), "empty or non-string name"),
    (enc(1, 1, [[b"bytes-name", FILE, bytes(32), 1, 0o644]]), "name must be a string"),
    (enc(1, 1, [row("a", kind=3)]), "unknown kind 3"),
    (enc(1, 1, [["a", True, bytes(32), 1, 0o644]]), "unknown kind True"),
    (enc(1, 1, [row("a", mode=0o777)]), "file mode 511 not 0o644 or 0o755"),
    (enc(1, 0, [row("a", kind=DIR, mode=0o755)]), "mode must be 0 for a dir"),
    (enc(0, 0, [row("a", kind=SYMLINK, mode=0o644)]), "mode must be 0 for a symlink"),
    (enc(1, 1, [["a", FILE, bytes(31), 1, 0o644]]), "oid must be 32 bytes"),
    (enc(1, 1, [["a", FILE, "a" * 32, 1, 0o644]]), "oid must be 32 bytes"),
    (enc(0, 1, [row("a", size=-1)]), "size -1 out of range"),
    (enc(0, 1, [row("a", size=2**63)]), "out of range"),
    (enc(9, 1, [row("a", size=1)]), "total_bytes 9 != sum of entries 1"),
    (enc(1, 0, [row("a", size=1)]), "total_files smaller than the files listed"),
    (enc(-1, 0, []), "totals must be non-negative ints"),
    (enc(1, 1, [row("a")[:4]]), "must be [name, kind, oid, size, mode]"),
    (enc(1, 1, [row("a") + [0]]), "must be [name, kind, oid, size, mode]"),
    (enc(1, 1, {"a": 1}), "entries must be an array"),
    (envelope.encode(envelope.KIND_TREE, 1, [0, 0]), "body must be [bytes, files, entries]"),
    (envelope.encode(envelope.KIND_TREE, 1, {"x": 1}), "body must be [bytes, files, entries]"),
    (envelope.encode(envelope.KIND_TREE, 2, [0, 0, []]), "tree format version 2 is not supported"),
    (envelope.encode(envelope.KIND_RECORD, 1, [0, 0, []]), "expected a tree, found a record"),
    (b"TLX" + b"T\x01\x93\x00\x00\x90", "not a tally tree: magic"),
    (b"TLYT\x01", "tree truncated: 5 bytes"),
    (b"", "tree truncated: 0 bytes"),
    (enc(0, 0, []) + b"\x00", "not valid msgpack"),
    (enc(0, 0, [])[:-1], "not valid msgpack"),
])
def test_decode_names_what_is_wrong(data: bytes, message: str) -> None:
    with pytest.raises(FormatError) as ei:
        tree.decode(data)
    assert message in str(ei.value)
    assert ei.value.exit_code == 5


def test_decode_refuses_oversized_input(monkeypatch: pytest.MonkeyPatch) -> None:
    data = tree.encode(tree.make([Entry("a", FILE, A, 1, 0o644)], subtree_files={}))
    monkeypatch.setattr(envelope, "MAX_STRUCT_SIZE", len(data) - 1)
    with pytest.raises(FormatError, match="exceeds the"):
        tree.decode(data)


def test_decode_refuses_hostile_length_prefixes() -> None:
    # A bin claiming 4 GiB in a 20-byte body must not make msgpack allocate it.
    body = b"\x93\x00\x00\x91\x95\xa1a\x00\xc6\xff\xff\xff\xff"
    with pytest.raises(FormatError, match="not valid msgpack"):
        tree.decode(b"TLYT\x01" + body)


def test_envelope_refuses_bad_kinds_on_encode() -> None:
    with pytest.raises(ValueError):
        envelope.encode(b"X", 1, [])
    with pytest.raises(ValueError):
        envelope.encode(envelope.KIND_TREE, 0, [])
    with pytest.raises(ValueError):
        envelope.encode(envelope.KIND_TREE, 256, [])


# -- walk -----------------------------------------------------------------------------------

def test_walk_yields_every_leaf_in_order() -> None:
    ts = Trees()
    root = ts.put({"z": b"z", "d": {"y": b"yy", "e": {"x": ("x", b"#!")}}, "l": ("l", b"d/y")})
    paths = [(p, e.kind) for p, e in tree.walk(root, ts.load)]
    assert paths == [("d/e/x", FILE), ("d/y", FILE), ("l", SYMLINK), ("z", FILE)]
    dirs = [p for p, _ in tree.walk_trees(root, ts.load)]
    assert dirs == ["", "d", "d/e"]
    t = ts.load(root)
    assert (t.total_bytes, t.total_files) == (1 + 2 + 2, 3)


# -- diff -----------------------------------------------------------------------------------

def changes(old: str | None, new: str | None, ts: Trees) -> dict[str, str]:
    out = {}
    for ch in tree.diff(old, new, ts.load):
        kind = "added" if ch.old is None else "removed" if ch.new is None else "modified"
        assert ch.path not in out, f"{ch.path} reported twice"
        out[ch.path] = kind
    return out


def test_diff_added_removed_modified() -> None:
    ts = Trees()
    old = ts.put({"same": b"1", "mod": b"old", "gone": b"x", "d": {"in": b"1", "out": b"2"},
                  "exe": b"#!", "ln": ("l", b"same")})
    new = ts.put({"same": b"1", "mod": b"new", "add": b"y", "d": {"in": b"1", "new": b"3"},
                  "exe": ("x", b"#!"), "ln": ("l", b"mod")})
    assert changes(old, new, ts) == {
        "mod": "modified", "gone": "removed", "add": "added", "d/out": "removed",
        "d/new": "added", "exe": "modified", "ln": "modified"}
    reverse = changes(new, old, ts)
    flip = {"added": "removed", "removed": "added", "modified": "modified"}
    assert reverse == {p: flip[k] for p, k in changes(old, new, ts).items()}


def test_diff_file_replaced_by_a_directory_and_back() -> None:
    ts = Trees()
    old = ts.put({"p": b"a file", "q": {"inner": b"1", "deep": {"x": b"2"}}})
    new = ts.put({"p": {"f1": b"1", "f2": b"2"}, "q": b"now a file"})
    assert changes(old, new, ts) == {"p": "removed", "p/f1": "added", "p/f2": "added",
                                     "q/inner": "removed", "q/deep/x": "removed", "q": "added"}


def test_diff_from_and_to_nothing() -> None:
    ts = Trees()
    t = ts.put({"a": b"1", "d": {"b": b"2"}})
    assert changes(None, t, ts) == {"a": "added", "d/b": "added"}
    assert changes(t, None, ts) == {"a": "removed", "d/b": "removed"}


def test_diff_of_equal_trees_loads_nothing() -> None:
    ts = Trees()
    t = ts.put({"a": b"1", "d": {"b": b"2"}})
    ts.loads.clear()
    assert changes(t, t, ts) == {}
    assert ts.loads == []


def test_diff_never_loads_subtrees_with_equal_ids() -> None:
    ts = Trees()
    big = {f"dir{i}": {f"f{j}": b"%d-%d" % (i, j) for j in range(20)} for i in range(30)}
    old = ts.put({**big, "changed": {"x": b"old"}})
    new = ts.put({**big, "changed": {"x": b"new"}})
    shared = {e.oid for e in ts.load(old).entries if e.name.startswith("dir")}
    assert len(shared) == 30
    ts.loads.clear()
    assert changes(old, new, ts) == {"changed/x": "modified"}
    assert not shared & set(ts.loads), "diff opened an unchanged subtree"
    assert len(ts.loads) == 4  # both roots and both "changed" subtrees, nothing else
