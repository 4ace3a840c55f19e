"""Which S3 client tally's S3 backend uses: obstore vs fsspec/s3fs, measured.

``python -m bench.s3libs [--objects N] [--jobs J] [--append TITLE]``

Against the moto server (bench/s3server.py, its own process), each library does the
same work on fresh keys, best of three rounds:

- N PUTs of small objects (1-4 KiB, as a pack-less remote would send 50,000 files),
  J at a time;
- N GETs of those objects, J at a time;
- one 64 MiB PUT and GET (multipart / ranged transfers);
- a LIST of the N keys.

obstore runs its synchronous calls on J threads (it releases the interpreter lock
while its Rust runtime does the request); s3fs runs its own asyncio loop with J
requests in flight (`pipe`/`cat` with batch_size=J). moto itself is the bottleneck
for small requests, so the ratio, not the absolute rate, is what carries over to a
real S3. With --append the table is added to bench/RESULTS.md under TITLE.
"""

from __future__ import annotations

import argparse
import os
import random
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from bench.s3server import ACCESS_KEY, REGION, SECRET_KEY, S3Server

HERE = Path(__file__).resolve().parent
BIG = 64 * 1024 * 1024  # bytes: one large transfer


def _payloads(n: int, seed: int = 1) -> list[bytes]:
    rnd = random.Random(seed)
    return [rnd.randbytes(rnd.randint(1024, 4096)) for _ in range(n)]


def _best(fn, rounds: int) -> float:
    best = float("inf")
    for r in range(rounds):
        t = time.perf_counter()
        fn(r)
        best = min(best, time.perf_counter() - t)
    return best


def measure_obstore(srv: S3Server, bucket: str, data: list[bytes], jobs: int, rounds: int) -> dict:
    import obstore
    from obstore.store import S3Store

    st = S3Store(bucket, endpoint=srv.endpoint, access_key_id=ACCESS_KEY,
                 secret_access_key=SECRET_KEY, region=REGION,
                 client_options={"allow_http": True})
    out = {}
    with ThreadPoolExecutor(jobs) as pool:
        def puts(r):
            list(pool.map(lambda i: obstore.put(st, f"o{r}/{i}", data[i]), range(len(data))))
        out["put"] = _best(puts, rounds)

        def gets(r):
            got = list(pool.map(lambda i: bytes(obstore.get(st, f"o{r}/{i}").bytes()),
                                range(len(data))))
            assert got == data
        out["get"] = _best(gets, rounds)
    out["list"] = _best(lambda r: sum(len(b) for b in obstore.list(st, f"o{r}/")), rounds)
    big = os.urandom(BIG)
    out["put_big"] = _best(lambda r: obstore.put(st, f"big{r}", big, max_concurrency=jobs), rounds)
    out["get_big"] = _best(lambda r: obstore.get(st, f"big{r}").bytes(), rounds)
    return out


def measure_s3fs(srv: S3Server, bucket: str, data: list[bytes], jobs: int, rounds: int) -> dict:
    import s3fs

    fs = s3fs.S3FileSystem(key=ACCESS_KEY, secret=SECRET_KEY,
                           client_kwargs={"endpoint_url": srv.endpoint, "region_name": REGION},
                           skip_instance_cache=True)
    out = {}

    def puts(r):
        fs.pipe({f"{bucket}/s{r}/{i}": d for i, d in enumerate(data)}, batch_size=jobs)
    out["put"] = _best(puts, rounds)

    def gets(r):
        paths = [f"{bucket}/s{r}/{i}" for i in range(len(data))]
        got = fs.cat(paths, batch_size=jobs)
        assert [got[p] for p in paths] == data
    out["get"] = _best(gets, rounds)

    def listing(r):
        fs.invalidate_cache()
        return len(fs.ls(f"{bucket}/s{r}/", detail=False))
    out["list"] = _best(listing, rounds)
    big = os.urandom(BIG)
    out["put_big"] = _best(lambda r: fs.pipe_file(f"{bucket}/big{r}", big), rounds)
    out["get_big"] = _best(lambda r: fs.cat_file(f"{bucket}/big{r}"), rounds)
    return out


def run(n: int, jobs: int, rounds: int) -> str:
    data = _payloads(n)
    with S3Server() as srv:
        srv.make_bucket("libs")
        results = {"obstore": measure_obstore(srv, "libs", data, jobs, rounds),
                   "s3fs": measure_s3fs(srv, "libs", data, jobs, rounds)}
    import obstore
    import s3fs
    rows = [("PUT small objects", "put", n), ("GET small objects", "get", n),
            ("LIST the keys", "list", None), ("PUT 64 MiB", "put_big", None),
            ("GET 64 MiB", "get_big", None)]
    lines = [f"S3 client libraries against the moto server (its own process), {n} objects of "
             f"1-4 KiB, {jobs} requests in flight, best of {rounds}: obstore {obstore.__version__}, "
             f"s3fs {s3fs.__version__}.", "",
             "| operation | obstore s | s3fs s | s3fs/obstore | obstore req/s | s3fs req/s |",
             "|---|---:|---:|---:|---:|---:|"]
    for label, key, count in rows:
        a, b = results["obstore"][key], results["s3fs"][key]
        rate = (lambda t: f"{count / t:,.0f}") if count else (lambda t: "—")
        lines.append(f"| {label} | {a:.3f} | {b:.3f} | {b / a:.2f}x | {rate(a)} | {rate(b)} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.s3libs", description=__doc__.split("\n")[0])
    p.add_argument("--objects", type=int, default=2000)
    p.add_argument("--jobs", type=int, default=16)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--append", metavar="TITLE", help="append the table to bench/RESULTS.md")
    a = p.parse_args(argv)
    table = run(a.objects, a.jobs, a.rounds)
    sys.stdout.write(table)
    if a.append:
        with open(HERE / "RESULTS.md", "a", encoding="utf-8") as f:
            f.write(f"\n## {a.append}\n\n{table}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
