"""`tally config`: read or set store settings."""

from __future__ import annotations

from ..flags import JSON
from ..output import emit_json, out
from ..spec import FLAG, OPTIONAL, Arg, Command, Opt


def body(a) -> None:
    from cas.store import config
    from cas.workspace.project import open_project

    project = open_project()
    path = project.store_dir / "config"
    if a.key is None:
        values = {k: _shown(project.config.get(k)) for k in sorted(config.SCHEMA)}
        if a.json:
            emit_json(values)
        else:
            for k, v in values.items():
                out(f"{k} = {v}")
        return
    if a.unset:
        config.set_value(path, a.key, None)
        return
    if a.value is None:
        v = _shown(project.config.get(a.key))
        emit_json({a.key: v}) if a.json else out(str(v))
        return
    config.set_value(path, a.key, a.value)


def _shown(v):
    return ",".join(v) if isinstance(v, tuple) else v


COMMAND = Command(
    "config",
    "Read or set store settings in .tally/config (comments are kept).\n\n"
    "Keys: cache.type (link order among reflink, hardlink, symlink, copy), "
    "cache.compression (auto|zstd|none), cache.zstd_level, cache.fsync (batch|each|off), "
    "gc.* retention defaults, queue.workers. Without KEY, prints every setting.",
    body,
    args=(Arg("key", "KEY", OPTIONAL, "Dotted key, e.g. cache.type."),
          Arg("value", "VALUE", OPTIONAL, "New value (omit to read).")),
    opts=(Opt(("--unset",), "unset", FLAG, "Remove the key (back to its default)."),
          JSON._replace(help="Machine-readable output on stdout.")),
    exits=((2, "an unknown key or a value it does not take"),))
