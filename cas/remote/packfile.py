"""Packs and indexes: how small objects travel and how a remote says what it has.

Pack file (`packs/<pack id>.pack`; the id is the BLAKE3 of the whole file):

    offset  size  field
    0       4     magic "TLYP" (54 4c 59 50)
    4       1     version 1
    5       ...   the objects' stored bytes, back to back, no separators

An object's stored bytes are its local store form copied as is: the raw content, or
one zstd frame of it (spec/store.md). Nothing in a pack says where an object starts:
the index does.

Index file (`index/<index id>.idx`; the id is the BLAKE3 of the whole file):

    offset  size  field
    0       4     magic "TLYI" (54 4c 59 49)
    4       1     version 1
    5       ...   one msgpack array [packs, small, large], nothing after it

    packs   [[pack id: bin 32, pack size: uint], ...]     sorted by id, unique
    small   bin: rows of ROW_SIZE (48) bytes, sorted by oid, unique:
              0  32  oid          the object's id, raw digest
              32  2  pack         uint16 BE, an index into `packs`
              34  1  form         0 raw, 1 zstd
              35  1  reserved     0
              36  4  offset       uint32 BE, where the stored bytes start in the pack
              40  4  length       uint32 BE, how many stored bytes
              44  4  size         uint32 BE, the content's size (raw: == length)
    large   [[oid: bin 32, form: uint 0|1, length: uint, size: uint], ...]
              sorted by oid, unique; each stored alone at objects/<aa>/<62 hex>
              (raw) or objects/<aa>/<62 hex>.zst (zstd)

Every field is checked before it is trusted (decode raises only FormatError): the
id of the file against its name, magic, version, the shapes, the order, every pack
number, `5 <= offset`, `offset + length <= pack size`, raw rows with length == size,
sizes within bounds. A decoded index can therefore never make a reader ask for a
byte outside a pack it names, nor expand a frame beyond the size it states.
"""

from __future__ import annotations

import struct
from typing import NamedTuple

import msgpack

from cas.core import hashing
from cas.core.errors import FormatError

PACK_MAGIC = b"TLYP"
INDEX_MAGIC = b"TLYI"
VERSION = 1
HEADER_SIZE = 4 + 1  # magic + version
ROW = struct.Struct(">32sHBBIII")  # oid, pack, form, reserved, offset, length, size
ROW_SIZE = ROW.size  # 48 bytes
RAW, ZSTD = 0, 1
MAX_PACKS = 0xFFFF  # packs one index may name (uint16)
MAX_INDEX_SIZE = 512 * 1024 * 1024  # bytes: ~11 million small objects in one index
MAX_PACK_SIZE = 0xFFFFFFFF  # bytes: offsets are uint32
MAX_SMALL_SIZE = 64 * 1024 * 1024  # bytes: a packed object's content, at most
MAX_LARGE_SIZE = (1 << 63) - 1


class Small(NamedTuple):
    """Where a packed object is: in pack `pack`, `length` stored bytes from `offset`."""

    pack: str
    offset: int
    length: int
    form: int
    size: int


class Large(NamedTuple):
    """An object stored alone."""

    form: int
    length: int
    size: int


class Index(NamedTuple):
    packs: dict[str, int]  # pack id -> size in bytes
    small: dict[str, Small]
    large: dict[str, Large]


def large_key(oid: str, form: int) -> str:
    return f"objects/{oid[:2]}/{oid[2:]}" + (".zst" if form == ZSTD else "")


def pack_key(pack_id: str) -> str:
    return f"packs/{pack_id}.pack"


def index_key(index_id: str) -> str:
    return f"index/{index_id}.idx"


# ------------------------------------------------------------------ packs

class PackBuilder:
    """Append stored objects to a pack being built in memory; `finish` names it."""

    def __init__(self) -> None:
        self.parts: list[bytes] = [PACK_MAGIC + bytes([VERSION])]
        self.size = HEADER_SIZE
        self.rows: list[tuple[str, int, int, int, int]] = []  # oid, offset, length, form, size

    def add(self, oid: str, stored: bytes, *, form: int, size: int) -> None:
        self.rows.append((oid, self.size, len(stored), form, size))
        self.parts.append(stored)
        self.size += len(stored)

    def __len__(self) -> int:
        return len(self.rows)

    def finish(self) -> tuple[str, bytes]:
        """(pack id, pack bytes)."""
        data = b"".join(self.parts)
        self.parts = []
        return hashing.hash_bytes(data), data


# ------------------------------------------------------------------ indexes

def encode_index(packs: dict[str, int], small: dict[str, Small], large: dict[str, Large]) -> bytes:
    """The index file for these entries (canonical: equal content, equal bytes)."""
    order = sorted(packs)
    if len(order) > MAX_PACKS:
        raise ValueError(f"{len(order)} packs in one index; at most {MAX_PACKS}")
    number = {p: i for i, p in enumerate(order)}
    rows = b"".join(ROW.pack(bytes.fromhex(oid), number[s.pack], s.form, 0, s.offset,
                             s.length, s.size)
                    for oid, s in sorted(small.items()))
    body = [[[bytes.fromhex(p), packs[p]] for p in order], rows,
            [[bytes.fromhex(oid), g.form, g.length, g.size] for oid, g in sorted(large.items())]]
    return INDEX_MAGIC + bytes([VERSION]) + msgpack.packb(body, use_bin_type=True)


def decode_index(data: bytes, *, index_id: str | None = None) -> Index:
    """Check and decode an index file; `index_id`, when given, must be its BLAKE3.

    Raises:
        FormatError: anything wrong, saying what.
    """
    what = f"remote index {index_id[:16] if index_id else ''}".rstrip()
    if len(data) > MAX_INDEX_SIZE:
        raise FormatError(f"{what} is {len(data)} bytes, over the {MAX_INDEX_SIZE}-byte limit")
    if index_id is not None and hashing.hash_bytes(data) != index_id:
        raise FormatError(f"{what} does not hash to its name")
    if len(data) < HEADER_SIZE + 1 or data[:4] != INDEX_MAGIC:
        raise FormatError(f"{what} is not a tally index (magic {bytes(data[:4])!r})")
    if data[4] != VERSION:
        raise FormatError(f"{what} has version {data[4]}; this tally reads {VERSION}",
                          hint="upgrade tally")
    n = len(data) - HEADER_SIZE
    try:
        body = msgpack.unpackb(memoryview(data)[HEADER_SIZE:], raw=False, use_list=True,
                               max_bin_len=n, max_str_len=n, max_array_len=n, max_map_len=n,
                               max_ext_len=0)
    except (ValueError, TypeError, msgpack.UnpackException, RecursionError) as exc:
        raise FormatError(f"{what} body is not valid msgpack: {exc}") from None
    _check(isinstance(body, list) and len(body) == 3, what, "body is not [packs, small, large]")
    raw_packs, rows, raw_large = body
    _check(isinstance(raw_packs, list) and isinstance(rows, bytes) and isinstance(raw_large, list),
           what, "body is not [packs, small, large]")
    _check(len(raw_packs) <= MAX_PACKS, what, "too many packs")
    packs: dict[str, int] = {}
    order: list[str] = []
    prev = b""
    for p in raw_packs:
        _check(isinstance(p, list) and len(p) == 2 and isinstance(p[0], bytes) and
               len(p[0]) == 32 and _uint(p[1]) and HEADER_SIZE <= p[1] <= MAX_PACK_SIZE,
               what, f"bad pack entry {p!r:.80}")
        _check(p[0] > prev, what, "packs are not sorted and unique")
        prev = p[0]
        pid = p[0].hex()
        packs[pid] = p[1]
        order.append(pid)
    _check(len(rows) % ROW_SIZE == 0, what, f"small rows are {len(rows)} bytes, not a multiple "
                                            f"of {ROW_SIZE}")
    small: dict[str, Small] = {}
    prev = b""
    for raw_oid, pack, form, reserved, offset, length, size in ROW.iter_unpack(rows):
        _check(raw_oid > prev, what, "small rows are not sorted and unique")
        prev = raw_oid
        _check(pack < len(order), what, f"a row names pack {pack} of {len(order)}")
        _check(form in (RAW, ZSTD) and reserved == 0, what, f"bad form {form}/{reserved}")
        pid = order[pack]
        _check(HEADER_SIZE <= offset and offset + length <= packs[pid], what,
               f"object {raw_oid.hex()[:16]} lies outside its pack ({offset}+{length} > "
               f"{packs[pid]})")
        _check(size <= MAX_SMALL_SIZE, what, f"object {raw_oid.hex()[:16]} claims {size} bytes")
        _check(length == size if form == RAW else 0 < length, what,
               f"object {raw_oid.hex()[:16]}: {length} stored bytes for {size}")
        small[raw_oid.hex()] = Small(pid, offset, length, form, size)
    large: dict[str, Large] = {}
    prev = b""
    for g in raw_large:
        _check(isinstance(g, list) and len(g) == 4 and isinstance(g[0], bytes) and len(g[0]) == 32,
               what, f"bad large entry {g!r:.80}")
        _check(g[0] > prev, what, "large entries are not sorted and unique")
        prev = g[0]
        _check(g[1] in (RAW, ZSTD) and not isinstance(g[1], bool), what, f"bad form {g[1]!r}")
        _check(_uint(g[2]) and _uint(g[3]) and g[2] <= MAX_LARGE_SIZE and g[3] <= MAX_LARGE_SIZE,
               what, "bad large sizes")
        _check(g[2] == g[3] if g[1] == RAW else g[2] > 0, what, "raw large object with length != size")
        large[g[0].hex()] = Large(g[1], g[2], g[3])
    return Index(packs, small, large)


def _uint(v: object) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and v >= 0


def _check(cond: bool, what: str, detail: str) -> None:
    if not cond:
        raise FormatError(f"{what}: {detail}", hint="the remote is damaged or was written by "
                                                    "something else; run `tally gc --remote` "
                                                    "only after checking it")


__all__ = ["PackBuilder", "Small", "Large", "Index", "encode_index", "decode_index",
           "pack_key", "index_key", "large_key", "RAW", "ZSTD", "ROW_SIZE", "HEADER_SIZE"]
