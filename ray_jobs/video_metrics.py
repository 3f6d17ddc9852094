"""The numbers of an ensemble evaluation: scored clips grouped into videos, and every metric of the report.

:func:`video_scores` turns the clip rows scored by :func:`ray_jobs.scoring.score_shards` into
per-video probabilities for every specialist; :func:`compute_metrics` gives, for the ensemble, the
ensemble before calibration (:data:`UNCALIBRATED`), the plain mean of the specialists'
probabilities (:data:`MEAN_PROB`) and every specialist: video and frame (clip) AUC, log loss, EER,
accuracy per class and expected calibration error; the specialist x manipulation-family AUC
matrix, the ensemble's accuracy per family, with several datasets the video AUC per dataset, the
same family matrix within each dataset, and which families were absent from training.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from specialists import metrics as M
from specialists.ensemble import AggregationConfig, Ensemble, aggregate, video_labels

#: row names of the models that are not a single specialist
ENSEMBLE = "ensemble"
UNCALIBRATED = "ensemble_uncalibrated"
MEAN_PROB = "mean_prob"


@dataclass
class VideoScores:
    """Scores of one split, per clip and per video, for every specialist (columns in key order)."""

    keys: list[str]
    clip_probs: np.ndarray
    clip_labels: np.ndarray
    clip_videos: np.ndarray
    videos: np.ndarray
    video_probs: np.ndarray
    video_labels: np.ndarray
    video_methods: np.ndarray
    video_datasets: np.ndarray
    video_faces: np.ndarray | None = None
    """Face tracks per video (distinct ``face_index``); ``None``: one each."""


def video_key(datasets: np.ndarray, video_ids: np.ndarray) -> np.ndarray:
    """Videos told apart across datasets: ``<dataset>:<video_id>``."""
    return np.char.add(np.char.add(np.asarray(datasets).astype(str), ":"), np.asarray(video_ids).astype(str))


def video_scores(cols: Mapping[str, np.ndarray], keys: Sequence[str], agg: AggregationConfig,
                 mask: np.ndarray | None = None) -> VideoScores:
    """Group scored clip rows (``score_shards`` columns) into videos with ``agg``."""
    mask = np.ones(len(cols["video_id"]), dtype=bool) if mask is None else mask
    vids = video_key(np.asarray(cols["dataset"])[mask], np.asarray(cols["video_id"])[mask])
    labels = np.asarray(cols["label"])[mask].astype(np.int64)
    probs = np.stack([np.asarray(cols[f"prob_{k}"], dtype=np.float64)[mask] for k in keys], axis=1)
    faces = np.asarray(cols["face_index"])[mask] if "face_index" in cols else None
    videos, vprobs = aggregate(probs, vids, agg, faces)
    _, vlabels = video_labels(labels, vids)
    where = np.searchsorted(videos, vids)
    methods, datasets = np.empty(len(videos), dtype=object), np.empty(len(videos), dtype=object)
    methods[where] = np.asarray(cols["method"])[mask].astype(str)
    datasets[where] = np.asarray(cols["dataset"])[mask].astype(str)
    n_faces = np.ones(len(videos), dtype=np.int64)
    if faces is not None:
        np.maximum.at(n_faces, where, np.asarray(faces, dtype=np.int64) + 1)
    return VideoScores(list(keys), probs, labels, vids, videos, vprobs, vlabels, methods, datasets, n_faces)


def _ece(probs: np.ndarray, labels: np.ndarray, bins: int = 10) -> float:
    import torch
    from torchmetrics.functional.classification import binary_calibration_error

    return float(binary_calibration_error(torch.as_tensor(np.ascontiguousarray(probs), dtype=torch.float64),
                                          torch.as_tensor(labels).long(), n_bins=bins))


def model_scores(ens: Ensemble, s: VideoScores) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """``name -> (clip probabilities, video probabilities)`` for the ensemble, its uncalibrated
    combination, the plain mean of probabilities, and each specialist."""
    out = {
        ENSEMBLE: (ens.predict_proba(s.clip_probs), ens.predict_proba(s.video_probs)),
        UNCALIBRATED: (ens.predict_proba(s.clip_probs, calibrated=False),
                       ens.predict_proba(s.video_probs, calibrated=False)),
        MEAN_PROB: (s.clip_probs.mean(axis=1), s.video_probs.mean(axis=1)),
    }
    for i, k in enumerate(s.keys):
        out[k] = (s.clip_probs[:, i], s.video_probs[:, i])
    return out


def _family_accuracy(ens_video: np.ndarray, s: VideoScores, families: list[str]) -> dict[str, dict[str, Any]]:
    """The ensemble's accuracy (threshold 0.5) on the real videos and on each family's fakes."""
    real = s.video_labels == 0
    accuracy = {}
    for group in ["real", *families]:
        m = real if group == "real" else s.video_methods == group
        truth = 0 if group == "real" else 1
        accuracy[group] = {"videos": int(m.sum()),
                           "acc": float(((ens_video[m] >= 0.5) == truth).mean()) if m.any() else float("nan")}
    return accuracy


def _faces_auc(ens_video: np.ndarray, s: VideoScores) -> dict[str, Any]:
    """The ensemble's video AUC on several-face fakes against one-face fakes of the same families
    (each against all real videos of the datasets that have several-face videos); ``{}`` without them."""
    faces = s.video_faces if s.video_faces is not None else np.ones(len(s.videos), dtype=np.int64)
    multi = faces > 1
    if not (multi & (s.video_labels == 1)).any():
        return {}
    datasets = {str(d) for d in s.video_datasets[multi]}
    here = np.isin(s.video_datasets.astype(str), sorted(datasets))
    families = sorted({str(m) for m in s.video_methods[multi & (s.video_labels == 1)]})
    fake = here & (s.video_labels == 1) & np.isin(s.video_methods.astype(str), families)
    real = here & (s.video_labels == 0)
    out: dict[str, Any] = {"datasets": sorted(datasets), "families": families}
    for name, m in (("one_face", fake & ~multi), ("several_faces", fake & multi)):
        sel = real | m
        out[name] = {"fake_videos": int(m.sum()), "real_videos": int(real.sum()),
                     "video_auc": M.auc(ens_video[sel], s.video_labels[sel]) if m.any() else float("nan")}
    return out


def _dataset_family_auc(scores: Mapping[str, tuple[np.ndarray, np.ndarray]], s: VideoScores) -> dict[str, Any]:
    """Per dataset, the video AUC of its real videos against each of its families' fakes (the
    models of ``family_auc``): the pooled matrix mixes datasets whose reals differ in difficulty."""
    methods, datasets = s.video_methods.astype(str), s.video_datasets.astype(str)
    out: dict[str, Any] = {}
    for d in sorted(set(datasets)):
        real = (datasets == d) & (s.video_labels == 0)
        fake = {f: (datasets == d) & (s.video_labels == 1) & (methods == f)
                for f in sorted(set(methods[(datasets == d) & (s.video_labels == 1)]))}
        out[d] = {"real_videos": int(real.sum()), "fake_videos": {f: int(m.sum()) for f, m in fake.items()},
                  "auc": {name: {f: M.auc(video_p[real | m], s.video_labels[real | m]) if real.any() else float("nan")
                                 for f, m in fake.items()}
                          for name, (_, video_p) in scores.items() if name != UNCALIBRATED}}
    return out


def compute_metrics(ens: Ensemble, s: VideoScores, unseen: Collection[str] = ()) -> dict[str, Any]:
    """Every number of the report (see the module docstring); plain JSON data.

    ``unseen``: the families no member trained on (:func:`ray_jobs.members.absent_from_training`),
    flagged so that the report tells generalisation from fitting.
    """
    scores = model_scores(ens, s)
    models = {}
    for name, (clip_p, video_p) in scores.items():
        models[name] = {"video_auc": M.auc(video_p, s.video_labels), "frame_auc": M.auc(clip_p, s.clip_labels),
                        **{k: v for k, v in M.summary(video_p, s.video_labels).items() if k not in ("auc", "n")},
                        "ece": _ece(video_p, s.video_labels)}
    families = sorted({str(m) for m, y in zip(s.video_methods, s.video_labels) if y == 1})
    real = s.video_labels == 0
    matrix = {name: {f: M.auc(video_p[real | (s.video_methods == f)], s.video_labels[real | (s.video_methods == f)])
                     for f in families} for name, (_, video_p) in scores.items() if name not in (UNCALIBRATED,)}
    datasets = sorted({str(d) for d in s.video_datasets})
    per_dataset = {name: {d: M.auc(video_p[s.video_datasets == d], s.video_labels[s.video_datasets == d])
                          for d in datasets} for name, (_, video_p) in scores.items()} if len(datasets) > 1 else {}
    return {
        "videos": int(len(s.videos)), "clips": int(len(s.clip_labels)), "datasets": datasets,
        "real_videos": int(real.sum()), "fake_videos": int((~real).sum()),
        "ensemble": models[ENSEMBLE] | {"log_loss_uncalibrated": models[UNCALIBRATED]["log_loss"],
                                       "ece_uncalibrated": models[UNCALIBRATED]["ece"]},
        "models": models,
        "families": families,
        "family_auc": matrix,
        "family_accuracy": _family_accuracy(scores[ENSEMBLE][1], s, families),
        "dataset_auc": per_dataset,
        "dataset_family_auc": _dataset_family_auc(scores, s),
        "unseen_families": sorted(set(families) & set(unseen)),
        "family_unseen": {f: f in unseen for f in families},
        "faces_auc": _faces_auc(scores[ENSEMBLE][1], s),
    }


def reliability_bins(probs: np.ndarray, labels: np.ndarray, bins: int = 10) -> list[dict[str, float]]:
    """Per equal-width probability bin: count, mean predicted probability, fraction of fakes."""
    edges = np.linspace(0, 1, bins + 1)
    idx = np.clip(np.digitize(probs, edges[1:-1]), 0, bins - 1)
    out = []
    for b in range(bins):
        m = idx == b
        out.append({"lo": float(edges[b]), "hi": float(edges[b + 1]), "n": int(m.sum()),
                    "mean_prob": float(probs[m].mean()) if m.any() else float("nan"),
                    "fake_rate": float(labels[m].mean()) if m.any() else float("nan")})
    return out
