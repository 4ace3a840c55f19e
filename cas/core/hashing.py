"""Object ids: BLAKE3-256 of the uncompressed content, lowercase hex.

Large files are hashed through mmap with BLAKE3's own thread pool (the Python binding
releases the GIL and splits the input across cores); small inputs are hashed in one
call because thread start-up would cost more than the hash.
"""

from __future__ import annotations

import os

import blake3

DIGEST_SIZE = 32  # bytes; BLAKE3-256
OID_HEX_LEN = 2 * DIGEST_SIZE  # 64 lowercase hex characters
# Below this, one read() + one single-threaded update beats mmap + threads.
MMAP_THRESHOLD = 4 * 1024 * 1024  # bytes
# Chunk for streamed hashing when mmap is impossible (pipes, empty-size special files).
STREAM_CHUNK = 8 * 1024 * 1024  # bytes

# Not a regular expression: compiling one costs `tally run` ~0.1 ms of start-up.
_HEX = "0123456789abcdef"

EMPTY_OID = blake3.blake3(b"").hexdigest()


def is_oid(text: str) -> bool:
    """True when `text` is a well-formed object id (64 lowercase hex digits)."""
    return len(text) == OID_HEX_LEN and not text.strip(_HEX)


def hash_bytes(data: bytes | bytearray | memoryview) -> str:
    """The object id of `data`."""
    if len(data) >= MMAP_THRESHOLD:
        return blake3.blake3(data, max_threads=blake3.blake3.AUTO).hexdigest()
    return blake3.blake3(data).hexdigest()


def hash_file(path: str | os.PathLike[str], *, size: int | None = None) -> str:
    """The object id of the file at `path`, read without loading it into memory.

    Args:
        path: a regular file.
        size: its size if the caller already stat'ed it (saves a syscall).
    Raises:
        OSError: the file cannot be read.
    """
    if size is None:
        size = os.stat(path).st_size
    if size < MMAP_THRESHOLD:
        with open(path, "rb", buffering=0) as f:
            return blake3.blake3(f.read()).hexdigest()
    hasher = blake3.blake3(max_threads=blake3.blake3.AUTO)
    hasher.update_mmap(path)
    return hasher.hexdigest()


def new_hasher(*, threaded: bool = False) -> "blake3.blake3":
    """An incremental hasher for streamed content (copy-and-hash in one pass)."""
    if threaded:
        return blake3.blake3(max_threads=blake3.blake3.AUTO)
    return blake3.blake3()
