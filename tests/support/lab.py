"""Builders shared by tests (from the former tests/test_books.py)."""

from __future__ import annotations

from __future__ import annotations
import os
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Any
from cas.workspace import git
from cas.objects import pointer
from cas.objects import record
from cas.store import refs
from cas.workspace import snapshot as workspace
from cas.workspace.project import Project, open_project


T0 = 1_700_000_000 * 10**9  # a fixed creation time (ns), so order is deterministic


def sh(root: Path, *args: str) -> str:
    return subprocess.run(["git", *args], cwd=root, check=True, capture_output=True).stdout.decode()


class Exe(bytes):
    """File content to be written executable."""


class Lab:
    """A Git repository with a tally store, and a way to record experiments in it."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self._n = 0

    @property
    def project(self) -> Project:
        return open_project(self.root)

    def write(self, files: dict[str, bytes | str | None]) -> None:
        for rel, data in files.items():
            p = self.root / rel
            if data is None:
                if p.is_dir():
                    shutil.rmtree(p)
                elif os.path.lexists(p):
                    p.unlink()
                continue
            p.parent.mkdir(parents=True, exist_ok=True)
            p.write_bytes(data.encode() if isinstance(data, str) else bytes(data))
            p.chmod(0o755 if isinstance(data, Exe) else 0o644)

    def commit(self, message: str = "c") -> str:
        sh(self.root, "add", "-A")
        sh(self.root, "commit", "-q", "--allow-empty", "-m", message)
        return sh(self.root, "rev-parse", "HEAD").strip()

    def head(self) -> str:
        return sh(self.root, "rev-parse", "HEAD").strip()

    def snapshot(self, changes: dict[str, Any] | None = None, outs: dict[str, Any] | None = None) -> str:
        """The workspace tree of (the current workspace + `changes` + `outs`), stored."""
        project = self.project
        tmp = Path(tempfile.mkdtemp(prefix="ws-", dir=self.root.parent))
        try:
            for rel in git.list_workspace_files(self.root):
                if rel.startswith(".tally/"):
                    continue
                (tmp / rel).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(self.root / rel, tmp / rel, follow_symlinks=False)
            for rel in pointer.find_all(self.root):
                if (self.root / rel).is_dir():
                    shutil.copytree(self.root / rel, tmp / rel, dirs_exist_ok=True)
                elif (self.root / rel).exists():
                    shutil.copy2(self.root / rel, tmp / rel)
            for rel, data in {**(changes or {}), **(outs or {})}.items():
                p = tmp / rel
                if data is None:
                    shutil.rmtree(p) if p.is_dir() else p.unlink()
                    continue
                if isinstance(data, dict):  # a directory output: {name: content}
                    for sub, content in data.items():
                        (p / sub).parent.mkdir(parents=True, exist_ok=True)
                        (p / sub).write_bytes(content)
                    continue
                p.parent.mkdir(parents=True, exist_ok=True)
                p.write_bytes(data.encode() if isinstance(data, str) else bytes(data))
                p.chmod(0o755 if isinstance(data, Exe) else 0o644)
            with project.store.writer() as w:
                snap = workspace.snapshot(tmp, statcache=project.statcache, writer=w)
            return snap.oid
        finally:
            shutil.rmtree(tmp)

    def exp(self, name: str, *, params: dict[str, Any] | None = None,
            metrics: dict[str, Any] | None = None, changes: dict[str, Any] | None = None,
            outs: dict[str, Any] | None = None, status: str = "success", created: int | None = None,
            baseline: str | None = None, deps: dict[str, str] | None = None,
            checkpoints: tuple[tuple[int, str], ...] = (), workspace_tree: bool = True,
            message: str = "") -> str:
        """Record an experiment; returns its record id."""
        project = self.project
        self._n += 1
        ws = self.snapshot(changes, outs) if workspace_tree else None
        out_ids = {}
        if outs:
            # The tree already holds them; their ids are read back from it.
            t = {}
            for rel in outs:
                t[rel] = tree_lookup(project, ws, rel)
            out_ids = t
        rec = record.Record(
            name=name, baseline=baseline or self.head(),
            created=created if created is not None else T0 + self._n * 10**9,
            status=status, workspace=ws, params=params or {}, metrics=metrics or {},
            deps=deps or {}, outs=out_ids, checkpoints=checkpoints, message=message,
            exit_code=0 if status == "success" else 1)
        with project.store.writer() as w:
            oid = record.put(w, rec)
        refs.update(project, rec.baseline, name, oid, None)
        return oid


def P(lr: float, epochs: int = 10, **more: Any) -> dict[str, Any]:
    return {"params.yaml": {"train": {"lr": lr, "epochs": epochs}, **more}}


def M(acc: float | None, loss: float | None = None) -> dict[str, Any]:
    m = {k: v for k, v in (("acc", acc), ("loss", loss)) if v is not None}
    return {"metrics.json": m}


def tree_lookup(project: Project, root_tree: str, rel: str) -> tuple[str, bool]:
    from cas.objects import tree
    node = root_tree
    parts = rel.split("/")
    for i, part in enumerate(parts):
        e = tree.decode(project.store.get(node)).get(part)
        assert e is not None, rel
        if i == len(parts) - 1:
            return e.oid, e.kind == tree.DIR
        node = e.oid
    raise AssertionError(rel)
