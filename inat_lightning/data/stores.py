"""Where shards live: a local (or NFS) folder, or an S3-compatible object store.

``open_store("path/to/folder")`` or ``open_store("s3://bucket/prefix")`` gives a :class:`Store`
that reads, sizes and writes named objects (``train/shard-00000.tar``). An object store's
credentials and endpoint come from the usual environment variables (``AWS_ACCESS_KEY_ID``,
``AWS_SECRET_ACCESS_KEY``, ``AWS_ENDPOINT_URL`` for a store that is not AWS) and are never part
of a URL, a config or anything written: a URL carrying them is refused.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Protocol
from urllib.parse import urlparse

from inat_lightning.atomic import replacing

#: an object's name: relative, ``/``-separated parts of letters, digits, ``_ . -``; no ``..``
NAME = re.compile(r"^(?!.*(^|/)\.\.?(/|$))[A-Za-z0-9_.-]+(/[A-Za-z0-9_.-]+)*$")


class StoreError(OSError):
    """An object that cannot be read or written; the message names the object's URL. ``code``:
    the store's error code (``404`` for an object that does not exist)."""

    code: str = ""


def check_name(name: str) -> str:
    """``name`` when it is a safe relative object name (see :data:`NAME`), else ``ValueError``:
    a name read from an untrusted index never leads outside the store's root."""
    if not isinstance(name, str) or not NAME.fullmatch(name):
        raise ValueError(f"{name!r} is not a relative object name (letters, digits, _ . - /)")
    return name


class Store(Protocol):
    """Named objects under one root: what shards are written to and read from."""

    url: str

    def read(self, name: str) -> bytes: ...

    def size(self, name: str) -> int | None:
        """The object's size in bytes; ``None`` when it does not exist."""

    def write(self, name: str, data: bytes) -> None:
        """Whole or not at all: a reader never sees a part of the object."""

    def download(self, name: str, dest: Path) -> None:
        """The object into the local file ``dest`` (written whole, then renamed)."""


class LocalStore:
    """A folder (local disk, NFS)."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        self.url = str(self.root)

    def path(self, name: str) -> Path:
        """The object's file; one a symlink leads out of the folder is refused."""
        path = self.root / check_name(name)
        if path.exists() and not path.resolve().is_relative_to(self.root.resolve()):
            raise StoreError(f"{path}: a link out of {self.root}, not read")
        return path

    def read(self, name: str) -> bytes:
        try:
            return self.path(name).read_bytes()
        except OSError as e:
            error = StoreError(f"{self.path(name)}: {e.strerror or e}")
            error.code = "404" if isinstance(e, FileNotFoundError) else ""
            raise error from e

    def size(self, name: str) -> int | None:
        path = self.path(name)
        return path.stat().st_size if path.is_file() else None

    def write(self, name: str, data: bytes) -> None:
        path = self.path(name)
        path.parent.mkdir(parents=True, exist_ok=True)
        with replacing(path) as tmp:
            tmp.write_bytes(data)

    def download(self, name: str, dest: Path) -> None:
        with replacing(dest) as tmp:
            tmp.write_bytes(self.read(name))


class S3Store:
    """``s3://bucket/prefix`` on AWS or any S3-compatible server (MinIO, Ceph, moto): boto3,
    one client per process (a forked loader worker makes its own)."""

    def __init__(self, url: str) -> None:
        parsed = urlparse(url)
        if "@" in parsed.netloc or parsed.password or parsed.query:
            raise ValueError(
                "an s3:// URL names a bucket and prefix only: credentials go in the environment "
                "(AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_ENDPOINT_URL), never in data.root"
            )
        if not parsed.netloc:
            raise ValueError(f"{url!r}: no bucket (expected s3://bucket/prefix)")
        self.bucket, self.prefix = parsed.netloc, parsed.path.strip("/")
        self.url = f"s3://{self.bucket}/{self.prefix}".rstrip("/")
        self._client = None
        self._pid = -1

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_client": None, "_pid": -1}  # clients don't travel

    @property
    def client(self):
        if self._client is None or self._pid != os.getpid():
            try:
                import boto3
                from botocore.config import Config
            except ImportError as e:
                raise ImportError("s3:// needs boto3: pip install 'inat-lightning[shards]'") from e
            session = boto3.session.Session()  # its own: the environment as it is now
            retries = Config(retries={"max_attempts": 5, "mode": "standard"})
            region = session.region_name or "us-east-1"
            endpoint = os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
            self._client = session.client(  # the endpoint said, not left to the boto3 version
                "s3", region_name=region, config=retries, endpoint_url=endpoint or None
            )
            self._pid = os.getpid()
        return self._client

    def key(self, name: str) -> str:
        return f"{self.prefix}/{check_name(name)}" if self.prefix else check_name(name)

    def _call(self, name: str, fn, **kwargs):
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            return fn(Bucket=self.bucket, Key=self.key(name), **kwargs)
        except ClientError as e:
            code = str(e.response.get("Error", {}).get("Code", "?"))
            error = StoreError(f"{self.url}/{name}: {code}")
            error.code = "404" if code in ("404", "NoSuchKey", "NotFound") else code
            raise error from e
        except BotoCoreError as e:  # no credentials, no endpoint, connection refused
            raise StoreError(
                f"{self.url}/{name}: {e} (credentials and endpoint come from AWS_ACCESS_KEY_ID, "
                "AWS_SECRET_ACCESS_KEY and AWS_ENDPOINT_URL)"
            ) from e

    def read(self, name: str) -> bytes:
        body = self._call(name, self.client.get_object)["Body"]
        return self._transfer(name, body.read)

    def _transfer(self, name: str, fn, *args):
        """A body read, its network errors a :class:`StoreError` naming the object."""
        from botocore.exceptions import BotoCoreError

        try:
            return fn(*args)
        except (BotoCoreError, OSError) as e:
            raise StoreError(f"{self.url}/{name}: transfer failed ({e})") from e

    def size(self, name: str) -> int | None:
        try:
            return int(self._call(name, self.client.head_object)["ContentLength"])
        except StoreError as e:
            if e.code == "404":
                return None
            raise

    def write(self, name: str, data: bytes) -> None:
        self._call(name, self.client.put_object, Body=data)  # a PUT is atomic

    def download(self, name: str, dest: Path) -> None:
        with replacing(dest) as tmp, tmp.open("wb") as f:
            body = self._call(name, self.client.get_object)["Body"]
            for chunk in iter(lambda: self._transfer(name, body.read, 1 << 20), b""):
                f.write(chunk)


def is_remote(url: str | Path) -> bool:
    return str(url).startswith("s3://")


def open_store(url: str | Path) -> Store:
    """The store at ``url``: ``s3://bucket/prefix`` or a folder path."""
    return S3Store(str(url)) if is_remote(url) else LocalStore(url)
