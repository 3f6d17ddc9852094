"""Seconds per video per CPU of ``prepare``'s work on full-HD videos shaped like DFDC's, one run.

    python benchmarks/video_cost.py [--videos 4] [--seconds 10] [--width 1920 --height 1080]

Writes ``--videos`` H.264 + AAC videos (30 fps, ``--seconds`` long, DFDC's 1080p by default) in
which a real photograph (matplotlib's ``grace_hopper.jpg``, scaled to a face of about 1/4 of the
frame height) moves over a textured background, then times, in this one process with one thread
for OpenCV and torch (so the figure is per CPU):

1. decode only: :func:`data_pipeline.video.decode_clips` with the clip settings below;
2. the whole per-video work of a ``prepare`` task: :func:`data_pipeline.clips.extract_clips`
   (decode + face detection + crop + the stage filter + the clip rows).

Clip settings: 8 clips x 4 frames, S=224, DFDC's stage filter (``clahe_bilateral``), the default
detector. These are the unit costs ``docs/scaling.md`` plans the real datasets with.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import av
import cv2
import numpy as np


def make_video(path: Path, width: int, height: int, seconds: float, seed: int) -> None:
    """A 30 fps H.264 video with an AAC track: the photograph's face drifting over noise texture."""
    import matplotlib.cbook

    rng = np.random.default_rng(seed)
    photo = cv2.cvtColor(cv2.imread(str(matplotlib.cbook.get_sample_data("grace_hopper.jpg", asfileobj=False))),
                         cv2.COLOR_BGR2RGB)
    side = height // 3
    face = cv2.resize(photo, (side * photo.shape[1] // photo.shape[0], side))
    background = cv2.GaussianBlur(rng.integers(0, 255, (height, width, 3), dtype=np.uint8), (0, 0), 8)
    fps, frames = 30, int(seconds * 30)
    with av.open(str(path), "w") as out:
        video = out.add_stream("libx264", rate=fps, options={"preset": "veryfast"})
        video.bit_rate = 3_200_000  # DFDC's average: ~4 MB per 10 s video
        video.width, video.height, video.pix_fmt = width, height, "yuv420p"
        audio = out.add_stream("aac", rate=44100)
        for i in range(frames):
            frame = background.copy()
            x = int((width - face.shape[1]) * (0.3 + 0.4 * i / frames))
            y = int((height - face.shape[0]) * (0.4 + 0.1 * np.sin(i / 20)))
            frame[y:y + face.shape[0], x:x + face.shape[1]] = face
            # sensor noise, new in every frame: real footage costs bits
            frame = cv2.add(frame, rng.integers(0, 8, (height, width, 3), dtype=np.uint8))
            out.mux(video.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        samples = (0.1 * np.sin(np.arange(int(seconds * 44100)) * 2 * np.pi * 220 / 44100)).astype(np.float32)
        for start in range(0, len(samples), 1024):
            chunk = av.AudioFrame.from_ndarray(samples[None, start:start + 1024], format="fltp", layout="mono")
            chunk.sample_rate = 44100
            out.mux(audio.encode(chunk))
        out.mux(video.encode())
        out.mux(audio.encode())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--videos", type=int, default=4)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--width", type=int, default=1920)
    parser.add_argument("--height", type=int, default=1080)
    args = parser.parse_args()

    import torch

    from data_pipeline.clips import ClipConfig, extract_clips
    from data_pipeline.sources import ManifestRow
    from data_pipeline.video import decode_clips

    cv2.setNumThreads(1)
    torch.set_num_threads(1)
    cfg = ClipConfig(size=224, clip_len=4, clips_per_video=8, preprocessing="clahe_bilateral")
    detector = cfg.make_detector()
    with tempfile.TemporaryDirectory() as tmp:
        paths = []
        for i in range(args.videos):
            paths.append(Path(tmp) / f"v{i}.mp4")
            make_video(paths[-1], args.width, args.height, args.seconds, seed=i)
        mb = sum(p.stat().st_size for p in paths) / len(paths) / 1e6
        t0 = time.perf_counter()
        for p in paths:
            decode_clips(str(p), cfg.clip_len, cfg.clips_per_video, cfg.stride, cfg.audio)
        decode_s = (time.perf_counter() - t0) / len(paths)
        t0 = time.perf_counter()
        clips = 0
        for i, p in enumerate(paths):
            row = ManifestRow(video_id=p.name, path=str(p), dataset="dfdc", label=0, method="real", group=str(i),
                              split="train")
            clips += len(extract_clips(row, cfg, detector))
        whole_s = (time.perf_counter() - t0) / len(paths)
    print(f"{args.videos} videos {args.width}x{args.height}, {args.seconds:g} s at 30 fps, {mb:.1f} MB each; "
          f"detector {cfg.detector}, {clips / args.videos:.1f} clips/video")
    print(f"decode only:        {decode_s:.2f} s per video per CPU")
    print(f"whole prepare work: {whole_s:.2f} s per video per CPU ({whole_s / decode_s:.2f}x decode)")


if __name__ == "__main__":
    main()
