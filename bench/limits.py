"""What this machine can do: the floors each tool's figures are read against.

Every limit is measured here, in this run, on the same generated sets and the same
filesystem as the tools (warm page cache), with the cheapest Python-reachable
primitive, and reported as the best (minimum) of the repetitions: a limit is what
the machine *can* do, not what it usually does.

- ``blake3-mem``: BLAKE3 of an in-memory buffer, all cores (rate only).
- ``blake3-L``: BLAKE3 of L's files via mmap, all cores: the hashing floor of add L.
- ``copy-L`` / ``copy-S``: byte copies with ``os.sendfile`` (what ``shutil.copyfile``
  does on Linux). Not ``copy_file_range``: on XFS that silently becomes a reflink.
- ``reflink-L`` / ``reflink-S``: FICLONE clones (only where the filesystem has them).
- ``link-S``: ``mkdir`` each folder and ``os.link`` each file of S.
- ``stat-S``: ``os.scandir`` + ``os.lstat`` of every file of S (a no-op status floor).
- ``readhash-S``: open, read and BLAKE3 every file of S in one thread.
- ``spawn-true`` / ``spawn-python``: spawn-to-reap of ``/bin/true`` and of this venv's
  ``python -c pass`` (the floor of any Python CLI's start).

File creation is the noisy one. On the ext4 disk here, ``open(O_CREAT)`` costs ~5 us
in a tree that never saw deletions and 0.3-0.6 ms right after ``rm -rf`` of tens of
thousands of files and a sync, which is exactly what every repetition does before
the next project is set up. The copy limits are measured in that same regime, before
and after the tool runs (``best_of``), so they are comparable with the tools' figures
but vary from run to run.
"""

from __future__ import annotations

import fcntl
import os
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import blake3

from bench.tools import remove_tree

FICLONE = 0x40049409  # _IOW(0x94, 9, int) from linux/fs.h
SPAWN_REPS = 20  # spawns are milliseconds: more samples, same cost
MEM_BUFFER = 256 << 20  # bytes hashed in memory: big enough for every thread to work


@dataclass(frozen=True)
class Limit:
    """One measured limit.

    Attributes:
        key: stable id ("copy-L"); rows name their floors by it.
        what: one-line description for the table.
        seconds: best time for the whole set (None for a pure rate).
        nbytes: bytes processed (for a GB/s figure), 0 if not meaningful.
        nfiles: files processed (for a files/s figure), 0 if not meaningful.
    """

    key: str
    what: str
    seconds: float
    nbytes: int = 0
    nfiles: int = 0

    def rate(self) -> str:
        """Throughput as text: GB/s and/or files/s."""
        parts = []
        if self.nbytes:
            parts.append(f"{self.nbytes / self.seconds / 1e9:.2f} GB/s")
        if self.nfiles > 1:
            parts.append(f"{self.nfiles / self.seconds:,.0f} files/s")
        return ", ".join(parts)


def best_of(*measured: dict[str, Limit]) -> dict[str, Limit]:
    """Merge several ``measure`` results, keeping the fastest of each limit.

    Filesystem metadata speed here swings by 10x with other load on the machine
    (creating 50,000 files: 0.2 s one minute, 2.6 s the next), so the limits are
    measured before and after the tool runs and the best figure is the floor.
    """
    out: dict[str, Limit] = {}
    for m in measured:
        for key, lim in m.items():
            if key not in out or lim.seconds < out[key].seconds:
                out[key] = lim
    return out


def reflink_supported(directory: Path) -> bool:
    """Probe FICLONE in ``directory`` with two scratch files; True if the clone worked."""
    a, b = directory / ".reflink-probe-a", directory / ".reflink-probe-b"
    try:
        a.write_bytes(b"x" * 4096)
        with open(a, "rb") as src, open(b, "wb") as dst:
            fcntl.ioctl(dst.fileno(), FICLONE, src.fileno())
        return True
    except OSError:
        return False
    finally:
        for p in (a, b):
            p.unlink(missing_ok=True)


def filesystem_type(directory: Path) -> str:
    """``stat -f -c %T``: the filesystem name, e.g. ``xfs``, ``ext2/ext3`` (ext4)."""
    done = subprocess.run(["stat", "-f", "-c", "%T", str(directory)],
                          capture_output=True, text=True)
    return done.stdout.strip() or "unknown"


def _files(root: Path) -> list[tuple[str, str]]:
    """(folder relative to root, name) of every file, folders first-seen order."""
    out = []
    for dirpath, _, names in os.walk(root):
        rel = os.path.relpath(dirpath, root)
        out.extend((rel, n) for n in sorted(names))
    return out


def _best(fn, reps: int) -> float:
    times = []
    for _ in range(reps):
        times.append(fn())
    return min(times)


def _timed(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def _copy_tree(src: Path, dst: Path, files, how: str) -> float:
    """Recreate ``src``'s files under ``dst`` by ``how``; return seconds (dst removed after)."""
    def work() -> None:
        made = set()
        for rel, name in files:
            if rel not in made:
                os.makedirs(dst / rel, exist_ok=True)
                made.add(rel)
            s, d = src / rel / name, dst / rel / name
            if how == "link":
                os.link(s, d)
                continue
            with open(s, "rb") as fi, open(d, "wb") as fo:
                if how == "reflink":
                    fcntl.ioctl(fo.fileno(), FICLONE, fi.fileno())
                else:
                    size = os.fstat(fi.fileno()).st_size
                    sent = 0
                    while sent < size:
                        n = os.sendfile(fo.fileno(), fi.fileno(), sent, size - sent)
                        if n == 0:
                            break
                        sent += n
    os.sync()  # do not bill the previous step's write-back to this one
    seconds = _timed(work)
    remove_tree(dst)
    os.sync()
    return seconds


def _stat_tree(root: Path) -> int:
    count = 0
    stack = [str(root)]
    while stack:
        with os.scandir(stack.pop()) as it:
            for entry in it:
                if entry.is_dir(follow_symlinks=False):
                    stack.append(entry.path)
                else:
                    os.lstat(entry.path)
                    count += 1
    return count


def _read_hash(root: Path, files) -> None:
    for rel, name in files:
        with open(root / rel / name, "rb") as f:
            blake3.blake3(f.read()).digest()


def _spawn(argv: list[str]) -> float:
    times = []
    for _ in range(SPAWN_REPS):
        t0 = time.perf_counter()
        subprocess.run(argv, check=True)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def measure(*, large: Path | None, small: Path | None, scratch: Path, reps: int,
            reflink: bool, log=print) -> dict[str, Limit]:
    """Measure every limit that applies.

    Args:
        large: the generated L directory (None: skip the L limits).
        small: the generated S directory (None: skip the S limits).
        scratch: an empty directory on the work filesystem for copies.
        reps: repetitions per limit (best is kept).
        reflink: also measure FICLONE clones.
        log: progress callable.

    Returns:
        Limits by key.
    """
    out: dict[str, Limit] = {}
    scratch.mkdir(parents=True, exist_ok=True)
    threads = os.cpu_count() or 1

    def add(limit: Limit) -> None:
        out[limit.key] = limit
        log(f"bench: limit {limit.key}: {limit.seconds:.3f} s {limit.rate()}")

    buf = blake3.blake3(b"bench-limits").digest(length=MEM_BUFFER)
    sec = _best(lambda: _timed(lambda: blake3.blake3(buf, max_threads=blake3.blake3.AUTO)
                               .digest()), reps)
    add(Limit("blake3-mem", f"BLAKE3, {MEM_BUFFER >> 20} MiB in memory, {threads} threads",
              sec, nbytes=MEM_BUFFER))
    del buf

    if large is not None:
        lfiles = _files(large)
        lbytes = sum((large / r / n).stat().st_size for r, n in lfiles)

        def hash_large() -> None:
            for rel, name in lfiles:
                h = blake3.blake3(max_threads=blake3.blake3.AUTO)
                h.update_mmap(large / rel / name)
                h.digest()
        add(Limit("blake3-L", f"BLAKE3 of L's {len(lfiles)} files (mmap, {threads} threads)",
                  _best(lambda: _timed(hash_large), reps), nbytes=lbytes))
        add(Limit("copy-L", "copy L's files (sendfile, no fsync)",
                  _best(lambda: _copy_tree(large, scratch / "c", lfiles, "copy"), reps),
                  nbytes=lbytes))
        if reflink:
            add(Limit("reflink-L", "reflink L's files (FICLONE)",
                      _best(lambda: _copy_tree(large, scratch / "r", lfiles, "reflink"),
                            reps), nbytes=lbytes, nfiles=len(lfiles)))

    if small is not None:
        sfiles = _files(small)
        sbytes = sum((small / r / n).stat().st_size for r, n in sfiles)
        n = len(sfiles)
        add(Limit("stat-S", f"lstat every file of S (scandir walk, {n:,} files)",
                  _best(lambda: _timed(lambda: _stat_tree(small)), reps), nfiles=n))
        add(Limit("readhash-S", "read + BLAKE3 every file of S, one thread",
                  _best(lambda: _timed(lambda: _read_hash(small, sfiles)), reps),
                  nbytes=sbytes, nfiles=n))
        add(Limit("link-S", "hardlink every file of S into a new tree (mkdir + link)",
                  _best(lambda: _copy_tree(small, scratch / "l", sfiles, "link"), reps),
                  nfiles=n))
        add(Limit("copy-S", "copy every file of S into a new tree (sendfile)",
                  _best(lambda: _copy_tree(small, scratch / "c", sfiles, "copy"), reps),
                  nbytes=sbytes, nfiles=n))
        if reflink:
            add(Limit("reflink-S", "reflink every file of S into a new tree (FICLONE)",
                      _best(lambda: _copy_tree(small, scratch / "r", sfiles, "reflink"),
                            reps), nbytes=sbytes, nfiles=n))

    add(Limit("spawn-true", f"spawn and reap /bin/true (median of {SPAWN_REPS})",
              _spawn(["/bin/true"])))
    add(Limit("spawn-python", f"spawn and reap `python -c pass`, Python "
              f"{sys.version.split()[0]} with site (median of {SPAWN_REPS})",
              _spawn([sys.executable, "-c", "pass"])))
    return out
