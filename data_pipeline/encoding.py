"""Writing videos: H.264 (+ AAC) mp4, atomically (:func:`write_video`, re-exported by :mod:`.video`)."""

from __future__ import annotations

import os
import tempfile
from fractions import Fraction
from pathlib import Path
from typing import Union

import av
import numpy as np

PathLike = Union[str, os.PathLike]


def write_video(
    path: PathLike,
    frames: np.ndarray,
    fps: float,
    audio: np.ndarray | None = None,
    sample_rate: int = 16000,
    crf: int = 23,
    preset: str = "veryfast",
    threads: int = 0,
) -> Path:
    """Write an H.264 (libx264, yuv420p) mp4, with a mono AAC track when ``audio`` is given.

    The file is written to a hidden temporary file in the destination folder and moved into
    place with :func:`os.replace`, so readers never see a half-written video. Odd frame sizes
    are padded to even (yuv420p needs even sizes) by repeating the last row/column.

    Args:
        path: destination ``.mp4``; parent folders are created.
        frames: ``(N, H, W, 3)`` uint8 RGB.
        fps: frame rate (may be fractional).
        audio: mono float32 samples in ``[-1, 1]`` at ``sample_rate``, or ``None`` for no track.
        sample_rate: audio sample rate in Hz.
        crf: x264 constant rate factor (lower = better quality).
        preset: x264 speed preset.
        threads: encoder threads (0 = FFmpeg's choice); 1 suits many parallel writer processes.
    """
    frames = np.asarray(frames)
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.shape[0] == 0:
        raise ValueError(f"frames must be a non-empty (N, H, W, 3) array, got {frames.shape}")
    if frames.dtype != np.uint8:
        raise ValueError(f"frames must be uint8, got {frames.dtype}")
    n, h, w, _ = frames.shape
    if h % 2 or w % 2:
        frames = np.pad(frames, ((0, 0), (0, h % 2), (0, w % 2), (0, 0)), mode="edge")
        h, w = frames.shape[1:3]
    dest = Path(path)
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{dest.stem}.", suffix=".tmp.mp4", dir=dest.parent)
    os.close(fd)
    try:
        rate = Fraction(fps).limit_denominator(1001)
        with av.open(tmp_name, mode="w", format="mp4") as out:
            vs = out.add_stream("libx264", rate=rate)
            vs.width, vs.height = w, h
            vs.pix_fmt = "yuv420p"
            # x264's macroblock-tree rate control was seen to give run-to-run different bytes on
            # small frames (e.g. 80-112 px); without it the output is reproducible
            vs.options = {"crf": str(int(crf)), "preset": preset, "x264-params": "mbtree=0"}
            if threads > 0:
                vs.codec_context.thread_count = int(threads)
            streams_audio = None
            if audio is not None:
                streams_audio = out.add_stream("aac", rate=int(sample_rate), layout="mono")
            for i in range(n):
                vf = av.VideoFrame.from_ndarray(np.ascontiguousarray(frames[i]), format="rgb24")
                vf.pts = i
                vf.time_base = 1 / rate
                for packet in vs.encode(vf):
                    out.mux(packet)
            for packet in vs.encode(None):
                out.mux(packet)
            if streams_audio is not None:
                samples = np.clip(np.asarray(audio, dtype=np.float32).reshape(-1), -1.0, 1.0)
                chunk = 1024
                for s0 in range(0, samples.size, chunk):
                    part = samples[s0 : s0 + chunk]
                    af = av.AudioFrame.from_ndarray(part[None, :].copy(), format="fltp", layout="mono")
                    af.sample_rate = int(sample_rate)
                    af.pts = s0
                    for packet in streams_audio.encode(af):
                        out.mux(packet)
                for packet in streams_audio.encode(None):
                    out.mux(packet)
        os.replace(tmp_name, dest)
    except BaseException:
        if os.path.exists(tmp_name):
            os.unlink(tmp_name)
        raise
    return dest
