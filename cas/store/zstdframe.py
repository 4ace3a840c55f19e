"""The zstd form of an object: compress, decompress safely, hash a frame's content.

An object stored compressed is exactly one zstd frame that declares its content size
(spec/store.md, "objects/"). Everything that turns such a frame back into bytes
goes through here, so the rules a hostile or damaged frame meets are stated once:

- a frame that declares more than the caller expects is refused before allocating;
- one-shot decompression is used only up to ONE_SHOT_MAX declared bytes, above that
  (or with no declared size) the frame is streamed in bounded chunks, so memory grows
  with real output and a decompression bomb stops at the limit;
- bytes after the frame, or a frame shorter than its header says, are corruption.

zstandard is imported on first use, not with this module: `tally run` and `tally
status` rarely touch a compressed object (content of at most writer.RAW_MAX bytes,
which is every tree and record of a typical run, is stored raw) and should not pay
for the extension, nor for the `platform` module it imports.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO

from cas.core import hashing
from cas.core.errors import CorruptObject

if TYPE_CHECKING:
    import zstandard

# One-shot decompression allocates a frame's declared size before reading it; above
# this, a header is not trusted with the allocation and the frame is streamed instead.
ONE_SHOT_MAX = 64 * 1024 * 1024  # bytes
# Files at least this large compress with zstd's worker threads.
THREADED_ZSTD_THRESHOLD = 8 * 1024 * 1024  # bytes
# With no caller-given bound, a frame may expand to at most this (1 TiB).
NO_LIMIT = 1 << 40

_tls = threading.local()


def cctx(level: int) -> "zstandard.ZstdCompressor":
    """A per-thread compressor for `level` (contexts are costly to create, unsafe to share)."""
    cache = _tls.__dict__.setdefault("cctx", {})
    c = cache.get(level)
    if c is None:
        import zstandard
        c = cache[level] = zstandard.ZstdCompressor(level=level, write_content_size=True)
    return c


def _dctx() -> "zstandard.ZstdDecompressor":
    d = getattr(_tls, "dctx", None)
    if d is None:
        import zstandard
        d = _tls.dctx = zstandard.ZstdDecompressor()
    return d


def compress(data: bytes | memoryview, level: int) -> bytes:
    """One frame holding `data`, with its content size declared."""
    return cctx(level).compress(data)


def decompress(oid: str, payload: bytes, *, max_size: int | None,
               path: Path | str | None = None) -> bytes:
    """Decompress one frame, refusing frames that declare or expand beyond max_size.

    Raises CorruptObject (naming `oid` and `path`) for a bad, truncated or oversized
    frame, or stray bytes after it. The result is not hashed: callers compare it.
    """
    import zstandard
    limit = max_size if max_size is not None else NO_LIMIT
    try:
        params = zstandard.get_frame_parameters(payload)
        declared = params.content_size
        if declared in (zstandard.CONTENTSIZE_UNKNOWN, zstandard.CONTENTSIZE_ERROR):
            declared = None
        if declared is not None and declared > limit:
            raise CorruptObject(oid, f"frame declares {declared} bytes, "
                                f"more than the expected {limit}", path=path)
        dctx = _dctx()
        if declared is not None and declared <= ONE_SHOT_MAX:
            # An object is exactly one frame: bytes after it are damage, which
            # decompress() alone would silently ignore; a decompressobj reports them.
            dobj = dctx.decompressobj()
            out = dobj.decompress(payload)
            if len(out) != declared:
                raise CorruptObject(oid, f"bad zstd frame: truncated ({len(out)} of the "
                                    f"{declared} bytes its header declares)", path=path)
            if dobj.unused_data:
                raise CorruptObject(oid, f"{len(dobj.unused_data)} stray bytes after the frame",
                                    path=path)
            return out
        # No declared size (we always declare one, but a hostile frame may not), or one
        # too large to allocate on the header's word: read in bounded chunks.
        parts, total = [], 0
        reader = dctx.stream_reader(payload, read_across_frames=False)
        while chunk := reader.read(1 << 20):
            total += len(chunk)
            if total > limit:
                raise CorruptObject(oid, f"frame expands beyond the expected {limit} bytes", path=path)
            parts.append(chunk)
        if declared is not None and total != declared:
            raise CorruptObject(oid, "frame size does not match its header", path=path)
        return b"".join(parts)
    except zstandard.ZstdError as exc:
        raise CorruptObject(oid, f"bad zstd frame: {exc}", path=path) from None


def reader(f: BinaryIO, *, closefd: bool = True) -> BinaryIO:
    """A streaming reader of the content of the frame in the open file `f`."""
    import zstandard
    return zstandard.ZstdDecompressor().stream_reader(f, closefd=closefd)  # type: ignore[return-value]


def read_head(oid: str, f: BinaryIO, n: int, *, path: Path | str | None = None) -> bytes:
    """The first `n` bytes of the content of the frame in `f` (unverified)."""
    import zstandard
    try:
        with zstandard.ZstdDecompressor().stream_reader(f, closefd=False) as r:
            head = b""
            while len(head) < n and (chunk := r.read(n - len(head))):
                head += chunk
            return head
    except zstandard.ZstdError as exc:
        raise CorruptObject(oid, f"bad zstd frame: {exc}", path=path) from None


def hash_file(oid: str, path: str | os.PathLike[str]) -> str:
    """The BLAKE3 id of the content of the zstd file at `path` (streamed).

    Reads across frames on purpose: stray bytes after the frame then fail to decode,
    or decode into extra content that fails the hash. Either way fsck sees the damage.
    Raises CorruptObject (naming `oid`) for an undecodable frame.
    """
    import zstandard
    hasher = hashing.new_hasher(threaded=True)
    try:
        with open(path, "rb") as f:
            r = zstandard.ZstdDecompressor().stream_reader(f, read_across_frames=True)
            while True:
                chunk = r.read(hashing.STREAM_CHUNK)
                if not chunk:
                    break
                hasher.update(chunk)
    except zstandard.ZstdError as exc:
        raise CorruptObject(oid, f"bad zstd frame: {exc}", path=path) from None
    return hasher.hexdigest()


def compress_file(src: str, fd: int, size: int, level: int) -> str:
    """Compress the file `src` into the open descriptor `fd`; return the content's id.

    One pass: every chunk read is both hashed and fed to the compressor, so the id is
    the hash of exactly what was compressed. Large files use zstd's worker threads.
    """
    import zstandard
    threads = -1 if size >= THREADED_ZSTD_THRESHOLD else 0
    c = zstandard.ZstdCompressor(level=level, write_content_size=True, threads=threads)
    hasher = hashing.new_hasher(threaded=size >= hashing.MMAP_THRESHOLD)
    with open(src, "rb", buffering=0) as fin, os.fdopen(os.dup(fd), "wb") as fout:
        with c.stream_writer(fout, size=size, closefd=False) as comp:
            buf = bytearray(hashing.STREAM_CHUNK)
            view = memoryview(buf)
            while True:
                n = fin.readinto(buf)
                if not n:
                    break
                hasher.update(view[:n])
                comp.write(view[:n])
    return hasher.hexdigest()
