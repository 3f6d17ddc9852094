"""``interceptor predict PATH...``: score video files (or folders of them) with the Interceptor.

    interceptor predict clip.mp4 folder/ [--storage-path runs] [--name interceptor] [--out results.json]
    python -m ray_jobs.predict ...

The Interceptor is the ensemble fitted by ``interceptor evaluate`` and saved at
``<storage>/<name>/ensemble/ensemble.json``: which final checkpoint of each specialist it combines,
their weights, temperature, bias, aggregation, and the clip settings the shards were prepared
with. For every video:

1. decode its evenly spread clips and detect the face ONCE (:func:`data_pipeline.clips.extract_clips`
   with the plain ``resize`` crop);
2. apply each *distinct* stage filter that the checkpoints were trained with (their recipe's
   ``preprocessing``: ``resize``, ``clahe``, ``clahe_bilateral``) to those crops once;
3. score the clips with every specialist on its own filter's crops;
4. aggregate clips to one probability per specialist, combine with the fitted weights, calibrate,
   clip (:class:`specialists.ensemble.Ensemble`).

One JSON object per video is printed (JSON Lines) as soon as it is scored::

    {"path": ".../v.mp4", "prob_fake": 0.93, "verdict": "fake", "specialists": {"cm": 0.97, ...},
     "clips": 8, "face_found": true, "reason": null, "detail": null, "seconds": 0.41}

A video that gives no usable clip (no face, unreadable, truncated, too short) is not an error: it
gets ``prob_fake`` 0.5, ``verdict`` ``"unscored"`` and the reason (as the DFDC winner scored
videos without a face). ``--out FILE`` also writes all results as one JSON array.

This module also holds what predict and evaluate share: finding each specialist's latest complete
checkpoint (:func:`discover_members`), checking that the checkpoints of an ensemble agree on the
clip format (:func:`check_members`) and the ensemble's place in storage.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from data_pipeline.clips import ClipConfig, SkipVideo, extract_clips
from data_pipeline.faces import DetectorError, FaceDetector
from data_pipeline.filters import Preprocessing, apply_filter, parse_preprocessing
from data_pipeline.shards import decode_row, rows_to_batch
from data_pipeline.sources.manifest import ManifestRow
from ray_jobs.checkpoints import FORMAT, FORMAT_VERSION, META_FILE, CheckpointError
from ray_jobs.config import ConfigError, StageChain
from ray_jobs.storage import COMPLETE_FILE, Storage, StorageError
from ray_jobs.train import TrainConfig, final_parts
from specialists.ensemble import UNSCORED_PROB, Ensemble, EnsembleError
from specialists.registry import SpecialistError, get_spec, list_specialists

ENSEMBLE_DIR = "ensemble"
ENSEMBLE_FILE = "ensemble.json"
#: file endings taken from a folder (a file named on the command line is scored whatever its name)
VIDEO_EXTENSIONS = (".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg")
#: model-config fields every checkpoint of one ensemble must share: they define the clips it reads
FORMAT_FIELDS = ("image_size", "num_frames", "audio_mels", "audio_steps")


# ----------------------------------------------------------------------------------- members

def ensemble_parts(name: str) -> tuple[str, ...]:
    """Storage parts of an experiment's ensemble file."""
    return (name, ENSEMBLE_DIR, ENSEMBLE_FILE)


@dataclass(frozen=True)
class Member:
    """One specialist checkpoint of the ensemble: where it is and its ``meta.json`` description."""

    specialist: str
    stage: str
    parts: tuple[str, ...]
    meta: dict[str, Any]
    display: str
    """The checkpoint folder as a user would write it (``s3://...`` or a local path)."""

    @property
    def model_config(self) -> dict[str, Any]:
        return self.meta.get("model_config", {})

    @property
    def preprocessing(self) -> Preprocessing:
        return parse_preprocessing(self.meta.get("recipe", {}).get("preprocessing", "resize"))

    def record(self) -> dict[str, Any]:
        """What the ensemble file keeps about this checkpoint (and checks again when loading)."""
        return {"stage": self.stage, "parts": list(self.parts), "checkpoint": self.display,
                "epoch": self.meta.get("epoch"), "created": self.meta.get("created"),
                "backbone": self.model_config.get("backbone"), "preprocessing": self.preprocessing.value,
                "val_auc": self.meta.get("metrics", {}).get("val_auc")}


def read_member(storage: Storage, specialist: str, stage: str, parts: Sequence[str]) -> Member:
    """A checkpoint's description from its ``meta.json`` (no weights are read)."""
    display = storage.display(*parts)
    try:
        meta = storage.read_json(*parts, META_FILE)
    except (OSError, ValueError) as e:
        raise CheckpointError(f"checkpoint {display}: cannot read {META_FILE} "
                              f"({str(e).splitlines()[0] if str(e) else type(e).__name__})") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise CheckpointError(f"checkpoint {display} is not an Interceptor specialist checkpoint")
    if meta.get("format_version") != FORMAT_VERSION:
        raise CheckpointError(f"checkpoint {display} has format version {meta.get('format_version')}, "
                              f"this build reads {FORMAT_VERSION}")
    if meta.get("specialist") != specialist:
        raise CheckpointError(f"checkpoint {display} holds specialist {meta.get('specialist')!r}, not {specialist!r}")
    return Member(specialist, stage, tuple(parts), meta, display)


def discover_members(storage: Storage, name: str, chain: StageChain,
                     specialists: Sequence[str] | None = None) -> list[Member]:
    """For each specialist (default: every registered one), its latest complete stage in chain order.

    Specialists with no complete stage are left out (the ensemble uses whichever exist).
    """
    keys = list(specialists) if specialists else list_specialists()
    members = []
    for key in keys:
        get_spec(key)
        for stage in reversed(chain.stages):
            parts = final_parts(name, key, stage.name)
            if storage.exists(*parts, COMPLETE_FILE):
                members.append(read_member(storage, key, stage.name, parts))
                break
    return members


def check_members(members: Sequence[Member]) -> dict[str, Any]:
    """Refuse an ensemble whose checkpoints disagree on the clip format; returns the shared format.

    Every checkpoint must read the same clips (:data:`FORMAT_FIELDS`: image size, frames per clip,
    audio window); the error names the first checkpoint that differs and the one it differs from.
    """
    if not members:
        raise CheckpointError("the ensemble has no specialist checkpoints")
    ref = members[0]
    for m in members[1:]:
        for key in FORMAT_FIELDS:
            have, want = m.model_config.get(key), ref.model_config.get(key)
            if have != want:
                raise CheckpointError(
                    f"checkpoint {m.display} does not fit the ensemble: its {key} is {have} but "
                    f"{ref.display} has {want} (all specialists of one ensemble must read the same clips)")
    return {key: ref.model_config.get(key) for key in FORMAT_FIELDS}


def load_ensemble(storage: Storage, name: str) -> Ensemble:
    """The fitted ensemble of experiment ``name`` (one-line error when there is none)."""
    parts = ensemble_parts(name)
    if not storage.exists(*parts):
        raise EnsembleError(f"no fitted ensemble at {storage.display(*parts)} "
                            f"(run interceptor evaluate first: it fits the ensemble on the validation split)")
    try:
        data = storage.read_json(*parts)
    except ValueError as e:
        raise EnsembleError(f"{storage.display(*parts)} is not valid JSON ({e})") from None
    return Ensemble.from_dict(data, storage.display(*parts))


def members_of(ensemble: Ensemble, storage: Storage) -> list[Member]:
    """The checkpoints an ensemble was fitted with, checked to be the very same ones (epoch and
    creation time); a retrained checkpoint needs a refit."""
    records = ensemble.extra.get("checkpoints", {})
    members = []
    for key in ensemble.specialists:
        rec = records.get(key)
        if not rec:
            raise EnsembleError(f"the ensemble does not record which checkpoint of {key!r} it uses")
        parts = tuple(rec["parts"])
        if not storage.exists(*parts, COMPLETE_FILE):
            raise CheckpointError(f"checkpoint {storage.display(*parts)} of the ensemble is missing or incomplete")
        m = read_member(storage, key, rec["stage"], parts)
        if (m.meta.get("epoch"), m.meta.get("created")) != (rec.get("epoch"), rec.get("created")):
            raise CheckpointError(f"checkpoint {m.display} changed since the ensemble was fitted "
                                  f"(created {rec.get('created')}, now {m.meta.get('created')}): "
                                  f"rerun interceptor evaluate to refit")
        members.append(m)
    return members


def clip_settings(ensemble: Ensemble, fmt: dict[str, Any], overrides: dict[str, Any] | None = None) -> ClipConfig:
    """The clip settings of prediction: those the shards were prepared with (recorded in the
    ensemble), the checkpoints' size and clip length, the plain ``resize`` crop (filters come
    after, per checkpoint), then ``overrides``."""
    base = {k: v for k, v in dict(ensemble.extra.get("clips") or {}).items() if k != "preprocessing"}
    base.update(overrides or {})
    base.update(size=int(fmt["image_size"]), clip_len=int(fmt["num_frames"]), preprocessing=Preprocessing.RESIZE)
    try:
        return ClipConfig.from_dict(base)
    except (TypeError, ValueError) as e:
        raise ConfigError(f"clip settings: {e}") from None


# ----------------------------------------------------------------------------------- the Interceptor

class Interceptor:
    """The loaded ensemble: every specialist model, its filter, and the clip settings."""

    def __init__(self, ensemble: Ensemble, models: dict[str, Any], preprocessing: dict[str, Preprocessing],
                 clip_config: ClipConfig, device: str = "cpu", audio_shape: tuple[int, int] | None = None):
        self.ensemble = ensemble
        self.models = models
        self.preprocessing = preprocessing
        self.clip_config = clip_config
        self.device = device
        self.audio_shape = audio_shape
        self._detector: FaceDetector | None = None

    @classmethod
    def load(cls, storage: Storage, name: str, device: str = "cpu",
             clip_overrides: dict[str, Any] | None = None) -> "Interceptor":
        """Load ``<storage>/<name>/ensemble/ensemble.json`` and the checkpoints it names."""
        from ray_jobs.checkpoints import load_checkpoint, model_from_checkpoint
        from ray_jobs.storage import fetch_checkpoint_dir, remove_local_copy

        ensemble = load_ensemble(storage, name)
        members = members_of(ensemble, storage)
        fmt = check_members(members)
        models = {}
        for m in members:
            local = fetch_checkpoint_dir(storage, *m.parts)
            try:
                models[m.specialist] = model_from_checkpoint(load_checkpoint(local), device).eval()
            finally:
                remove_local_copy(storage, local)
        return cls(ensemble, models, {m.specialist: m.preprocessing for m in members},
                   clip_settings(ensemble, fmt, clip_overrides), device,
                   (int(fmt["audio_mels"]), int(fmt["audio_steps"])))

    @property
    def detector(self) -> FaceDetector:
        if self._detector is None:
            self._detector = self.clip_config.make_detector()
        return self._detector

    def extract(self, path: str | Path, preprocessing: Preprocessing | str = Preprocessing.RESIZE) -> list[dict]:
        """Decode a video's clips and crop its face (one decode, one detection); raises ``SkipVideo``."""
        path = Path(path)
        row = ManifestRow(video_id=path.name, path=str(path.resolve()), dataset="predict", label=0, method="",
                          group="", split="predict")
        cfg = self.clip_config
        if parse_preprocessing(preprocessing) is not cfg.preprocessing:
            from dataclasses import replace

            cfg = replace(cfg, preprocessing=parse_preprocessing(preprocessing))
        return extract_clips(row, cfg, self.detector)

    def batch(self, rows: Sequence[dict], preprocessing: Preprocessing | str) -> dict:
        """Model inputs of clip rows with the stage filter ``preprocessing`` applied to their crops
        (rows must hold unfiltered ``resize`` crops unless ``preprocessing`` is theirs)."""
        kind = parse_preprocessing(preprocessing)
        if any(r["preprocessing"] != kind.value for r in rows):
            rows = [r if r["preprocessing"] == kind.value else
                    {**r, "frames": np.ascontiguousarray(apply_filter(decode_row(r)[0], kind)).tobytes(),
                     "preprocessing": kind.value} for r in rows]
        columns = {k: [r[k] for r in rows] for k in ("frames", "num_frames", "size", "audio", "audio_shape",
                                                     "has_audio", "label")}
        return rows_to_batch(columns, audio_shape=self.audio_shape)

    def clip_probs(self, rows: Sequence[dict], keys: Iterable[str] | None = None,
                   batches: dict[str, dict] | None = None) -> dict[str, np.ndarray]:
        """Fake probability of every clip row for every specialist in ``keys`` (default: all),
        filtering the crops once per distinct filter."""
        import torch

        keys = list(keys) if keys is not None else list(self.models)
        batches = {} if batches is None else batches
        out = {}
        with torch.no_grad():
            for key in keys:
                kind = self.preprocessing[key]
                if kind.value not in batches:
                    batches[kind.value] = self.batch(rows, kind)
                b = batches[kind.value]
                logits = self.models[key](b["frames"].to(self.device), b["audio"].to(self.device),
                                          b["has_audio"].to(self.device)).float()
                out[key] = torch.softmax(logits, dim=1)[:, 1].cpu().numpy()
        return out

    def predict(self, path: str | Path) -> dict[str, Any]:
        """The JSON-ready result for one video; never raises for a bad video."""
        start = time.perf_counter()
        result: dict[str, Any] = {"path": str(path), "prob_fake": UNSCORED_PROB, "verdict": "unscored",
                                  "specialists": {}, "clips": 0, "face_found": False, "reason": None, "detail": None}
        try:
            rows = self.extract(path)
            prob, per = self.ensemble.score_clips(self.clip_probs(rows))
            result.update(prob_fake=prob, verdict="fake" if prob >= 0.5 else "real",
                          specialists={k: round(v, 6) for k, v in per.items()}, clips=len(rows), face_found=True)
        except SkipVideo as e:
            result.update(reason=e.reason, detail=e.detail or None)
        except Exception as e:  # noqa: BLE001 - one bad video must not stop the others
            result.update(reason="error", detail=f"{type(e).__name__}: {str(e).strip().splitlines()[0] if str(e).strip() else ''}")
        result["seconds"] = round(time.perf_counter() - start, 4)
        return result


# ----------------------------------------------------------------------------------- CLI

def collect_videos(paths: Sequence[str]) -> list[Path]:
    """Files named on the command line, plus video files found (recursively) in named folders."""
    found: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            found += sorted(f for f in p.rglob("*") if f.is_file() and f.suffix.lower() in VIDEO_EXTENSIONS)
        elif p.is_file():
            found.append(p)
        else:
            raise ConfigError(f"no such file or folder: {p}")
    if not found:
        raise ConfigError(f"no video files in {', '.join(paths)} (looked for {', '.join(VIDEO_EXTENSIONS)})")
    return list(dict.fromkeys(found))


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="interceptor predict", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("paths", nargs="+", metavar="PATH", help="video files and/or folders of videos")
    ap.add_argument("--config", help="run config YAML of the train job (storage_path, s3_endpoint, name are used)")
    ap.add_argument("--storage-path", help="local path or s3://bucket/prefix of the runs (default: runs)")
    ap.add_argument("--s3-endpoint", help="custom S3 endpoint, e.g. http://127.0.0.1:9000")
    ap.add_argument("--name", help="experiment name (default: interceptor)")
    ap.add_argument("--out", help="also write all results to this JSON file (an array)")
    ap.add_argument("--device", default="cpu", help="torch device (cpu, cuda)")
    ap.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    ap.add_argument("--clips-per-video", type=int, help="clips spread over each video (default: as prepared)")
    ap.add_argument("--detector", help="face detector (default: as prepared)")
    ap.add_argument("--quiet", action="store_true", help="no progress on stderr")
    return ap


def storage_from_args(args: argparse.Namespace) -> tuple[Storage, str]:
    """Storage and experiment name from ``--config`` (a train run config) and the flags."""
    storage_path, endpoint, name = "runs", None, "interceptor"
    if args.config:
        tc = TrainConfig.load(args.config)
        storage_path, endpoint, name = tc.storage_path, tc.s3_endpoint, tc.name
    return (Storage(args.storage_path or storage_path, args.s3_endpoint or endpoint), args.name or name)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        videos = collect_videos(args.paths)
        storage, name = storage_from_args(args)
        if args.threads > 0:
            import torch

            torch.set_num_threads(args.threads)
        overrides = {k: v for k, v in (("clips_per_video", args.clips_per_video), ("detector", args.detector))
                     if v is not None}
        interceptor = Interceptor.load(storage, name, args.device, overrides)
        interceptor.detector  # a bad detector setting fails here, in one line
    except (ConfigError, CheckpointError, EnsembleError, SpecialistError, StorageError, DetectorError) as e:
        print(f"interceptor predict: error: {e}", file=sys.stderr)
        return 2
    results = []
    start = time.perf_counter()
    for i, video in enumerate(videos, 1):
        r = interceptor.predict(video)
        results.append(r)
        print(json.dumps(r), flush=True)
        if not args.quiet:
            rate = i / max(time.perf_counter() - start, 1e-9)
            print(f"[predict] {i}/{len(videos)} {video.name}: {r['verdict']} {r['prob_fake']:.3f}"
                  f"{' (' + r['reason'] + ')' if r['reason'] else ''} - {rate:.2f} videos/s", file=sys.stderr, flush=True)
    if args.out:
        out = Path(args.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
