"""Preparing a dataset's face-clip Parquet shards with Ray Data: the library of ``interceptor prepare``.

:class:`PrepareConfig` holds the settings; :func:`run` reads the manifest, plans the shards
(:func:`plan_shards`: deterministic batches per split and chunk), refuses an output folder
prepared with other settings, skips the shards that exist, runs one Ray task per missing shard
and writes ``summary.json`` (:func:`build_summary`). See ``ray_jobs/prepare.py`` for the
pipeline and the summary's contents; :func:`stage_preprocessing` gives each dataset its stage's
filter (from the packaged stage chain).
"""

from __future__ import annotations

import dataclasses
import json
import os
import sys
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

from data_pipeline.clips import ClipConfig
from data_pipeline.faces import available_detectors
from data_pipeline.filesystems import FsPath, check_location, map_files
from data_pipeline.filters import Preprocessing
from data_pipeline.prepare_stages import DetectStage, ShardWriter, crop_stage, decode_stage
from data_pipeline.shards import list_complete_shards, remove_partial, shard_metadata, shard_name
from data_pipeline.sources import Dataset, ManifestRow, read_manifest
from data_pipeline.sync import SyncConfig
from data_pipeline.video import AudioConfig
from ray_jobs import layout
from ray_jobs.config import ConfigError, StageChain, apply_overrides, from_dict, load_yaml, to_dict


def stage_preprocessing(chain: StageChain | None = None) -> dict[str, Preprocessing]:
    """``{dataset: preprocessing}`` of the stage chain (default: the packaged one): the filter each
    dataset's shards are prepared with (the train job prepares one folder per stage). Datasets come
    in chain order, each at its last stage, so the final stage's dataset is the last."""
    found: dict[str, Preprocessing] = {}
    for stage in (chain or StageChain.load()).stages:
        found.pop(stage.dataset, None)
        found[stage.dataset] = stage.preprocessing
    return found


@dataclass
class PrepareConfig:
    """Settings of a preparation run (YAML file + ``--set key=value`` / flag overrides)."""

    dataset: str = "ffpp"
    """``ffpp``, ``celebdf`` or ``dfdc``."""
    root: str | None = None
    """Dataset root in its public layout, a local path or ``s3://bucket/prefix`` (videos are decoded
    from the objects); ``None``: the synthetic benchmark (generated if absent)."""
    out: str | None = None
    """Output folder of shards + ``summary.json``, a local path or ``s3://bucket/prefix``; default
    ``data/shards/<dataset>-<preprocessing>-s<size>``."""
    s3_endpoint: str | None = None
    """Custom S3-compatible endpoint of ``root`` / ``out`` (default: AWS or ``AWS_ENDPOINT_URL``);
    credentials come from each node's own environment or credential chain."""
    splits: list[str] = field(default_factory=lambda: ["train", "val", "test"])
    """Splits to prepare."""
    chunks: list[int] | None = None
    """DFDC chunks to prepare (``None``: all)."""
    max_videos: int | None = None
    """Keep at most this many videos per split (first by video id; quick runs)."""
    reader: dict[str, Any] = field(default_factory=dict)
    """Options of the dataset reader (``compression``, ``methods``, ``splits_dir``, ``val_fraction``,
    ``test_list``, ``parts_per_chunk``, ``test_fraction``)."""
    size: int = 224
    """Face crop side S (px)."""
    clip_len: int = 4
    """Frames per clip T."""
    clips_per_video: int = 8
    """Clips spread evenly over each video."""
    stride: int = 1
    """Distance between a clip's frames."""
    margin: float = 0.3
    """Fraction of the face box added on each side of the crop."""
    preprocessing: Preprocessing | None = None
    """Stage filter; ``None``: the dataset's stage default (ffpp resize, celebdf clahe, dfdc clahe_bilateral)."""
    detector: str = "auto"
    """Face detector name (``mtcnn``, ``haar``, ``yunet`` with ``detector_options.model_path``), or
    ``auto``: ``haar`` on the synthetic benchmark (a root with ``synthetic_truth.json``: its drawn
    faces suit Haar better), ``mtcnn`` on real videos (it finds turned and tilted faces that Haar
    misses; measured in ``docs/experiments.md``)."""
    detector_options: dict[str, Any] = field(default_factory=dict)
    """Options of the face detector (e.g. ``max_side``)."""
    probes: int = 1
    """Frames per clip the detector runs on."""
    max_faces: int = 3
    """Face tracks kept per video (DFDC videos show up to three people; each face gets its clips)."""
    min_coverage: float = 0.3
    """Share of a video's clips a face must be detected in to be kept (drops one-off false detections)."""
    detector_actors: int | None = None
    """Face-detector actors (``None``: one per GPU on a GPU cluster, else one)."""
    detector_gpus: float | None = None
    """GPUs per detector actor (``None``: 1 on a GPU cluster, else 0)."""
    detector_cpus: float | None = None
    """CPUs per detector actor (also its torch threads; at least 1). ``None``: 1 on a GPU cluster,
    else 0: on CPUs the actor shares them with the decoding tasks (reserving one for a detector that
    waits for frames most of the time would halve decoding on a small machine)."""
    detect_batch_videos: int = 4
    """Videos per detector call: their probe frames go through the detector together."""
    audio: bool = True
    """Cut a log-mel window per clip where the video has audio."""
    audio_options: dict[str, Any] = field(default_factory=dict)
    """:class:`~data_pipeline.video.AudioConfig` fields (``n_mels``, ``window_steps``, ...)."""
    grid_size: int = 128
    """Side G of each clip's codec-grid patch, the compression specialist's input: the centre frame
    around the face at full resolution, cut on the 16-px codec grid (a multiple of 16)."""
    sync: bool = True
    """Compute each clip's audio-visual sync curves (mouth against audio at offsets up to +-0.6 s),
    the AV specialist's sync input, where the video has audio."""
    lighting: bool = True
    """Compute each clip's lighting cues (the light's colour and direction on the face against
    around it), the background/lighting specialist's extra input."""
    sync_options: dict[str, Any] = field(default_factory=dict)
    """:class:`~data_pipeline.sync.SyncConfig` fields (``rate``, ``window_s``, ``max_offset_s``,
    ``max_side``); changing the offsets needs the model's ``sync_offsets`` to match."""
    videos_per_shard: int = 16
    """Videos per shard (= per Ray task)."""
    num_cpus: int | None = None
    """CPUs of the local Ray started when no cluster is given (``None``: all)."""
    address: str | None = None
    """Ray cluster address (default: the job's cluster, else a local Ray)."""
    synthetic_root: str = "data/synthetic"
    """Where the synthetic benchmark lives / is generated when ``root`` is not given."""
    synthetic_scale: str = "small"
    """Scale of a generated synthetic benchmark (``tiny``, ``small``, ``default``)."""

    def __post_init__(self) -> None:
        try:
            self.dataset = Dataset(str(self.dataset).lower()).value
        except ValueError:
            raise ConfigError(f"unknown dataset {self.dataset!r}; known: {', '.join(d.value for d in Dataset)}") from None
        bad = sorted(set(self.splits) - {"train", "val", "test"})
        if bad or not self.splits:
            raise ConfigError(f"splits must be among train, val, test; got {self.splits}")
        if self.detect_batch_videos < 1 or (self.detector_actors is not None and self.detector_actors < 1):
            raise ConfigError("detect_batch_videos and detector_actors must be >= 1")
        if self.videos_per_shard < 1:
            raise ConfigError(f"videos_per_shard must be >= 1, got {self.videos_per_shard}")
        try:
            self.clip_config()
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"clip settings: {exc}") from None

    @property
    def effective_preprocessing(self) -> Preprocessing:
        """``preprocessing``, or the dataset's stage default when it is not set."""
        return self.preprocessing or stage_preprocessing()[self.dataset]

    def clip_config(self) -> ClipConfig:
        """The :class:`ClipConfig` these settings describe (``auto`` detector: Haar's settings, until
        :func:`run` has chosen it from the data)."""
        return ClipConfig(
            size=self.size,
            clip_len=self.clip_len,
            clips_per_video=self.clips_per_video,
            stride=self.stride,
            margin=self.margin,
            preprocessing=self.effective_preprocessing,
            detector="haar" if self.detector == AUTO_DETECTOR else self.detector,
            detector_options=dict(self.detector_options),
            probes=self.probes,
            max_faces=self.max_faces,
            min_coverage=self.min_coverage,
            audio=AudioConfig(**self.audio_options) if self.audio else None,
            grid_size=self.grid_size,
            sync=SyncConfig(**self.sync_options) if self.sync and self.audio else None,
            lighting=self.lighting,
        )

    def out_dir(self) -> FsPath:
        """The output folder (default derived from dataset, preprocessing and size)."""
        if self.out:
            return FsPath.of(self.out, self.s3_endpoint)
        return FsPath.of(Path("data", "shards", f"{self.dataset}-{self.effective_preprocessing.value}-s{self.size}"))

    @classmethod
    def load(cls, path: str | os.PathLike[str] | None = None, overrides: Iterable[str] = ()) -> "PrepareConfig":
        """Defaults, then the YAML file ``path`` (if any), then ``key=value`` overrides."""
        data = load_yaml(path) if path else {}
        if not isinstance(data, dict):
            raise ConfigError(f"{path}: expected a mapping of prepare settings")
        cfg = from_dict(cls, data, "prepare")
        return apply_overrides(cfg, list(overrides)) if overrides else cfg


# --------------------------------------------------------------------------- planning


@dataclass
class ShardPlan:
    """One shard to produce: its file name and the manifest rows of its videos."""

    name: str
    split: str
    chunk: int
    rows: list[ManifestRow]


def plan_shards(rows: Iterable[ManifestRow], dataset: str, videos_per_shard: int) -> list[ShardPlan]:
    """Group videos into shard-sized batches per (split, chunk), in video-id order.

    Deterministic: the same manifest always gives the same shard names and contents. DFDC
    shards carry their chunk in the name (the train job selects shards per chunk).
    """
    by_key: dict[tuple[str, int], list[ManifestRow]] = defaultdict(list)
    for r in rows:
        by_key[(r.split, r.chunk)].append(r)
    plans = []
    for (split, chunk), group in sorted(by_key.items()):
        group.sort(key=lambda r: r.video_id)
        for i in range(0, len(group), videos_per_shard):
            batch = group[i : i + videos_per_shard]
            name = shard_name(dataset, split, [r.video_id for r in batch], chunk if dataset == Dataset.DFDC.value else None)
            plans.append(ShardPlan(name, split, chunk, batch))
    return plans


# --------------------------------------------------------------------------- the job


def _fingerprint(cfg: PrepareConfig, root: FsPath) -> dict[str, Any]:
    """What determines shard contents and names: one folder never mixes two of them (splits and
    DFDC chunks may be prepared into it in several runs: their batches do not depend on each other)."""
    return {
        "dataset": cfg.dataset,
        "root": str(root),
        "reader": to_dict(cfg.reader),
        "clip": cfg.clip_config().to_dict(),
        "videos_per_shard": cfg.videos_per_shard,
        "max_videos": cfg.max_videos,  # changes how videos are batched into shards
    }


def read_prepare_config(folder: str | Path | FsPath, endpoint: str | None = None) -> dict[str, Any] | None:
    """The settings a shard folder (local or ``s3://``) was prepared with (its ``prepare_config.json``);
    None if unreadable."""
    data = read_json(FsPath.of(folder, endpoint) / layout.PREPARE_CONFIG_FILE)
    return data if isinstance(data, dict) else None


def _check_out_dir(out: FsPath, fingerprint: dict[str, Any]) -> None:
    if out.is_local:
        Path(out.path).mkdir(parents=True, exist_ok=True)
    path = out / layout.PREPARE_CONFIG_FILE
    if path.is_file():
        if read_prepare_config(out) != fingerprint:
            raise ConfigError(f"{out} holds shards prepared with other settings ({layout.PREPARE_CONFIG_FILE}); choose another --out")
        return
    _write_json(path, fingerprint)


def read_json(path: FsPath) -> Any:
    """A JSON file's content; None when missing or unreadable."""
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _write_json(path: FsPath, data: Any) -> None:
    path.write_bytes((json.dumps(data, indent=2, sort_keys=True) + "\n").encode())


def resolve_root(cfg: PrepareConfig) -> FsPath:
    """The dataset root: ``cfg.root``, or the synthetic benchmark (generated on first use)."""
    if cfg.root:
        return FsPath.of(cfg.root, cfg.s3_endpoint)
    base = Path(cfg.synthetic_root).expanduser().resolve()
    root = base / cfg.dataset
    if not (root / "synthetic_truth.json").is_file():
        from data_pipeline import synthetic

        print(f"[prepare] no root given: generating the synthetic benchmark ({cfg.synthetic_scale}) in {base}", file=sys.stderr)
        synthetic.generate(base, synthetic.config_for_scale(cfg.synthetic_scale))
    return FsPath.of(root)


def select_rows(rows: Iterable[ManifestRow], cfg: PrepareConfig) -> list[ManifestRow]:
    """The manifest rows this run prepares (splits, chunks, ``max_videos`` per split)."""
    kept = [r for r in rows if r.split in cfg.splits and (cfg.chunks is None or r.chunk in cfg.chunks)]
    if cfg.max_videos is not None:
        per_split: Counter[str] = Counter()
        limited = []
        for r in sorted(kept, key=lambda r: r.video_id):
            if per_split[r.split] < cfg.max_videos:
                per_split[r.split] += 1
                limited.append(r)
        kept = limited
    return kept


def build_summary(cfg: PrepareConfig, root: FsPath, out: FsPath, issues: list[dict[str, str]]) -> dict[str, Any]:
    """``summary.json`` content, rebuilt from the statuses stored in every complete shard of
    ``out`` (so it describes the folder's shards, whichever runs made them) plus the reader's
    ``issues`` (videos that could not be placed in a split)."""
    shards = list_complete_shards(out, dataset=cfg.dataset)
    statuses: list[dict[str, Any]] = []
    for meta in map_files(shard_metadata, shards):
        statuses += meta.get("status", [])
    ok = [s for s in statuses if s["status"] == "ok"]
    skipped = [s for s in statuses if s["status"] != "ok"]

    def tally(key: str) -> dict[str, dict[str, int]]:
        table: dict[str, dict[str, int]] = {}
        for s in statuses:
            t = table.setdefault(str(s[key]), {"videos": 0, "clips": 0, "skipped": 0})
            if s["status"] == "ok":
                t["videos"] += 1
                t["clips"] += s["clips"]
            else:
                t["skipped"] += 1
        return dict(sorted(table.items()))

    by_split = tally("split")
    for split, t in by_split.items():
        t["real"] = sum(1 for s in ok if s["split"] == split and s["label"] == 0)
        t["fake"] = sum(1 for s in ok if s["split"] == split and s["label"] == 1)
    keys = ("video_id", "path", "split", "label", "method", "reason", "detail")
    return {
        "dataset": cfg.dataset,
        "root": str(root),
        "out": str(out),
        "preprocessing": cfg.clip_config().preprocessing.value,
        "size": cfg.size,
        "clip_len": cfg.clip_len,
        "videos": {"listed": len(statuses) + len(issues), "used": len(ok), "skipped": len(skipped) + len(issues)},
        "clips": sum(s["clips"] for s in ok),
        "shards": [p.name for p in shards],
        "per_split": by_split,
        "per_label": tally("label"),
        "per_method": tally("method"),
        "per_chunk": tally("chunk") if cfg.dataset == Dataset.DFDC.value else {},
        "skipped": [{k: s[k] for k in keys} for s in skipped]
        + [{"video_id": "", "path": i["path"], "split": "", "label": None, "method": "", "reason": i["reason"], "detail": ""} for i in issues],
        "skip_reasons": dict(Counter(s["reason"] for s in skipped) + Counter(i["reason"] for i in issues)),
        "notes": [{"video_id": s["video_id"], "path": s["path"], "note": s["notes"]} for s in ok if s["notes"]],
    }


def one_line(summary: dict[str, Any], seconds: float, written: int, reused: int) -> str:
    """The one-line summary printed at the end of a run."""
    splits = ", ".join(f"{k} {v['videos']}" for k, v in summary["per_split"].items())
    reasons = ", ".join(f"{k} {n}" for k, n in sorted(summary["skip_reasons"].items()))
    v = summary["videos"]
    return (
        f"prepare {summary['dataset']}: {v['used']} videos -> {summary['clips']} clips in {len(summary['shards'])} shards "
        f"({splits}); {v['skipped']} skipped{f' ({reasons})' if reasons else ''}; {len(summary['notes'])} noted; "
        f"{written} shard(s) written, {reused} reused; {seconds:.1f} s; {summary['out']}"
    )


#: ``PrepareConfig.detector`` value that picks the detector from the data
AUTO_DETECTOR = "auto"
#: the synthetic benchmark's truth file, in each of its dataset roots
SYNTHETIC_TRUTH_FILE = "synthetic_truth.json"


def auto_detector(root: FsPath) -> str:
    """``haar`` for the synthetic benchmark (its drawn faces: Haar's recall is higher there),
    ``mtcnn`` for real videos (turned and tilted faces); one-line error when mtcnn is needed but
    facenet-pytorch is not installed."""
    if (root / SYNTHETIC_TRUTH_FILE).is_file():
        return "haar"
    if "mtcnn" not in available_detectors():
        raise ConfigError("detector auto needs MTCNN for real videos: pip install --no-deps facenet-pytorch==2.6.0 "
                          "(or choose --detector haar)")
    return "mtcnn"


def check_inputs(cfg: PrepareConfig) -> None:
    """One-line errors for S3 locations that cannot be used (no credentials, no such bucket)."""
    for what, location in (("root", cfg.root), ("out", cfg.out)):
        if location:
            check_location(location, cfg.s3_endpoint, f"prepare {what}")


def run(cfg: PrepareConfig, log=lambda msg: print(msg, file=sys.stderr, flush=True)) -> dict[str, Any]:
    """Run the preparation; returns the summary (also written to ``<out>/summary.json``)."""
    start = time.perf_counter()
    cfg.clip_config().make_detector()  # a bad detector setting fails here, in one line
    check_inputs(cfg)
    root = resolve_root(cfg)
    out = cfg.out_dir()
    manifest = read_manifest(cfg.dataset, root, **cfg.reader)
    if not manifest:
        raise ConfigError(f"{root}: no {cfg.dataset} videos found (nothing listed in its metadata or on storage)")
    rows = select_rows(manifest, cfg)
    if not rows:
        raise ConfigError(f"{root}: no videos in the selected splits {cfg.splits}"
                          + (f" and chunks {cfg.chunks}" if cfg.chunks is not None else ""))
    if cfg.detector == AUTO_DETECTOR:
        cfg = dataclasses.replace(cfg, detector=auto_detector(root))
        cfg.clip_config().make_detector()
        log(f"[prepare] detector auto -> {cfg.detector}")
    fingerprint = _fingerprint(cfg, root)
    _check_out_dir(out, fingerprint)
    digest = json.dumps(fingerprint, sort_keys=True)
    for stale in remove_partial(out):
        log(f"[prepare] removed partial shard {stale.name} of an interrupted run")
    plans = plan_shards(rows, cfg.dataset, cfg.videos_per_shard)
    done = {p.name for p in list_complete_shards(out)}
    todo = [p for p in plans if p.name not in done]
    log(f"[prepare] {cfg.dataset}: {len(rows)} videos in {len(plans)} shards; {len(plans) - len(todo)} already done, {len(todo)} to do -> {out}")
    if todo:
        _run_ray(cfg, todo, out, digest, log)
    summary = build_summary(cfg, root, out, [{"path": i.path, "reason": i.reason} for i in manifest.issues])
    summary_file = out / layout.PREPARE_SUMMARY_FILE
    if todo or read_json(summary_file) != summary:  # a rerun with nothing to do writes nothing
        _write_json(summary_file, summary)
    print(one_line(summary, time.perf_counter() - start, len(todo), len(plans) - len(todo)), flush=True)
    return summary


def _detector_resources(cfg: PrepareConfig, cluster: dict[str, float]) -> tuple[int, float, float]:
    """``(detector actors, GPUs, CPUs per actor)``: one actor per GPU on a GPU cluster, else one."""
    gpus = float(cluster.get("GPU", 0.0))
    per_actor = cfg.detector_gpus if cfg.detector_gpus is not None else (1.0 if gpus >= 1 else 0.0)
    actors = cfg.detector_actors or (max(1, int(gpus // per_actor)) if per_actor > 0 else 1)
    cpus = cfg.detector_cpus if cfg.detector_cpus is not None else (1.0 if per_actor > 0 else 0.0)
    return actors, per_actor, cpus


def _run_ray(cfg: PrepareConfig, todo: list[ShardPlan], out: FsPath, fingerprint: str, log) -> None:
    import ray

    from ray_jobs.cluster import init_ray

    init_ray(cfg.address, cfg.num_cpus)
    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = sys.stderr.isatty()
    clip = cfg.clip_config().to_dict()
    actors, gpus, cpus = _detector_resources(cfg, ray.cluster_resources())
    log(f"[prepare] face detection: {actors} {cfg.detector} actor(s), {gpus:g} GPU and {cpus:g} CPU each")
    items = [{"shard": p.name, "videos": json.dumps([r.to_dict() for r in p.rows])} for p in todo]
    ds = (
        ray.data.from_items(items, override_num_blocks=len(items))
        .flat_map(decode_stage, fn_kwargs={"clip": clip, "endpoint": cfg.s3_endpoint}, num_cpus=1)
        .map_batches(DetectStage, fn_constructor_kwargs={"clip": clip, "use_gpu": gpus > 0,
                                                         "torch_threads": max(1, int(cpus))},
                     batch_size=cfg.detect_batch_videos, compute=ray.data.ActorPoolStrategy(size=actors), num_gpus=gpus,
                     num_cpus=cpus)
        .map(crop_stage, fn_kwargs={"clip": clip, "endpoint": cfg.s3_endpoint}, num_cpus=1)
        .map_batches(ShardWriter, fn_constructor_kwargs={"out_dir": str(out), "fingerprint": fingerprint,
                                                         "endpoint": cfg.s3_endpoint},
                     batch_size=1, compute=ray.data.ActorPoolStrategy(size=1), num_cpus=0)
    )
    seen: Counter[str] = Counter()
    actors_seen: dict[str, set[int]] = defaultdict(set)  # detector process -> detectors it had built
    per_actor: Counter[str] = Counter()
    finished = videos = clips = skipped = 0
    t0 = time.perf_counter()
    for status in ds.iter_rows():
        if status["detector"]:
            pid, built = str(status["detector"]).split(":")
            actors_seen[pid].add(int(built))
            per_actor[pid] += 1
        videos += 1
        clips += int(status["clips"])
        skipped += status["status"] != "ok"
        seen[status["shard"]] += 1
        if seen[status["shard"]] == status["shard_videos"]:
            finished += 1
            rate = videos / max(time.perf_counter() - t0, 1e-9)
            log(f"[prepare] shard {finished}/{len(todo)} {status['shard']}: {videos} videos, {clips} clips, "
                f"{skipped} skipped so far ({rate:.2f} videos/s)")
    log(f"[prepare] face detection ran in {len(actors_seen)} actor process(es): "
        + ", ".join(f"pid {pid} built {max(built)} detector(s), {per_actor[pid]} videos"
                    for pid, built in sorted(actors_seen.items())))
