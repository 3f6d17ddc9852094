"""The Interceptor's math: frame -> video aggregation, fitted combination, calibration, clipping.

Pure arrays in, arrays out: no files, no Ray, nothing of ``data_pipeline`` or ``ray_jobs``
(``ray_jobs/evaluation.py`` scores shards and fits; ``ray_jobs/interceptor.py`` scores videos).

**Frames -> video.** A specialist scores every clip of a video; :func:`aggregate_video` turns the
clip probabilities into one video probability per specialist:

* ``mean``: the mean probability;
* ``confident``: the DFDC winner's confident-frames rule (Seferbekov, 2020). With threshold
  ``t`` (0.8): if more than ``fake_fraction`` (0.4 = 1/2.5) of the clips are confidently fake
  (``p > t``), the video score is the mean of those clips only; else, if more than
  ``real_fraction`` (0.9) of the clips are confidently real (``p < 1 - t``), the mean of those;
  otherwise the plain mean. A few clearly manipulated frames are enough to call a video fake,
  and a video needs near-unanimous confidence to be called clearly real.

**Specialists -> one score.** Each specialist's video probability becomes a logit
``z_k = logit(clip(p_k, 1e-4))``; the ensemble's logit is ::

    s = a * sum_k w_k z_k + b          w on the simplex (w_k >= 0, sum w_k = 1), a = 1 / T > 0

``sum_k w_k z_k`` is the *uncalibrated* ensemble (a weighted logarithmic opinion pool: the
combination alone); ``T`` (temperature) and ``b`` (bias) are its calibration. All of ``w``, ``T``
and ``b`` are fitted together on the validation split by minimising log loss with torch's L-BFGS
(``w = softmax(u)``, ``a = exp(log_a)``: an unconstrained problem), which is logistic-regression
stacking with non-negative weights: a specialist can be ignored but never inverted.

Validation sets can be small (a handful of videos at demo scale), so the fit is regularised the
Bayesian way, with a strength that fades as data grows: the targets are Platt's (1999) smoothed
labels ``(N+ + 1) / (N+ + 2)`` and ``1 / (N- + 2)`` (no infinite confidence on separable data),
and Gaussian priors pull ``u`` towards equal weights (std 2), ``log a`` towards no temperature
change (std 1) and ``b`` towards no bias (std 2); the objective is the mean log loss plus the
negative log prior divided by the number of videos N. With two validation videos the ensemble
stays close to the equal-weight, uncalibrated pool; with hundreds the data decides.

**Clipping.** Final probabilities are clipped to ``[clip, 1 - clip]`` (default 0.005): log loss
(DFDC's metric) punishes a confident mistake without bound, and a clipped one costs at most
``-log(clip)`` (5.3 nats). A video that cannot be scored (no face, unreadable) gets 0.5.

:class:`Ensemble` holds all of it and round-trips through JSON (:meth:`Ensemble.to_json`,
:meth:`Ensemble.save`, :meth:`Ensemble.load`); ``extra`` carries what the caller records with it
(which checkpoints, the clip settings).
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any

import numpy as np
import torch

ENSEMBLE_FORMAT = "interceptor-ensemble"
ENSEMBLE_FORMAT_VERSION = 1
#: specialist probabilities are clipped to [LOGIT_EPS, 1 - LOGIT_EPS] before the logit (|z| <= 9.2)
LOGIT_EPS = 1e-4
#: default clipping of the ensemble's output probability
DEFAULT_CLIP = 0.005
#: the score of a video that cannot be scored (no face, unreadable), as the DFDC winner did
UNSCORED_PROB = 0.5


class EnsembleError(ValueError):
    """An ensemble that cannot be fitted, loaded or applied, in one line."""


# =============================================================================== frames -> video


class Aggregation(str, Enum):
    """How clip probabilities become a video probability."""

    MEAN = "mean"
    CONFIDENT = "confident"

    def __str__(self) -> str:
        return self.value


@dataclass
class AggregationConfig:
    """Frame -> video aggregation settings (see the module docstring)."""

    strategy: Aggregation = Aggregation.MEAN
    """``mean`` or ``confident``."""
    threshold: float = 0.8
    """``confident``: a clip is confidently fake when ``p > threshold``, confidently real when ``p < 1 - threshold``."""
    fake_fraction: float = 0.4
    """``confident``: share of confidently fake clips above which only they are averaged."""
    real_fraction: float = 0.9
    """``confident``: share of confidently real clips above which only they are averaged."""

    def __post_init__(self) -> None:
        try:
            self.strategy = Aggregation(str(self.strategy))
        except ValueError:
            raise EnsembleError(f"unknown aggregation {self.strategy!r}; known: "
                                f"{', '.join(a.value for a in Aggregation)}") from None
        if not 0.5 <= self.threshold < 1:
            raise EnsembleError(f"aggregation threshold must be in [0.5, 1), got {self.threshold}")
        for name in ("fake_fraction", "real_fraction"):
            if not 0 <= getattr(self, name) <= 1:
                raise EnsembleError(f"aggregation {name} must be in [0, 1], got {getattr(self, name)}")

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "strategy": self.strategy.value}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "AggregationConfig":
        return cls(**dict(data))


def aggregate_video(probs: Sequence[float] | np.ndarray, cfg: AggregationConfig | None = None) -> float:
    """One video probability from its clips' probabilities (one specialist)."""
    cfg = cfg or AggregationConfig()
    p = np.asarray(probs, dtype=np.float64).reshape(-1)
    if p.size == 0:
        return UNSCORED_PROB
    if cfg.strategy is Aggregation.CONFIDENT:
        fake = p > cfg.threshold
        if fake.sum() > cfg.fake_fraction * p.size:
            return float(p[fake].mean())
        real = p < 1 - cfg.threshold
        if real.sum() > cfg.real_fraction * p.size:
            return float(p[real].mean())
    return float(p.mean())


def aggregate(probs: np.ndarray, video_ids: Sequence[str] | np.ndarray,
              cfg: AggregationConfig | None = None, faces: Sequence[int] | np.ndarray | None = None
              ) -> tuple[np.ndarray, np.ndarray]:
    """Group clip rows by video and aggregate each column.

    Args:
        probs: clip probabilities, ``(n_clips,)`` or ``(n_clips, K)`` (one column per specialist).
        video_ids: the video of each clip row.
        cfg: aggregation settings.
        faces: the face track of each clip row (``face_index``); when given, each face's clips are
            aggregated and a video's probability is the maximum over its faces (any fake face makes
            a fake video).

    Returns:
        ``(videos, video_probs)``: the sorted unique video ids and ``(n_videos,)`` or
        ``(n_videos, K)`` probabilities in the same order.
    """
    cfg = cfg or AggregationConfig()
    p = np.asarray(probs, dtype=np.float64)
    flat = p.ndim == 1
    p2 = p[:, None] if flat else p
    ids = np.asarray(video_ids)
    if len(ids) != p2.shape[0]:
        raise EnsembleError(f"{len(ids)} video ids for {p2.shape[0]} clip rows")
    if faces is not None and len(np.unique(np.asarray(faces))) > 1:
        return _max_over_faces(p2, ids, np.asarray(faces), cfg, flat)
    videos, inverse = np.unique(ids, return_inverse=True)
    if cfg.strategy is Aggregation.MEAN:
        counts = np.bincount(inverse, minlength=len(videos)).astype(np.float64)
        out = np.stack([np.bincount(inverse, weights=p2[:, k], minlength=len(videos)) / counts
                        for k in range(p2.shape[1])], axis=1)
    else:
        order = np.argsort(inverse, kind="stable")
        bounds = np.searchsorted(inverse[order], np.arange(len(videos) + 1))
        out = np.array([[aggregate_video(p2[order[bounds[v]:bounds[v + 1]], k], cfg) for k in range(p2.shape[1])]
                        for v in range(len(videos))], dtype=np.float64).reshape(len(videos), p2.shape[1])
    return videos, (out[:, 0] if flat else out)


def _max_over_faces(p2: np.ndarray, ids: np.ndarray, faces: np.ndarray, cfg: AggregationConfig,
                    flat: bool) -> tuple[np.ndarray, np.ndarray]:
    tracks = np.char.add(np.char.add(ids.astype(str), "#"), faces.astype(str))
    keys, first = np.unique(tracks, return_index=True)
    _, track_probs = aggregate(p2, tracks, cfg)  # in ``keys`` order
    videos, inverse = np.unique(ids[first], return_inverse=True)
    out = np.full((len(videos), p2.shape[1]), -np.inf)
    np.maximum.at(out, inverse, track_probs)
    return videos, (out[:, 0] if flat else out)


def video_labels(labels: np.ndarray, video_ids: Sequence[str] | np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(videos, label per video)`` in :func:`aggregate`'s order: a video is fake (1) when any of its
    rows is (rows carry their face's label; the unchanged faces of a fake are real)."""
    videos, inverse = np.unique(np.asarray(video_ids), return_inverse=True)
    y = np.asarray(labels)
    out = np.zeros(len(videos), dtype=y.dtype)
    np.maximum.at(out, inverse, y)
    return videos, out


# =============================================================================== combination


def to_logits(probs: np.ndarray | torch.Tensor, eps: float = LOGIT_EPS) -> np.ndarray:
    """``logit(clip(p, eps))`` as float64."""
    p = np.clip(np.asarray(probs, dtype=np.float64), eps, 1 - eps)
    return np.log(p) - np.log1p(-p)


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * x))


@dataclass
class FitReport:
    """What :func:`fit_ensemble` saw and achieved on the fitting (validation) data."""

    videos: int
    real: int
    fake: int
    log_loss_uncalibrated: float
    """Log loss of the fitted combination without temperature/bias (output clipped)."""
    log_loss_calibrated: float
    """Log loss of the calibrated ensemble (output clipped)."""
    log_loss_equal_weights: float
    """Log loss of the plain mean of the specialists' logits (no fitting), for reference."""
    iterations: int
    converged: bool


@dataclass
class Ensemble:
    """Fitted weights, calibration and aggregation of the Interceptor (see the module docstring)."""

    specialists: list[str]
    """Specialist keys, in the column order of every probability matrix."""
    weights: list[float]
    """Combination weights over the specialists' logits: non-negative, summing to 1."""
    temperature: float = 1.0
    """Calibration temperature ``T`` (the combined logit is divided by it)."""
    bias: float = 0.0
    """Calibration bias added after the temperature."""
    clip: float = DEFAULT_CLIP
    """Output probabilities are clipped to ``[clip, 1 - clip]``."""
    aggregation: AggregationConfig = field(default_factory=AggregationConfig)
    """Frame -> video aggregation applied per specialist before combining."""
    fit: FitReport | None = None
    """How the ensemble was fitted (``None`` when built by hand)."""
    extra: dict[str, Any] = field(default_factory=dict)
    """Caller's records saved with the ensemble (checkpoints, clip settings, data used)."""

    def __post_init__(self) -> None:
        if not self.specialists:
            raise EnsembleError("an ensemble needs at least one specialist")
        if len(set(self.specialists)) != len(self.specialists):
            raise EnsembleError(f"specialists listed twice: {self.specialists}")
        if len(self.weights) != len(self.specialists):
            raise EnsembleError(f"{len(self.weights)} weights for {len(self.specialists)} specialists")
        w = np.asarray(self.weights, dtype=np.float64)
        if (w < 0).any() or not math.isclose(float(w.sum()), 1.0, abs_tol=1e-6):
            raise EnsembleError(f"weights must be non-negative and sum to 1, got {self.weights}")
        if not self.temperature > 0:
            raise EnsembleError(f"temperature must be > 0, got {self.temperature}")
        if not 0 <= self.clip < 0.5:
            raise EnsembleError(f"clip must be in [0, 0.5), got {self.clip}")
        if isinstance(self.aggregation, Mapping):
            self.aggregation = AggregationConfig.from_dict(self.aggregation)

    # ----------------------------------------------------------------------------- applying
    def _matrix(self, probs: np.ndarray | Mapping[str, Any]) -> np.ndarray:
        if isinstance(probs, Mapping):
            missing = [k for k in self.specialists if k not in probs]
            if missing:
                raise EnsembleError(f"no probabilities for specialist(s) {', '.join(missing)}")
            return np.stack([np.asarray(probs[k], dtype=np.float64).reshape(-1) for k in self.specialists], axis=1)
        m = np.asarray(probs, dtype=np.float64)
        m = m[None, :] if m.ndim == 1 else m
        if m.ndim != 2 or m.shape[1] != len(self.specialists):
            raise EnsembleError(f"expected probabilities of shape (N, {len(self.specialists)}), got {np.shape(probs)}")
        return m

    def combined_logit(self, probs: np.ndarray | Mapping[str, Any]) -> np.ndarray:
        """The uncalibrated combination ``sum_k w_k logit(p_k)`` per row."""
        return to_logits(self._matrix(probs)) @ np.asarray(self.weights, dtype=np.float64)

    def predict_proba(self, probs: np.ndarray | Mapping[str, Any], calibrated: bool = True) -> np.ndarray:
        """Fake probability per row of specialist probabilities ``(N, K)`` (or a key -> column mapping).

        ``calibrated=False`` gives the combination alone (no temperature/bias); both are clipped.
        Works for video rows and for clip rows alike.
        """
        s = self.combined_logit(probs)
        if calibrated:
            s = s / self.temperature + self.bias
        return np.clip(_sigmoid(s), self.clip, 1 - self.clip)

    def aggregate(self, clip_probs: np.ndarray | Mapping[str, Any], video_ids: Sequence[str] | np.ndarray):
        """``(videos, per-specialist video probabilities (n_videos, K))`` of clip rows."""
        return aggregate(self._matrix(clip_probs), video_ids, self.aggregation)

    def score_clips(self, clip_probs: Mapping[str, Sequence[float]]) -> tuple[float, dict[str, float]]:
        """One video: ``(ensemble probability, per-specialist video probabilities)`` from its clips'
        probabilities per specialist."""
        per = {k: aggregate_video(clip_probs[k], self.aggregation) for k in self.specialists}
        return float(self.predict_proba(per)[0]), per

    # ----------------------------------------------------------------------------- JSON
    def to_dict(self) -> dict[str, Any]:
        return {
            "format": ENSEMBLE_FORMAT,
            "format_version": ENSEMBLE_FORMAT_VERSION,
            "specialists": list(self.specialists),
            "weights": {k: float(w) for k, w in zip(self.specialists, self.weights)},
            "temperature": float(self.temperature),
            "bias": float(self.bias),
            "clip": float(self.clip),
            "aggregation": self.aggregation.to_dict(),
            "fit": asdict(self.fit) if self.fit is not None else None,
            "extra": self.extra,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], source: str = "ensemble") -> "Ensemble":
        if not isinstance(data, Mapping) or data.get("format") != ENSEMBLE_FORMAT:
            raise EnsembleError(f"{source} is not an Interceptor ensemble file")
        if data.get("format_version") != ENSEMBLE_FORMAT_VERSION:
            raise EnsembleError(f"{source} has ensemble format version {data.get('format_version')}, "
                                f"this build reads {ENSEMBLE_FORMAT_VERSION}")
        try:
            keys = list(data["specialists"])
            return cls(specialists=keys, weights=[float(data["weights"][k]) for k in keys],
                       temperature=float(data["temperature"]), bias=float(data["bias"]), clip=float(data["clip"]),
                       aggregation=AggregationConfig.from_dict(data.get("aggregation") or {}),
                       fit=FitReport(**data["fit"]) if data.get("fit") else None, extra=dict(data.get("extra") or {}))
        except (KeyError, TypeError) as e:
            raise EnsembleError(f"{source} is incomplete ({type(e).__name__}: {e})") from None

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, default=str)

    @classmethod
    def from_json(cls, text: str, source: str = "ensemble") -> "Ensemble":
        try:
            data = json.loads(text)
        except ValueError as e:
            raise EnsembleError(f"{source} is not valid JSON ({e})") from None
        return cls.from_dict(data, source)

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write the ensemble as JSON at ``path`` (temp file + rename: never half a file)."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        with os.fdopen(fd, "w") as f:
            f.write(self.to_json())
        os.replace(tmp, path)
        return path

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> "Ensemble":
        path = Path(path)
        if not path.is_file():
            raise EnsembleError(f"ensemble file not found: {path}")
        return cls.from_json(path.read_text(), str(path))


# =============================================================================== fitting


def _log_loss(p: np.ndarray, y: np.ndarray) -> float:
    p = np.clip(p, 1e-7, 1 - 1e-7)
    return float(-(y * np.log(p) + (1 - y) * np.log1p(-p)).mean())


def platt_targets(labels: np.ndarray) -> np.ndarray:
    """Platt's smoothed targets: ``(N+ + 1) / (N+ + 2)`` for fakes, ``1 / (N- + 2)`` for reals."""
    y = np.asarray(labels, dtype=np.float64)
    pos, neg = float(y.sum()), float(len(y) - y.sum())
    return np.where(y > 0.5, (pos + 1) / (pos + 2), 1 / (neg + 2))


def fit_ensemble(probs: np.ndarray | Mapping[str, Sequence[float]], labels: Sequence[int] | np.ndarray,
                 specialists: Sequence[str] | None = None, *, aggregation: AggregationConfig | None = None,
                 clip: float = DEFAULT_CLIP, weight_prior_std: float = 2.0, temperature_prior_std: float = 1.0,
                 bias_prior_std: float = 2.0, max_iter: int = 200, extra: dict[str, Any] | None = None) -> Ensemble:
    """Fit weights, temperature and bias on validation *video* probabilities.

    Args:
        probs: per-specialist video probabilities, ``(N, K)`` in ``specialists`` order, or a
            mapping ``key -> (N,)``.
        labels: 0 real / 1 fake per video; both classes must be present.
        specialists: column keys (taken from the mapping when ``probs`` is one).
        aggregation: how these video probabilities were aggregated (recorded, applied at prediction).
        clip: output probability clipping.
        weight_prior_std: std of the Gaussian prior on the weight logits ``u`` (towards equal weights).
        temperature_prior_std: std of the prior on ``log a = -log T`` (towards ``T = 1``).
        bias_prior_std: std of the prior on the bias (towards 0).
        max_iter: L-BFGS iterations.
        extra: records saved with the ensemble.
    """
    if isinstance(probs, Mapping):
        specialists = list(specialists or probs.keys())
        matrix = np.stack([np.asarray(probs[k], dtype=np.float64).reshape(-1) for k in specialists], axis=1)
    else:
        matrix = np.asarray(probs, dtype=np.float64)
        if specialists is None:
            raise EnsembleError("specialists must name the columns of a probability matrix")
        specialists = list(specialists)
    y = np.asarray(labels, dtype=np.float64).reshape(-1)
    if matrix.ndim != 2 or matrix.shape != (len(y), len(specialists)):
        raise EnsembleError(f"probabilities of shape {matrix.shape} do not fit {len(y)} labels x "
                            f"{len(specialists)} specialists")
    if not np.isfinite(matrix).all():
        raise EnsembleError("probabilities contain NaN or infinity")
    n_fake = int((y > 0.5).sum())
    if n_fake == 0 or n_fake == len(y):
        raise EnsembleError(f"fitting needs real and fake videos; got {len(y) - n_fake} real, {n_fake} fake")

    z = torch.as_tensor(to_logits(matrix))
    t = torch.as_tensor(platt_targets(y))
    k = len(specialists)
    u = torch.zeros(k, dtype=torch.float64, requires_grad=True)
    log_a = torch.zeros(1, dtype=torch.float64, requires_grad=True)
    b = torch.zeros(1, dtype=torch.float64, requires_grad=True)
    params = [u, log_a, b]
    opt = torch.optim.LBFGS(params, lr=1.0, max_iter=max_iter, tolerance_grad=1e-9, tolerance_change=1e-12,
                            history_size=20, line_search_fn="strong_wolfe")

    def objective() -> torch.Tensor:
        s = log_a.exp() * (z @ torch.softmax(u, 0)) + b
        nll = torch.nn.functional.binary_cross_entropy_with_logits(s, t)
        prior = (u.square().sum() / weight_prior_std ** 2 + log_a.square().sum() / temperature_prior_std ** 2
                 + b.square().sum() / bias_prior_std ** 2)
        return nll + prior / (2 * len(y))

    def closure() -> torch.Tensor:
        opt.zero_grad()
        loss = objective()
        loss.backward()
        return loss

    opt.step(closure)
    state = opt.state[opt._params[0]]
    iterations = int(state.get("n_iter", 0))
    grad = torch.cat([p.grad.reshape(-1) for p in params if p.grad is not None])
    converged = bool(grad.abs().max() < 1e-5) or iterations < max_iter

    with torch.no_grad():
        weights = torch.softmax(u, 0).numpy()
        a, bias = float(log_a.exp()), float(b)
    weights = weights / weights.sum()
    ens = Ensemble(specialists=specialists, weights=[float(w) for w in weights], temperature=1.0 / a, bias=bias,
                   clip=clip, aggregation=aggregation or AggregationConfig(), extra=dict(extra or {}))
    equal = np.clip(_sigmoid(to_logits(matrix).mean(axis=1)), clip, 1 - clip)
    ens.fit = FitReport(videos=len(y), real=len(y) - n_fake, fake=n_fake,
                        log_loss_uncalibrated=_log_loss(ens.predict_proba(matrix, calibrated=False), y),
                        log_loss_calibrated=_log_loss(ens.predict_proba(matrix), y),
                        log_loss_equal_weights=_log_loss(equal, y), iterations=iterations, converged=converged)
    return ens
