"""Remote settings: names and URLs in `.tally/config`, the rest per user.

    .tally/config (committed: the team shares it)
        [remote]
        default = "origin"          # the remote push/pull/fetch use without -r
        [remotes.origin]
        url = "s3://team-bucket/project"
        endpoint_url = "http://minio.local:9000"   # S3-compatible servers
        region = "eu-west-1"

    .tally/config.local (ignored by Git: .tally/.gitignore keeps all but config out)
        [remotes.origin]
        access_key_id = "..."       # credentials live here or in the environment
        secret_access_key = "..."
        profile = "work"            # or an AWS profile (needs boto3)

A key in config.local overrides the same key in config, remote by remote, and
`remote.default` too. Credentials (SECRET_KEYS) are refused in the committed file:
`tally remote modify --local` puts them in config.local. Without any, each library
reads its standard environment variables and credential chain.

Keys other than the known ones are passed to the backend's library (obstore config
keys for s3/gs/az URLs, fsspec storage options for the others) as strings.
"""

from __future__ import annotations

import re
import tomllib
from pathlib import Path
from typing import Any, NamedTuple

from cas.core import hashing
from cas.core.errors import Conflict, NotFound, UsageError
from cas.core.fsops import atomic_write

LOCAL_FILE = "config.local"
SECTION = "remotes"
NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
# Never in the committed config: these are someone's credentials.
SECRET_KEYS = frozenset({"access_key_id", "secret_access_key", "session_token", "password",
                         "token", "key_filename", "passphrase", "account_key", "sas_token",
                         "client_secret", "service_account_key"})
KNOWN_KEYS = frozenset({"url", "endpoint_url", "region", "profile", "allow_http"}) | SECRET_KEYS
CACHE_DIR = "remotes"  # .tally/remotes/<16 hex of the URL's hash>/


class RemoteSpec(NamedTuple):
    """One configured remote, with config.local merged in."""

    name: str
    url: str
    options: dict[str, str]  # everything but url
    is_default: bool

    def public(self) -> dict[str, Any]:
        """What `tally remote list --json` shows: no secrets."""
        return {"name": self.name, "url": self.url, "default": self.is_default,
                "options": {k: v for k, v in sorted(self.options.items()) if k not in SECRET_KEYS}}


def _read(path: Path) -> dict[str, Any]:
    try:
        return tomllib.loads(path.read_text("utf-8"))
    except FileNotFoundError:
        return {}
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise UsageError(f"{path} is not valid TOML: {exc}", path=path) from None


def check_name(name: str) -> str:
    if not NAME_RE.fullmatch(name or ""):
        raise UsageError(f"invalid remote name {name!r}",
                         hint="letters, digits, '_', '.', '-', starting with a letter or digit")
    return name


def check_url(url: str) -> str:
    if not url or any(c in url for c in "\n\r\0"):
        raise UsageError(f"invalid remote URL {url!r}")
    return url


def remotes(project) -> dict[str, RemoteSpec]:
    """Every configured remote by name (config, then config.local over it)."""
    shared = _read(project.store_dir / "config")
    local = _read(project.store_dir / LOCAL_FILE)
    default = (local.get("remote", {}) or {}).get("default") or \
        (shared.get("remote", {}) or {}).get("default") or ""
    merged: dict[str, dict[str, str]] = {}
    for doc in (shared, local):
        table = doc.get(SECTION, {})
        if not isinstance(table, dict):
            raise UsageError(f"[{SECTION}] in the config must be a table of remotes")
        for name, keys in table.items():
            if not isinstance(keys, dict):
                raise UsageError(f"[{SECTION}.{name}] must be a table")
            merged.setdefault(name, {}).update({k: str(v).lower() if isinstance(v, bool) else str(v)
                                                for k, v in keys.items()})
    out = {}
    for name, keys in sorted(merged.items()):
        if "url" not in keys:
            continue  # only credentials in config.local for a remote the team removed
        url = keys.pop("url")
        out[name] = RemoteSpec(name, url, keys, name == default)
    return out


def resolve(project, name: str | None = None) -> RemoteSpec:
    """The remote called `name`, or the default one.

    Raises:
        NotFound: no such remote, or none named and no default.
    """
    known = remotes(project)
    if name is None:
        for spec in known.values():
            if spec.is_default:
                return spec
        if len(known) == 1:
            return next(iter(known.values()))
        raise NotFound("no default remote" if known else "no remote is configured",
                       hint="`tally remote add NAME URL --default`" if not known else
                            "give -r NAME, or `tally remote default NAME`")
    check_name(name)
    if name not in known:
        raise NotFound(f"no remote named {name!r}",
                       hint=f"known: {', '.join(known) or 'none'}; `tally remote add {name} URL`")
    return known[name]


def cache_dir(project, url: str) -> Path:
    """Where this store caches what it read from the remote at `url`."""
    return project.store_dir / CACHE_DIR / hashing.hash_bytes(url.encode("utf-8"))[:16]


# ---------------------------------------------------------------- editing

def _edit(project, local: bool, change) -> None:
    import tomlkit

    path = project.store_dir / (LOCAL_FILE if local else "config")
    try:
        doc = tomlkit.parse(path.read_text("utf-8"))
    except FileNotFoundError:
        doc = tomlkit.document()
    change(doc)
    # config.local holds credentials: readable by its owner only.
    atomic_write(path, tomlkit.dumps(doc).encode("utf-8"), mode=0o600 if local else 0o644)


def _remote_table(doc, name: str, *, create: bool):
    import tomlkit

    if SECTION not in doc:
        if not create:
            return None
        doc[SECTION] = tomlkit.table(is_super_table=True)
    table = doc[SECTION]
    if name not in table:
        if not create:
            return None
        table[name] = tomlkit.table()
    return table[name]


def add(project, name: str, url: str, *, default: bool = False,
        options: dict[str, str] | None = None) -> RemoteSpec:
    """Add remote `name` at `url` to `.tally/config` (secrets in `options` go to
    config.local). Raises Conflict when the name exists, UsageError for bad input."""
    check_name(name)
    check_url(url)
    if name in remotes(project):
        raise Conflict(f"remote {name!r} already exists",
                       hint=f"`tally remote modify {name} url URL`, or remove it first")
    options = dict(options or {})
    secrets = {k: options.pop(k) for k in list(options) if k in SECRET_KEYS}

    def change(doc) -> None:
        t = _remote_table(doc, name, create=True)
        t["url"] = url
        for k, v in sorted(options.items()):
            t[k] = v
        if default:
            _set_default(doc, name)
    _edit(project, False, change)
    if secrets:
        _edit(project, True, lambda doc: _remote_table(doc, name, create=True).update(secrets))
    return remotes(project)[name]


def _set_default(doc, name: str | None) -> None:
    import tomlkit

    if "remote" not in doc:
        doc["remote"] = tomlkit.table()
    if name is None:
        doc["remote"].pop("default", None)
    else:
        doc["remote"]["default"] = name


def remove(project, name: str) -> None:
    """Remove remote `name` from both files (and as the default). Raises NotFound."""
    check_name(name)
    if name not in remotes(project):
        raise NotFound(f"no remote named {name!r}")

    def change(doc) -> None:
        table = doc.get(SECTION)
        if table is not None and name in table:
            del table[name]
        if doc.get("remote", {}).get("default") == name:
            _set_default(doc, None)
    _edit(project, False, change)
    if (project.store_dir / LOCAL_FILE).exists():
        _edit(project, True, change)


def set_default(project, name: str | None) -> None:
    """Make `name` the default remote (None: no default)."""
    if name is not None:
        resolve(project, name)
    _edit(project, False, lambda doc: _set_default(doc, name))


def modify(project, name: str, key: str, value: str | None, *, local: bool = False) -> None:
    """Set (value None: unset) `key` of remote `name`, in config or config.local.

    Raises:
        UsageError: a secret key for the committed config, or a bad key/value.
        NotFound: no such remote, or unsetting a key that is not set.
    """
    resolve(project, name)
    if not re.fullmatch(r"[a-z][a-z0-9_]{0,63}", key or ""):
        raise UsageError(f"invalid remote setting {key!r}")
    if key in SECRET_KEYS and not local:
        raise UsageError(f"{key} is a credential: it must not go in .tally/config, which is "
                         "committed", hint=f"`tally remote modify --local {name} {key} ...`, "
                                           "or set it in the environment")
    if key == "url" and value is not None:
        check_url(value)
    if key == "url" and value is None:
        raise UsageError("a remote needs its url; `tally remote remove` removes the remote")

    def change(doc) -> None:
        t = _remote_table(doc, name, create=value is not None)
        if value is None:
            if t is None or key not in t:
                raise NotFound(f"remote {name!r} has no {key} set in "
                               f"{'config.local' if local else 'config'}")
            del t[key]
        else:
            t[key] = value
    _edit(project, local, change)


__all__ = ["RemoteSpec", "remotes", "resolve", "add", "remove", "set_default", "modify",
           "cache_dir", "SECRET_KEYS", "LOCAL_FILE", "check_name"]
