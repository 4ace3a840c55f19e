"""DVC 3.67.1 in its own virtualenv (``bench/.dvc-venv``), installed once.

DVC is installed by version from the package index with ``pip``, never imported into
our process: it only ever runs as a child, exactly as a user runs it. The first run
creates the venv (a few minutes); later runs find the stamp file and reuse it. If the
install fails, the caller gets ``DvcUnavailable`` and benchmarks tally alone, saying
so in the table.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

DVC_VERSION = "3.67.1"  # the version DESIGN.md's "Numbers to beat" were measured with
VENV_DIR = Path(__file__).resolve().parent / ".dvc-venv"
INSTALL_TIMEOUT = 1800  # seconds; a cold wheel cache can take several minutes


class DvcUnavailable(Exception):
    """DVC could not be installed or does not run; the message says why."""


@dataclass(frozen=True)
class DvcEnv:
    """A usable DVC.

    Attributes:
        exe: absolute path of the ``dvc`` executable.
        version: what ``dvc --version`` printed.
        python: the venv's interpreter. Pipeline stages do not use it: they run the
            ``python3`` found on PATH, the same one for both tools.
    """

    exe: Path
    version: str
    python: Path


def _stamp(venv: Path) -> Path:
    return venv / f".installed-dvc-{DVC_VERSION}"


def ensure_dvc(venv: Path = VENV_DIR, *, log=None) -> DvcEnv:
    """Return a DVC of version DVC_VERSION, installing it into ``venv`` if needed.

    Args:
        venv: virtualenv directory (created when missing or broken).
        log: callable taking one progress line (default: print to stderr).

    Returns:
        The DvcEnv.

    Raises:
        DvcUnavailable: venv creation, pip install or ``dvc --version`` failed.
    """
    say = log or (lambda line: print(line, file=sys.stderr, flush=True))
    exe, python = venv / "bin" / "dvc", venv / "bin" / "python"
    if _stamp(venv).exists() and exe.exists():
        return DvcEnv(exe=exe, version=_version(exe), python=python)
    if exe.exists():  # installed by hand or by an older harness: verify, then stamp
        try:
            version = _version(exe)
        except DvcUnavailable:
            version = ""
        if version == DVC_VERSION:
            _check([str(python), "-m", "compileall", "-q", str(venv / "lib")],
                   "compileall")
            _stamp(venv).touch()
            return DvcEnv(exe=exe, version=version, python=python)
    say(f"bench: installing dvc=={DVC_VERSION} into {venv} (once; takes a few minutes)")
    if venv.exists():
        shutil.rmtree(venv)
    base = shutil.which("python3") or sys.executable
    _check([base, "-m", "venv", str(venv)], "python3 -m venv")
    _check([str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
            f"dvc=={DVC_VERSION}"], f"pip install dvc=={DVC_VERSION}")
    # byte-compile now, so no DVC start-up in the timed runs pays for compiling
    # (pip skips it when PYTHONDONTWRITEBYTECODE is set in the installing shell)
    _check([str(python), "-m", "compileall", "-q", str(venv / "lib")], "compileall")
    version = _version(exe)
    if version != DVC_VERSION:
        raise DvcUnavailable(f"installed dvc reports {version!r}, wanted {DVC_VERSION}")
    _stamp(venv).touch()  # last: an interrupted install is redone, never trusted
    return DvcEnv(exe=exe, version=version, python=python)


def _check(argv: list[str], what: str) -> None:
    try:
        done = subprocess.run(argv, capture_output=True, timeout=INSTALL_TIMEOUT)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise DvcUnavailable(f"{what} failed: {exc}") from exc
    if done.returncode != 0:
        err = done.stderr.decode(errors="replace").strip().splitlines()
        raise DvcUnavailable(f"{what} failed (exit {done.returncode}): "
                             + " / ".join(err[-3:]))


def _version(exe: Path) -> str:
    try:
        done = subprocess.run([str(exe), "--version"], capture_output=True, timeout=120,
                              env={"PATH": "/usr/bin:/bin", "DVC_NO_ANALYTICS": "1"})
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise DvcUnavailable(f"dvc --version failed: {exc}") from exc
    if done.returncode != 0:
        raise DvcUnavailable(f"dvc --version exited {done.returncode}")
    return done.stdout.decode().strip()
