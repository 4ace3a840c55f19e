"""spec/experiments.md cannot drift: its worked examples are checked against cas/.

Blocks are fenced code whose info string carries a `spec:` word (see the page):
record, record-json, record-invalid, ref, names, lockfile, runcache-inputs,
runcache-key, runcache-entry, b3 (console lines `$ echo HEX | xxd -r -p | b3sum` and
`$ printf 'TEXT' | b3sum`, checked with the blake3 library) and constants. Every
64-hex id on the page must be checked by one of them.
"""

from __future__ import annotations

import ast
import importlib
import json
import re
from pathlib import Path

import blake3
import pytest

from cas.objects import record
from cas.store import refs
from cas.pipeline import runcache
from cas.core.errors import FormatError

PAGE = Path(__file__).resolve().parents[2] / "spec" / "experiments.md"
FENCE = re.compile(r"^```(\S*)([^\n]*)\n(.*?)^```$", re.M | re.S)
ID_RE = re.compile(r"\b[0-9a-f]{64}\b")
SECTIONS = ["Terminology", "Synopsis", "Layout", "Invalid values", "Worked example", "Changes"]


def blocks() -> list[tuple[str, dict[str, str], str]]:
    out = []
    for m in FENCE.finditer(PAGE.read_text()):
        words = m.group(2).split()
        kinds = [w[5:] for w in words if w.startswith("spec:")]
        if kinds:
            args = dict(w.split("=", 1) for w in words if "=" in w)
            out.append((kinds[0], args, m.group(3)))
    return out


BLOCKS = blocks()


def of(kind: str) -> list[tuple[dict[str, str], str]]:
    found = [(a, body) for k, a, body in BLOCKS if k == kind]
    assert found, f"no spec:{kind} block in {PAGE.name}"
    return found


def unhex(body: str) -> bytes:
    return bytes.fromhex("".join(body.split()))


def b3(data: bytes) -> str:
    return blake3.blake3(data).hexdigest()


def test_sections_in_order():
    heads = [h for h in re.findall(r"^## (.+)$", PAGE.read_text(), re.M)]
    positions = [heads.index(s) for s in SECTIONS]
    assert positions == sorted(positions)


def test_record_bytes_id_and_round_trip():
    for args, body in of("record"):
        data = unhex(body)
        assert b3(data) == args["oid"]
        rec = record.decode(data)
        assert record.encode(rec) == data


def test_record_json_is_the_decoded_record():
    records = {a["oid"]: record.decode(unhex(b)) for a, b in of("record")}
    for args, body in of("record-json"):
        assert records[args["oid"]].to_json() == json.loads(body)


def test_invalid_records_are_rejected():
    lines = of("record-invalid")[0][1].split()
    assert len(lines) >= 8
    for line in lines:
        with pytest.raises(FormatError):
            record.decode(bytes.fromhex(line))


def test_ref_file(tmp_path):
    import subprocess
    from cas.workspace.project import init_project

    subprocess.run(["git", "init", "-q", str(tmp_path)], check=True)
    project = init_project(tmp_path)[0]
    for args, body in of("ref"):
        _, _, _, baseline, name = args["path"].split("/")
        assert len(body.encode()) == refs.REF_SIZE
        refs.update(project, baseline, name, body.strip(), None)
        assert (tmp_path / args["path"]).read_text() == body
        assert refs.list_refs(project) == [(baseline, name, body.strip())]


def test_generated_names():
    for args, body in of("names"):
        rec = record.decode(unhex(of("record")[0][1]))
        assert record.record_id(rec.with_name("")) == args["seed"]
        for line in body.splitlines():
            attempt, name = line.split()
            assert refs.candidate_name(args["seed"], int(attempt)) == name


def test_lockfile_text_is_canonical():
    from cas.pipeline import tallylock as lockfile

    for _, body in of("lockfile"):
        parsed = lockfile.loads(body)
        assert lockfile.dumps(parsed) == body


def test_runcache_key_and_entry():
    for args, body in of("runcache-inputs"):
        inputs = json.loads(body)
        assert runcache.key(**inputs) == args["key"]
    for args, body in of("runcache-key"):
        assert b3(unhex(body)) == args["key"]
    for args, body in of("runcache-entry"):
        data = unhex(body)
        assert b3(data) == args["oid"]
        entry = runcache.decode(data)
        assert runcache.encode(entry) == data
        assert runcache.entry_key(entry) == of("runcache-inputs")[0][0]["key"]


def test_console_hashes():
    for _, body in of("b3"):
        lines = body.splitlines()
        for cmd, want in zip(lines[::2], lines[1::2]):
            m = re.fullmatch(r"\$ echo ([0-9a-f]+) \| xxd -r -p \| b3sum", cmd)
            if m:
                data = bytes.fromhex(m.group(1))
            else:
                m = re.fullmatch(r"\$ printf '(.*)' \| b3sum", cmd)
                assert m, cmd
                data = m.group(1).encode().decode("unicode_escape").encode()
            assert want == f"{b3(data)}  -"


def test_constants():
    for _, body in of("constants"):
        for line in body.splitlines():
            lhs, rhs = line.split("=", 1)
            module, _, name = lhs.strip().rpartition(".")
            value = ast.literal_eval(rhs.split("#")[0].strip())
            assert getattr(importlib.import_module(f"cas.{module}"), name) == value, line


def test_every_id_on_the_page_is_in_a_checked_block():
    in_blocks = set()
    for _, args, body in BLOCKS:
        in_blocks.update(ID_RE.findall(body))
        in_blocks.update(v for v in args.values() if ID_RE.fullmatch(v))
    ids = set(ID_RE.findall(PAGE.read_text()))
    assert ids - in_blocks == set()
