"""Campaign storage: a local directory or `s3://bucket/prefix`, through pyarrow's filesystems.

Objects are written whole: an S3 PUT becomes visible only when complete, and a local file is
written to a temporary name and renamed, so a reader never sees a partial checkpoint.
"""

from __future__ import annotations

import os
import posixpath
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow.fs as pafs


class StorageError(RuntimeError):
    """A storage operation failed; the message names the URI."""


# The AWS SDK's default strategy backs off exponentially: 12 attempts keep a request going for
# about 100 s (measured: 10 attempts give up after 26 s, 12 after 102 s), so a short S3 outage
# delays a checkpoint instead of failing the round.
S3_ATTEMPTS = 12
PROBE_TIMEOUT_S = 5.0  # `Storage.probe`: connecting and answering, each


class RetryingS3FileSystem(pafs.S3FileSystem):
    """pyarrow's S3 filesystem with a patient retry strategy that survives pickling.

    pyarrow pickles an S3FileSystem without its retry strategy, so the copy Ray ships to a Train
    worker (`storage_filesystem`) would give up after 3 quick attempts; this one is rebuilt
    with the same options on the other side.
    """

    def __init__(self, **options: Any) -> None:
        super().__init__(
            **options, retry_strategy=pafs.AwsDefaultS3RetryStrategy(max_attempts=S3_ATTEMPTS)
        )
        self.options = options

    def __reduce__(self) -> tuple[Any, ...]:
        return (_rebuild_s3, (self.options,))


def _rebuild_s3(options: dict[str, Any]) -> RetryingS3FileSystem:
    return RetryingS3FileSystem(**options)


def s3_filesystem() -> pafs.S3FileSystem:
    options: dict[str, Any] = {"allow_bucket_creation": True}
    # AWS_ENDPOINT_URL is the standard variable boto3 honours; pass it to pyarrow explicitly.
    endpoint = os.environ.get("AWS_ENDPOINT_URL")
    if endpoint:
        scheme, _, host = endpoint.partition("://")
        options |= {"endpoint_override": host, "scheme": scheme}
    return RetryingS3FileSystem(**options)


class Storage:
    """Paths inside one root. `uri(rel)` is what a checkpoint reference looks like to others."""

    def __init__(self, root_uri: str) -> None:
        self.root_uri = root_uri.rstrip("/")
        if root_uri.startswith("s3://"):
            self.fs: pafs.FileSystem = s3_filesystem()
            self.root = self.root_uri.removeprefix("s3://")
        else:
            self.fs = pafs.LocalFileSystem()
            self.root = str(Path(root_uri.removeprefix("file://")).expanduser().resolve())
            self.root_uri = self.root

    def probe(self) -> None:
        """Fail at once, naming the endpoint, where S3 cannot be reached or refuses the request.

        One request without retries: the patient filesystem above spends about 100 s on a wrong
        endpoint before it says so. A local root and a bucket that does not exist yet pass.
        """
        if not isinstance(self.fs, RetryingS3FileSystem):
            return
        quick = pafs.S3FileSystem(
            **self.fs.options,
            retry_strategy=pafs.AwsDefaultS3RetryStrategy(max_attempts=1),
            connect_timeout=PROBE_TIMEOUT_S,
            request_timeout=PROBE_TIMEOUT_S,
        )
        try:
            quick.get_file_info(self.root.split("/")[0])  # the bucket
        except OSError as exc:
            endpoint = os.environ.get("AWS_ENDPOINT_URL") or "AWS's default"
            raise StorageError(
                f"cannot reach {self.root_uri} (S3 endpoint {endpoint}): {exc}; check "
                "AWS_ENDPOINT_URL and the AWS credentials"
            ) from exc

    @property
    def is_s3(self) -> bool:
        return isinstance(self.fs, pafs.S3FileSystem)

    def path(self, rel: str) -> str:
        """The filesystem path of `rel` (no scheme), for pyarrow and Ray's storage_filesystem."""
        return posixpath.join(self.root, rel)

    def uri(self, rel: str) -> str:
        return posixpath.join(self.root_uri, rel)

    def write_bytes(self, rel: str, data: bytes) -> str:
        target = self.path(rel)
        try:
            self.fs.create_dir(posixpath.dirname(target), recursive=True)
            if self.is_s3:
                with self.fs.open_output_stream(target) as f:
                    f.write(data)
            else:
                tmp = f"{target}.{uuid.uuid4().hex}.tmp"
                with self.fs.open_output_stream(tmp) as f:
                    f.write(data)
                self.fs.move(tmp, target)
        except OSError as exc:
            raise StorageError(f"cannot write {self.uri(rel)}: {exc}") from exc
        return self.uri(rel)

    def delete(self, rel: str, *, tree: bool = False) -> None:
        """Remove the object (with `tree`: folder `rel` and everything under it); one that does
        not exist is not an error."""
        try:
            (self.fs.delete_dir if tree else self.fs.delete_file)(self.path(rel))
        except FileNotFoundError:
            pass
        except OSError as exc:
            raise StorageError(f"cannot delete {self.uri(rel)}: {exc}") from exc

    def list(self, rel: str, *, folders: bool = False) -> list[str]:
        """The names of the files (or with `folders`, the folders) directly in folder `rel`,
        sorted (none if it does not exist)."""
        selector = pafs.FileSelector(self.path(rel), allow_not_found=True)
        try:
            infos = self.fs.get_file_info(selector)
        except OSError as exc:
            raise StorageError(f"cannot list {self.uri(rel)}: {exc}") from exc
        kind = pafs.FileType.Directory if folders else pafs.FileType.File
        return sorted(i.base_name for i in infos if i.type == kind)

    def read_chunks(self, rel: str, chunk: int = 1 << 20) -> tuple[int, Iterator[bytes]] | None:
        """The object's size and its bytes in pieces of `chunk` (a checkpoint is sent on
        without being held whole), or None when it does not exist. An error while the pieces
        are read raises StorageError from the iterator."""
        try:
            info = self.fs.get_file_info(self.path(rel))
        except OSError as exc:
            raise StorageError(f"cannot read {self.uri(rel)}: {exc}") from exc
        if info.type != pafs.FileType.File:
            return None

        def pieces() -> Iterator[bytes]:
            try:
                with self.fs.open_input_stream(self.path(rel)) as f:
                    while piece := f.read(chunk):
                        yield piece
            except OSError as exc:
                raise StorageError(f"cannot read {self.uri(rel)}: {exc}") from exc

        return int(info.size), pieces()

    def read_bytes(self, rel: str) -> bytes | None:
        """The object's bytes, or None when it does not exist."""
        try:
            with self.fs.open_input_stream(self.path(rel)) as f:
                data: bytes = f.read()
                return data
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise StorageError(f"cannot read {self.uri(rel)}: {exc}") from exc
