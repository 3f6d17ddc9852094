"""Log-mel audio features: the per-clip audio input (NumPy STFT + triangular mel filterbank; no
torchaudio or librosa).

* :class:`AudioConfig` holds the feature settings.
* :func:`log_mel` turns a mono signal into a log-mel spectrogram; :func:`audio_window` cuts the
  ``(n_mels, window_steps)`` window that covers a clip's time span.
* :func:`mel_filterbank` is the triangular (HTK-scale) filterbank they use.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

__all__ = ["LOG_EPS", "AudioConfig", "audio_window", "log_mel", "mel_filterbank"]

#: Floor added before the logarithm of mel energies; ``log(LOG_EPS)`` is the value of silence.
LOG_EPS = 1e-6


@dataclass
class AudioConfig:
    """Log-mel audio feature settings.

    Attributes:
        sample_rate: the audio is resampled to mono at this rate (Hz) before the STFT.
        n_mels: mel bands (rows of the feature).
        n_fft: STFT window and FFT length in samples (400 = 25 ms at 16 kHz).
        hop: STFT hop in samples (160 = 10 ms at 16 kHz).
        window_steps: columns of the per-clip window returned by :func:`audio_window`.
    """

    sample_rate: int = 16000
    n_mels: int = 40
    n_fft: int = 400
    hop: int = 160
    window_steps: int = 16


def _hz_to_mel(hz: np.ndarray | float) -> np.ndarray:
    return 2595.0 * np.log10(1.0 + np.asarray(hz, dtype=np.float64) / 700.0)


def _mel_to_hz(mel: np.ndarray | float) -> np.ndarray:
    return 700.0 * (10.0 ** (np.asarray(mel, dtype=np.float64) / 2595.0) - 1.0)


def mel_filterbank(sr: int, n_fft: int, n_mels: int, fmin: float = 0.0, fmax: float | None = None) -> np.ndarray:
    """Triangular (HTK-scale) mel filterbank of shape ``(n_mels, n_fft // 2 + 1)``."""
    fmax = sr / 2.0 if fmax is None else fmax
    fft_hz = np.linspace(0.0, sr / 2.0, n_fft // 2 + 1)
    mel_pts = np.linspace(_hz_to_mel(fmin), _hz_to_mel(fmax), n_mels + 2)
    hz_pts = _mel_to_hz(mel_pts)
    lower = hz_pts[:-2, None]
    centre = hz_pts[1:-1, None]
    upper = hz_pts[2:, None]
    up = (fft_hz[None, :] - lower) / np.maximum(centre - lower, 1e-9)
    down = (upper - fft_hz[None, :]) / np.maximum(upper - centre, 1e-9)
    return np.maximum(0.0, np.minimum(up, down)).astype(np.float32)


def log_mel(samples: np.ndarray, sr: int, cfg: AudioConfig | None = None) -> np.ndarray:
    """Log-mel spectrogram ``(n_mels, n_frames)`` float32 of a mono signal.

    The STFT is centred (the signal is reflect-padded by ``n_fft // 2``), so column ``j`` is
    centred on time ``j * hop / sr`` and ``n_frames = 1 + len(samples) // hop``. Power spectra
    go through a triangular mel filterbank and ``log(x + 1e-6)``. ``samples`` are resampled
    (linearly) when ``sr`` differs from ``cfg.sample_rate``.
    """
    cfg = cfg or AudioConfig()
    x = np.asarray(samples, dtype=np.float32).reshape(-1)
    if sr != cfg.sample_rate and x.size:
        n_out = int(round(x.size * cfg.sample_rate / sr))
        x = np.interp(
            np.arange(n_out) * (sr / cfg.sample_rate), np.arange(x.size), x
        ).astype(np.float32)
    pad = cfg.n_fft // 2
    if x.size == 0:
        return np.full((cfg.n_mels, 1), math.log(LOG_EPS), dtype=np.float32)
    mode = "reflect" if x.size > pad else "constant"
    xp = np.pad(x, (pad, pad), mode=mode)
    n_frames = 1 + (xp.size - cfg.n_fft) // cfg.hop
    frames = np.lib.stride_tricks.sliding_window_view(xp, cfg.n_fft)[:: cfg.hop][:n_frames]
    window = np.hanning(cfg.n_fft + 1)[:-1].astype(np.float32)  # periodic Hann
    power = np.abs(np.fft.rfft(frames * window, axis=1)) ** 2
    mel = mel_filterbank(cfg.sample_rate, cfg.n_fft, cfg.n_mels) @ power.T.astype(np.float32)
    return np.log(mel + LOG_EPS).astype(np.float32)


def audio_window(logmel: np.ndarray, cfg: AudioConfig, t0: float, t1: float) -> np.ndarray:
    """The ``(n_mels, window_steps)`` slice of ``logmel`` covering seconds ``t0..t1``.

    ``logmel`` is a :func:`log_mel` output whose column ``j`` is centred at ``j * hop /
    sample_rate`` seconds. The span is split into ``window_steps`` equal bins; each output
    column is the mean of the log-mel columns whose centres fall in its bin (linear
    interpolation when a bin holds none, e.g. short clips). Time outside the signal reads as
    silence (``log(1e-6)``).
    """
    if t1 <= t0:
        raise ValueError(f"empty audio window: t0={t0} t1={t1}")
    n_mels, n_cols = logmel.shape
    steps = cfg.window_steps
    cols_per_s = cfg.sample_rate / cfg.hop
    silence = np.float32(math.log(LOG_EPS))
    edges = np.linspace(t0 * cols_per_s, t1 * cols_per_s, steps + 1)
    out = np.empty((n_mels, steps), dtype=np.float32)

    def column(pos: float) -> np.ndarray:
        if pos < -0.5 or pos > n_cols - 0.5:
            return np.full(n_mels, silence, dtype=np.float32)
        p = min(max(pos, 0.0), n_cols - 1.0)
        lo = int(math.floor(p))
        hi = min(lo + 1, n_cols - 1)
        w = p - lo
        return (1.0 - w) * logmel[:, lo] + w * logmel[:, hi]

    for k in range(steps):
        a, b = edges[k], edges[k + 1]
        lo, hi = int(math.ceil(a)), int(math.ceil(b)) - 1  # column centres in [a, b)
        inside = [j for j in range(lo, hi + 1) if 0 <= j < n_cols]
        n_outside = (hi - lo + 1) - len(inside) if hi >= lo else 0
        if inside or n_outside:
            total = logmel[:, inside].sum(axis=1) if inside else np.zeros(n_mels, np.float32)
            out[:, k] = (total + n_outside * silence) / (len(inside) + n_outside)
        else:
            out[:, k] = column(0.5 * (a + b))
    return out
