"""Where the synthetic generator's time goes: rendering a real, deriving each family, encoding.

    python benchmarks/synth_speed.py [--scale default] [--videos 8]

Prints the mean seconds per step over ``--videos`` reals (single process) and each step's share
of the total, so a change to the renderer or the encoder can be judged in one run.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np

from data_pipeline import synthetic as syn
from data_pipeline.video import write_video


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scale", default="default", choices=sorted(syn.SCALES))
    parser.add_argument("--videos", type=int, default=8)
    args = parser.parse_args(argv)
    cfg = syn.config_for_scale(args.scale)
    steps: dict[str, list[float]] = {"render real": [], "encode (per video)": []}
    with tempfile.TemporaryDirectory() as tmp:
        for k in range(args.videos):
            rng = syn._rng(cfg.seed, "bench", k)
            ident, scene, source = syn.make_identity(rng), syn.make_scene(rng, cfg), syn.make_identity(rng)
            ll = syn.make_low_light(rng)
            t0 = time.perf_counter()
            real = syn.capture(ident, scene)
            steps["render real"].append(time.perf_counter() - t0)
            for family in syn.FAMILIES:
                base = syn.capture(ident, scene, ll) if family == "low_light" else real
                t0 = time.perf_counter()
                frames, audio = syn.apply_family(family, base, ident, scene, rng, source=source,
                                                 low_light=ll if family == "low_light" else None)
                steps.setdefault(f"fake: {family}", []).append(time.perf_counter() - t0)
                t0 = time.perf_counter()
                write_video(Path(tmp) / f"{k}_{family}.mp4", frames, cfg.fps, audio=audio,
                            sample_rate=cfg.sample_rate, crf=cfg.crf, threads=1)
                steps["encode (per video)"].append(time.perf_counter() - t0)
    means = {name: float(np.mean(v)) for name, v in steps.items()}
    total = sum(means.values())
    print(f"{cfg.width}x{cfg.height}, {cfg.num_frames} frames, {args.videos} reals (one process)")
    for name, sec in means.items():
        print(f"  {name:32s} {sec * 1000:7.1f} ms  {sec / total:6.1%}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
