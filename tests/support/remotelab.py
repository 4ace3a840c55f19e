"""Remotes for the tests: a real S3 API (moto's server on 127.0.0.1), a directory, and
fsspec's in-memory filesystem, each behind the URL a user would configure.

Import the fixtures into a test module (`from support.remotelab import s3, remote_url`).
`remote_url` is parametrized over the three kinds, so a test using it runs against
each: one suite, every backend. Nothing here mocks tally: the S3 server speaks real
HTTP, started by the session fixture on a free port.
"""

from __future__ import annotations

import os
import socket
import uuid
from pathlib import Path
from typing import Iterator

import pytest

ACCESS_KEY, SECRET_KEY, REGION = "testing", "testing-secret", "us-east-1"
KINDS = ("dir", "memory", "s3")


class S3:
    """A running moto server."""

    def __init__(self, endpoint: str) -> None:
        self.endpoint = endpoint

    def client(self):
        import boto3
        return boto3.client("s3", endpoint_url=self.endpoint, aws_access_key_id=ACCESS_KEY,
                            aws_secret_access_key=SECRET_KEY, region_name=REGION)

    def bucket(self) -> str:
        name = f"b-{uuid.uuid4().hex[:12]}"
        self.client().create_bucket(Bucket=name)
        return name

    def options(self) -> dict[str, str]:
        """Remote settings that point tally's S3 backend at this server."""
        return {"endpoint_url": self.endpoint, "region": REGION, "access_key_id": ACCESS_KEY,
                "secret_access_key": SECRET_KEY}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def s3() -> Iterator[S3]:
    """moto's S3 API over HTTP on 127.0.0.1 (a thread of this process), for one test
    module: stopped after it, so no later test runs with an extra thread alive (code
    that forks stays serial while other threads run)."""
    pytest.importorskip("moto.server", reason="moto[server] is in the test extras")
    from moto.server import ThreadedMotoServer

    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    try:
        yield S3(f"http://127.0.0.1:{port}")
    finally:
        server.stop()


class RemoteKind:
    """A fresh, empty remote of one kind: its URL and the settings it needs."""

    def __init__(self, kind: str, url: str, options: dict[str, str]) -> None:
        self.kind, self.url, self.options = kind, url, options

    def __repr__(self) -> str:
        return f"RemoteKind({self.kind}, {self.url})"

    def open(self, *, cache_dir: Path | None = None, jobs: int = 4):
        from cas.remote.connect import open_url
        return open_url(self.url, cache_dir=cache_dir, jobs=jobs, options=self.options)

    def add_to(self, project, name: str = "origin", *, default: bool = True):
        from cas.remote import settings
        return settings.add(project, name, self.url, default=default, options=dict(self.options))


def make_remote(kind: str, tmp_path: Path, s3: S3 | None) -> RemoteKind:
    if kind == "dir":
        return RemoteKind(kind, os.fspath(tmp_path / f"remote-{uuid.uuid4().hex[:8]}"), {})
    if kind == "memory":
        return RemoteKind(kind, f"memory://tally-tests/{uuid.uuid4().hex}", {})
    assert s3 is not None
    return RemoteKind(kind, f"s3://{s3.bucket()}/store", s3.options())


@pytest.fixture(params=KINDS)
def remote_kind(request: pytest.FixtureRequest, tmp_path: Path) -> RemoteKind:
    """A fresh remote of each kind in turn (the S3 one on the session's moto server)."""
    s3_server = request.getfixturevalue("s3") if request.param == "s3" else None
    return make_remote(request.param, tmp_path, s3_server)


@pytest.fixture(autouse=False)
def fast_retries(monkeypatch: pytest.MonkeyPatch) -> None:
    """Retries that back off in milliseconds (the unreachable-remote tests)."""
    from cas.remote import backend
    monkeypatch.setattr(backend, "BACKOFF_S", 0.001)
    monkeypatch.setattr(backend, "BACKOFF_MAX_S", 0.002)


@pytest.fixture(autouse=True)
def tiny_packs(monkeypatch: pytest.MonkeyPatch) -> None:
    """Small data, big-data paths: several packs, large objects alone, many spans."""
    from cas.remote import download, upload
    monkeypatch.setattr(upload, "SMALL_MAX", 16 * 1024)
    monkeypatch.setattr(upload, "PACK_TARGET", 64 * 1024)
    monkeypatch.setattr(download, "GAP_MAX", 4 * 1024)
    monkeypatch.setattr(download, "SPAN_MAX", 32 * 1024)


__all__ = ["s3", "remote_kind", "fast_retries", "tiny_packs", "make_remote", "RemoteKind", "S3",
           "KINDS"]
