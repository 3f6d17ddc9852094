"""Settings of the synthetic benchmark: the manipulation families, the layouts, :class:`SynthConfig`,
and the seeding helpers that keep every stage deterministic."""

from __future__ import annotations

import zlib
from dataclasses import dataclass

import numpy as np

#: Manipulation families, in the order they are assigned to reals.
FAMILIES: tuple[str, ...] = (
    "face_swap",
    "double_compression",
    "resolution_mismatch",
    "temporal_flicker",
    "lighting_inconsistency",
    "lip_sync_shift",
    "low_light",
)

#: FF++ ``manipulated_sequences/<folder>`` name of each family.
FAMILY_FOLDERS: dict[str, str] = {
    "face_swap": "FaceSwapBlend",
    "double_compression": "DoubleCompression",
    "resolution_mismatch": "ResolutionMismatch",
    "temporal_flicker": "TemporalFlicker",
    "lighting_inconsistency": "LightingInconsistency",
    "lip_sync_shift": "LipSyncShift",
    "low_light": "LowLightSwap",
}

#: The specialist (``specialists`` registry key) whose artefact each family carries.
FAMILY_SPECIALIST: dict[str, str] = {
    "face_swap": "bg",
    "double_compression": "cm",
    "resolution_mismatch": "rr",
    "temporal_flicker": "tm",
    "lighting_inconsistency": "bg",
    "lip_sync_shift": "av",
    "low_light": "ll",
}

#: The family each specialist must lead (the highest video AUC of the six on it): every family
#: but face swap, which any specialist may lead (its pasted face carries several artefacts).
SPECIALIST_FAMILY: dict[str, str] = {s: f for f, s in FAMILY_SPECIALIST.items() if f != "face_swap"}

DATASETS: tuple[str, ...] = ("ffpp", "celebdf", "dfdc")

_NORMAL_FAMILIES = tuple(f for f in FAMILIES if f != "low_light")


# =============================================================================== configuration


@dataclass
class SynthConfig:
    """Settings of a synthetic benchmark. Every size is per dataset layout."""

    seed: int = 0
    """Master seed: the same seed gives the same files (decoded content) and metadata."""
    height: int = 144
    """Frame height in pixels (even)."""
    width: int = 144
    """Frame width in pixels (even)."""
    fps: float = 15.0
    """Frame rate of every video."""
    num_frames: int = 36
    """Frames per video (36 at 15 fps = 2.4 s)."""
    sample_rate: int = 16000
    """Audio sample rate (mono AAC)."""
    crf: int = 23
    """x264 quality of the final encode (FF++ "c23" is crf 23)."""
    datasets: tuple[str, ...] = DATASETS
    """Which layouts to write (``ffpp``, ``celebdf``, ``dfdc``)."""
    families: tuple[str, ...] = FAMILIES
    """Manipulation families to generate (``low_light`` needs ``low_light_fraction > 0``)."""
    fakes_per_real: int | None = None
    """Families applied to each normal-light real (``None``: all of them). Families rotate
    over the reals so that every family is present."""
    low_light_fraction: float = 0.4
    """Fraction of reals captured in low light (they get ``low_light`` fakes)."""
    ffpp_pairs: int = 20
    """FF++: number of ``[target, source]`` pairs (2 reals each)."""
    celebdf_identities: int = 20
    """Celeb-DF: identities in ``Celeb-real`` (must exceed the families per real)."""
    celebdf_videos_per_identity: int = 2
    """Celeb-DF: ``Celeb-real`` videos per identity."""
    celebdf_youtube: int = 8
    """Celeb-DF: ``YouTube-real`` videos (reals without fakes)."""
    dfdc_parts: int = 4
    """DFDC: number of ``dfdc_train_part_<k>`` folders."""
    dfdc_reals_per_part: int = 10
    """DFDC: real videos per part (their fakes live in the same part)."""
    dfdc_two_person_fraction: float = 0.5
    """DFDC: fraction of reals that show two people side by side (a frame twice as wide); each of
    their fakes manipulates one of the two faces (see :mod:`.pairs`). FF++ and Celeb-DF videos
    always show one person."""
    val_fraction: float = 0.15
    """Share of FF++ pairs in ``val.json``."""
    test_fraction: float = 0.2
    """Share of FF++ pairs in ``test.json`` and of Celeb-DF identities in the test list."""
    workers: int = 2
    """Processes rendering and encoding in parallel (1 = in-process)."""


def _stable(x: float, digits: int = 4) -> float:
    """Round a scalar derived from an array reduction. NumPy's SIMD reductions may differ in the
    last bits with the arrays' memory alignment; rounding keeps the output bit-for-bit
    deterministic across runs and processes."""
    return round(float(x), digits)


def _rng(*key: int | str) -> np.random.Generator:
    """A generator seeded by a tuple of ints/strings (strings hashed with crc32: stable)."""
    words = [zlib.crc32(k.encode()) if isinstance(k, str) else int(k) & 0xFFFFFFFF for k in key]
    return np.random.default_rng(words)
