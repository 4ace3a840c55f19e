"""Helpers of the browser tier (tests/browser/): a `tally ui` server process, and where
screenshots go."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

SCREENSHOTS = os.environ.get("TALLY_SCREENSHOTS") == "1"  # read at import, before clean_env scrubs TALLY_*
DOCS_IMAGES = Path(__file__).resolve().parents[2] / "docs" / "images"


class Server:
    """A running `tally ui` process and the URL it printed."""

    def __init__(self, proc: subprocess.Popen, url: str) -> None:
        self.proc = proc
        self.url = url
        m = re.match(r"(http://[^/]+)/\?token=(\S+)", url)
        assert m, url
        self.base, self.token = m.group(1), m.group(2)

    def stop(self) -> int | None:
        """Ctrl-C, as a user stops it; the exit code (130), or None if it had to be killed."""
        self.proc.send_signal(signal.SIGINT)
        try:
            return self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)
            return None


def start_server(root: Path, env: dict[str, str]) -> Server:
    """`tally ui --no-browser` in `root`, as a user starts it; its URL read from stderr."""
    proc = subprocess.Popen([sys.executable, "-m", "cli", "ui", "--no-browser"], cwd=root, env=env,
                            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)
    deadline = time.time() + 30
    assert proc.stderr is not None
    while time.time() < deadline:
        line = proc.stderr.readline()
        if not line:
            if proc.poll() is not None:
                raise AssertionError(f"tally ui exited with {proc.returncode}")
            continue
        m = re.search(r"(http://\S+)", line)
        if m and "token=" in line:
            return Server(proc, m.group(1))
    proc.kill()
    raise AssertionError("tally ui printed no URL within 30 s")


def screenshot_path(tmp: Path, name: str) -> Path:
    if SCREENSHOTS:
        DOCS_IMAGES.mkdir(parents=True, exist_ok=True)
        return DOCS_IMAGES / name
    return tmp / name
