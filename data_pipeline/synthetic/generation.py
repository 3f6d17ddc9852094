"""Generation: the size presets, one sample or the whole benchmark (rendered and encoded in worker
processes), and the command line."""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import sys
import time
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any, Callable, Sequence

import cv2
import numpy as np

from data_pipeline.video import write_video

from .config import DATASETS, FAMILIES, SynthConfig, _rng
from .families import apply_family, capture, make_low_light
from .layouts import _PLANNERS, _Task, _Video, _write_json, _write_metadata, _write_truth
from .pairs import capture_pair, make_pair_scenes, mix_voices, pair_fake
from .rendering import Rendered, render
from .scenes import Identity, make_identity, make_scene

# =============================================================================== presets


#: Named presets. ``tiny`` is for tests (a handful of videos per layout, seconds to generate).
SCALES: dict[str, dict[str, Any]] = {
    # one line per concern: video format, fakes, FF++, Celeb-DF, DFDC, splits
    "tiny": dict(
        height=112, width=112, fps=12.0, num_frames=24,
        fakes_per_real=3, low_light_fraction=0.34,
        ffpp_pairs=3,
        celebdf_identities=4, celebdf_videos_per_identity=1, celebdf_youtube=2,
        dfdc_parts=2, dfdc_reals_per_part=2,
        test_fraction=0.34, val_fraction=0.34,
    ),
    "small": dict(
        ffpp_pairs=10,
        celebdf_identities=10, celebdf_youtube=4,
        dfdc_parts=4, dfdc_reals_per_part=5,
        test_fraction=0.25,
    ),
    # ``make demo``: short videos, two fakes per real (a real/fake mix a from-scratch CPU model can
    # learn in minutes), DFDC the largest layout as in reality.
    "demo": dict(
        num_frames=24,
        fakes_per_real=2,
        ffpp_pairs=40,
        celebdf_identities=40, celebdf_videos_per_identity=1, celebdf_youtube=12,
        dfdc_parts=6, dfdc_reals_per_part=30,
        test_fraction=0.25,
    ),
    "default": {},
}


def config_for_scale(scale: str, **overrides: Any) -> SynthConfig:
    """A :class:`SynthConfig` for a named scale (``tiny``, ``small``, ``default``) with overrides."""
    if scale not in SCALES:
        raise ValueError(f"unknown scale {scale!r}; choose one of {sorted(SCALES)}")
    return replace(SynthConfig(**SCALES[scale]), **overrides)


# =============================================================================== single samples


def render_real(seed: int, cfg: SynthConfig | None = None, low_light: bool = False) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Render one real video from ``seed``: ``(frames, audio, boxes)``.

    ``frames`` (N, H, W, 3) uint8 RGB, ``audio`` mono float32 at ``cfg.sample_rate``, ``boxes``
    (N, 4) float32 ``[x0, y0, x1, y1]`` face boxes. ``low_light=True`` renders a dark capture.
    """
    cfg = cfg or SynthConfig()
    rng = _rng(cfg.seed, "render_real", seed)
    ident, scene = make_identity(rng), make_scene(rng, cfg)
    r = capture(ident, scene, make_low_light(rng) if low_light else None)
    return r.frames, r.audio, r.boxes


def write_sample(path: str | os.PathLike, seed: int, cfg: SynthConfig | None = None, *, face: bool = True,
                 audio: bool = True, family: str | None = None) -> Rendered:
    """Write one synthetic video to ``path`` and return its rendering.

    ``face=False`` writes the background only (no face: boxes are NaN); ``audio=False`` writes no
    audio track; ``family`` writes a fake of that family instead of the real.
    """
    cfg = cfg or SynthConfig()
    rng = _rng(cfg.seed, "sample", seed)
    ident, scene = make_identity(rng), make_scene(rng, cfg)
    ll = make_low_light(rng) if family == "low_light" else None
    r = capture(ident, scene, ll) if face else render(ident, scene, with_face=False)
    frames, track = r.frames, r.audio
    if family is not None and face:
        frames, track = apply_family(family, r, ident, scene, rng, source=make_identity(rng), low_light=ll)
    write_video(path, frames, cfg.fps, audio=track if audio else None, sample_rate=cfg.sample_rate, crf=cfg.crf)
    return r


# =============================================================================== generation


def _identity(cfg: SynthConfig, dataset: str, key: str) -> Identity:
    return make_identity(_rng(cfg.seed, dataset, "identity", key))


def _rounded(boxes: np.ndarray, digits: int) -> list[list[float]]:
    return [[round(float(v), digits) for v in box] for box in boxes]


def _write(task: _Task, cfg: SynthConfig, video: _Video, frames: np.ndarray, audio: np.ndarray) -> None:
    write_video(Path(task.root) / video.rel, frames, cfg.fps, audio=audio, sample_rate=cfg.sample_rate, crf=cfg.crf,
                threads=1)


def _run_task(args: tuple[_Task, SynthConfig]) -> dict[str, dict[str, Any]]:
    """Render a real and its fakes, write them, and return their truth entries."""
    task, cfg = args
    cv2.setNumThreads(1)
    if task.persons == 2:
        return _run_pair_task(task, cfg)
    ident = _identity(cfg, task.dataset, task.identity_key)
    srng = _rng(cfg.seed, task.dataset, "scene", task.scene_key)
    scene = make_scene(srng, cfg)
    ll = make_low_light(srng) if task.low_light else None
    real = capture(ident, scene, ll)
    light = "low" if ll is not None else "normal"
    boxes = _rounded(real.boxes, 2)
    truth: dict[str, dict[str, Any]] = {}

    def emit(video: _Video, frames: np.ndarray, audio: np.ndarray) -> None:
        _write(task, cfg, video, frames, audio)
        truth[video.rel] = {"label": video.label, "family": video.family, "boxes": boxes, "group": video.group, "light": light}
        if task.dataset == "dfdc":  # DFDC videos may show two people: every entry lists its faces
            truth[video.rel].update(persons=1, faces=[{"boxes": _rounded(real.boxes, 1), "fake": video.label == 1}])

    emit(task.real, real.frames, real.audio)
    for fake, source_key in task.fakes:
        frng = _rng(cfg.seed, task.dataset, "fake", fake.rel)
        source = _identity(cfg, task.dataset, source_key)
        frames, audio = apply_family(fake.family, real, ident, scene, frng, source=source, low_light=ll)
        emit(fake, frames, audio)
    return truth


def _run_pair_task(task: _Task, cfg: SynthConfig) -> dict[str, dict[str, Any]]:
    """:func:`_run_task` for a two-person real (the second person is a fresh identity) and its
    fakes, each manipulating the face ``task.fake_faces`` names."""
    idents = (_identity(cfg, task.dataset, task.identity_key), _identity(cfg, task.dataset, f"{task.identity_key}+2"))
    srng = _rng(cfg.seed, task.dataset, "scene", task.scene_key)
    scenes = make_pair_scenes(srng, cfg)
    ll = make_low_light(srng) if task.low_light else None
    views = capture_pair(idents, scenes, ll)
    light = "low" if ll is not None else "normal"
    per_face = [_rounded(v.boxes, 1) for v in views]
    truth: dict[str, dict[str, Any]] = {}

    def emit(video: _Video, frames: np.ndarray, audio: np.ndarray, face: int | None) -> None:
        _write(task, cfg, video, frames, audio)
        truth[video.rel] = {
            # "boxes" (for one-face consumers): the manipulated face of a fake, the left person of a real
            "label": video.label, "family": video.family, "boxes": _rounded(views[face or 0].boxes, 2),
            "group": video.group, "light": light, "persons": 2, "faces": [{"boxes": b, "fake": k == face} for k, b in enumerate(per_face)],
        }

    emit(task.real, views[0].frames, mix_voices([v.audio for v in views]), None)
    for (fake, source_key), face in zip(task.fakes, task.fake_faces):
        frng = _rng(cfg.seed, task.dataset, "fake", fake.rel)
        source = _identity(cfg, task.dataset, source_key)
        frames, audio = pair_fake(fake.family, views, idents, scenes, face, frng, source=source, low_light=ll)
        emit(fake, frames, audio, face)
    return truth


def generate(root: str | os.PathLike, cfg: SynthConfig | None = None,
             progress: Callable[[str], None] | None = print) -> dict[str, Any]:
    """Write the synthetic benchmark under ``root`` and return a summary.

    ``root/<dataset>/`` receives the videos, the dataset's real-format metadata and
    ``synthetic_truth.json``; ``root/synthetic_summary.json`` records the config and counts.
    Rendering and encoding run in ``cfg.workers`` processes; output does not depend on it.
    """
    cfg = cfg or SynthConfig()
    unknown = set(cfg.datasets) - set(DATASETS)
    if unknown:
        raise ValueError(f"unknown datasets {sorted(unknown)}; known: {DATASETS}")
    bad = set(cfg.families) - set(FAMILIES)
    if bad:
        raise ValueError(f"unknown families {sorted(bad)}; known: {FAMILIES}")
    if not 0.0 <= cfg.dfdc_two_person_fraction <= 1.0:
        raise ValueError(f"dfdc_two_person_fraction must be in [0, 1], got {cfg.dfdc_two_person_fraction}")
    if cfg.height % 2 or cfg.width % 2:
        raise ValueError("height and width must be even (H.264 yuv420p)")
    say = progress or (lambda _msg: None)
    root = Path(root)
    t_start = time.time()
    plans = {ds: _PLANNERS[ds](cfg, root / ds) for ds in cfg.datasets}
    jobs = [(task, cfg) for ds in cfg.datasets for task in plans[ds][0]]
    n_videos = sum(1 + len(t.fakes) for t, _ in jobs)
    say(f"synthetic benchmark: {n_videos} videos ({len(jobs)} reals with their fakes) -> {root} "
        f"[seed {cfg.seed}, {cfg.width}x{cfg.height}, {cfg.num_frames} frames @ {cfg.fps:g} fps, {cfg.workers} workers]")
    truths: dict[str, dict[str, dict[str, Any]]] = {ds: {} for ds in cfg.datasets}
    done = 0

    def collect(i: int, result: dict[str, dict[str, Any]]) -> None:
        nonlocal done
        ds = jobs[i][0].dataset
        truths[ds].update(result)
        done += len(result)
        if (i + 1) % max(1, len(jobs) // 10) == 0 or done == n_videos:
            say(f"  {done}/{n_videos} videos written ({time.time() - t_start:.1f} s)")

    if cfg.workers > 1 and len(jobs) > 1:
        # spawn, not fork: forking a process whose thread pools (OpenMP, OpenCV, torch) are running
        # can deadlock the children (seen when the generator runs inside a test or Ray process)
        ctx = mp.get_context("spawn")
        with ctx.Pool(cfg.workers) as pool:
            for i, result in enumerate(pool.imap(_run_task, jobs, chunksize=1)):
                collect(i, result)
    else:
        for i, job in enumerate(jobs):
            collect(i, _run_task(job))

    summary: dict[str, Any] = {"root": str(root), "seed": cfg.seed, "config": asdict(cfg), "datasets": {}}
    for ds in cfg.datasets:
        _write_metadata(ds, root / ds, plans[ds][1])
        summary["datasets"][ds] = _write_truth(root / ds, truths[ds])
    summary["seconds"] = round(time.time() - t_start, 2)
    _write_json(root / "synthetic_summary.json", {k: v for k, v in summary.items() if k != "seconds"}, indent=2)
    for ds, info in summary["datasets"].items():
        say(f"  {ds}: {info['videos']} videos ({info['real']} real, {info['fake']} fake) {info['families']}")
    say(f"done in {summary['seconds']:.1f} s")
    return summary


# =============================================================================== command line


def main(argv: Sequence[str] | None = None) -> int:
    """CLI: ``python -m data_pipeline.synthetic --out DIR [--seed N] [--scale tiny|small|default]``."""
    parser = argparse.ArgumentParser(
        prog="python -m data_pipeline.synthetic",
        description="Generate the synthetic deepfake benchmark in the FF++, Celeb-DF v2 and DFDC layouts.",
    )
    parser.add_argument("--out", required=True, help="output folder (datasets go to OUT/ffpp, OUT/celebdf, OUT/dfdc)")
    parser.add_argument("--seed", type=int, default=0, help="master seed (default 0)")
    parser.add_argument("--scale", choices=sorted(SCALES), default="default", help="size preset (default: default)")
    parser.add_argument("--datasets", nargs="+", choices=DATASETS, help="layouts to write (default: all three)")
    parser.add_argument("--families", nargs="+", choices=FAMILIES, help="manipulation families (default: all)")
    parser.add_argument("--workers", type=int, help="parallel processes (default 2)")
    parser.add_argument("--size", type=int, help="frame height and width in pixels (even)")
    parser.add_argument("--frames", type=int, help="frames per video")
    parser.add_argument("--fps", type=float, help="frame rate")
    parser.add_argument("--quiet", action="store_true", help="no progress output")
    args = parser.parse_args(argv)
    overrides: dict[str, Any] = {"seed": args.seed}
    if args.datasets:
        overrides["datasets"] = tuple(args.datasets)
    if args.families:
        overrides["families"] = tuple(args.families)
    if args.workers is not None:
        overrides["workers"] = args.workers
    if args.size is not None:
        overrides["height"] = overrides["width"] = args.size
    if args.frames is not None:
        overrides["num_frames"] = args.frames
    if args.fps is not None:
        overrides["fps"] = args.fps
    try:
        cfg = config_for_scale(args.scale, **overrides)
        generate(args.out, cfg, progress=None if args.quiet else lambda m: print(m, flush=True))
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0
