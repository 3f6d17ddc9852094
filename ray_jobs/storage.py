"""Ray storage for runs and checkpoints: a local folder, NFS, or ``s3://bucket/prefix``.

One :class:`Storage` names a root; every run of the project lives under ``<root>/<name>/``, laid
out as :mod:`ray_jobs.layout` draws it. S3-compatible servers are reached with
``endpoint`` (``--s3-endpoint http://127.0.0.1:9000`` or ``AWS_ENDPOINT_URL``); region from
``AWS_DEFAULT_REGION``. Credentials are never passed explicitly: each process (driver or worker,
on whichever node) takes its own from the AWS SDK's chain (``docs/cloud.md``).
"""

from __future__ import annotations

import json
import shutil
import tempfile
import uuid
from dataclasses import dataclass
from pathlib import Path

import pyarrow.fs as pafs

from data_pipeline.filesystems import is_s3, resolve, write_atomic


class StorageError(OSError):
    """Storage that cannot be used, in one line."""


@dataclass(frozen=True)
class Storage:
    """A storage root (local path or ``s3://...``) plus the S3 endpoint when custom."""

    uri: str
    endpoint: str | None = None

    @property
    def is_s3(self) -> bool:
        return is_s3(self.uri)

    @property
    def filesystem(self) -> pafs.FileSystem:
        """Local, or S3 at ``endpoint`` (:func:`data_pipeline.filesystems.resolve`): no keys here, the
        AWS SDK's own chain finds them (env, ~/.aws, instance role, IRSA); the object pickles without them."""
        return resolve(self.uri, self.endpoint)[0]

    @property
    def root(self) -> str:
        """The root as the filesystem sees it (no scheme; absolute for local paths)."""
        return resolve(self.uri, self.endpoint)[1]

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
        write_atomic(fs, target, payload)

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
