"""spec/queue.md and spec/live.md cannot drift: their worked examples are checked
against cas/queue/directory.py, cas/live.py and a real run.

Blocks are fenced code blocks whose info string carries a `spec:` word (arguments
as `key=value` words after it):

    ```text spec:workspace-tree oid=T blob=B   `name=content` (\\n escapes): the blob is
                                               B and a tree of that one file is T
    ```text spec:queue-entry oid=H            hex of an entry: BLAKE3 == H, decodes,
                                               re-encodes to the same bytes
    ```text spec:queue-annotated oid=H        hex before the first run of 2+ spaces on
                                               each line: together the entry H
    ```text spec:queue-names oid=H            queue file names of entry H, and its run dir
    ```json spec:outcome-keys                 the keys of a real successful run's outcome
    ```text spec:constants                    `module.NAME = literal  # note`
    ```python spec:live-script                run in an empty directory, then every
    ```text spec:live-file path=P              block's text == the file P it wrote
    ```text spec:checkpoints-file             lines (the last one unterminated) whose
    ```json spec:checkpoints-read              read_checkpoints() == the next block
    ```console                                `$ cmd` and its exact stdout (bash)

Every 64-hex id on the two pages must be vouched for by one of these.
"""

from __future__ import annotations

import ast
import json
import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import blake3
import pytest

from cas.core import hashing
from cas.queue import directory as queue
from cas.objects import tree

SPEC = Path(__file__).resolve().parents[2] / "spec"
PAGES = ["queue.md", "live.md"]
ID_RE = re.compile(r"\b[0-9a-f]{64}\b")
FENCE = re.compile(r"^```(\S*)([^\n]*)\n(.*?)^```$", re.M | re.S)


@dataclass
class Block:
    page: str
    line: int
    lang: str
    kind: str
    args: dict[str, str] = field(default_factory=dict)
    text: str = ""

    @property
    def where(self) -> str:
        return f"spec/{self.page}:{self.line}"


def _blocks() -> list[Block]:
    out = []
    for page in PAGES:
        src = (SPEC / page).read_text("utf-8")
        for m in FENCE.finditer(src):
            words = m.group(2).split()
            kind = next((w[5:] for w in words if w.startswith("spec:")), "")
            if m.group(1) == "console":
                kind = "console"
            args = dict(w.split("=", 1) for w in words if "=" in w)
            out.append(Block(page, src[:m.start()].count("\n") + 1, m.group(1), kind, args, m.group(3)))
    return out


BLOCKS = _blocks()


def of(kind: str) -> list[Block]:
    return [b for b in BLOCKS if b.kind == kind]


def ids(blocks: list[Block]) -> list[str]:
    return [b.where for b in blocks]


def _hex(text: str) -> bytes:
    return bytes.fromhex("".join(text.split()))


def test_pages_have_the_required_sections_and_examples():
    for page in PAGES:
        headings = re.findall(r"^## (.+)$", (SPEC / page).read_text("utf-8"), flags=re.M)
        for section in ("Terminology", "Synopsis", "Layout", "Invalid values", "Worked example", "Changes"):
            assert section in headings, f"spec/{page} lacks '## {section}'"
    for kind in ("queue-entry", "queue-annotated", "queue-names", "outcome-keys", "live-script",
                 "live-file", "checkpoints-file", "constants", "console"):
        assert of(kind), f"no spec:{kind} block"


@pytest.mark.parametrize("b", of("workspace-tree"), ids=ids(of("workspace-tree")))
def test_workspace_tree(b: Block):
    entries = []
    for line in b.text.splitlines():
        name, _, content = line.partition("=")
        data = content.encode().decode("unicode_escape").encode()
        oid = hashing.hash_bytes(data)
        assert oid == b.args["blob"], b.where
        entries.append(tree.Entry(name, tree.FILE, oid, len(data), 0o644))
    t = tree.make(entries, subtree_files={})
    assert hashing.hash_bytes(tree.encode(t)) == b.args["oid"], b.where


@pytest.mark.parametrize("b", of("queue-entry"), ids=ids(of("queue-entry")))
def test_queue_entry(b: Block):
    data = _hex(b.text)
    assert hashing.hash_bytes(data) == b.args["oid"], b.where
    e = queue.decode(data)
    assert queue.encode(e) == data, f"{b.where}: not canonical"
    (ws,) = of("workspace-tree")
    assert e.workspace == ws.args["oid"]
    assert (e.name, e.host, e.user, e.targets, e.options) == ("lr-0.01", "gpu-1", "ada", ("train",), {"force": True})
    assert e.override_specs() == ["params.yaml:train.lr=0.01"]
    assert e.queued == 1767225600 * 10**9  # 2026-01-01T00:00:00Z


@pytest.mark.parametrize("b", of("queue-annotated"), ids=ids(of("queue-annotated")))
def test_queue_annotated(b: Block):
    hexes = [re.split(r"\s{2,}", line.strip(), maxsplit=1)[0] for line in b.text.splitlines()]
    data = bytes.fromhex("".join(hexes))
    assert hashing.hash_bytes(data) == b.args["oid"], b.where
    plain = [p for p in of("queue-entry") if p.args["oid"] == b.args["oid"]]
    assert plain and _hex(plain[0].text) == data


@pytest.mark.parametrize("b", of("queue-names"), ids=ids(of("queue-names")))
def test_queue_names(b: Block, tmp_path):
    oid = b.args["oid"]
    lines = b.text.splitlines()
    for line in lines[:-1]:
        state, name = line.split("/")
        seq, eid, wid = queue._parse_name(state, name)
        assert (seq, eid) == (1, oid) and (wid is not None) == (state == "running"), line
        assert name.startswith(queue._file_name(1, oid))

    class P:
        store_dir = tmp_path / ".tally"
    assert f"tmp/{queue.run_dir(P, oid).name}" == lines[-1]


def test_outcome_keys_of_a_real_run(tmp_path):
    from cas.experiments import enqueue as sweep
    from cas.workers import supervisor as worker
    from support.queuelab import TRAIN, make_project

    (b,) = of("outcome-keys")
    p = make_project(tmp_path / "proj", train=TRAIN)
    (it,) = queue.enqueue(p, sweep.plan(p))
    worker.run_all(p)
    outcome = queue.read_outcome(p, it.id)
    assert outcome.status == "success"
    on_disk = json.loads((p.store_dir / "queue" / "outcomes" / f"{it.id}.json").read_bytes())
    assert sorted(on_disk) == json.loads(b.text), b.where


@pytest.mark.parametrize("b", of("constants"), ids=ids(of("constants")))
def test_constants(b: Block):
    import importlib
    for line in b.text.splitlines():
        lhs, _, rhs = line.partition("=")
        module, _, name = lhs.strip().rpartition(".")
        value = ast.literal_eval(rhs.split("#")[0].strip())
        assert getattr(importlib.import_module(f"cas.{module}"), name) == value, f"{b.where}: {line}"


def test_live_files(tmp_path):
    (script,) = of("live-script")
    env = {k: v for k, v in os.environ.items() if not k.startswith("TALLY_")}
    subprocess.run([sys.executable, "-c", script.text], cwd=tmp_path, env=env, check=True)
    files = of("live-file")
    for b in files:
        assert (tmp_path / b.args["path"]).read_text() == b.text, b.where
    written = sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*") if p.is_file())
    assert written == sorted(b.args["path"] for b in files), "the page must list every file written"


def test_checkpoints_file(tmp_path):
    from cas.live import read_checkpoints

    for b in of("checkpoints-file"):
        f = tmp_path / "ckpt"
        f.write_text(b.text.rstrip("\n"))  # the last line is one still being written
        i = BLOCKS.index(b)
        want = BLOCKS[i + 1]
        assert want.kind == "checkpoints-read", b.where
        assert [list(x) for x in read_checkpoints(f)] == json.loads(want.text), b.where


@pytest.mark.parametrize("b", of("console"), ids=ids(of("console")))
def test_console(b: Block):
    cmds: list[tuple[str, list[str]]] = []
    for line in b.text.splitlines():
        if line.startswith("$ "):
            cmds.append((line[2:], []))
        else:
            cmds[-1][1].append(line)
    for cmd, want in cmds:
        m = re.fullmatch(r"echo ([0-9a-f]+) \| xxd -r -p \| b3sum --no-names", cmd)
        assert m, f"{b.where}: unsupported command {cmd!r}"
        assert blake3.blake3(bytes.fromhex(m.group(1))).hexdigest() == want[0]
        if shutil.which("xxd") and shutil.which("b3sum"):
            got = subprocess.run(["bash", "-c", cmd], capture_output=True, text=True, check=True).stdout
            assert got.splitlines() == want, b.where


def test_every_id_on_the_pages_is_checked():
    checked: set[str] = set()
    for b in BLOCKS:
        if b.kind in ("workspace-tree", "queue-entry", "queue-annotated", "queue-names",
                      "checkpoints-file", "checkpoints-read", "console"):
            checked |= set(ID_RE.findall(b.text)) | {v for v in b.args.values() if ID_RE.fullmatch(v)}
    for page in PAGES:
        unchecked = set(ID_RE.findall((SPEC / page).read_text("utf-8"))) - checked
        assert not unchecked, f"spec/{page} shows ids no example checks: {sorted(unchecked)}"
