"""One filesystem layer for every location the project reads or writes: local paths, NFS, ``s3://``.

:func:`resolve` turns a location into ``(pyarrow filesystem, path)``, the pair Ray Data, Ray Train
and Tune also take. S3-compatible servers are reached through ``endpoint`` (a job's
``s3_endpoint`` / ``--s3-endpoint``) or ``AWS_ENDPOINT_URL``; region from ``AWS_DEFAULT_REGION`` /
``AWS_REGION``. Credentials are never passed here: pyarrow's AWS SDK takes them from the
process' own credential chain (``AWS_ACCESS_KEY_ID``/``AWS_SECRET_ACCESS_KEY``, ``~/.aws``,
the instance role, the pod's service account), so each node uses its own and no secret travels
with a job.

On top of that pair:

* :class:`FsPath`: the part of :class:`pathlib.Path` the dataset readers use (``/``, ``name``,
  ``stem``, ``is_dir``, ``is_file``, ``iterdir``, ``glob``, ``read_text``, ``relative_to``) on any
  of these filesystems; :meth:`FsPath.snapshot` lists a tree once (one recursive listing, e.g.
  ~120 requests for DFDC's 119k objects) and answers every later query from that listing.
* :func:`open_input` / :class:`RangeReader`: a random-access, read-ahead file object over an
  object (ranged GETs of :data:`READ_BLOCK` bytes), for PyAV to decode a video in place.
* :func:`write_atomic`: a file appears complete or not at all (local: temp file + rename; S3:
  the complete object in one upload, which S3 publishes atomically).
* :func:`check_location`: a location's one-line problems (no credentials, no such bucket).
"""

from __future__ import annotations

import fnmatch
import io
import os
import posixpath
import tempfile
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from functools import lru_cache
from pathlib import Path, PurePosixPath
from typing import Iterator, TypeVar

import pyarrow.fs as pafs

S3_SCHEME = "s3://"
#: concurrent requests of :func:`map_files` on an object store (each small read is a round trip)
REQUEST_THREADS = 16
T = TypeVar("T")
#: bytes fetched per ranged read of an object (:class:`RangeReader`)
READ_BLOCK = 4 << 20


class LocationError(OSError):
    """A location that cannot be used (no credentials, no such bucket, not found), in one line."""


def is_s3(location: str | os.PathLike[str]) -> bool:
    return str(location).startswith(S3_SCHEME)


def s3_endpoint(endpoint: str | None = None) -> str | None:
    """The S3 endpoint in use: ``endpoint``, else ``AWS_ENDPOINT_URL``, else AWS itself (None)."""
    return endpoint or os.environ.get("AWS_ENDPOINT_URL") or None


@lru_cache(maxsize=16)
def _s3(endpoint: str | None, region: str) -> pafs.S3FileSystem:
    # short connect timeout: an unreachable endpoint fails in seconds, not minutes
    kwargs: dict = {"region": region, "connect_timeout": 5.0}
    if endpoint:
        scheme, _, host = endpoint.partition("://")
        kwargs.update(endpoint_override=host or scheme, scheme=scheme if host else "https")
    return pafs.S3FileSystem(**kwargs)


def s3_filesystem(endpoint: str | None = None) -> pafs.S3FileSystem:
    """An S3 filesystem for ``endpoint`` (see :func:`s3_endpoint`), credentials from the process' chain."""
    region = os.environ.get("AWS_DEFAULT_REGION") or os.environ.get("AWS_REGION") or "us-east-1"
    return _s3(s3_endpoint(endpoint), region)


def resolve(location: str | os.PathLike[str], endpoint: str | None = None) -> tuple[pafs.FileSystem, str]:
    """``(filesystem, path)`` of a location: ``s3://bucket/key`` -> (S3, ``bucket/key``); anything
    else -> (local, absolute path)."""
    text = str(location)
    if is_s3(text):
        return s3_filesystem(endpoint), text[len(S3_SCHEME):].rstrip("/")
    return pafs.LocalFileSystem(), str(Path(text).expanduser().resolve())


def display(fs: pafs.FileSystem, path: str) -> str:
    """A path as users write it (``s3://`` prefix for S3)."""
    return (S3_SCHEME + path) if isinstance(fs, pafs.S3FileSystem) else path


def join(location: str, *parts: str) -> str:
    """``location/part/...`` for local paths and URIs alike."""
    return "/".join([str(location).rstrip("/"), *[p.strip("/") for p in parts if p]])


def normalize(location: str | os.PathLike[str]) -> str:
    """A location as the jobs record it: URIs as given (no trailing ``/``), local paths absolute."""
    return str(location).rstrip("/") if is_s3(location) else str(Path(location).expanduser().resolve())


def map_files(fn: Callable[[str], T], locations: Iterable[str]) -> list[T]:
    """``[fn(location) ...]`` in order; S3 locations are read :data:`REQUEST_THREADS` at a time
    (reading many small footers or columns is latency-bound there)."""
    items = list(locations)
    if len(items) < 2 or not any(is_s3(str(i)) for i in items):
        return [fn(i) for i in items]
    with ThreadPoolExecutor(min(REQUEST_THREADS, len(items))) as pool:
        return list(pool.map(fn, items))


# ----------------------------------------------------------------------------------- checks

def _have_credentials() -> bool:
    """Whether the AWS credential chain finds credentials (env, files, web identity, container,
    instance role: botocore walks the chain pyarrow's SDK walks; the instance metadata service is
    given one attempt of one second, and is skipped with ``AWS_EC2_METADATA_DISABLED=true``)."""
    import botocore.session

    session = botocore.session.Session()
    session.set_config_variable("metadata_service_timeout", 1)
    session.set_config_variable("metadata_service_num_attempts", 1)
    try:
        return session.get_credentials() is not None
    except Exception:  # noqa: BLE001 - a broken profile is as good as none here
        return False


def check_location(location: str, endpoint: str | None = None, what: str = "location") -> None:
    """One-line :class:`LocationError` for an S3 location that cannot be reached: no credentials
    in this process' chain, an endpoint that does not answer, a bucket that does not exist.
    Local locations pass (their callers say what is missing there)."""
    if not is_s3(location):
        return
    if not _have_credentials():
        raise LocationError(f"{what} {location}: no AWS credentials found (set AWS_ACCESS_KEY_ID and "
                            "AWS_SECRET_ACCESS_KEY, an AWS profile, or give the node an instance role / service account)")
    fs, path = resolve(location, endpoint)
    bucket = path.split("/", 1)[0]
    try:
        info = fs.get_file_info(bucket)
    except OSError as e:
        raise LocationError(f"{what} {location}: S3 at {s3_endpoint(endpoint) or 'AWS'} cannot be read "
                            f"({first_line(e)})") from None
    if info.type == pafs.FileType.NotFound:
        raise LocationError(f"{what} {location}: bucket {bucket!r} does not exist"
                            + (f" at {s3_endpoint(endpoint)}" if s3_endpoint(endpoint) else ""))


def first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


# ----------------------------------------------------------------------------------- reading

class RangeReader(io.RawIOBase):
    """A seekable, read-only file object over a pyarrow random-access file that fetches
    :data:`READ_BLOCK`-byte blocks (one ranged GET each on S3) and keeps the last few, so a
    decoder's many small reads cost a handful of requests."""

    def __init__(self, source: pafs.NativeFile, size: int, block: int = READ_BLOCK, keep: int = 4):
        super().__init__()
        self._src, self._size, self._block, self._keep = source, size, block, keep
        self._pos = 0
        self._blocks: dict[int, bytes] = {}

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._pos, io.SEEK_END: self._size}[whence]
        self._pos = max(0, base + offset)
        return self._pos

    def _get(self, index: int) -> bytes:
        data = self._blocks.get(index)
        if data is None:
            data = self._src.read_at(self._block, index * self._block)
            if len(self._blocks) >= self._keep:
                self._blocks.pop(next(iter(self._blocks)))
            self._blocks[index] = data = bytes(data)
        return data

    def readinto(self, buffer) -> int:
        view = memoryview(buffer).cast("B")
        n = min(len(view), max(0, self._size - self._pos))
        done = 0
        while done < n:
            index, offset = divmod(self._pos + done, self._block)
            chunk = self._get(index)[offset: offset + n - done]
            if not chunk:
                break
            view[done: done + len(chunk)] = chunk
            done += len(chunk)
        self._pos += done
        return done

    def close(self) -> None:
        if not self.closed:
            self._src.close()
            self._blocks.clear()
        super().close()


def open_input(location: "str | os.PathLike[str] | FsPath", endpoint: str | None = None):
    """A seekable binary file object of a location: a plain local file, or a :class:`RangeReader`
    over the object (no local copy)."""
    p = location if isinstance(location, FsPath) else FsPath.of(location, endpoint)
    if p.is_local:
        return open(p.path, "rb")
    return RangeReader(p.fs.open_input_file(p.path), p.size())


# ----------------------------------------------------------------------------------- writing

def write_atomic(fs: pafs.FileSystem, path: str, payload: bytes | memoryview) -> None:
    """Write ``payload`` to ``path`` so that readers see the whole file or none: locally a temp
    file in the same folder renamed onto ``path``; on S3 the complete object in one upload (S3
    makes an object visible only when its upload completes; a failed upload is deleted)."""
    if isinstance(fs, pafs.LocalFileSystem):
        folder = os.path.dirname(path)
        os.makedirs(folder, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=folder, prefix=f".{os.path.basename(path)}.", suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(payload)
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        return
    stream = fs.open_output_stream(path)
    try:
        stream.write(payload)
    except BaseException:
        try:  # closing would publish what was written: close, then delete it
            stream.close()
        finally:
            try:
                fs.delete_file(path)
            except OSError:
                pass
        raise
    stream.close()


# ----------------------------------------------------------------------------------- paths

class FsPath:
    """A path on a pyarrow filesystem with the parts of :class:`pathlib.Path` the readers use.

    ``str(p)`` is the location as users write it (``s3://bucket/key`` or an absolute local path).
    A path made by :meth:`snapshot` (and every path derived from it) answers ``is_file``,
    ``is_dir``, ``iterdir`` and ``glob`` from one listing of the tree taken then."""

    __slots__ = ("fs", "path", "_tree")

    def __init__(self, fs: pafs.FileSystem, path: str, tree: "tuple[str, dict[str, set[str] | None]] | None" = None):
        self.fs, self.path, self._tree = fs, path.rstrip("/") or "/", tree  # tree: (its root, {path: names or None})

    @classmethod
    def of(cls, location: "str | os.PathLike[str] | FsPath", endpoint: str | None = None) -> "FsPath":
        if isinstance(location, FsPath):
            return location
        return cls(*resolve(location, endpoint))

    def at(self, location: "str | os.PathLike[str]") -> "FsPath":
        """Another location on the same kind of filesystem (an option naming a file elsewhere)."""
        if is_s3(location) and not self.is_local:
            return FsPath(self.fs, resolve(location)[1])
        return FsPath.of(location)

    # ----------------------------------------------------------------------------- names
    @property
    def is_local(self) -> bool:
        return isinstance(self.fs, pafs.LocalFileSystem)

    @property
    def name(self) -> str:
        return posixpath.basename(self.path)

    @property
    def stem(self) -> str:
        return PurePosixPath(self.name).stem

    @property
    def suffix(self) -> str:
        return PurePosixPath(self.name).suffix

    @property
    def parent(self) -> "FsPath":
        return FsPath(self.fs, posixpath.dirname(self.path), self._tree)

    def __truediv__(self, part: str) -> "FsPath":
        return FsPath(self.fs, posixpath.join(self.path, str(part).strip("/")), self._tree)

    def relative_to(self, other: "FsPath") -> PurePosixPath:
        return PurePosixPath(self.path).relative_to(PurePosixPath(other.path))

    def __str__(self) -> str:
        return display(self.fs, self.path)

    def __repr__(self) -> str:
        return f"FsPath({str(self)!r})"

    def __fspath__(self) -> str:
        if not self.is_local:
            raise TypeError(f"{self} is not a local path")
        return self.path

    def __eq__(self, other: object) -> bool:
        return isinstance(other, FsPath) and str(self) == str(other)

    def __hash__(self) -> int:
        return hash(str(self))

    def __lt__(self, other: "FsPath") -> bool:
        return str(self) < str(other)

    # ----------------------------------------------------------------------------- queries
    def snapshot(self) -> "FsPath":
        """This path, answering later queries below it from one recursive listing (taken now)."""
        tree: dict[str, set[str] | None] = {}
        info = self.fs.get_file_info(self.path)
        if info.type == pafs.FileType.Directory:
            tree[self.path] = set()
            for f in self.fs.get_file_info(pafs.FileSelector(self.path, recursive=True, allow_not_found=True)):
                tree.setdefault(f.path, set() if f.type == pafs.FileType.Directory else None)
                child, parent = f.path, posixpath.dirname(f.path)
                while len(child) > len(self.path):  # object stores list no folders: infer them
                    children = tree.setdefault(parent, set())
                    if children is None:
                        break
                    children.add(posixpath.basename(child))
                    child, parent = parent, posixpath.dirname(parent)
        elif info.type == pafs.FileType.File:
            tree[self.path] = None
        return FsPath(self.fs, self.path, (self.path, tree))

    def _listed(self) -> "dict[str, set[str] | None] | None":
        """The snapshot's listing when this path lies in it, else None (ask the filesystem)."""
        if self._tree is None:
            return None
        root, entries = self._tree
        inside = self.path == root or self.path.startswith(root.rstrip("/") + "/")
        return entries if inside else None

    def _type(self) -> pafs.FileType:
        entries = self._listed()
        if entries is not None:
            if self.path not in entries:
                return pafs.FileType.NotFound
            return pafs.FileType.File if entries[self.path] is None else pafs.FileType.Directory
        return self.fs.get_file_info(self.path).type

    def exists(self) -> bool:
        return self._type() != pafs.FileType.NotFound

    def is_file(self) -> bool:
        return self._type() == pafs.FileType.File

    def is_dir(self) -> bool:
        return self._type() == pafs.FileType.Directory

    def size(self) -> int:
        return int(self.fs.get_file_info(self.path).size or 0)

    def iterdir(self) -> Iterator["FsPath"]:
        """The entries of this folder (none when it is not one), sorted by name."""
        entries = self._listed()
        if entries is not None:
            return iter([self / n for n in sorted(entries.get(self.path) or ())])
        if not self.is_dir():
            return iter([])
        infos = self.fs.get_file_info(pafs.FileSelector(self.path, allow_not_found=True))
        return iter(sorted(FsPath(self.fs, i.path) for i in infos))

    def glob(self, pattern: str) -> Iterator["FsPath"]:
        """Entries of this folder whose name matches ``pattern`` (one level, ``fnmatch`` rules)."""
        return (p for p in self.iterdir() if fnmatch.fnmatchcase(p.name, pattern))

    def read_bytes(self) -> bytes:
        with self.fs.open_input_stream(self.path) as f:
            return f.read()

    def read_text(self, encoding: str = "utf-8") -> str:
        return self.read_bytes().decode(encoding)

    def write_bytes(self, payload: bytes) -> None:
        """Write the file atomically (:func:`write_atomic`)."""
        write_atomic(self.fs, self.path, payload)
