"""A moto S3 server in a child process, for benchmarks: ``with S3Server() as s3: ...``.

The tests run moto's ThreadedMotoServer inside pytest's process; a benchmark must
not, because moto is Python and would share the interpreter lock with the client
being measured. So here the server is its own process on 127.0.0.1 and a free port,
and both tools (tally, DVC) talk to it over real HTTP with the same credentials.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time

ACCESS_KEY = "bench"  # moto accepts any credentials; both tools get these
SECRET_KEY = "bench-secret"
REGION = "us-east-1"

_SERVER = """
import sys, time
from moto.server import ThreadedMotoServer
s = ThreadedMotoServer(ip_address="127.0.0.1", port=int(sys.argv[1]), verbose=False)
s.start()
print("ready", flush=True)
sys.stdin.read()  # until the parent closes our stdin (or dies)
s.stop()
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class S3Server:
    """moto's S3 API on http://127.0.0.1:<port>, stopped when the block ends."""

    def __init__(self, python: str = sys.executable) -> None:
        self.python = python
        self.port = free_port()
        self.endpoint = f"http://127.0.0.1:{self.port}"
        self._proc: subprocess.Popen | None = None

    def __enter__(self) -> "S3Server":
        self._proc = subprocess.Popen([self.python, "-c", _SERVER, str(self.port)],
                                      stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                      stderr=subprocess.DEVNULL)
        line = self._proc.stdout.readline()
        if line.strip() != b"ready":
            self.__exit__()
            raise RuntimeError("moto server did not start (is moto[server] installed?)")
        return self

    def __exit__(self, *exc: object) -> None:
        if self._proc is not None:
            try:
                self._proc.stdin.close()
                self._proc.wait(timeout=10)
            except (OSError, subprocess.TimeoutExpired):
                self._proc.kill()
                self._proc.wait()
            self._proc = None

    def env(self) -> dict[str, str]:
        """Environment variables that point AWS SDKs (boto3, s3fs, obstore) here."""
        return {"AWS_ACCESS_KEY_ID": ACCESS_KEY, "AWS_SECRET_ACCESS_KEY": SECRET_KEY,
                "AWS_DEFAULT_REGION": REGION, "AWS_REGION": REGION,
                "AWS_ENDPOINT_URL": self.endpoint, "AWS_ENDPOINT_URL_S3": self.endpoint,
                "AWS_ALLOW_HTTP": "true"}

    def client(self):
        import boto3
        return boto3.client("s3", endpoint_url=self.endpoint, aws_access_key_id=ACCESS_KEY,
                            aws_secret_access_key=SECRET_KEY, region_name=REGION)

    def make_bucket(self, name: str) -> None:
        self.client().create_bucket(Bucket=name)


def wait_until(pred, timeout: float = 10.0) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if pred():
            return True
        time.sleep(0.05)
    return False


__all__ = ["S3Server", "free_port", "ACCESS_KEY", "SECRET_KEY", "REGION"]

if __name__ == "__main__":  # manual use: print the endpoint until Ctrl-C
    with S3Server() as srv:
        print(srv.endpoint, flush=True)
        try:
            while True:
                time.sleep(3600)
        except KeyboardInterrupt:
            pass
    os._exit(0)
