"""Ray storage for runs and checkpoints: a local folder, NFS, or ``s3://bucket/prefix``.

One :class:`Storage` names a root; every run of the project lives under ``<root>/<name>/``, laid
out as :mod:`ray_jobs.layout` draws it. S3-compatible servers are reached with
``endpoint`` (``--s3-endpoint http://127.0.0.1:9000`` or ``AWS_ENDPOINT_URL``); credentials come
from the usual ``AWS_ACCESS_KEY_ID`` / ``AWS_SECRET_ACCESS_KEY`` / ``AWS_DEFAULT_REGION``.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import uuid
from dataclasses import dataclass
from pathlib import Path

import pyarrow.fs as pafs


class StorageError(OSError):
    """Storage that cannot be used, in one line."""


@dataclass(frozen=True)
class Storage:
    """A storage root (local path or ``s3://...``) plus the S3 endpoint when custom."""

    uri: str
    endpoint: str | None = None

    @property
    def is_s3(self) -> bool:
        return self.uri.startswith("s3://")

    @property
    def filesystem(self) -> pafs.FileSystem:
        if not self.is_s3:
            return pafs.LocalFileSystem()
        endpoint = self.endpoint or os.environ.get("AWS_ENDPOINT_URL")
        kwargs: dict = {"region": os.environ.get("AWS_DEFAULT_REGION", "us-east-1")}
        if endpoint:
            scheme, _, host = endpoint.partition("://")
            kwargs.update(endpoint_override=host or scheme, scheme=scheme if host else "https")
        if os.environ.get("AWS_ACCESS_KEY_ID"):
            kwargs.update(access_key=os.environ["AWS_ACCESS_KEY_ID"],
                          secret_key=os.environ.get("AWS_SECRET_ACCESS_KEY", ""))
        return pafs.S3FileSystem(**kwargs)

    @property
    def root(self) -> str:
        """The root as the filesystem sees it (no scheme; absolute for local paths)."""
        if self.is_s3:
            return self.uri[len("s3://"):].rstrip("/")
        return str(Path(self.uri).expanduser().resolve())

    def path(self, *parts: str) -> str:
        return "/".join([self.root, *[p.strip("/") for p in parts if p]])

    def display(self, *parts: str) -> str:
        return ("s3://" if self.is_s3 else "") + self.path(*parts)

    # ----------------------------------------------------------------------------- queries
    def exists(self, *parts: str) -> bool:
        return self.filesystem.get_file_info(self.path(*parts)).type != pafs.FileType.NotFound

    def read_json(self, *parts: str) -> dict:
        with self.filesystem.open_input_stream(self.path(*parts)) as f:
            return json.loads(f.read().decode())

    def write_json(self, data: dict, *parts: str) -> None:
        """Write JSON in one put (S3) or via a temp file + rename (local): never half a file."""
        payload = json.dumps(data, indent=2, default=str).encode()
        target = self.path(*parts)
        fs = self.filesystem
        fs.create_dir(target.rsplit("/", 1)[0], recursive=True)
        if self.is_s3:
            with fs.open_output_stream(target) as f:
                f.write(payload)
            return
        fd, tmp = tempfile.mkstemp(dir=os.path.dirname(target), suffix=".tmp")
        with os.fdopen(fd, "wb") as f:
            f.write(payload)
        os.replace(tmp, target)

    def check_writable(self, *parts: str) -> None:
        """Write and delete a probe file; a read-only or unreachable root raises StorageError."""
        probe = self.path(*parts, f".write-probe-{uuid.uuid4().hex[:8]}")
        fs = self.filesystem
        try:
            fs.create_dir(probe.rsplit("/", 1)[0], recursive=True)
            with fs.open_output_stream(probe) as f:
                f.write(b"ok")
            fs.delete_file(probe)
        except OSError as e:
            raise StorageError(f"storage path {self.display(*parts)} is not writable "
                               f"({str(e).splitlines()[0]})") from None

    # ----------------------------------------------------------------------------- directories
    def upload_dir(self, local_dir: str | Path, *parts: str) -> str:
        dest = self.path(*parts)
        self.filesystem.create_dir(dest, recursive=True)
        pafs.copy_files(str(local_dir), dest, source_filesystem=pafs.LocalFileSystem(),
                        destination_filesystem=self.filesystem)
        return dest

    def download_dir(self, local_dir: str | Path, *parts: str) -> Path:
        local_dir = Path(local_dir)
        local_dir.mkdir(parents=True, exist_ok=True)
        pafs.copy_files(self.path(*parts), str(local_dir), source_filesystem=self.filesystem,
                        destination_filesystem=pafs.LocalFileSystem())
        return local_dir

    def copy_in(self, src_path: str, src_fs: pafs.FileSystem, *parts: str) -> str:
        """Copy a directory from any filesystem (e.g. a Ray checkpoint) into this storage."""
        dest = self.path(*parts)
        fs = self.filesystem
        if fs.get_file_info(dest).type != pafs.FileType.NotFound:
            fs.delete_dir(dest)
        fs.create_dir(dest, recursive=True)
        pafs.copy_files(src_path, dest, source_filesystem=src_fs, destination_filesystem=fs)
        return dest

    def delete_dir(self, *parts: str) -> None:
        if self.exists(*parts):
            self.filesystem.delete_dir(self.path(*parts))


def fetch_checkpoint_dir(storage: Storage, *parts: str) -> Path:
    """A local copy of a checkpoint directory in storage (the path itself when local)."""
    if not storage.is_s3:
        return Path(storage.path(*parts))
    local = Path(tempfile.mkdtemp(prefix="interceptor-ckpt-"))
    return storage.download_dir(local, *parts)


def remove_local_copy(storage: Storage, path: Path) -> None:
    if storage.is_s3:
        shutil.rmtree(path, ignore_errors=True)
