"""Fitting the Interceptor ensemble on validation data and evaluating it on a split (``interceptor evaluate``).

:func:`run` goes through the steps the command's help describes: the members (each specialist's
latest complete checkpoint, or those of the saved ensemble), the shards (checked against the
checkpoints' clip format), one Ray Data scoring pass over the fitting and evaluated splits, the
fit (saved to ``<storage>/<name>/ensemble/ensemble.json``), then the metrics and the report
(:func:`ray_jobs.reports.write_evaluate_report`). :func:`run_for_demo` is ``interceptor demo``'s step.
"""

from __future__ import annotations

import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.parquet as pq

from data_pipeline.filesystems import FsPath, check_location, map_files
from data_pipeline.shards import list_complete_shards, outdated_schema
from ray_jobs import layout
from ray_jobs.config import ConfigError, StageChain, TrainConfig, from_dict, load_yaml
from ray_jobs.members import Member, absent_from_training, check_members, discover_members, load_ensemble, members_of
from ray_jobs.reports import write_evaluate_report
from ray_jobs.sharding import read_prepare_config
from ray_jobs.storage import Storage
from ray_jobs.video_metrics import ENSEMBLE, VideoScores, compute_metrics, video_scores
from specialists.ensemble import DEFAULT_CLIP, Aggregation, AggregationConfig, Ensemble, fit_ensemble


@dataclass
class EvaluateConfig:
    """An evaluation (and fit) of the Interceptor ensemble."""

    storage_path: str = "runs"
    """Storage of the runs (local/NFS path or ``s3://bucket/prefix``), as in the train job."""
    s3_endpoint: str | None = None
    """Custom S3-compatible endpoint."""
    name: str = "interceptor"
    """Experiment name: the folder under ``storage_path``."""
    shards: dict[str, str] = field(default_factory=dict)
    """Shard folder per dataset (local path or ``s3://``, read in place), as in the train job's config."""
    shard_dir: str | None = None
    """Shard folder to fit and evaluate on (default: ``shards[<dataset of the final stage>]``)."""
    datasets: list[str] = field(default_factory=list)
    """Datasets of ``shards`` to pool (their fit splits for fitting, their evaluated splits for the
    report; videos are told apart by dataset and id). Default: the final stage's dataset only.
    Useful when that dataset's validation split is too small to fit on."""
    stages_file: str | None = None
    """Stage chain file (default: the packaged one)."""
    specialists: list[str] = field(default_factory=list)
    """Specialists to combine (default: every one with a complete checkpoint)."""
    split: str = "test"
    """Split to evaluate."""
    fit: bool = True
    """Fit the ensemble on ``fit_split`` (else reuse the saved one)."""
    fit_split: str = "val"
    """Split the ensemble is fitted on (never ``test``)."""
    evaluate: bool = True
    """Evaluate ``split`` (false: fit only)."""
    aggregation: Aggregation = Aggregation.MEAN
    """Clips -> video per specialist: ``mean`` or ``confident`` (the DFDC winner's rule)."""
    clip: float = DEFAULT_CLIP
    """Ensemble output clipping ``[clip, 1 - clip]``."""
    out: str | None = None
    """Local output folder of the report (default: ``<storage>/<name>/reports/evaluate-<split>/``)."""
    batch_size: int = 64
    """Clips per inference batch."""
    num_cpus: float = 1.0
    """CPUs of the scoring actor."""
    use_gpu: bool = False
    """Score on one GPU."""
    address: str | None = None
    """Ray cluster to join (default: the job's cluster, else a local Ray)."""
    ray_num_cpus: int | None = None
    """CPUs of the local Ray started when no cluster is given."""

    def __post_init__(self) -> None:
        if self.fit_split not in ("train", "val"):
            raise ConfigError(f"fit_split must be train or val (never test), got {self.fit_split!r}")
        if self.split not in ("train", "val", "test"):
            raise ConfigError(f"split must be train, val or test, got {self.split!r}")
        if not (self.fit or self.evaluate):
            raise ConfigError("nothing to do: neither fit nor evaluate")
        if self.shard_dir and self.datasets:
            raise ConfigError("give either shard_dir (--shards) or datasets (--datasets), not both")

    @classmethod
    def from_train_config(cls, tc: TrainConfig, **changes: Any) -> "EvaluateConfig":
        """The evaluation of a train run: its storage, name, shards, chain, specialists and Ray settings."""
        base = dict(storage_path=tc.storage_path, s3_endpoint=tc.s3_endpoint, name=tc.name, shards=dict(tc.shards),
                    stages_file=tc.stages_file, specialists=list(tc.specialists), address=tc.address,
                    ray_num_cpus=tc.num_cpus, use_gpu=tc.use_gpu, batch_size=tc.val_batch_size)
        return from_dict(cls, {**base, **changes})

    @classmethod
    def load(cls, path: str | None = None) -> "EvaluateConfig":
        """From a YAML file: a train run config (its evaluation) or the fields of this class; none: defaults."""
        if not path:
            return cls()
        data = load_yaml(path)
        if isinstance(data, dict) and set(data) <= set(TrainConfig.__dataclass_fields__):
            return cls.from_train_config(TrainConfig.load(path))
        return from_dict(cls, data if isinstance(data, dict) else {}, "evaluate")


# ----------------------------------------------------------------------------------- planning

def _log(msg: str) -> None:
    print(f"[evaluate] {msg}", file=sys.stderr, flush=True)


def shard_folders(cfg: EvaluateConfig, chain: StageChain, members: Sequence[Member]) -> list[FsPath]:
    """The shard folders to use (local or ``s3://``): ``shard_dir``; else ``shards[d]`` for each of
    ``datasets``; else the folder of the dataset of the latest stage among the members."""
    if cfg.shard_dir:
        locations = [cfg.shard_dir]
    else:
        if cfg.datasets:
            datasets = list(dict.fromkeys(cfg.datasets))
        else:
            final = max((m.stage for m in members), key=chain.names.index)
            datasets = [chain.get(final).dataset]
        missing = [d for d in datasets if d not in cfg.shards]
        if missing:
            raise ConfigError(f"no shard folder for dataset(s) {', '.join(missing)}: set shards.<dataset> or --shards")
        locations = [cfg.shards[d] for d in datasets]
    for location in locations:
        check_location(location, cfg.s3_endpoint, "shard folder")
    folders = [FsPath.of(location, cfg.s3_endpoint) for location in locations]
    for folder in folders:
        if not folder.is_dir():
            raise ConfigError(f"shard folder not found: {folder}")
    return folders


def shard_format(files: Sequence[FsPath]) -> tuple[set[tuple[int, int]], set[str]]:
    """``({(num_frames, size)}, {preprocessing})`` over the clips of ``files``."""
    def read(f: FsPath):
        return pq.read_table(f.path, filesystem=f.fs, columns=["num_frames", "size", "preprocessing"])

    shapes, kinds = set(), set()
    for t in map_files(read, files):
        shapes |= set(zip(t.column("num_frames").to_pylist(), t.column("size").to_pylist()))
        kinds |= set(t.column("preprocessing").to_pylist())
    return shapes, kinds


def preprocessing_notes(members: Sequence[Member], kinds: set[str]) -> list[str]:
    """Notes for checkpoints whose stage filter cannot be derived from the shards' crops."""
    from ray_jobs.scoring import derive_preprocessing

    probe = np.zeros((1, 8, 8, 3), dtype=np.uint8)
    notes = []
    for m in members:
        bad = sorted(k for k in kinds if derive_preprocessing(probe, k, m.preprocessing) is None)
        if bad:
            notes.append(f"{m.specialist} ({m.stage}) expects {m.preprocessing.value} crops but the shards hold "
                         f"{', '.join(bad)} crops, which cannot be turned into them: scored on those as they are")
    return notes


def clip_record(folder: FsPath) -> dict[str, Any]:
    """The clip settings the shards were prepared with (from ``prepare_config.json``), if recorded."""
    clip = (read_prepare_config(folder) or {}).get("clip")
    return dict(clip) if isinstance(clip, dict) else {}


# ----------------------------------------------------------------------------------- the steps

class Progress:
    """``score_shards`` progress callback: a line every 10 % (and at the end)."""

    def __init__(self, what: str):
        self.what, self.start, self.last = what, time.perf_counter(), -1

    def __call__(self, done: int, total: int) -> None:
        step = int(10 * done / max(total, 1))
        if step > self.last or done == total:
            if done == total and self.last == 10:
                return
            self.last = step
            rate = done / max(time.perf_counter() - self.start, 1e-9)
            _log(f"{self.what}: {done}/{total} clips ({100 * done / max(total, 1):.0f}%, {rate:.1f} clips/s)")


def select_members(cfg: EvaluateConfig, storage: Storage, chain: StageChain) -> tuple[list[Member], Ensemble | None]:
    """The checkpoints to combine: each specialist's latest complete one (to fit), or those the saved
    ensemble was fitted with (``fit`` off; the saved ensemble is returned too)."""
    if not cfg.fit:
        saved = load_ensemble(storage, cfg.name)
        return members_of(saved, storage), saved
    members = discover_members(storage, cfg.name, chain, cfg.specialists)
    if not members:
        raise ConfigError(f"no complete specialist checkpoint in {storage.display(*layout.finals_parts(cfg.name))} "
                          f"(run interceptor train first)")
    return members, None


def split_files(cfg: EvaluateConfig, folders: Sequence[FsPath]) -> tuple[list[FsPath], list[FsPath]]:
    """The complete shards of the fitting split and of the evaluated split (those wanted) in ``folders``."""
    fit_files: list[FsPath] = []
    eval_files: list[FsPath] = []
    for folder in folders:
        for what, files, split, wanted in (("fit", fit_files, cfg.fit_split, cfg.fit),
                                           ("evaluate", eval_files, cfg.split, cfg.evaluate)):
            found = list_complete_shards(folder, split=split) if wanted else []
            if wanted and not found:
                raise ConfigError(f"{folder} has no complete {split} shards to {what} on")
            files += found
    return fit_files, eval_files


def check_shards(cfg: EvaluateConfig, files: Sequence[FsPath], fmt: dict[str, Any], members: Sequence[Member]) -> list[str]:
    """Refuse shards whose clips the checkpoints cannot read; the notes of the report."""
    outdated = files and outdated_schema(pq.read_schema(files[0].path, filesystem=files[0].fs).names)
    if outdated:
        raise ConfigError(f"{files[0].parent}: shards {outdated}")
    shapes, kinds = shard_format(files)
    want = (fmt["num_frames"], fmt["image_size"])
    if shapes != {want}:
        raise ConfigError(f"the shards hold clips of (frames, size) {sorted(shapes)} but the checkpoints read {want}")
    notes = preprocessing_notes(members, kinds)
    for n in notes:
        _log(f"note: {n}")
    if cfg.evaluate and cfg.fit and cfg.split == cfg.fit_split:
        notes.append(f"evaluated on the split the ensemble was fitted on ({cfg.split}): optimistic")
    return notes


def score_clips(cfg: EvaluateConfig, storage: Storage, members: Sequence[Member], files: Sequence[FsPath],
          folders: Sequence[FsPath]) -> dict[str, np.ndarray]:
    """Every member's probability for every clip of ``files``: one Ray Data pass."""
    from ray_jobs.cluster import init_ray
    from ray_jobs.scoring import score_shards

    init_ray(cfg.address, cfg.ray_num_cpus)
    _log(f"scoring {len(files)} shard(s) of {', '.join(map(str, folders))} with {len(members)} specialist(s)")
    return score_shards(storage, {m.specialist: m.parts for m in members}, [str(f) for f in files],
                        batch_size=cfg.batch_size, num_cpus=cfg.num_cpus, num_gpus=1.0 if cfg.use_gpu else 0.0,
                        apply_preprocessing=True, progress=Progress("scored"), endpoint=cfg.s3_endpoint)


def _split_column(cols: dict[str, np.ndarray]) -> np.ndarray:
    return np.asarray(cols["split"]).astype(str)


def fit_and_save(cfg: EvaluateConfig, storage: Storage, members: Sequence[Member], folders: Sequence[FsPath],
                 cols: dict[str, np.ndarray]) -> Ensemble:
    """Fit the ensemble on the ``fit_split`` videos and save it with its checkpoints and clip settings."""
    agg = AggregationConfig(strategy=cfg.aggregation)
    keys = [m.specialist for m in members]
    videos = video_scores(cols, keys, agg, _split_column(cols) == cfg.fit_split)
    ens = fit_ensemble(videos.video_probs, videos.video_labels, keys, aggregation=agg, clip=cfg.clip, extra={
        "checkpoints": {m.specialist: m.record() for m in members},
        "clips": clip_record(folders[-1]), "shard_dirs": [str(f) for f in folders],
        "fitted_on": cfg.fit_split,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z")})
    storage.write_json(ens.to_dict(), *layout.ensemble_parts(cfg.name))
    _log(f"fitted on {len(videos.videos)} {cfg.fit_split} videos: weights "
         + ", ".join(f"{k} {w:.2f}" for k, w in zip(ens.specialists, ens.weights))
         + f"; temperature {ens.temperature:.2f}, bias {ens.bias:+.2f}; {cfg.fit_split} log loss "
         f"{ens.fit.log_loss_uncalibrated:.3f} -> {ens.fit.log_loss_calibrated:.3f} calibrated; saved "
         f"{storage.display(*layout.ensemble_parts(cfg.name))}")
    return ens


def publish_report(cfg: EvaluateConfig, storage: Storage, ens: Ensemble, scores: VideoScores,
                   metrics: dict[str, Any]) -> str:
    """Write the report to ``cfg.out`` or to storage; where it is."""
    if cfg.out:
        out = Path(cfg.out)
        write_evaluate_report(out, ens, scores, metrics)
        return str(out.resolve())
    parts = layout.evaluate_report_parts(cfg.name, cfg.split)
    with tempfile.TemporaryDirectory() as tmp:
        write_evaluate_report(Path(tmp), ens, scores, metrics)
        storage.upload_dir(tmp, *parts)
    return storage.display(*parts)


def summary_line(cfg: EvaluateConfig, ens: Ensemble, metrics: dict[str, Any]) -> str:
    """The one line printed at the end of an evaluation."""
    e = metrics["ensemble"]
    return (f"evaluate {cfg.name}/{cfg.split}: {metrics['videos']} videos, {metrics['clips']} clips; ensemble video AUC "
            f"{e['video_auc']:.3f}, frame AUC {e['frame_auc']:.3f}, log loss {e['log_loss']:.3f} (uncalibrated "
            f"{e['log_loss_uncalibrated']:.3f}), EER {e['eer']:.3f}, acc real/fake {e['acc_real']:.3f}/{e['acc_fake']:.3f}; "
            "specialists' video AUC " + ", ".join(f"{k} {metrics['models'][k]['video_auc']:.3f}" for k in ens.specialists)
            + unseen_clause(metrics) + f"; report {metrics['report']}")


def unseen_clause(metrics: dict[str, Any]) -> str:
    """The summary's words on the families absent from training: the ensemble's video AUC on each."""
    unseen = metrics.get("unseen_families") or []
    return ("; absent from training: " + ", ".join(f"{f} (ensemble video AUC {metrics['family_auc'][ENSEMBLE][f]:.3f})"
                                                    for f in unseen)) if unseen else ""


def training_families_note(members: Sequence[Member]) -> list[str]:
    """A note when no checkpoint records the families it trained on (older checkpoints): nothing is marked."""
    if any({"hold_out", "trained_methods"} & set(m.meta.get("extra") or {}) for m in members):
        return []
    return ["the checkpoints do not record the families they trained on (older checkpoints): "
            "no family is marked as absent from training"]


def evaluate_split(cfg: EvaluateConfig, storage: Storage, ens: Ensemble, members: Sequence[Member],
                   cols: dict[str, np.ndarray], folders: Sequence[FsPath], eval_files: Sequence[FsPath],
                   notes: list[str], start: float) -> dict[str, Any]:
    """The metrics of ``split`` (written with the report, and summed up in one printed line); the
    families ``members`` never trained on are flagged."""
    scores = video_scores(cols, ens.specialists, ens.aggregation, _split_column(cols) == cfg.split)
    unseen = absent_from_training(members, scores.video_methods[scores.video_labels == 1])
    metrics = {"name": cfg.name, "split": cfg.split, "shard_dirs": [str(f) for f in folders], "shards": len(eval_files),
               **compute_metrics(ens, scores, unseen),
               "ensemble_config": {**ens.to_dict(), "checkpoints": ens.extra.get("checkpoints", {}),
                                   "fitted_on": ens.extra.get("fitted_on")},
               "notes": notes + training_families_note(members), "seconds": time.perf_counter() - start}
    metrics["report"] = publish_report(cfg, storage, ens, scores, metrics)
    print(summary_line(cfg, ens, metrics), flush=True)
    return metrics


# ----------------------------------------------------------------------------------- the job

def run(cfg: EvaluateConfig) -> dict[str, Any]:
    """Fit (optional) and evaluate; returns the metrics (also written to the output folder)."""
    start = time.perf_counter()
    check_location(cfg.storage_path, cfg.s3_endpoint, "storage")
    storage = Storage(cfg.storage_path, cfg.s3_endpoint)
    chain = StageChain.load(cfg.stages_file)
    members, saved = select_members(cfg, storage, chain)
    fmt = check_members(members)
    _log("members: " + ", ".join(f"{m.specialist}/{m.stage}" for m in members))
    folders = shard_folders(cfg, chain, members)
    fit_files, eval_files = split_files(cfg, folders)
    files = list(dict.fromkeys([*fit_files, *eval_files]))
    notes = check_shards(cfg, files, fmt, members)
    cols = score_clips(cfg, storage, members, files, folders)
    ens = fit_and_save(cfg, storage, members, folders, cols) if cfg.fit else saved
    assert ens is not None
    if not cfg.evaluate:
        return {"ensemble_config": ens.to_dict(), "seconds": time.perf_counter() - start}
    return evaluate_split(cfg, storage, ens, members, cols, folders, eval_files, notes, start)


def run_for_demo(tc: TrainConfig, out: str | Path) -> dict[str, Any]:
    """``interceptor demo``'s step: fit on val and evaluate on test the run of ``tc``; a summary.

    The synthetic benchmark's three layouts come from one generator (one domain), and at demo size
    the final stage's validation split holds a handful of videos, so the demo pools the val (fit)
    and test (report) splits of every dataset it prepared; each checkpoint still sees its own
    stage filter (derived from the ``resize`` / ``clahe`` crops)."""
    chain = StageChain.load(tc.stages_file)
    datasets = [d for d in dict.fromkeys(s.dataset for s in chain.stages) if d in tc.shards]
    m = run(EvaluateConfig.from_train_config(tc, out=str(out), datasets=datasets))
    return {"report": m["report"], "video_auc": m["ensemble"]["video_auc"], "frame_auc": m["ensemble"]["frame_auc"],
            "log_loss": m["ensemble"]["log_loss"], "log_loss_uncalibrated": m["ensemble"]["log_loss_uncalibrated"],
            "specialist_video_auc": {k: m["models"][k]["video_auc"] for k in m["ensemble_config"]["specialists"]},
            "weights": m["ensemble_config"]["weights"], "temperature": m["ensemble_config"]["temperature"],
            "faces_auc": m.get("faces_auc", {}), "family_auc": m.get("family_auc", {}),
            "unseen_families": m.get("unseen_families", [])}
