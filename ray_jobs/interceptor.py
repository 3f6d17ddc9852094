"""The Interceptor at inference time: the fitted ensemble loaded with its specialists, scoring videos.

:meth:`Interceptor.predict` scores one video as ``interceptor predict``'s help describes (one
decode and face detection, each distinct stage filter applied once to the crops, every specialist
on its own filter's crops, then the fitted combination and calibration); a video that gives no
usable clip is not an error but ``"unscored"`` with its reason. :func:`predict_videos` is the
command's loop over the videos.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Iterable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from data_pipeline.batch import MODEL_INPUT_COLUMNS, rows_to_batch
from data_pipeline.clips import ClipConfig, SkipVideo, extract_clips
from data_pipeline.faces import FaceDetector
from data_pipeline.filters import Preprocessing, apply_filter, parse_preprocessing
from data_pipeline.shards import decode_row
from data_pipeline.sources.manifest import ManifestRow
from ray_jobs.config import ConfigError
from ray_jobs.members import check_members, load_ensemble, members_of
from ray_jobs.storage import Storage
from specialists.ensemble import UNSCORED_PROB, Ensemble
from specialists.model import model_inputs

#: file endings taken from a folder (a file named on the command line is scored whatever its name)
VIDEO_EXTENSIONS = (".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg")


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
        columns = {k: [r[k] for r in rows] for k in MODEL_INPUT_COLUMNS}
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
                logits = self.models[key](**model_inputs(b, self.device)).float()
                out[key] = torch.softmax(logits, dim=1)[:, 1].cpu().numpy()
        return out

    def score_faces(self, rows: Sequence[dict], probs: dict[str, np.ndarray]) -> list[dict[str, Any]]:
        """Per face track: its index, clips, median crop box, ensemble probability and per-specialist
        probabilities (the video's probability is the maximum over its faces)."""
        faces = np.asarray([r["face_index"] for r in rows])
        out = []
        for face in sorted(set(faces.tolist())):
            mine = faces == face
            prob, per = self.ensemble.score_clips({k: v[mine] for k, v in probs.items()})
            box = np.median(np.asarray([r["face_box"] for r, m in zip(rows, mine) if m], dtype=np.float64), axis=0)
            out.append({"face_index": int(face), "prob_fake": prob, "clips": int(mine.sum()),
                        "box": [round(float(v), 1) for v in box], "specialists": {k: round(v, 6) for k, v in per.items()}})
        return out

    def predict(self, path: str | Path) -> dict[str, Any]:
        """The JSON-ready result for one video (``faces``: one entry per face track, the video's
        probability is the maximum); never raises for a bad video."""
        start = time.perf_counter()
        result: dict[str, Any] = {"path": str(path), "prob_fake": UNSCORED_PROB, "verdict": "unscored",
                                  "specialists": {}, "clips": 0, "face_found": False, "reason": None, "detail": None}
        try:
            rows = self.extract(path)
            probs = self.clip_probs(rows)
            faces = self.score_faces(rows, probs)
            top = max(faces, key=lambda f: f["prob_fake"])
            result.update(prob_fake=top["prob_fake"], verdict="fake" if top["prob_fake"] >= 0.5 else "real",
                          specialists=top["specialists"], clips=len(rows), face_found=True, faces=faces)
        except SkipVideo as e:
            result.update(reason=e.reason, detail=e.detail or None)
        except Exception as e:  # noqa: BLE001 - one bad video must not stop the others
            result.update(reason="error", detail=f"{type(e).__name__}: {str(e).strip().splitlines()[0] if str(e).strip() else ''}")
        result["seconds"] = round(time.perf_counter() - start, 4)
        return result


def open_interceptor(storage: Storage, name: str, device: str = "cpu", clip_overrides: dict[str, Any] | None = None,
                     threads: int = 0) -> Interceptor:
    """:meth:`Interceptor.load` with ``threads`` torch CPU threads (0: torch's default), its face
    detector built (a bad detector setting fails here, in one line)."""
    if threads > 0:
        import torch

        torch.set_num_threads(threads)
    interceptor = Interceptor.load(storage, name, device, clip_overrides)
    interceptor.detector  # noqa: B018 - built now, not at the first video
    return interceptor


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


def predict_videos(interceptor: Interceptor, videos: Sequence[Path], out: str | None = None,
                   quiet: bool = False) -> list[dict[str, Any]]:
    """Score ``videos`` in order, printing each result as one JSON line as soon as it is scored
    (and, unless ``quiet``, a progress line on stderr); ``out``: also write them all as a JSON array."""
    results = []
    start = time.perf_counter()
    for i, video in enumerate(videos, 1):
        r = interceptor.predict(video)
        results.append(r)
        print(json.dumps(r), flush=True)
        if not quiet:
            rate = i / max(time.perf_counter() - start, 1e-9)
            print(f"[predict] {i}/{len(videos)} {video.name}: {r['verdict']} {r['prob_fake']:.3f}"
                  f"{' (' + r['reason'] + ')' if r['reason'] else ''} - {rate:.2f} videos/s", file=sys.stderr, flush=True)
    if out:
        path = Path(out)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(results, indent=2) + "\n")
    return results
