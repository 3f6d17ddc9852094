"""Dataset readers: FF++, Celeb-DF v2 and DFDC layouts -> one manifest schema (:mod:`.manifest`).

The package wires the modules together: :mod:`.manifest` defines the schema and the helpers the
readers share, each reader imports it, and :func:`read_manifest` here dispatches a
:class:`Dataset` to its reader (:data:`READERS`).
"""

from __future__ import annotations

import inspect
import os
from typing import Any, Callable

from ..filesystems import FsPath
from . import celebdf, dfdc, ffpp
from .manifest import (
    MANIFEST_FIELDS,
    Dataset,
    Issue,
    Manifest,
    ManifestError,
    ManifestRow,
    apply_synthetic_truth,
)

__all__ = [
    "MANIFEST_FIELDS",
    "READERS",
    "Dataset",
    "Issue",
    "Manifest",
    "ManifestError",
    "ManifestRow",
    "read_manifest",
]

#: the reader of each dataset: ``read(root, **options) -> Manifest``
READERS: dict[Dataset, Callable[..., Manifest]] = {
    Dataset.FFPP: ffpp.read,
    Dataset.CELEBDF: celebdf.read,
    Dataset.DFDC: dfdc.read,
}


def read_manifest(dataset: Dataset | str, root: str | os.PathLike[str] | FsPath, endpoint: str | None = None,
                  **options: Any) -> Manifest:
    """Read the manifest of ``dataset`` stored under ``root`` in its public layout.

    ``root`` is a local path or an ``s3://`` URI (``endpoint``: a custom S3 endpoint); the tree is
    listed once and every metadata file read through :mod:`data_pipeline.filesystems`.
    ``options`` go to the dataset's reader (see :func:`.ffpp.read`, :func:`.celebdf.read`,
    :func:`.dfdc.read`). Rows are sorted by ``video_id``. Raises :class:`ManifestError` with a
    one-line message when the root or its metadata is unusable.
    """
    try:
        ds = Dataset(str(dataset.value if isinstance(dataset, Dataset) else dataset).lower())
    except ValueError:
        raise ManifestError(f"unknown dataset {dataset!r}; known: {', '.join(d.value for d in Dataset)}") from None
    try:
        root_path = FsPath.of(root, endpoint).snapshot()
    except OSError as exc:
        raise ManifestError(f"{ds.value} root {str(root)!r} cannot be listed ({str(exc).strip().splitlines()[0]})") from None
    if not root_path.is_dir():
        what = "is not a directory" if root_path.is_local else "holds no objects (no such prefix)"
        raise ManifestError(f"{ds.value} root {str(root_path)!r} {what}")
    reader = READERS[ds]
    known = [p for p in inspect.signature(reader).parameters if p != "root"]
    unknown = sorted(set(options) - set(known))
    if unknown:
        raise ManifestError(f"{ds.value} reader: unknown option(s) {', '.join(unknown)}; known: {', '.join(known)}")
    manifest = reader(root_path, **options)
    manifest = apply_synthetic_truth(manifest, root_path)
    manifest.sort(key=lambda r: r.video_id)
    return manifest
