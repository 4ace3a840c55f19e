"""The spec cannot drift: every worked example in spec/*.md is checked against cas/.

The pages mark what to check with fenced blocks. The first word of a block's info
string is only for display; a `spec:` word says what this test does with the block,
and `key=value` words are its arguments:

    ```console                          a shell session: `$ cmd`, then its exact stdout.
                                        Every console block of a page runs, in order,
                                        in one fresh directory. `tally ...` runs through
                                        the cas library and prints nothing; `[exit N]`
                                        after a command means it must fail with N.
    ```text spec:blob oid=H             hex of a blob's content: BLAKE3 == H
    ```text spec:tree oid=H             hex of a tree object: BLAKE3 == H, it decodes,
                                        and re-encodes to the same bytes
    ```text spec:annotated oid=H        annotated dump: on each line the hex before the
                                        first run of 2+ spaces; together the tree H
    ```text spec:tree-invalid           one hex object per line: each is a FormatError
    ```text spec:zst oid=H              hex of a zstd frame: decompresses to content H
    ```text spec:pointer k=v ...        exact pointer text: decodes to the k=v fields (also
                                        with CRLF line ends) and, unless canonical=no,
                                        re-encodes to the same bytes
    ```text spec:pointer-invalid        pointer text: decoding it raises UsageError
    ```text spec:object-paths oid=H     lines: FileStore(".tally").raw_path(H), zst_path(H)
    ```text spec:layout                 ASCII tree of .tally/, compared both ways with the
                                        store the page's console session made
    ```text spec:constants              `module.NAME = literal  # note`: == cas.module.NAME
    ```sql spec:schema                  == cas.workspace.statcache.SCHEMA, whitespace aside

and two tables, each right after an HTML comment: `<!-- spec:errors -->` (== the
TallyError classes in cas/core/errors.py, with parents and exit codes) and
`<!-- spec:config-keys -->` (== cas.store.config.SCHEMA keys and defaults). Finally, every
64-hex id written anywhere in spec/ must have been checked by one of the above.

Tools: the console blocks use b3sum, zstd and xxd. Where one is not installed, a
small stand-in built on the same libraries as cas (blake3, zstandard) is put on PATH,
so the sessions always run.
"""

from __future__ import annotations

import ast
import builtins
import importlib
import inspect
import os
import re
import shlex
import shutil
import stat
import subprocess
import sys
import textwrap
from dataclasses import dataclass, field
from pathlib import Path

import blake3
import pytest

from cas.store import config as config_mod
from cas.store import zstdframe as codec
from cas.core import errors
from cas.objects import pointer
from cas.workspace import project
from cas.workspace import statcache
from cas.store import objectstore as store
from cas.workspace import tracking
from cas.objects import tree
from cas.store import writer

SPEC = Path(__file__).resolve().parents[2] / "spec"
PAGES = ["README.md", "store.md", "objects.md", "pointer.md", "statcache.md", "checkout.md"]
FORMAT_PAGES = PAGES[1:]
REQUIRED_SECTIONS = ["Terminology", "Synopsis", "Layout", "Invalid values", "Worked example",
                     "Changes"]
ID_RE = re.compile(r"\b[0-9a-f]{64}\b")


@pytest.fixture(autouse=True)
def tiny_thresholds() -> None:
    """Override conftest's: the spec states the code's real constants, unshrunk."""


# -- parsing ------------------------------------------------------------------------------

@dataclass
class Block:
    page: str
    line: int  # 1-based line of the opening fence
    lang: str
    kind: str  # the spec: word without "spec:", "console", or ""
    args: dict[str, str]
    text: str  # the content, each line ending in "\n"

    @property
    def where(self) -> str:
        return f"spec/{self.page}:{self.line}"


def _blocks(page: str) -> list[Block]:
    out = []
    lines = (SPEC / page).read_text("utf-8").splitlines()
    i = 0
    while i < len(lines):
        m = re.match(r"^(`{3,})(.*)$", lines[i])
        if not m:
            i += 1
            continue
        fence, info = m.group(1), m.group(2).split()
        start = i
        i += 1
        body = []
        while i < len(lines) and lines[i].rstrip() != fence:
            body.append(lines[i])
            i += 1
        i += 1
        lang = info[0] if info else ""
        kind = "console" if lang == "console" else ""
        args = {}
        for word in info[1:]:
            if word.startswith("spec:"):
                kind = word[5:]
            elif "=" in word:
                k, _, v = word.partition("=")
                args[k] = v
        out.append(Block(page, start + 1, lang, kind, args, "".join(x + "\n" for x in body)))
    return out


ALL_BLOCKS = [b for p in PAGES for b in _blocks(p)]


def _of(kind: str) -> list[Block]:
    return [b for b in ALL_BLOCKS if b.kind == kind]


def _ids(blocks: list[Block]) -> list[str]:
    return [b.where for b in blocks]


def _hex(text: str) -> bytes:
    return bytes.fromhex("".join(text.split()))


def _h(data: bytes) -> str:
    return blake3.blake3(data).hexdigest()


def _table_after(page: str, marker: str) -> list[list[str]]:
    """The rows (cells stripped, header and rule dropped) of the table after `marker`."""
    text = (SPEC / page).read_text("utf-8")
    assert marker in text, f"spec/{page} has no {marker}"
    rows = []
    for line in text.split(marker, 1)[1].lstrip("\n").splitlines():
        if not line.startswith("|"):
            break
        rows.append([c.strip() for c in line.strip().strip("|").split("|")])
    assert len(rows) > 2, f"spec/{page}: no table after {marker}"
    return rows[2:]


def _unquote(cell: str) -> str:
    return cell.strip("`")


# -- the pages themselves -----------------------------------------------------------------

def test_every_page_exists_and_readme_indexes_it() -> None:
    readme = (SPEC / "README.md").read_text("utf-8")
    for page in FORMAT_PAGES:
        assert (SPEC / page).is_file()
        assert f"]({page})" in readme, f"README.md does not link {page}"
    # Pages owned by later layers are linked too (each has its own checked test).
    for page in ("experiments.md", "promote.md", "queue.md", "live.md", "gc.md"):
        assert (SPEC / page).is_file() and f"]({page})" in readme, f"README.md does not link {page}"


@pytest.mark.parametrize("page", FORMAT_PAGES)
def test_page_has_the_required_sections(page: str) -> None:
    headings = re.findall(r"^## (.+)$", (SPEC / page).read_text("utf-8"), flags=re.M)
    for section in REQUIRED_SECTIONS:
        assert any(h == section or h.startswith(section + ":") for h in headings), \
            f"spec/{page} lacks a '## {section}' section (has {headings})"
    assert any(b.kind == "console" for b in ALL_BLOCKS if b.page == page), \
        f"spec/{page} has no console worked example"


# -- structured examples -----------------------------------------------------------------

@pytest.mark.parametrize("b", _of("blob"), ids=_ids(_of("blob")))
def test_blob(b: Block) -> None:
    assert _h(_hex(b.text)) == b.args["oid"], b.where


@pytest.mark.parametrize("b", _of("tree"), ids=_ids(_of("tree")))
def test_tree(b: Block) -> None:
    data = _hex(b.text)
    assert _h(data) == b.args["oid"], b.where
    t = tree.decode(data)
    assert tree.encode(t) == data, f"{b.where}: re-encoding gives other bytes"
    # make() from the entries in any order gives the same canonical tree.
    sub = {e.name: 0 for e in t.entries if e.kind == tree.DIR}
    files = t.total_files - sum(1 for e in t.entries if e.kind == tree.FILE)
    if sub:
        sub[next(iter(sub))] = files
    again = tree.make(list(reversed(t.entries)), subtree_files=sub)
    assert tree.encode(again) == data, f"{b.where}: tree.make does not reproduce it"


@pytest.mark.parametrize("b", _of("annotated"), ids=_ids(_of("annotated")))
def test_annotated_dump(b: Block) -> None:
    parts = []
    for line in b.text.splitlines():
        if not line.strip():
            continue
        hexpart = re.split(r"\s{2,}", line.strip(), maxsplit=1)[0]
        assert re.fullmatch(r"[0-9a-f]{2}( ?[0-9a-f]{2})*", hexpart), f"{b.where}: {line!r}"
        parts.append(hexpart)
    data = _hex(" ".join(parts))
    assert _h(data) == b.args["oid"], f"{b.where}: the annotated bytes do not hash to the id"
    assert tree.encode(tree.decode(data)) == data
    twins = [t for t in _of("tree") if t.args["oid"] == b.args["oid"]]
    assert twins and all(_hex(t.text) == data for t in twins), \
        f"{b.where}: no plain spec:tree block with the same bytes"


@pytest.mark.parametrize("b", _of("tree-invalid"), ids=_ids(_of("tree-invalid")))
def test_invalid_trees_are_format_errors(b: Block) -> None:
    lines = [x for x in b.text.splitlines() if x.strip()]
    assert lines
    for line in lines:
        with pytest.raises(errors.FormatError):
            tree.decode(_hex(line))


@pytest.mark.parametrize("b", _of("zst"), ids=_ids(_of("zst")))
def test_zstd_frame(b: Block) -> None:
    frame = _hex(b.text)
    content = codec.decompress(b.args["oid"], frame, max_size=None)
    assert _h(content) == b.args["oid"], b.where


@pytest.mark.parametrize("b", _of("pointer"), ids=_ids(_of("pointer")))
def test_pointer(b: Block) -> None:
    a = b.args
    data = b.text.encode("utf-8")
    for variant in (data, data.replace(b"\n", b"\r\n")):
        p = pointer.decode(variant, path=a["path"])
        assert (p.path, p.oid, p.is_dir, p.size, p.files) == \
            (a["path"], a["oid"], a["kind"] == "dir", int(a["size"]), int(a["files"])), b.where
        assert p.mode == int(a["mode"], 8), b.where
    if a.get("canonical", "yes") != "no":
        assert p.encode() == data, f"{b.where}: the writer writes other bytes"


@pytest.mark.parametrize("b", _of("pointer-invalid"), ids=_ids(_of("pointer-invalid")))
def test_invalid_pointer_is_a_usage_error(b: Block) -> None:
    with pytest.raises(errors.UsageError):
        pointer.decode(b.text.encode("utf-8"), path="x")


@pytest.mark.parametrize("b", _of("object-paths"), ids=_ids(_of("object-paths")))
def test_object_paths(b: Block) -> None:
    fs = store.FileStore(Path(".tally"))
    raw, zst = b.text.split()
    assert raw == fs.raw_path(b.args["oid"]), b.where
    assert zst == fs.zst_path(b.args["oid"]), b.where


@pytest.mark.parametrize("b", _of("constants"), ids=_ids(_of("constants")))
def test_constants(b: Block) -> None:
    for line in b.text.splitlines():
        code = line.split("  #", 1)[0].strip()
        if not code:
            continue
        name, _, literal = code.partition(" = ")
        module, _, attr = name.rpartition(".")
        actual = getattr(importlib.import_module(f"cas.{module}"), attr)
        assert actual == ast.literal_eval(literal), f"{b.where}: {name} is {actual!r} in the code"


@pytest.mark.parametrize("b", _of("schema"), ids=_ids(_of("schema")))
def test_statcache_schema(b: Block) -> None:
    assert " ".join(b.text.split()) == " ".join(statcache.SCHEMA.split()), b.where


def test_errors_table_matches_errors_py() -> None:
    rows = _table_after("README.md", "<!-- spec:errors -->")
    listed = set()
    for name, parent, code, _ in rows:
        name, parent = _unquote(name), _unquote(parent)
        cls = getattr(errors, name, None)
        assert inspect.isclass(cls) and issubclass(cls, errors.TallyError), name
        assert (cls.__bases__[0].__name__ if cls is not errors.TallyError else "") == parent, \
            f"{name}: parent is {cls.__bases__[0].__name__} in cas/core/errors.py"
        assert cls.exit_code == int(code), f"{name}: exit code is {cls.exit_code} in cas/core/errors.py"
        listed.add(name)
    defined = {n for n, c in vars(errors).items()
               if inspect.isclass(c) and issubclass(c, errors.TallyError)}
    assert listed == defined, f"classes not in the table: {defined - listed}; gone: {listed - defined}"


def test_every_error_named_in_the_spec_exists_with_its_exit_code() -> None:
    for page in PAGES:
        text = (SPEC / page).read_text("utf-8")
        for name, code in re.findall(r"`([A-Z][A-Za-z]+)` \(exit (\d+)\)", text):
            cls = getattr(errors, name, None)
            assert cls is not None, f"spec/{page} names {name}, which cas/core/errors.py lacks"
            assert cls.exit_code == int(code), f"spec/{page}: {name} exits {cls.exit_code}, not {code}"
        for name in set(re.findall(r"`([A-Z][A-Za-z]+(?:Error|Missing|Busy|Overwrite))`", text)):
            if hasattr(builtins, name):
                continue  # Python's own (TypeError, MemoryError, ...), named in notes
            cls = getattr(errors, name, None)
            assert inspect.isclass(cls) and issubclass(cls, errors.TallyError), \
                f"spec/{page} names `{name}`, which is not an error class of cas/core/errors.py"


def test_config_keys_table_matches_schema() -> None:
    rows = _table_after("store.md", "<!-- spec:config-keys -->")
    documented = {}
    for key, _values, default, _ in rows:
        documented[_unquote(key)] = "" if default == "(empty)" else _unquote(default)
    assert set(documented) == set(config_mod.SCHEMA), \
        f"undocumented: {set(config_mod.SCHEMA) - set(documented)}; " \
        f"not in the code: {set(documented) - set(config_mod.SCHEMA)}"
    for key, default in documented.items():
        assert str(config_mod.SCHEMA[key][1]) == default, f"{key}: default {config_mod.SCHEMA[key][1]!r}"


# -- console sessions ---------------------------------------------------------------------

_SHIMS = {
    "b3sum": """
        import sys, blake3
        for a in sys.argv[1:] or ["-"]:
            data = sys.stdin.buffer.read() if a == "-" else open(a, "rb").read()
            print(f"{blake3.blake3(data).hexdigest()}  {a}")
    """,
    "zstd": """
        import sys, zstandard
        files = [a for a in sys.argv[1:] if not a.startswith("-")]
        src = open(files[0], "rb") if files else sys.stdin.buffer
        reader = zstandard.ZstdDecompressor().stream_reader(src)
        while chunk := reader.read(1 << 20):
            sys.stdout.buffer.write(chunk)
    """,
    "xxd": """
        import sys
        if "-r" in sys.argv:
            sys.stdout.buffer.write(bytes.fromhex("".join(sys.stdin.read().split())))
        else:
            h = sys.stdin.buffer.read().hex()
            for i in range(0, len(h), 60):
                print(h[i:i + 60])
    """,
}


def _shim_dir(base: Path) -> Path:
    d = base / "bin"
    d.mkdir(exist_ok=True)
    py = d / "python3"
    py.write_text(f"#!/bin/sh\nexec {shlex.quote(sys.executable)} \"$@\"\n")
    py.chmod(0o755)
    for name, body in _SHIMS.items():
        if shutil.which(name) is None:
            f = d / name
            f.write_text(f"#!{sys.executable}\n" + textwrap.dedent(body))
            f.chmod(0o755)
    return d


def _tally(argv: list[str], cwd: Path) -> int:
    """Run a `tally` command of the pages through the library; return its exit status."""
    cmd, args = argv[0], argv[1:]
    p = None
    try:
        if cmd == "init":
            project.init_project(cwd)
            return 0
        p = project.open_project(cwd)
        if cmd == "add":
            tracking.add(p, args, cwd=cwd)
        elif cmd == "checkout":
            force = "--force" in args
            paths = [a for a in args if a != "--force"]
            tracking.checkout(p, paths or None, force=force, cwd=cwd)
        elif cmd == "config":
            config_mod.set_value(p.store_dir / "config", args[0], args[1])
        elif cmd == "unprotect":
            tracking.unprotect(p, args, cwd=cwd)
        else:
            raise AssertionError(f"the spec test does not know `tally {cmd}`")
        return 0
    except errors.TallyError as exc:
        return exc.exit_code
    finally:
        if p is not None and "statcache" in vars(p):
            p.statcache.close()


@dataclass
class Session:
    workdir: Path
    checked_ids: set[str] = field(default_factory=set)


def _parse_console(b: Block) -> list[tuple[str, list[str]]]:
    steps: list[tuple[str, list[str]]] = []
    for line in b.text.splitlines():
        if line.startswith("$ "):
            steps.append((line[2:], []))
        else:
            assert steps, f"{b.where}: output before the first command"
            steps[-1][1].append(line)
    return steps


def _run_page(page: str, base: Path) -> Session:
    workdir = base / "project"
    workdir.mkdir()
    env = dict(os.environ)
    env.update(PATH=f"{_shim_dir(base)}{os.pathsep}{env.get('PATH', '')}", LC_ALL="C",
               HOME=str(base), GIT_CONFIG_NOSYSTEM="1", GIT_CONFIG_GLOBAL=os.devnull)
    session = Session(workdir)
    old_umask = os.umask(0o022)
    try:
        for b in (x for x in ALL_BLOCKS if x.page == page and x.kind == "console"):
            for cmd, expected in _parse_console(b):
                want_rc = 0
                if expected and re.fullmatch(r"\[exit \d+\]", expected[-1]):
                    want_rc = int(expected.pop()[6:-1])
                if cmd.startswith("tally "):
                    rc = _tally(shlex.split(cmd)[1:], workdir)
                    out, err = "", ""
                else:
                    r = subprocess.run(["bash", "-c", cmd], cwd=workdir, env=env,
                                       capture_output=True, text=True)
                    rc, out, err = r.returncode, r.stdout, r.stderr
                assert rc == want_rc, f"{b.where}: `{cmd}` exited {rc}, not {want_rc}\n{err}"
                want = "".join(x + "\n" for x in expected)
                assert out == want, f"{b.where}: `{cmd}` printed\n{out}\nnot\n{want}\n{err}"
                session.checked_ids.update(ID_RE.findall(want))
    finally:
        os.umask(old_umask)
    return session


_sessions: dict[str, Session] = {}


@pytest.fixture
def session_of(tmp_path_factory: pytest.TempPathFactory):
    def get(page: str) -> Session:
        if page not in _sessions:
            _sessions[page] = _run_page(page, tmp_path_factory.mktemp(page.replace(".", "-")))
        return _sessions[page]
    return get


CONSOLE_PAGES = sorted({b.page for b in _of("console")})


@pytest.mark.parametrize("page", CONSOLE_PAGES)
def test_console_session(page: str, session_of) -> None:
    session_of(page)


# -- layout of .tally/ --------------------------------------------------------------------

@dataclass
class Node:
    name: str
    note: str
    children: list["Node"] = field(default_factory=list)

    def matches(self, actual: str, is_dir: bool) -> bool:
        if self.name.startswith("<other>"):
            return True  # a directory's contents that belong to someone else
        if self.name.endswith("/") != is_dir:
            return False
        pattern = re.escape(self.name.rstrip("/"))
        pattern = re.sub(r"<[^>]*>", "[^/]+", pattern.replace(r"\<", "<").replace(r"\>", ">"))
        return re.fullmatch(pattern, actual) is not None

    @property
    def optional(self) -> bool:
        return "<" in self.name or any(w in self.note for w in ("(transient)", "(on demand)", "(planned"))


def _parse_layout(text: str) -> Node:
    lines = [x for x in text.splitlines() if x.strip()]
    root = Node(lines[0].split()[0], "")
    stack = [(0, root)]
    for line in lines[1:]:
        col = next(i for i, ch in enumerate(line) if ch not in "│├└─ \u00a0")
        depth = col // 4
        parts = re.split(r"\s{2,}", line[col:].rstrip(), maxsplit=1)
        node = Node(parts[0], parts[1] if len(parts) > 1 else "")
        while stack[-1][0] >= depth:
            stack.pop()
        stack[-1][1].children.append(node)
        stack.append((depth, node))
    return root


def _check_tree(node: Node, path: Path, problems: list[str]) -> None:
    for child in node.children:
        if not child.optional:
            p = path / child.name.rstrip("/")
            if not (p.is_dir() if child.name.endswith("/") else p.is_file()):
                problems.append(f"documented {p} does not exist")
    if not node.children:
        return  # contents not specified here (e.g. refs/, planned)
    for ent in sorted(os.scandir(path), key=lambda e: e.name):
        is_dir = ent.is_dir(follow_symlinks=False)
        match = next((c for c in node.children if c.matches(ent.name, is_dir)), None)
        if match is None:
            problems.append(f"{ent.path} is not in the documented layout")
        elif is_dir:
            _check_tree(match, Path(ent.path), problems)


@pytest.mark.parametrize("b", _of("layout"), ids=_ids(_of("layout")))
def test_layout_matches_a_real_store(b: Block, session_of) -> None:
    session = session_of(b.page)
    root = _parse_layout(b.text)
    assert root.name == ".tally/"
    store_dir = session.workdir / ".tally"
    assert store_dir.is_dir(), f"{b.where}: the page's session made no store"
    # init's own directories are all documented, objects in both forms are in place.
    problems: list[str] = []
    _check_tree(root, store_dir, problems)
    assert not problems, f"{b.where}:\n" + "\n".join(problems)
    names = {c.name for c in root.children}
    for d in ("objects/", "tmp/", "locks/", "refs/"):
        assert d in names
    p = project.open_project(session.workdir)
    assert Path(p.statcache.db_path).name in names
    assert os.path.relpath(p.store.tmp, session.workdir) == ".tally/tmp"
    objs = list(p.store.iter_oids())
    assert objs and all(stat.S_IMODE(os.stat(p.store.info(o).path).st_mode) == writer.OBJECT_MODE
                        for o in objs)


# -- every id in spec/ is one that a check above vouched for ------------------------------

def test_every_id_in_the_spec_is_checked(session_of) -> None:
    checked: set[str] = set()
    for kind in ("blob", "tree", "annotated", "zst", "pointer", "object-paths"):
        checked.update(b.args["oid"] for b in _of(kind))
    for page in CONSOLE_PAGES:
        checked |= session_of(page).checked_ids
    for page in PAGES:
        text = (SPEC / page).read_text("utf-8")
        unchecked = sorted(set(ID_RE.findall(text)) - checked)
        assert not unchecked, f"spec/{page} shows ids no example checks: {unchecked}"
