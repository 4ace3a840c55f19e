"""The store config: `.tally/config`, TOML, carrying the store's format version.

    [core]
    format = 1                  # store layout version; a newer one is refused

    [cache]
    type = "reflink,copy"       # checkout link order among reflink, hardlink, symlink, copy
    compression = "auto"        # auto | zstd | none
    zstd_level = 1
    fsync = "batch"             # batch | each | off

Unknown sections and keys are kept (a newer tally may have written them) but a key in
a known section with a bad value is an error naming the key. Edits go through tomlkit
so the user's comments and layout survive `tally config`.
"""

# No `from __future__ import annotations`: typing.NamedTuple compiles every string
# annotation into a ForwardRef, ~0.3 ms a class of every `tally run` start-up.

import tomllib
from pathlib import Path
from typing import Any, Callable, NamedTuple

from cas.core.errors import NotFound, StoreError, UsageError
from cas.core.fsops import atomic_write

FORMAT_VERSION = 1
LINK_TYPES = ("reflink", "hardlink", "symlink", "copy")


def _link_order(value: Any) -> tuple[str, ...]:
    if isinstance(value, tuple):
        return value
    parts = tuple(p.strip() for p in str(value).split(",") if p.strip())
    bad = [p for p in parts if p not in LINK_TYPES]
    if not parts or bad:
        raise UsageError(f"cache.type must be a comma list of {', '.join(LINK_TYPES)}, got {value!r}")
    return parts


def _choice(*choices: str) -> Callable[[Any], str]:
    def parse(value: Any) -> str:
        if str(value) not in choices:
            raise UsageError(f"must be one of {', '.join(choices)}, got {value!r}")
        return str(value)
    return parse


def _int_range(lo: int, hi: int) -> Callable[[Any], int]:
    def parse(value: Any) -> int:
        try:
            n = int(value)
        except (TypeError, ValueError):
            raise UsageError(f"must be an integer {lo}..{hi}, got {value!r}") from None
        if not lo <= n <= hi:
            raise UsageError(f"must be an integer {lo}..{hi}, got {n}")
        return n
    return parse


def _duration(value: Any) -> str:
    from cas.core.durations import parse_duration
    parse_duration(str(value))
    return str(value)


# key -> (parser, default). The parser validates a value given as text or TOML value.
SCHEMA: dict[str, tuple[Callable[[Any], Any], Any]] = {
    "cache.type": (_link_order, "reflink,copy"),
    "cache.compression": (_choice("auto", "zstd", "none"), "auto"),
    # Level 1: ~420 MB/s here and a ratio as good as 3's on CSV-like data; level 3 ran
    # at 74 MB/s and made `add` of large text slower than DVC (bench/RESULTS.md).
    "cache.zstd_level": (_int_range(1, 19), 1),
    "cache.fsync": (_choice("batch", "each", "off"), "batch"),
    "gc.grace": (_duration, "24h"),
    "gc.keep_last": (_int_range(0, 10**9), 0),
    "gc.keep_best": (_int_range(0, 10**9), 0),
    "gc.sort_by": (str, ""),
    "gc.drop_failed": (_choice("true", "false"), "false"),
    "gc.older_than": (str, ""),
    "queue.workers": (_int_range(1, 256), 2),
    # Remotes (spec/remote.md): which one push/pull use without -r, transfers in
    # flight, and whether `tally run` pushes each new experiment to it.
    "remote.default": (str, ""),
    "remote.jobs": (_int_range(1, 256), 8),
    "remote.auto_push": (_choice("true", "false"), "false"),
}


class Config(NamedTuple):  # not a dataclass: ~1 ms less start-up for every command
    """The parsed, validated config of one store (a value: `values` is never changed)."""

    path: Path
    format: int = FORMAT_VERSION
    values: dict[str, Any] = {}

    def get(self, key: str) -> Any:
        """The value of `key` (dotted), or its default."""
        if key in self.values:
            return self.values[key]
        if key in SCHEMA:
            return SCHEMA[key][1]
        raise UsageError(f"unknown config key {key!r}",
                         hint="known keys: " + ", ".join(sorted(SCHEMA)))

    @property
    def link_order(self) -> tuple[str, ...]:
        return _link_order(self.get("cache.type"))


def load(path: Path) -> Config:
    """Read and validate `.tally/config`.

    Raises:
        StoreError: missing (not a tally project), unreadable, or a newer format.
        UsageError: a known key with a bad value.
    """
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise StoreError("not a tally project (no .tally/config)", path=path.parent,
                         hint="run `tally init` at the root of your Git repository") from None
    try:
        text = raw.decode("utf-8")
        doc = tomllib.loads(text)
    except (ValueError, UnicodeDecodeError) as exc:  # TOMLDecodeError is a ValueError
        raise StoreError(f"the store config is not valid TOML: {exc}", path=path,
                         hint="fix the file by hand or restore it from a backup") from None
    fmt = doc.get("core", {}).get("format")
    if not isinstance(fmt, int) or fmt < 1:
        raise StoreError(f"the store config has no valid core.format (found {fmt!r})", path=path)
    if fmt > FORMAT_VERSION:
        raise StoreError(f"this store has format {fmt}, newer than this tally understands "
                         f"({FORMAT_VERSION})", path=path,
                         hint="upgrade tally; an older tally must not write to a newer store")
    values: dict[str, Any] = {}
    for section, table in doc.items():
        if section == "core" or not isinstance(table, dict):
            continue
        for key, value in table.items():
            dotted = f"{section}.{key}"
            if dotted in SCHEMA:
                values[dotted] = _validate(dotted, value, path)
    return Config(path=path, format=fmt, values=values)


def _validate(key: str, value: Any, path: Path | None = None) -> Any:
    parser = SCHEMA[key][0]
    try:
        return parser(value)
    except UsageError as exc:
        raise UsageError(f"config {key}: {exc.message}", path=path) from None


def write_new(path: Path) -> None:
    """Write a fresh config with the current format and the defaults spelled out."""
    text = (
        "# tally store config. `tally config KEY VALUE` edits it; comments are kept.\n"
        "[core]\n"
        f"format = {FORMAT_VERSION}\n\n"
        "[cache]\n"
        "# checkout link order: reflink, hardlink, symlink, copy (first that works wins)\n"
        'type = "reflink,copy"\n'
        "# auto compresses compressible data stored by copy; linked data stays raw\n"
        'compression = "auto"\n'
    )
    atomic_write(path, text.encode())


def set_value(path: Path, key: str, value: str | None) -> Any:
    """Set (or with value None, unset) `key` in the config file, keeping comments.

    Returns the parsed value that was stored. Raises UsageError for an unknown key or
    a bad value, NotFound when unsetting a key that is not set.
    """
    import tomlkit

    if key not in SCHEMA:
        raise UsageError(f"unknown config key {key!r}", hint="known keys: " + ", ".join(sorted(SCHEMA)))
    doc = tomlkit.parse(path.read_text("utf-8"))
    section, name = key.split(".", 1)
    if value is None:
        table = doc.get(section)
        if table is None or name not in table:
            raise NotFound(f"config key {key!r} is not set", path=path)
        del table[name]
        parsed = None
    else:
        parsed = _validate(key, value)
        if section not in doc:
            doc[section] = tomlkit.table()
        doc[section][name] = _to_toml(key, parsed)
    atomic_write(path, tomlkit.dumps(doc).encode("utf-8"))
    return parsed


def _to_toml(key: str, parsed: Any) -> Any:
    if key == "cache.type":
        return ",".join(parsed)
    return parsed
