"""The parsed-pipeline cache, `.tally/runcache/parsed.cache`: a parse reused exactly.

An unchanged `tally run` then never imports or runs the YAML parser. It is only a
cache (tests/test_parsed_cache.py states the contract): what comes back equals what
the loader returned, with the same classes; anything wrong with the file is a miss.
"""

from __future__ import annotations

import marshal
import os
import sys
from typing import TYPE_CHECKING, Any, Callable

if TYPE_CHECKING:
    from cas.workspace.project import Project


class ParsedCache:
    """Parsed pipeline and params files, keyed by the stat of the files they came from.

    An unchanged `tally run` then never imports or runs the YAML parser (~25 ms of
    import plus the parse). Entries are recorded only when every file is older than a
    filesystem-clock reading taken before parsing (the stat cache's racy rule), so an
    edit within the same timestamp tick is never missed. It is only a cache: any
    problem reading it is a miss.
    """

    FILE = ("runcache", "parsed.cache")  # under .tally/
    VERSION = 4  # 2: NamedTuples; 3: moved to cas.pipeline.stages; 4: marshal, not pickle

    def __init__(self, project: Project) -> None:
        self.project = project
        self.path = project.store_dir.joinpath(*self.FILE)
        self.dirty = False
        self._data: dict[str, tuple[tuple, tuple, Any]] | None = None

    @property
    def data(self) -> dict[str, tuple[tuple, tuple, Any]]:
        """The entries, read on first use (a command-line stage never needs them)."""
        if self._data is None:
            self._data = {}
            try:
                with open(self.path, "rb") as f:
                    version, data = marshal.load(f)
                if version == self._version() and isinstance(data, dict):
                    self._data = _thaw(data)
            except Exception:  # noqa: BLE001 - a damaged or older cache can raise
                pass  # almost anything; every failure only means a miss (re-parse)
        return self._data

    @classmethod
    def _version(cls) -> tuple[int, int, int]:
        # marshal's format may change between Python versions: a cache written by
        # another Python is a miss, never a misread.
        return (cls.VERSION, *sys.version_info[:2])

    def _stat(self, rel: str) -> tuple | None:
        try:
            st = os.stat(self.project.root / rel)
        except OSError:
            return None
        return (st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino)

    def get(self, name: str, loader: Callable[[], tuple[Any, list[str]]]) -> Any:
        """The cached value for `name`, or `loader()` -> (value, files it was read from)."""
        hit = self.data.get(name)
        if hit is not None and tuple(self._stat(f) for f in hit[0]) == hit[1]:
            return hit[2]
        clock = self.project.statcache.now_ns()
        value, files = loader()
        files = tuple(dict.fromkeys(files))
        keys = tuple(self._stat(f) for f in files)
        if all(k is None or max(k[1], k[2]) < clock for k in keys):
            self.data[name] = (files, keys, value)
            self.dirty = True
        return value

    def save(self) -> None:
        if not self.dirty:
            return
        try:
            from cas.core.fsops import atomic_write
            blob = marshal.dumps((self._version(), _freeze(self.data)))
            self.path.parent.mkdir(parents=True, exist_ok=True)
            atomic_write(self.path, blob, durable=False)
            self.dirty = False
        except (OSError, ValueError):  # ValueError: a value marshal cannot write (a date)
            pass  # a cache that cannot be written costs a parse next time


# The parsed cache is written with marshal, not pickle: marshal is built in, pickle
# costs ~4 ms of import at every `tally run`. marshal knows only plain values, so the
# pipeline's NamedTuples are tagged with their class name on the way out and rebuilt
# from cas.pipeline.stages on the way in.
_NT_TAG = "\0namedtuple"


def _freeze(v: Any) -> Any:
    if isinstance(v, tuple) and hasattr(v, "_fields"):
        return (_NT_TAG, type(v).__name__, tuple(_freeze(x) for x in v))
    if isinstance(v, dict):
        return {k: _freeze(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return type(v)(_freeze(x) for x in v)
    return v


def _thaw(v: Any) -> Any:
    if isinstance(v, tuple):
        if len(v) == 3 and v[0] == _NT_TAG:
            from cas.pipeline import stages
            cls = getattr(stages, v[1])  # AttributeError: an unknown class, a miss
            return cls._make(_thaw(x) for x in v[2])
        return tuple(_thaw(x) for x in v)
    if isinstance(v, dict):
        return {k: _thaw(x) for k, x in v.items()}
    if isinstance(v, list):
        return [_thaw(x) for x in v]
    return v
