"""AV's sync input (``data_pipeline/sync.py``): mouth features against audio features at offsets."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest

from data_pipeline.audio import log_mel
from data_pipeline.clips import ClipConfig, extract_clips_with_notes
from data_pipeline.sources.manifest import ManifestRow
from data_pipeline.sync import (
    AUDIO_FEATURES,
    MOUTH_FEATURES,
    SyncConfig,
    audio_features,
    mouth_box,
    mouth_features,
    sync_curves,
    sync_window,
)

FPS, SR = 15.0, 16000
BOX = [40.0, 20.0, 120.0, 100.0]  # the face box in a 160x120 frame
DARKNESS_ENERGY = MOUTH_FEATURES.index("darkness") * len(AUDIO_FEATURES) + AUDIO_FEATURES.index("energy")


def talking_curves(shift_s: float, n_frames: int = 45, seed: int = 0, cfg: SyncConfig = SyncConfig()) -> np.ndarray:
    """Sync curves of a drawn mouth whose opening is a random signal, and a voice whose loudness
    follows it ``shift_s`` seconds later."""
    rng = np.random.default_rng(seed)
    opening = np.convolve(rng.random(n_frames + 2), np.ones(3) / 3, "valid")[:n_frames]
    mx0, my0, mx1, my1 = mouth_box(BOX)
    grey = {}
    for i in range(n_frames):
        g = np.full((120, 160), 170, np.uint8)
        cv2.ellipse(g, (int((mx0 + mx1) / 2), int((my0 + my1) / 2)), (14, 1 + int(round(9 * opening[i]))), 0, 0, 360, 30, -1)
        grey[i] = g
    t = np.arange(int(n_frames / FPS * SR)) / SR
    loud = np.interp(t - shift_s, (np.arange(n_frames) + 0.5) / FPS, opening, left=0.0, right=0.0)
    voice = (loud * np.sin(2 * np.pi * 220 * t) + 0.002 * rng.standard_normal(len(t))).astype(np.float32)
    track = audio_features(log_mel(voice, SR), 100.0)
    idx, feats = mouth_features(grey, 1.0, {i: BOX for i in grey})
    duration = n_frames / FPS
    return sync_curves((idx + 0.5) / FPS, feats, track, 100.0, sync_window(duration / 2, duration, cfg), cfg)


def test_aligned_audio_peaks_at_zero_offset_and_a_shift_moves_the_peak():
    cfg = SyncConfig()
    k = cfg.max_offset
    aligned = talking_curves(0.0)
    assert aligned.shape == cfg.shape == (15, 2 * k + 1) == (15, 31)
    assert int(np.argmax(aligned[DARKNESS_ENERGY])) == k  # zero offset
    assert aligned[DARKNESS_ENERGY, k] > 0.8
    late = talking_curves(0.4)  # the voice 0.4 s after the mouth: the peak moves to +10 steps
    assert abs(int(np.argmax(late[DARKNESS_ENERGY])) - (k + 10)) <= 1
    assert late[DARKNESS_ENERGY, k] < 0.5
    early = talking_curves(-0.4)
    assert abs(int(np.argmax(early[DARKNESS_ENERGY])) - (k - 10)) <= 1


def test_without_audio_the_curves_are_zero_and_windows_stay_inside_the_video():
    assert not sync_curves(np.arange(10) / FPS, np.ones((10, 3)), None, 100.0, (0.0, 0.6), SyncConfig()).any()
    cfg = SyncConfig(window_s=1.0)
    assert sync_window(0.1, 3.0, cfg) == (0.0, 1.0)
    assert sync_window(2.9, 3.0, cfg) == (2.0, 3.0)
    assert sync_window(0.5, 0.6, cfg) == (0.0, 0.6)  # a video shorter than the window: all of it
    with pytest.raises(ValueError, match="SyncConfig"):
        SyncConfig(rate=0)


def test_a_lip_sync_shifted_video_has_other_curves_than_its_original(tiny_benchmark):
    """On the synthetic benchmark, through the whole clip pipeline: a lip-sync fake (its audio
    shifted by 0.3-0.5 s) against the in-sync original it was made from."""
    root = tiny_benchmark / "ffpp"
    truth = json.loads((root / "synthetic_truth.json").read_text())
    fakes = sorted(k for k, v in truth.items() if v.get("family") == "lip_sync_shift")
    assert fakes
    cfg = ClipConfig(size=32, clips_per_video=3, grid_size=16)
    compared = 0
    for fake in fakes:
        target = fake.rsplit("/", 1)[1].split("_")[0]
        real = next(k for k in truth if k.startswith("original_sequences/") and k.endswith(f"/{target}.mp4"))
        if truth[real].get("light") == "low":
            continue
        curves = {}
        for key in (real, fake):
            row = ManifestRow(video_id=key, path=str(root / key), dataset="ffpp", label=0, method="", group="", split="test")
            rows = extract_clips_with_notes(row, cfg).rows
            assert rows and all(r["sync_shape"] == [15, 31] for r in rows)
            curves[key] = np.stack([np.frombuffer(r["sync"], np.float32).reshape(15, 31) for r in rows])
        n = min(len(curves[real]), len(curves[fake]))
        assert np.abs(curves[real][:n] - curves[fake][:n]).max() > 0.3
        k = SyncConfig().max_offset
        # the original's mouth and voice agree best at zero offset; the fake's do not
        assert curves[real][:, :, k].max(axis=1).mean() > curves[fake][:, :, k].max(axis=1).mean()
        compared += 1
    assert compared >= 1
