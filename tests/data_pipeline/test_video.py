"""Tests of data_pipeline.video on real H.264/AAC files written with PyAV (no mocks)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from data_pipeline.video import (
    AudioConfig,
    VideoError,
    audio_window,
    decode_clips,
    log_mel,
    probe,
    read_frames,
    sample_clip_starts,
    write_video,
)

FPS = 15
N_FRAMES = 45  # 3 s
SR = 16000
SIZE = (96, 128)  # H, W


def _frames() -> np.ndarray:
    """Frames whose red channel encodes the frame index (10 levels per frame)."""
    h, w = SIZE
    frames = np.zeros((N_FRAMES, h, w, 3), np.uint8)
    for i in range(N_FRAMES):
        frames[i, :, :, 0] = min(255, i * 5)
        frames[i, 20:60, 30:90, 1] = 200
    return frames


def _audio() -> np.ndarray:
    """A 220 Hz tone, quiet except between 1.0 s and 2.0 s."""
    t = np.arange(N_FRAMES * SR // FPS) / SR
    env = np.where((t >= 1.0) & (t < 2.0), 0.8, 0.01)
    return (env * np.sin(2 * np.pi * 220 * t)).astype(np.float32)


@pytest.fixture(scope="module")
def av_video(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("video") / "talk.mp4"
    write_video(path, _frames(), FPS, audio=_audio(), sample_rate=SR, crf=18)
    return path


@pytest.fixture(scope="module")
def silent_video(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("video") / "silent.mp4"
    write_video(path, _frames(), FPS, audio=None)
    return path


def test_probe_reads_header(av_video: Path) -> None:
    info = probe(av_video)
    assert info.num_frames == N_FRAMES
    assert info.fps == pytest.approx(FPS)
    assert (info.height, info.width) == SIZE
    assert info.has_audio
    assert info.duration_s == pytest.approx(N_FRAMES / FPS, abs=0.1)


def test_sample_clip_starts_spread_evenly() -> None:
    starts = sample_clip_starts(100, clip_len=4, clips_per_video=5)
    assert starts == [0, 24, 48, 72, 96]
    gaps = np.diff(starts)
    assert gaps.max() - gaps.min() <= 1
    # stride: a clip spans (4 - 1) * 3 + 1 = 10 frames, the last one ends at the last frame
    starts = sample_clip_starts(100, clip_len=4, clips_per_video=3, stride=3)
    assert starts[0] == 0 and starts[-1] + 9 == 99
    # a short video gets fewer (non-overlapping) clips, a too-short one none
    assert len(sample_clip_starts(10, clip_len=4, clips_per_video=8)) == 2
    assert sample_clip_starts(4, clip_len=4, clips_per_video=8) == [0]
    assert sample_clip_starts(3, clip_len=4, clips_per_video=8) == []


def test_decode_clips_frames_and_audio(av_video: Path) -> None:
    cfg = AudioConfig()
    clips = decode_clips(av_video, clip_len=4, clips_per_video=4, audio=cfg)
    assert clips.starts == sample_clip_starts(N_FRAMES, 4, 4)
    assert len(clips.frames) == len(clips.times) == 4
    for start, frames, (t0, t1) in zip(clips.starts, clips.frames, clips.times):
        assert frames.shape == (4, *SIZE, 3) and frames.dtype == np.uint8
        # red channel tells which frames were decoded (H.264 at crf 18 keeps flat levels)
        red = frames[:, 50, 10, 0].astype(int)
        expected = np.minimum(255, (start + np.arange(4)) * 5)
        assert np.abs(red - expected).max() <= 3
        assert t0 == pytest.approx(start / FPS) and t1 == pytest.approx((start + 4) / FPS)
    assert clips.audio is not None and len(clips.audio) == 4
    for win in clips.audio:
        assert win.shape == (cfg.n_mels, cfg.window_steps) and win.dtype == np.float32
        assert np.isfinite(win).all()


def test_audio_window_follows_loudness(av_video: Path) -> None:
    """Clips inside the loud second (1.0-2.0 s) carry far more mel energy than quiet ones."""
    clips = decode_clips(av_video, clip_len=4, clips_per_video=10)
    assert clips.audio is not None
    loud = [w.mean() for w, (t0, t1) in zip(clips.audio, clips.times) if t0 >= 1.05 and t1 <= 1.95]
    quiet = [w.mean() for w, (t0, t1) in zip(clips.audio, clips.times) if t1 <= 0.95 or t0 >= 2.05]
    assert loud and quiet
    assert min(loud) > max(quiet) + 2.0  # log-mel units: > e^2 times the energy


def test_log_mel_and_window_shapes() -> None:
    cfg = AudioConfig()
    sr = cfg.sample_rate
    t = np.arange(sr) / sr
    tone = (0.5 * np.sin(2 * np.pi * 1000 * t)).astype(np.float32)
    spec = log_mel(tone, sr, cfg)
    assert spec.shape == (cfg.n_mels, 1 + sr // cfg.hop) and spec.dtype == np.float32
    # a 1 kHz tone peaks in the mel band that contains 1 kHz, not at the extremes
    peak = int(spec[:, 10:-10].mean(axis=1).argmax())
    assert 5 < peak < cfg.n_mels - 5
    win = audio_window(spec, cfg, 0.2, 0.4667)
    assert win.shape == (cfg.n_mels, cfg.window_steps)
    # past the end of the signal the window is silence
    beyond = audio_window(spec, cfg, 2.0, 2.3)
    assert np.allclose(beyond, np.log(1e-6))


def test_no_audio_track_gives_none(silent_video: Path) -> None:
    assert not probe(silent_video).has_audio
    clips = decode_clips(silent_video, clip_len=4, clips_per_video=3)
    assert clips.audio is None and len(clips.frames) == 3


def test_write_video_is_atomic(tmp_path: Path) -> None:
    out = tmp_path / "sub" / "v.mp4"
    write_video(out, _frames()[:8], FPS)
    assert sorted(p.name for p in out.parent.iterdir()) == ["v.mp4"]
    assert read_frames(out).shape == (8, *SIZE, 3)
    # a failure mid-write leaves neither the target nor a temp file behind
    bad = tmp_path / "bad" / "x.mp4"
    with pytest.raises(ValueError):
        write_video(bad, _frames()[:4].astype(np.float32), FPS)
    with pytest.raises(Exception):
        write_video(bad, _frames()[:4], FPS, audio=np.zeros(100, np.float32), sample_rate=-5)
    assert not bad.parent.exists() or list(bad.parent.iterdir()) == []


def test_unreadable_inputs_have_distinct_reasons(tmp_path: Path, av_video: Path) -> None:
    empty = tmp_path / "empty.mp4"
    empty.write_bytes(b"")
    data = av_video.read_bytes()
    truncated = tmp_path / "half.mp4"
    truncated.write_bytes(data[: len(data) // 2])
    garbage = tmp_path / "garbage.mp4"
    garbage.write_bytes(bytes(range(256)) * 20)
    missing = tmp_path / "missing.mp4"

    reasons = {}
    for name, path in {"empty": empty, "truncated": truncated, "garbage": garbage, "missing": missing}.items():
        with pytest.raises(VideoError) as probed:
            probe(path)
        with pytest.raises(VideoError) as decoded:
            decode_clips(path)
        assert probed.value.reason == decoded.value.reason
        assert str(path) in str(probed.value) and "\n" not in str(probed.value)
        reasons[name] = probed.value.reason
    assert reasons == {
        "empty": "empty file",
        "truncated": "truncated",
        "garbage": "unreadable",
        "missing": "missing file",
    }


def test_too_short_video(tmp_path: Path) -> None:
    path = tmp_path / "short.mp4"
    write_video(path, _frames()[:3], FPS)
    with pytest.raises(VideoError) as err:
        decode_clips(path, clip_len=4)
    assert err.value.reason == "too short"
