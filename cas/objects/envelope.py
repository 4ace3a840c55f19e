"""The envelope every structured object (tree, experiment record, run-cache entry) wears.

Layout, byte for byte:

    offset  size  field
    0       3     magic  b"TLY"
    3       1     kind   one ASCII letter: b"T" tree, b"R" experiment record,
                         b"C" run-cache entry, b"Q" queue entry
    4       1     version of that kind's body format (unsigned byte, from 1)
    5       ...   body: one canonical msgpack value

Canonical msgpack: arrays (never maps) in a fixed field order, ints in the smallest
encoding, strings UTF-8, binary as bin. Equal content therefore encodes to equal bytes
and so to the same id. Decoders check magic, kind, version and every length before
trusting anything, and raise only FormatError on bad input.
"""

from __future__ import annotations

from typing import Any

import msgpack

from cas.core.errors import FormatError

MAGIC = b"TLY"
HEADER_SIZE = 3 + 1 + 1  # magic + kind + version

KIND_TREE = b"T"
KIND_RECORD = b"R"
KIND_RUNCACHE = b"C"
KIND_QUEUE = b"Q"
KINDS = {KIND_TREE: "tree", KIND_RECORD: "record", KIND_RUNCACHE: "run-cache entry",
         KIND_QUEUE: "queue entry"}

# A structured object larger than this is refused before decoding: a tree for a
# directory of 4 million files is ~300 MiB, far beyond any real directory.
MAX_STRUCT_SIZE = 512 * 1024 * 1024  # bytes
# Bytes of body per array or map a decoder accepts, by kind. An empty array is one
# byte of msgpack but ~64 bytes of Python (a list and its slot), so a body of nothing
# but empty arrays would take 64 times its size in memory; allowing one container per
# this many bytes bounds that at ~64/N times (plus the body's own slots and scalars).
# A tree entry is an array of at least 40 bytes (a name, a kind, a 32-byte id, a size
# and a mode), so trees get 32; records, run-cache entries and queue entries carry
# users' nested params and metrics, so they get 4.
CONTAINER_BYTES = {KIND_TREE: 32, KIND_RECORD: 4, KIND_RUNCACHE: 4, KIND_QUEUE: 4}
# msgpack's C decoder refuses nesting deeper than this (StackError), before any hook.
MAX_DEPTH = 1024


def encode(kind: bytes, version: int, body: Any) -> bytes:
    """Envelope `body` (already in canonical shape: lists, ints, str, bytes) as `kind`."""
    if kind not in KINDS or not 1 <= version <= 255:
        raise ValueError(f"bad envelope kind/version {kind!r}/{version}")
    return MAGIC + kind + bytes([version]) + msgpack.packb(body, use_bin_type=True)


def decode(data: bytes, *, kind: bytes, versions: tuple[int, ...]) -> tuple[int, Any]:
    """Open an envelope of `kind`, returning (version, body).

    Raises:
        FormatError: truncated, wrong magic or kind, unknown version, or a body that
            is not exactly one well-formed msgpack value.
    """
    what = KINDS.get(kind, "object")
    if len(data) > MAX_STRUCT_SIZE:
        raise FormatError(f"{what} of {len(data)} bytes exceeds the {MAX_STRUCT_SIZE}-byte limit")
    if len(data) < HEADER_SIZE + 1:
        raise FormatError(f"{what} truncated: {len(data)} bytes, header needs {HEADER_SIZE} + body")
    if data[:3] != MAGIC:
        raise FormatError(f"not a tally {what}: magic {data[:3]!r}, expected {MAGIC!r}")
    if data[3:4] != kind:
        found = KINDS.get(data[3:4], repr(data[3:4]))
        raise FormatError(f"expected a {what}, found a {found}")
    version = data[4]
    if version not in versions:
        raise FormatError(f"{what} format version {version} is not supported (known: "
                          f"{', '.join(map(str, versions))}); upgrade tally")
    body_len = len(data) - HEADER_SIZE
    budget = body_len // CONTAINER_BYTES[kind] + 64  # + 64: nothing a small body can cost
    count = 0

    def counted(container: Any) -> Any:
        # Called for each array and map as it is built: the decode stops once the body
        # holds more of them than its size allows (CONTAINER_BYTES).
        nonlocal count
        count += 1
        if count > budget:
            raise ValueError(f"more than {budget} arrays and maps in {body_len} bytes")
        return container

    try:
        body = msgpack.unpackb(
            memoryview(data)[HEADER_SIZE:], raw=False, use_list=True, strict_map_key=True,
            # Every container or string inside is bounded by the body itself, so a
            # hostile length prefix cannot make the decoder allocate more than that.
            max_bin_len=body_len, max_str_len=body_len, max_array_len=body_len,
            max_map_len=body_len, max_ext_len=0, list_hook=counted, object_hook=counted)
    except (ValueError, TypeError, msgpack.UnpackException, RecursionError) as exc:
        raise FormatError(f"{what} body is not valid msgpack: {exc}") from None
    return version, body


def check(cond: bool, what: str, detail: str) -> None:
    """Raise FormatError(`what`: `detail`) unless `cond`; for field-by-field decoders."""
    if not cond:
        raise FormatError(f"{what}: {detail}")
