"""An S3-compatible object store on 127.0.0.1 for the shard tests and benchmark: moto's server
(from PyPI), optionally with a per-request delay as a network store has.

    python -m tests.cluster.s3_server [--port 0] [--latency-ms 10]

prints ``endpoint http://127.0.0.1:<port>`` once it listens, then serves until killed. Clients
take it from ``AWS_ENDPOINT_URL``, with any ``AWS_ACCESS_KEY_ID``/``AWS_SECRET_ACCESS_KEY``.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def app(latency_s: float):
    """moto's S3 WSGI app, each request held ``latency_s`` first."""
    from moto.server import DomainDispatcherApplication, create_backend_app

    inner = DomainDispatcherApplication(create_backend_app)
    if latency_s <= 0:
        return inner

    def delayed(environ, start_response):
        time.sleep(latency_s)
        return inner(environ, start_response)

    return delayed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--latency-ms", type=float, default=0.0)
    args = parser.parse_args()
    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # no line per request
    from moto.moto_server.werkzeug_app import MotoRequestHandler
    from werkzeug.serving import make_server

    server = make_server(
        "127.0.0.1", args.port, app(args.latency_ms / 1000), threaded=True,
        request_handler=MotoRequestHandler,
    )  # fmt: skip
    print(f"endpoint http://127.0.0.1:{server.server_port}", flush=True)
    server.serve_forever()


def credentials(endpoint: str) -> dict[str, str]:
    """The environment a client of the server at ``endpoint`` needs (made-up keys: the server
    accepts any)."""
    return {
        "AWS_ENDPOINT_URL": endpoint,
        "AWS_ACCESS_KEY_ID": "inat-test-key-id",
        "AWS_SECRET_ACCESS_KEY": "inat-test-secret-7f3c",
        "AWS_DEFAULT_REGION": "us-east-1",
    }


@contextlib.contextmanager
def running(latency_ms: float = 0.0, timeout_s: float = 60.0) -> Iterator[dict[str, str]]:
    """The server in a process of its own for the block: yields the client environment."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.cluster.s3_server", "--latency-ms", str(latency_ms)],
        cwd=REPO, stdout=subprocess.PIPE, text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )  # fmt: skip
    try:
        deadline = time.monotonic() + timeout_s
        line = ""
        while not line.startswith("endpoint ") and time.monotonic() < deadline:
            line = proc.stdout.readline() if proc.poll() is None else "exited"
            if line == "exited":
                raise RuntimeError("the S3 server exited at start")
        if not line.startswith("endpoint "):
            raise RuntimeError(f"the S3 server did not listen within {timeout_s}s")
        yield credentials(line.split()[1])
    finally:
        proc.kill()
        proc.wait(timeout=30)


def make_bucket(env: dict[str, str], bucket: str) -> None:
    import boto3

    client = boto3.client(
        "s3", endpoint_url=env["AWS_ENDPOINT_URL"], region_name=env["AWS_DEFAULT_REGION"],
        aws_access_key_id=env["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=env["AWS_SECRET_ACCESS_KEY"],
    )  # fmt: skip
    client.create_bucket(Bucket=bucket)


if __name__ == "__main__":
    main()
