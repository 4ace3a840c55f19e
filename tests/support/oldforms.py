"""Builders shared by tests (from the former tests/test_store_compat.py)."""

from __future__ import annotations

from __future__ import annotations
import os
from pathlib import Path
from cas.store import zstdframe as codec


def to_old_form(store, oid: str) -> None:
    """Rewrite object `oid` as tally 0.1 stored structured objects: one zstd frame
    (level 1) in `<id>.zst`, read-only, with the raw file's times; the raw file goes."""
    raw = store.raw_path(oid)
    data = Path(raw).read_bytes()
    st = os.stat(raw)
    zst = store.zst_path(oid)
    Path(zst).write_bytes(codec.compress(data, 1))
    os.chmod(zst, 0o444)
    os.utime(zst, ns=(st.st_atime_ns, st.st_mtime_ns))
    os.unlink(raw)

