"""The two CLIs under test behind one adapter, and the projects they run in.

Each tool gets the same treatment: an absolute executable path (no PATH lookup in the
timed region), the same isolated environment (HOME, XDG dirs and DVC's site cache
under the bench work dir, so no user config or leftover index helps either tool), and
a fresh ``git init``-ed project per repetition, copied from a template that was
initialised and configured once per (tool, mode) outside any timing.

The tally commands follow the CLI contract of issue 3: ``tally init``,
``tally add PATH...``, ``tally status``, ``tally checkout [PATH...]``,
``tally config KEY VALUE``, ``tally --version``. The DVC ones are their documented
equivalents. Experiment commands live in ``experiments``.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from bench.measure import CommandFailed, run_quiet

REPO = Path(__file__).resolve().parent.parent
# A link mode's value in each tool's config (both tools use the same words).
MODES = ("copy", "hardlink", "reflink")
DEFAULT_MODE = "default"  # each tool's own default (both: "reflink,copy")
RM_ATTEMPTS = 6  # remove_tree retries, sleeping 1, 2, ... 6 s (21 s in all)


@dataclass(frozen=True)
class Tool:
    """One CLI under test.

    Attributes:
        name: "tally" or "dvc".
        exe: absolute path of the executable (None when missing).
        version: its ``--version`` output (None when missing).
        missing: why it cannot run ("not built yet", "install failed: ..."), or None.
        pointer_suffix: extension of the pointer file ``add`` writes.
        env: the complete environment every command of this tool runs with.
    """

    name: str
    exe: Path | None
    version: str | None
    missing: str | None
    pointer_suffix: str
    env: dict[str, str]

    def argv(self, *args: str) -> list[str]:
        """The command line running this tool with ``args``."""
        assert self.exe is not None, f"{self.name} is not available: {self.missing}"
        return [str(self.exe), *args]

    def add(self, paths: list[str]) -> list[str]:
        return self.argv("add", *([] if self.name == "tally" else ["-q"]), *paths)

    def status(self) -> list[str]:
        return self.argv("status")

    def checkout(self) -> list[str]:
        return self.argv("checkout")

    def has_command(self, *words: str) -> bool:
        """True when ``<tool> WORDS... --help`` exits 0 (a feature has landed)."""
        if self.exe is None:
            return False
        done = subprocess.run(self.argv(*words, "--help"), env=self.env,
                              capture_output=True, timeout=120)
        return done.returncode == 0


def bench_env(work: Path) -> dict[str, str]:
    """The isolated environment shared by both tools (and by git during setup)."""
    home = work / "home"
    (home / ".config").mkdir(parents=True, exist_ok=True)
    return {
        # a standard PATH, not ours: an activated venv must not leak into either tool
        "PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        "HOME": str(home),
        "XDG_CONFIG_HOME": str(home / ".config"),
        "XDG_CACHE_HOME": str(home / ".cache"),
        "LANG": "C.UTF-8",
        "LC_ALL": "C.UTF-8",
        "TMPDIR": str(work / "tmp"),
        "GIT_CONFIG_NOSYSTEM": "1",
        "GIT_AUTHOR_NAME": "bench", "GIT_AUTHOR_EMAIL": "bench@localhost",
        "GIT_COMMITTER_NAME": "bench", "GIT_COMMITTER_EMAIL": "bench@localhost",
        # DVC: no analytics, no updater, and its per-repo site cache (index, links db)
        # inside the work dir, so a fresh project never finds an old one
        "DVC_NO_ANALYTICS": "1",
        "DVC_SITE_CACHE_DIR": str(work / "dvc-site-cache"),
        "DVC_IGNORE_ISATTY": "true",
    }


def find_tally(env: dict[str, str]) -> Tool:
    """The tally CLI of this checkout (``$TALLY_BIN`` or ``.venv/bin/tally``).

    Returns a Tool whose ``missing`` is "not built yet" when the executable is absent
    or ``tally --version`` fails.
    """
    exe = Path(os.environ.get("TALLY_BIN", REPO / ".venv" / "bin" / "tally"))
    version, missing = None, None
    if not exe.exists():
        missing = "not built yet"
    else:
        done = subprocess.run([str(exe), "--version"], env=env, capture_output=True,
                              timeout=120)
        if done.returncode != 0:
            missing = "not built yet"
        else:
            version = done.stdout.decode(errors="replace").strip()
    return Tool(name="tally", exe=None if missing else exe, version=version,
                missing=missing, pointer_suffix=".tally", env=_with_bin(env, exe.parent))


def dvc_tool(env: dict[str, str], exe: Path | None, version: str | None,
             missing: str | None) -> Tool:
    """The DVC Tool (from ``dvc_env.ensure_dvc``, or missing with the reason)."""
    return Tool(name="dvc", exe=exe, version=version, missing=missing,
                pointer_suffix=".dvc", env=_with_bin(env, exe.parent) if exe else env)


def _with_bin(env: dict[str, str], bindir: Path) -> dict[str, str]:
    """``env`` with ``bindir`` first on PATH: DVC's queue workers spawn ``dvc`` by name."""
    return {**env, "PATH": f"{bindir}{os.pathsep}{env['PATH']}"}


def git_version() -> str:
    done = subprocess.run(["git", "--version"], capture_output=True, text=True)
    return done.stdout.strip()


def _config_steps(tool: Tool, mode: str) -> list[list[str]]:
    steps = [tool.argv("init", *(["-q"] if tool.name == "dvc" else []))]
    if tool.name == "dvc":
        for key in ("core.analytics", "core.autostage", "core.check_update"):
            steps.append(tool.argv("config", key, "false"))
    if mode != DEFAULT_MODE:
        steps.append(tool.argv("config", "cache.type", mode))
    return steps


class Templates:
    """Initialised, configured, empty projects, one per (tool, mode), made once per run.

    A project for a repetition is a ``cp -a`` of its template: a few milliseconds,
    where ``dvc init`` plus four ``dvc config`` calls cost about 2.5 s.
    """

    def __init__(self, root: Path):
        self.root = root
        self._made: dict[tuple[str, str], Path] = {}

    def template(self, tool: Tool, mode: str) -> Path:
        """The template directory for (tool, mode), creating it on first use.

        Raises:
            CommandFailed: git or the tool's init/config failed.
        """
        key = (tool.name, mode)
        if key in self._made:
            return self._made[key]
        path = self.root / f"{tool.name}-{mode}"
        if path.exists():
            shutil.rmtree(path)
        path.mkdir(parents=True)
        run_quiet(["git", "init", "-q", "-b", "main"], cwd=path, env=tool.env)
        for argv in _config_steps(tool, mode):
            run_quiet(argv, cwd=path, env=tool.env)
        # a first commit: experiments need a baseline, and DVC's status and tally's
        # git linkage both see an ordinary repository, not an unborn branch
        run_quiet(["git", "add", "-A"], cwd=path, env=tool.env)
        run_quiet(["git", "commit", "-q", "--allow-empty", "-m", "bench: init"],
                  cwd=path, env=tool.env)
        self._made[key] = path
        return path

    def project(self, tool: Tool, mode: str, dest: Path) -> Path:
        """A fresh project at ``dest`` (removed first if present), copied from the template.

        Raises:
            CommandFailed: the template could not be made or copied.
        """
        src = self.template(tool, mode)
        if dest.exists():
            remove_tree(dest)
        dest.parent.mkdir(parents=True, exist_ok=True)
        run_quiet(["cp", "-a", str(src), str(dest)], cwd=dest.parent, env=tool.env)
        return dest


def remove_tree(path: Path) -> None:
    """rm -rf, also through read-only files and directories a link mode left behind."""
    if not path.exists() and not path.is_symlink():
        return
    # `rm -rf` as root ignores permissions; as a user, read-only *directories* would
    # block it, so make directories writable first (cheap: one chmod per directory)
    if os.geteuid() != 0:
        subprocess.run(["chmod", "-R", "u+w", str(path)], check=False)
    # a straggler (DVC's queue worker winding down) may still be writing in there:
    # "Directory not empty" then; try again for a while before giving up
    for attempt in range(RM_ATTEMPTS):
        if subprocess.run(["rm", "-rf", str(path)], stderr=subprocess.DEVNULL).returncode == 0:
            return
        time.sleep(1 + attempt)
    subprocess.run(["rm", "-rf", str(path)], check=True)


__all__ = ["CommandFailed", "DEFAULT_MODE", "MODES", "Templates", "Tool", "bench_env",
           "dvc_tool", "find_tally", "git_version", "remove_tree"]
