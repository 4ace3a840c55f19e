"""Faults: unreachable, wrong credentials, read-only, full, missing bucket; damaged and
hostile remotes. Every byte from a remote is hostile: bounded, validated, verified,
and nothing is ever written outside the project's `.tally/`."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import msgpack
import pytest

from support import helpers
from support.lab import Lab, M, P, sh
from support.remotelab import (fast_retries, make_remote, remote_kind, s3,  # noqa: F401
                               tiny_packs)

from cas.core import hashing
from cas.core.errors import (Corruption, CorruptObject, FormatError, RemoteDenied, RemoteError,
                             RemoteUnreachable)
from cas.objects import pointer
from cas.remote import layout, packfile, settings
from cas.remote.connect import open_remote
from cas.sync import data, exps
from cas.workspace import tracking
from cas.workspace.project import init_project, open_project


def _project(root: Path) -> Lab:
    root.mkdir()
    sh(root, "init", "-q", "-b", "main")
    sh(root, "config", "commit.gpgsign", "false")
    init_project(root)
    return Lab(root)


def _with_data(lab: Lab, n: int = 40) -> None:
    helpers.many_small_files(lab.root / "data", n, seed=7)
    (lab.root / "data" / "big.bin").write_bytes(os.urandom(40_000))
    tracking.add(open_project(lab.root), ["data"], cwd=lab.root)
    lab.commit("data")


def _outside_tally(root: Path) -> set[str]:
    return {p for p in helpers.listing(root) if not p.startswith((".tally", ".git"))}


# ---------------------------------------------------------------- the remote fails

def test_unreachable_endpoint(tmp_path, fast_retries) -> None:
    lab = _project(tmp_path / "p")
    _with_data(lab)
    from support.remotelab import free_port
    p = lab.project
    settings.add(p, "dead", "s3://bucket/x", default=True,
                 options={"endpoint_url": f"http://127.0.0.1:{free_port()}", "region": "us-east-1",
                          "access_key_id": "a", "secret_access_key": "b"})
    with pytest.raises(RemoteUnreachable) as info:
        data.push(p)
    assert info.value.exit_code == 9 and "cannot reach" in info.value.message
    with pytest.raises(RemoteUnreachable):
        exps.show(p, all_baselines=True)


def test_directory_remote_that_is_not_mounted(tmp_path) -> None:
    lab = _project(tmp_path / "p")
    _with_data(lab)
    settings.add(lab.project, "nfs", os.fspath(tmp_path / "not-mounted" / "store"), default=True)
    with pytest.raises(RemoteError, match="does not exist"):
        data.push(lab.project)
    assert not (tmp_path / "not-mounted").exists()


def test_missing_bucket(tmp_path, s3) -> None:
    lab = _project(tmp_path / "p")
    _with_data(lab)
    settings.add(lab.project, "o", "s3://no-such-bucket-here/x", default=True, options=s3.options())
    with pytest.raises(RemoteError, match="bucket .* does not exist"):
        data.push(lab.project)


def _auth_server(tmp_path: Path):
    """A moto server in its own process that checks credentials (after 7 setup
    calls): users `rw` (all of S3) and `ro` (read and list only), bucket `auth-bkt`."""
    from support.remotelab import free_port
    port = free_port()
    code = ("import sys\nfrom moto.server import ThreadedMotoServer\n"
            "s = ThreadedMotoServer(ip_address='127.0.0.1', port=int(sys.argv[1]), verbose=False)\n"
            "s.start(); print('ready', flush=True); sys.stdin.read()\n")
    proc = subprocess.Popen([sys.executable, "-c", code, str(port)],
                            env={**os.environ, "INITIAL_NO_AUTH_ACTION_COUNT": "7"},
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    assert proc.stdout.readline().strip() == b"ready"
    import boto3
    ep = f"http://127.0.0.1:{port}"
    kw = dict(endpoint_url=ep, region_name="us-east-1", aws_access_key_id="x",
              aws_secret_access_key="y")
    iam = boto3.client("iam", **kw)
    keys = {}
    for user, actions in (("rw", ["s3:*"]), ("ro", ["s3:Get*", "s3:List*"])):
        iam.create_user(UserName=user)
        k = iam.create_access_key(UserName=user)["AccessKey"]
        keys[user] = {"access_key_id": k["AccessKeyId"], "secret_access_key": k["SecretAccessKey"]}
        iam.put_user_policy(UserName=user, PolicyName="p", PolicyDocument=json.dumps(
            {"Version": "2012-10-17",
             "Statement": [{"Effect": "Allow", "Action": actions, "Resource": "*"}]}))
    boto3.client("s3", **kw).create_bucket(Bucket="auth-bkt")
    return proc, ep, keys


def test_wrong_credentials_and_read_only_credentials(tmp_path) -> None:
    proc, ep, keys = _auth_server(tmp_path)
    try:
        lab = _project(tmp_path / "p")
        _with_data(lab)
        p = lab.project
        base = {"endpoint_url": ep, "region": "us-east-1"}
        settings.add(p, "o", "s3://auth-bkt/x", default=True,
                     options={**base, "access_key_id": "AKIAWRONGWRONG", "secret_access_key": "no"})
        lab.commit("the remote")  # .tally/config is committed; config.local is not
        with pytest.raises(RemoteDenied, match="credentials"):
            data.push(p)
        for k, v in keys["rw"].items():
            settings.modify(p, "o", k, v, local=True)
        assert data.push(p).failed == {}
        for k, v in keys["ro"].items():
            settings.modify(p, "o", k, v, local=True)
        (lab.root / "data" / "new.txt").write_text("more\n")
        tracking.add(p, ["data"], cwd=lab.root)
        with pytest.raises(RemoteDenied, match="read-only|permission"):
            data.push(p)
        # Read-only credentials still pull what is there.
        other = tmp_path / "q"
        sh(tmp_path, "clone", "-q", os.fspath(lab.root), os.fspath(other))
        po = open_project(other)
        for k, v in keys["ro"].items():
            settings.modify(po, "o", k, v, local=True)
        assert data.pull(po).failed == {}
        assert helpers.manifest(other / "data")
    finally:
        proc.stdin.close()
        proc.wait(timeout=30)


def _tmpfs(path: Path, size: str) -> None:
    path.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", os.fspath(path)],
                          capture_output=True)
    if done.returncode != 0:
        pytest.skip("needs a tmpfs mount (root in a mount namespace)")


def _umount(path: Path) -> None:
    subprocess.run(["umount", "-l", os.fspath(path)], capture_output=True)


def test_full_and_read_only_directory_remote(tmp_path) -> None:
    mnt = tmp_path / "mnt"
    _tmpfs(mnt, "96k")
    try:
        lab = _project(tmp_path / "p")
        _with_data(lab, n=80)
        p = lab.project
        settings.add(p, "o", os.fspath(mnt / "store"), default=True)
        with pytest.raises(RemoteError, match="full"):
            data.push(p)
        r = open_remote(p)
        assert r.catalog(refresh=True).indexes == {}  # nothing half-published
        # Read-only: remount, push again.
        subprocess.run(["mount", "-o", "remount,ro", os.fspath(mnt)], check=True)
        with pytest.raises(RemoteDenied, match="read-only"):
            data.push(p)
    finally:
        _umount(mnt)


# ---------------------------------------------------------------- damaged remotes

@pytest.fixture
def pushed(tmp_path, remote_kind):
    """A project whose data was pushed, and a second clone to pull it into."""
    lab = _project(tmp_path / "p")
    remote_kind.add_to(lab.project)
    _with_data(lab)
    data.push(lab.project)
    other = tmp_path / "q"
    sh(tmp_path, "clone", "-q", os.fspath(lab.root), os.fspath(other))
    po = open_project(other)
    for k, v in remote_kind.options.items():
        settings.modify(po, "origin", k, v, local=True)
    return lab, po, open_remote(lab.project)


def test_an_object_corrupted_in_a_pack(pushed) -> None:
    lab, po, r = pushed
    cat = r.catalog(refresh=True)
    some_file = sorted((lab.root / "data").rglob("*.dat"))[3]
    oid = hashing.hash_file(some_file)  # a blob: a leaf, so only it and its trees fail
    s = cat.small[oid]
    assert s.form == packfile.RAW
    key = packfile.pack_key(s.pack)
    blob = bytearray(r.backend.read(key, max_size=1 << 30))
    blob[s.offset + 10] ^= 0xFF
    r.backend.write(key, bytes(blob))
    got = data.pull(po)
    assert set(got.failed) == {oid}
    assert "received from the remote" in got.failed[oid] or "hash" in got.failed[oid]
    with pytest.raises(CorruptObject):
        got.raise_for_failures()
    assert not po.store.has(oid)  # never published
    ptr = pointer.read(po.root, "data")
    assert not po.store.has(ptr.oid)  # nor the trees above it
    assert not (po.root / "data").exists()  # nor checked out
    assert sum(po.store.has(o) for o in cat.small) >= len(cat.small) - 3  # the rest arrived


@pytest.mark.parametrize("damage", ["truncate", "delete"])
def test_a_truncated_pack_and_a_lost_pack(pushed, damage) -> None:
    lab, po, r = pushed
    cat = r.catalog(refresh=True)
    for pack in cat.packs:
        key = packfile.pack_key(pack)
        if damage == "truncate":
            r.backend.write(key, r.backend.read(key, max_size=1 << 30)[:7])
        else:
            r.backend.delete(key)
    got = data.fetch(po)
    reasons = set(got.failed.values())
    assert reasons and all(("truncated" if damage == "truncate" else "lost pack") in x
                           for x in reasons), reasons
    with pytest.raises(Corruption):
        got.raise_for_failures()
    assert not (po.root / "data").exists()


def test_hostile_indexes_are_format_errors(pushed) -> None:
    lab, po, r = pushed
    cat = r.catalog(refresh=True)
    pack = sorted(cat.packs)[0]
    oid = "ab" * 32

    def plant(body) -> None:
        d = packfile.INDEX_MAGIC + bytes([1]) + msgpack.packb(body, use_bin_type=True)
        r.backend.write(packfile.index_key(hashing.hash_bytes(d)), d)

    row = packfile.ROW.pack(bytes.fromhex(oid), 0, 0, 0, cat.packs[pack] - 4, 100, 100)
    for body, what in (
            ([[[bytes.fromhex(pack), cat.packs[pack]]], row, []], "outside its pack"),
            ([[[bytes.fromhex(pack), cat.packs[pack]]],
              packfile.ROW.pack(bytes.fromhex(oid), 0, 1, 0, 5, 10, 1 << 31), []], "claims"),
            ([[[bytes.fromhex(pack), cat.packs[pack]]],
              packfile.ROW.pack(bytes.fromhex(oid), 7, 0, 0, 5, 10, 10), []], "names pack"),
            ([[], b"", [[bytes.fromhex(oid), 0, 5, 6]]], "length != size")):
        for e in r.backend.list(layout.INDEX):
            if layout.parse_index_key(e.key) not in cat.indexes:
                r.backend.delete(e.key)
        plant(body)
        with pytest.raises(FormatError, match=what):
            data.fetch(po)
    for e in r.backend.list(layout.INDEX):
        if layout.parse_index_key(e.key) not in cat.indexes:
            r.backend.delete(e.key)
    # An index that does not hash to its name.
    good = packfile.index_key(sorted(cat.indexes)[0])
    r.backend.write(packfile.index_key("cd" * 32), r.backend.read(good, max_size=1 << 30))
    with pytest.raises(FormatError, match="does not hash"):
        data.fetch(po)


@pytest.mark.parametrize("key", [
    "refs/exps/{b}/../evil/{o}", "refs/exps/{b}/-rf/{o}", "refs/exps/{b}/name/not-an-id",
    "refs/exps/not-a-commit/name/{o}", "refs/exps/{b}/a/b/{o}", "queue/not-an-id"])
def test_hostile_ref_keys_are_format_errors(pushed, key) -> None:
    lab, po, r = pushed
    if "/../" in key and not r.url.startswith("s3://"):
        pytest.skip("a directory or fsspec path cannot hold a key with '..' in it")
    before = _outside_tally(po.root)
    k = key.format(b=lab.head(), o="ab" * 32)
    _plant(r, k, b"x")
    with pytest.raises(FormatError):
        if k.startswith("queue/"):
            exps.pull(po, queued=True)
        else:
            exps.pull(po, everything=True)
    if k.startswith("refs/"):
        with pytest.raises(FormatError):
            exps.show(po, all_baselines=True)
    assert _outside_tally(po.root) == before
    assert not (po.root.parent / "evil").exists()


def _plant(r, key: str, data: bytes) -> None:
    """Write `key` on the remote as a hostile party would (S3 takes any key)."""
    from cas.remote.cloud import CloudBackend
    if isinstance(r.backend, CloudBackend):
        import boto3
        from support.remotelab import ACCESS_KEY, REGION, SECRET_KEY
        bucket, _, prefix = r.url[len("s3://"):].partition("/")
        opts = settings_options(r)
        boto3.client("s3", endpoint_url=opts["endpoint_url"], aws_access_key_id=ACCESS_KEY,
                     aws_secret_access_key=SECRET_KEY, region_name=REGION).put_object(
            Bucket=bucket, Key=f"{prefix}/{key}" if prefix else key, Body=data)
    elif hasattr(r.backend, "fs"):
        r.backend.fs.pipe_file(f"{r.backend.root}/{key}", data)
    else:
        r.backend.write(key, data)


def settings_options(r) -> dict[str, str]:
    return r.backend._options  # noqa: SLF001 - the endpoint the test server listens on


def test_a_foreign_or_newer_remote_is_refused(pushed) -> None:
    lab, po, r = pushed
    r.backend.write(layout.MARKER, b"tally-remote 2\n")
    with pytest.raises(RemoteError, match="newer"):
        data.fetch(po)
    r.backend.write(layout.MARKER, b"something else\n")
    with pytest.raises(RemoteError, match="not a tally remote"):
        data.push(lab.project)


def test_experiment_pull_of_a_damaged_record_writes_no_ref(tmp_path, remote_kind) -> None:
    lab = _project(tmp_path / "p")
    remote_kind.add_to(lab.project)
    lab.write({"params.yaml": "lr: 1\n"})
    lab.commit("base")
    rec = lab.exp("e", params=P(1), metrics=M(1))
    exps.push(lab.project, names=["e"])
    r = open_remote(lab.project)
    s = r.catalog(refresh=True).small[rec]
    key = packfile.pack_key(s.pack)
    blob = bytearray(r.backend.read(key, max_size=1 << 30))
    blob[s.offset + s.length - 1] ^= 0x55
    r.backend.write(key, bytes(blob))
    other = tmp_path / "q"
    sh(tmp_path, "clone", "-q", os.fspath(lab.root), os.fspath(other))
    po = open_project(other)
    for k, v in remote_kind.options.items():
        settings.modify(po, "origin", k, v, local=True)
    res = exps.pull(po, names=["e"])
    assert res.results[0].status == "failed"
    from cas.store import refs
    assert refs.list_refs(po) == []
    t = exps.show(po, all_baselines=True)
    assert t.experiments[0].status == "unreadable"


def test_a_damaged_local_object_is_not_pushed(tmp_path, remote_kind) -> None:
    lab = _project(tmp_path / "p")
    remote_kind.add_to(lab.project)
    _with_data(lab)
    p = lab.project
    some_file = sorted((lab.root / "data").rglob("*.dat"))[5]
    oid = hashing.hash_file(some_file)
    helpers.flip_byte(p.store.info(oid).path, 0)
    rep = data.push(p)
    assert set(rep.failed) == {oid} and "not pushed" in rep.failed[oid]
    with pytest.raises(CorruptObject):
        rep.raise_for_failures()
    assert not open_remote(p).catalog(refresh=True).has(oid)
