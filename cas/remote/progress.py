"""Transfer progress: counters updated from many threads, reported through a callback.

The library never prints. A transfer takes a `Meter` and bumps it as objects and
bytes are done; the meter calls its callback with a `Snapshot` at most every
`interval` seconds (and once at the end), and `line()` renders one for a terminal:

    push origin: 12,345/50,000 objects, 31.2/125.0 MiB, 48.1 MiB/s, ETA 2s
"""

from __future__ import annotations

import sys
import threading
import time
from typing import Callable, NamedTuple, TextIO

INTERVAL_S = 0.2  # seconds between two callbacks


class Snapshot(NamedTuple):
    label: str
    objects: int
    objects_total: int
    bytes: int
    bytes_total: int
    elapsed: float  # seconds
    done: bool

    @property
    def rate(self) -> float:
        """Bytes per second so far."""
        return self.bytes / self.elapsed if self.elapsed > 0 else 0.0

    @property
    def eta(self) -> float | None:
        """Seconds left at the current rate, None when unknown."""
        if self.done:
            return 0.0
        left = self.bytes_total - self.bytes
        if self.bytes <= 0 or left < 0:
            return None
        return left / self.rate if self.rate else None

    def to_json(self) -> dict[str, object]:
        return {"label": self.label, "objects": self.objects, "objects_total": self.objects_total,
                "bytes": self.bytes, "bytes_total": self.bytes_total,
                "seconds": round(self.elapsed, 3), "done": self.done}

    def line(self) -> str:
        mib = 1024 * 1024
        eta = self.eta
        eta_s = "done" if self.done else (f"ETA {eta:.0f}s" if eta is not None else "ETA ?")
        return (f"{self.label}: {self.objects:,}/{self.objects_total:,} objects, "
                f"{self.bytes / mib:.1f}/{self.bytes_total / mib:.1f} MiB, "
                f"{self.rate / mib:.1f} MiB/s, {eta_s}")


Callback = Callable[[Snapshot], None]


class Meter:
    """Thread-safe counters for one transfer."""

    def __init__(self, label: str, callback: Callback | None = None, *,
                 interval: float = INTERVAL_S) -> None:
        self.label = label
        self.callback = callback
        self.interval = interval
        self.objects_total = 0
        self.bytes_total = 0
        self.objects = 0
        self.bytes = 0
        self._t0 = time.monotonic()
        self._last = 0.0
        self._lock = threading.Lock()

    def plan(self, objects: int, nbytes: int) -> None:
        """Add work to the totals."""
        with self._lock:
            self.objects_total += objects
            self.bytes_total += nbytes
        self._maybe_report(force=True)

    def advance(self, objects: int = 0, nbytes: int = 0) -> None:
        with self._lock:
            self.objects += objects
            self.bytes += nbytes
        self._maybe_report()

    def snapshot(self, *, done: bool = False) -> Snapshot:
        with self._lock:
            return Snapshot(self.label, self.objects, self.objects_total, self.bytes,
                            self.bytes_total, time.monotonic() - self._t0, done)

    def finish(self) -> Snapshot:
        snap = self.snapshot(done=True)
        if self.callback is not None:
            self.callback(snap)
        return snap

    def _maybe_report(self, *, force: bool = False) -> None:
        if self.callback is None:
            return
        now = time.monotonic()
        if not force and now - self._last < self.interval:
            return
        self._last = now
        self.callback(self.snapshot())


def stderr_printer(stream: TextIO | None = None) -> Callback:
    """A callback that redraws one status line on a terminal (plain lines otherwise,
    only the last one)."""
    out = stream or sys.stderr
    tty = out.isatty()

    def show(snap: Snapshot) -> None:
        if tty:
            out.write("\r\033[K" + snap.line() + ("\n" if snap.done else ""))
            out.flush()
        elif snap.done:
            out.write(snap.line() + "\n")
    return show


__all__ = ["Meter", "Snapshot", "Callback", "stderr_printer"]
