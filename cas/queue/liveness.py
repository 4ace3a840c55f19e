"""Is a queue worker alive? Pid, process start time, boot id and heartbeat rules.

A worker file (spec/queue.md, "Worker file") names the worker's pid, host, boot id
and process start time, and carries a heartbeat. On the same machine and boot the
kernel is asked (the pid exists and started when the file says, so a reused pid is
not mistaken for the worker); from another host only the heartbeat can tell.
"""

from __future__ import annotations

import os
import socket
import time
from pathlib import Path

from cas.queue.workerfile import WorkerInfo

HEARTBEAT = 1.0  # seconds between a worker's heartbeats
STALE_AFTER = 30.0  # seconds without a heartbeat before a worker on another host is dead

_BOOT_ID: str | None = None


def boot_id() -> str:
    """This machine's boot id (a reboot changes it), or '' where there is none."""
    global _BOOT_ID
    if _BOOT_ID is None:
        try:
            _BOOT_ID = Path("/proc/sys/kernel/random/boot_id").read_text().strip()
        except OSError:
            _BOOT_ID = ""
    return _BOOT_ID


def process_start(pid: int) -> str:
    """An opaque start time of process `pid` ('' if unknown), to tell pid reuse apart."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_bytes()
    except OSError:
        return ""
    # Field 22 (starttime) counts after the ")" closing the command name, which may
    # itself contain spaces or parentheses.
    fields = stat[stat.rfind(b")") + 2:].split()
    return fields[19].decode() if len(fields) > 19 else ""


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # exists, owned by someone else
    return True


def worker_alive(info: WorkerInfo | None, *, now: float | None = None) -> bool:
    """Is the worker described by `info` (its worker file) still running?

    Same host and boot: its pid exists and started when the worker file says (so a
    reused pid does not count). Another host, or no /proc: its heartbeat is younger
    than STALE_AFTER.
    """
    if not info:
        return False
    now = time.time() if now is None else now
    if info.host == socket.gethostname() and boot_id() and info.boot_id:
        if info.boot_id != boot_id():
            return False  # the machine rebooted since
        if info.pid is None or not pid_alive(info.pid):
            return False
        return not info.pstart or process_start(info.pid) in ("", info.pstart)
    return info.heartbeat is not None and now - info.heartbeat < STALE_AFTER



__all__ = ["HEARTBEAT", "STALE_AFTER", "boot_id", "process_start", "pid_alive", "worker_alive"]
