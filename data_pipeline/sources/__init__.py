"""Dataset readers: FF++, Celeb-DF v2 and DFDC layouts -> one manifest schema (:mod:`.manifest`)."""

from .manifest import (
    MANIFEST_FIELDS,
    Dataset,
    Issue,
    Manifest,
    ManifestError,
    ManifestRow,
    read_manifest,
)

__all__ = ["MANIFEST_FIELDS", "Dataset", "Issue", "Manifest", "ManifestError", "ManifestRow", "read_manifest"]
