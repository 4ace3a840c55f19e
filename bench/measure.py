"""One timed child process: wall seconds and peak RSS; page-cache control.

Wall seconds: ``perf_counter`` around spawn and a blocking ``os.wait4``.

Peak RSS: ``ru_maxrss`` of the child, read by GNU time (``/usr/bin/time -f %M``)
wrapped around the command, not by our own wait4. The reason is a kernel detail:
``ru_maxrss`` survives ``execve`` and is seeded with the resident set of the
process that forked (or, with vfork/posix_spawn as Python's subprocess uses, with
the *lifetime peak* of the parent). Measured from this harness, which once held a
256 MiB buffer for the BLAKE3 limit, every tool read 277 MiB. GNU time is a ~1 MiB
process that forks the tool itself, so the floor is ~1 MiB. The figure is the
largest resident set of the tool or any descendant it reaped (Linux wait4 reports
RUSAGE_BOTH of the zombie), in KiB; it is not the sum of concurrent descendants.
Without GNU time, RSS is reported as unknown rather than wrong. Spawning through
GNU time adds about 1 ms to every timed command, for both tools alike.
"""

from __future__ import annotations

import os
import signal
import statistics
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

DROP_CACHES = Path("/proc/sys/vm/drop_caches")
GNU_TIME = Path("/usr/bin/time")
_RSS_TAG = "BENCH-MAXRSS"
DEFAULT_TIMEOUT = 3600.0  # seconds; a hung tool must not hang the whole run
LONG_SECONDS = 120.0  # a cell whose first sample exceeds this is not repeated
_TAIL = 2000  # characters of stderr kept from a failed command


class CommandFailed(Exception):
    """A benchmarked or setup command exited non-zero or timed out.

    Attributes:
        argv: the command.
        code: exit code (None on timeout).
        tail: the end of its stderr (and stdout), for the report's notes.
    """

    def __init__(self, argv: list[str], code: int | None, tail: str):
        self.argv, self.code, self.tail = argv, code, tail
        what = "timed out" if code is None else f"exit {code}"
        super().__init__(f"{' '.join(argv)}: {what}\n{tail}")


@dataclass(frozen=True)
class Sample:
    """One measured execution.

    Attributes:
        seconds: wall-clock time from spawn to reap.
        maxrss_kib: peak resident set (child or reaped descendants), KiB; None
            when it cannot be measured (no GNU time).
    """

    seconds: float
    maxrss_kib: int | None


@dataclass
class Outcome:
    """All samples of one (row, mode, tool) cell, or why there are none.

    ``status`` is None when the cell was measured; otherwise a short reason shown in
    the table ("not built yet", "pending", "failed (exit 2)", "skipped: ...").
    """

    samples: list[Sample] = field(default_factory=list)
    status: str | None = None
    note: str | None = None  # long explanation for the notes under the table

    @property
    def measured(self) -> bool:
        return bool(self.samples) and self.status is None

    @property
    def median(self) -> float | None:
        return statistics.median(s.seconds for s in self.samples) if self.measured else None

    @property
    def peak_kib(self) -> int | None:
        rss = [s.maxrss_kib for s in self.samples if s.maxrss_kib is not None]
        return max(rss) if self.measured and rss else None


class Results:
    """Outcomes by cell: (row id, mode, tool name) -> Outcome."""

    def __init__(self) -> None:
        self.cells: dict[tuple[str, str, str], Outcome] = {}

    def cell(self, row: str, mode: str, tool: str) -> Outcome:
        """The cell's Outcome, created empty on first use."""
        return self.cells.setdefault((row, mode, tool), Outcome())

    def mark(self, row: str, mode: str, tool: str, status: str,
             note: str | None = None) -> None:
        """Give a cell a status (unless it already has one: the first reason wins)."""
        out = self.cell(row, mode, tool)
        if out.status is None:
            out.status, out.note = status, note

    def record(self, row: str, mode: str, tool: str, sample: Sample) -> None:
        self.cell(row, mode, tool).samples.append(sample)

    def fail(self, row: str, mode: str, tool: str, exc: "CommandFailed") -> None:
        """Mark a cell failed, keeping the command and the end of its output."""
        what = "timed out" if exc.code is None else f"failed (exit {exc.code})"
        self.mark(row, mode, tool, what, f"`{' '.join(exc.argv)}`: {exc.tail[-600:]}")

    def done(self, row: str, mode: str, tool: str, reps: int) -> bool:
        """True when the cell needs no more samples.

        That is: it has a status, or ``reps`` samples, or one sample longer than
        LONG_SECONDS (a cell that slow is not repeated: its median would cost many
        minutes for a ratio that one sample already makes plain).
        """
        out = self.cell(row, mode, tool)
        return (out.status is not None or len(out.samples) >= reps
                or any(s.seconds > LONG_SECONDS for s in out.samples))


def can_drop_caches() -> bool:
    """True when this process may write /proc/sys/vm/drop_caches (root, rw /proc)."""
    return os.access(DROP_CACHES, os.W_OK)


def drop_caches() -> None:
    """Flush dirty pages and drop the page, dentry and inode caches (needs root)."""
    os.sync()
    DROP_CACHES.write_text("3\n")


def run_timed(argv: list[str], *, cwd: Path, env: dict[str, str],
              timeout: float = DEFAULT_TIMEOUT, cold: bool = False) -> Sample:
    """Run ``argv`` to completion and measure it.

    stdout and stderr go to files in ``cwd``'s parent (never pipes, so a chatty tool
    cannot block on a full pipe and we do not time our own reading); their tail is
    kept only on failure.

    Args:
        argv: the command; argv[0] an absolute path, so PATH lookup is not timed.
        cwd: working directory (the project root).
        env: the complete environment of the child.
        timeout: seconds before the child's process group is killed.
        cold: drop the page cache first (callers check ``can_drop_caches``).

    Returns:
        The Sample.

    Raises:
        CommandFailed: non-zero exit or timeout.
    """
    log_out = cwd.parent / f".{cwd.name}.out"
    log_err = cwd.parent / f".{cwd.name}.err"
    log_rss = cwd.parent / f".{cwd.name}.rss"
    log_rss.unlink(missing_ok=True)
    spawn = argv
    if rss_supported():
        spawn = [str(GNU_TIME), "-q", "-f", f"{_RSS_TAG} %M", "-o", str(log_rss), *argv]
    # flush the previous step's dirty pages (the data copy, the other tool's cache)
    # outside the timed region, so write-back is billed to nobody's next command
    os.sync()
    if cold:
        drop_caches()
    with open(log_out, "wb") as out, open(log_err, "wb") as err:
        t0 = time.perf_counter()
        # own process group: on timeout we kill the tool and whatever it spawned
        proc = subprocess.Popen(spawn, cwd=cwd, env=env, stdin=subprocess.DEVNULL,
                                stdout=out, stderr=err, start_new_session=True)
        status = _wait(proc, timeout)
        seconds = time.perf_counter() - t0
    code = None if status is None else os.waitstatus_to_exitcode(status)
    if code != 0:
        tail = (_tail(log_err) + "\n" + _tail(log_out)).strip()
        raise CommandFailed(argv, code, tail)
    return Sample(seconds=seconds, maxrss_kib=_read_rss(log_rss))


def rss_supported() -> bool:
    """True when GNU time is there to measure the peak RSS of a command."""
    global _GNU_TIME_OK
    if _GNU_TIME_OK is None:
        try:
            done = subprocess.run([str(GNU_TIME), "--version"], capture_output=True,
                                  text=True)
            _GNU_TIME_OK = "GNU" in done.stdout + done.stderr
        except OSError:
            _GNU_TIME_OK = False
    return _GNU_TIME_OK


_GNU_TIME_OK: bool | None = None


def _read_rss(path: Path) -> int | None:
    try:
        for line in path.read_text().splitlines():
            if line.startswith(_RSS_TAG):
                return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        pass
    return None


def run_quiet(argv: list[str], *, cwd: Path, env: dict[str, str],
              timeout: float = DEFAULT_TIMEOUT) -> str:
    """Run an untimed setup command; return its stdout.

    Raises:
        CommandFailed: non-zero exit or timeout.
    """
    try:
        done = subprocess.run(argv, cwd=cwd, env=env, stdin=subprocess.DEVNULL,
                              capture_output=True, timeout=timeout)
    except subprocess.TimeoutExpired as exc:
        raise CommandFailed(argv, None, "") from exc
    if done.returncode != 0:
        tail = (done.stderr.decode(errors="replace") + done.stdout.decode(errors="replace"))
        raise CommandFailed(argv, done.returncode, tail[-_TAIL:])
    return done.stdout.decode(errors="replace")


def _wait(proc: subprocess.Popen, timeout: float):
    """wait4 the child with a deadline; return its wait status, None on timeout.

    A blocking wait4 returns the instant the child exits (polling with sleeps would
    add up to the sleep interval to every figure, 10% of a 0.1 s CLI start); a timer
    thread enforces the deadline by killing the child's process group.
    """
    fired = threading.Event()

    def kill() -> None:
        fired.set()
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass

    timer = threading.Timer(timeout, kill)
    timer.daemon = True
    timer.start()
    try:
        _, status, _ = os.wait4(proc.pid, 0)
    finally:
        timer.cancel()
    proc.returncode = os.waitstatus_to_exitcode(status)  # so Popen never waits again
    return None if fired.is_set() else status


def _tail(path: Path) -> str:
    try:
        return path.read_bytes()[-_TAIL:].decode(errors="replace")
    except OSError:
        return ""
