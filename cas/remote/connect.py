"""Opening a remote: URL -> backend, plus the per-store cache of what it has.

    /path, ./path, file:///path   cas/remote/localdir.py
    s3://, gs://, az://, ...      cas/remote/cloud.py (obstore)
    anything else with a scheme   cas/remote/generic.py (fsspec: memory://, ssh://, ...)
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from cas.remote import catalog as catalog_mod
from cas.remote import layout
from cas.remote.backend import Backend

DEFAULT_JOBS = 8  # transfers in flight; -j overrides


def backend_for(url: str, *, options: dict[str, Any] | None = None,
                base: Path | None = None) -> Backend:
    """The backend serving `url` (a relative directory is taken from `base`)."""
    from cas.remote.cloud import SCHEMES

    scheme = url.split("://", 1)[0].lower() if "://" in url else ""
    if scheme in ("", "file"):
        path = url[len("file://"):] if scheme else url
        if not os.path.isabs(path):
            path = os.path.join(base or Path.cwd(), path)
        from cas.remote.localdir import DirBackend
        return DirBackend(os.path.normpath(path), url=url)
    if scheme in SCHEMES:
        from cas.remote.cloud import CloudBackend
        return CloudBackend(url, options={k: str(v) for k, v in (options or {}).items()})
    from cas.remote.generic import GenericBackend
    return GenericBackend(url, options=options)


class Remote:
    """An opened remote: its name and URL, its backend, this store's cache of it."""

    def __init__(self, name: str, url: str, backend: Backend, *, cache_dir: Path | None,
                 jobs: int = DEFAULT_JOBS) -> None:
        self.name = name
        self.url = url
        self.backend = backend
        self.cache_dir = cache_dir
        self.jobs = max(1, jobs)
        self._catalog: catalog_mod.Catalog | None = None
        self._checked: bool | None = None

    def __repr__(self) -> str:
        return f"Remote({self.name!r}, {self.url!r})"

    def exists(self) -> bool:
        """True when the remote has a tally marker (something was pushed to it).
        Raises RemoteError for a foreign or newer remote."""
        if self._checked is None:
            self._checked = layout.check_format(self.backend, create=False)
        return self._checked

    def prepare_for_writing(self) -> None:
        """Create the marker if needed, and refuse a foreign or newer remote."""
        if not self._checked:
            self._checked = layout.check_format(self.backend, create=True)

    def catalog(self, *, refresh: bool = False) -> catalog_mod.Catalog:
        """What the remote has (cached for this object; `refresh` lists again)."""
        if self._catalog is None or refresh:
            if not self.exists():
                self._catalog = catalog_mod.Catalog()
            else:
                self._catalog = catalog_mod.load(self.backend, self.cache_dir, jobs=self.jobs)
        return self._catalog

    def forget_catalog(self) -> None:
        self._catalog = None

    def close(self) -> None:
        self.backend.close()


def open_remote(project, name: str | None = None, *, jobs: int | None = None) -> Remote:
    """The remote `name` (or the default) of `project`, opened.

    Raises:
        NotFound: no such remote. UsageError: a URL no backend can open.
    """
    from cas.remote import settings

    spec = settings.resolve(project, name)
    backend = backend_for(spec.url, options=spec.options, base=project.root)
    if jobs is None:
        jobs = int(project.config.get("remote.jobs"))
    return Remote(spec.name, spec.url, backend, cache_dir=settings.cache_dir(project, spec.url),
                  jobs=jobs)


def open_url(url: str, *, name: str = "", cache_dir: Path | None = None, jobs: int = DEFAULT_JOBS,
             options: dict[str, Any] | None = None) -> Remote:
    """A remote by URL alone (tests, tools, the distributed queue's workers)."""
    return Remote(name or url, url, backend_for(url, options=options), cache_dir=cache_dir,
                  jobs=jobs)


__all__ = ["Remote", "open_remote", "open_url", "backend_for", "DEFAULT_JOBS"]
