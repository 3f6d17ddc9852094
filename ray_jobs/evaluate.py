"""``interceptor evaluate``: fit the Interceptor ensemble on validation data, evaluate it on a split.

    interceptor evaluate --config run.yaml                    # fit on val, evaluate on test
    interceptor evaluate --storage-path runs --name demo --shards data/shards/dfdc --out eval/
    interceptor evaluate --config run.yaml --no-fit --split val   # reuse the saved ensemble
    python -m ray_jobs.evaluate ...    /    ray job submit ... -- python -m ray_jobs.evaluate ...

1. **Members.** For every specialist, its latest complete stage in chain order
   (``<storage>/<name>/final/<specialist>-<stage>/``, LL included); checkpoints that disagree on
   the clip format are refused, naming the checkpoint.
2. **Scoring.** One Ray Data pass (:func:`ray_jobs.scoring.score_shards`) over the fitting split's
   and the evaluated split's shards of the final stage's dataset (the dataset of the latest stage
   among the members; or ``--shards``; or several datasets pooled with ``--datasets``): every
   checkpoint scores every clip, each on its own stage filter where that can be derived from the
   shards' crops (any filter from ``resize`` crops), with progress on stderr.
3. **Fit** (unless ``--no-fit``): clips -> videos per specialist (``--aggregation``), then the
   combination weights, temperature and bias on the *validation* videos
   (:func:`specialists.ensemble.fit_ensemble`; fitting on test is refused). Saved as
   ``<storage>/<name>/ensemble/ensemble.json`` with the checkpoints it uses (stage, epoch,
   creation time: a retrained checkpoint needs a refit) and the clip settings the shards were
   prepared with (``prepare_config.json``), which ``interceptor predict`` reuses.
4. **Evaluate** the split (default test): frame (clip) AUC, video AUC, log loss (clipped), EER,
   accuracy per class, expected calibration error, for the ensemble, the ensemble before
   calibration, the plain mean of the specialists' probabilities and every specialist; the
   specialist x manipulation-family matrix (per family, AUC of the real videos vs that family's
   fakes), the ensemble's accuracy on the reals and on each family, and with several datasets
   the video AUC per dataset. Written to the output folder (default
   ``<storage>/<name>/reports/evaluate-<split>/``): ``metrics.json``, ``roc.png``,
   ``reliability.png``, ``family_auc.png`` and ``report.md``.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.parquet as pq

from data_pipeline.shards import list_complete_shards
from ray_jobs.checkpoints import CheckpointError
from ray_jobs.config import ConfigError, StageChain, apply_overrides, from_dict, load_yaml, to_dict
from ray_jobs.predict import (Member, check_members, discover_members, ensemble_parts, load_ensemble,
                              members_of)
from ray_jobs.storage import Storage, StorageError
from ray_jobs.train import TrainConfig
from specialists import metrics as M
from specialists.ensemble import (DEFAULT_CLIP, Aggregation, AggregationConfig, Ensemble, EnsembleError,
                                  aggregate, fit_ensemble, video_labels)
from specialists.registry import SpecialistError

PREPARE_CONFIG = "prepare_config.json"
ENSEMBLE = "ensemble"
UNCALIBRATED = "ensemble_uncalibrated"
MEAN_PROB = "mean_prob"


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
    """Shard folder per dataset, as in the train job's config."""
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


# ----------------------------------------------------------------------------------- planning

def _log(msg: str) -> None:
    print(f"[evaluate] {msg}", file=sys.stderr, flush=True)


def shard_folders(cfg: EvaluateConfig, chain: StageChain, members: Sequence[Member]) -> list[Path]:
    """The shard folders to use: ``shard_dir``; else ``shards[d]`` for each of ``datasets``; else
    the folder of the dataset of the latest stage among the members."""
    if cfg.shard_dir:
        folders = [Path(cfg.shard_dir)]
    else:
        if cfg.datasets:
            datasets = list(dict.fromkeys(cfg.datasets))
        else:
            final = max((m.stage for m in members), key=chain.names.index)
            datasets = [chain.get(final).dataset]
        missing = [d for d in datasets if d not in cfg.shards]
        if missing:
            raise ConfigError(f"no shard folder for dataset(s) {', '.join(missing)}: set shards.<dataset> or --shards")
        folders = [Path(cfg.shards[d]) for d in datasets]
    for folder in folders:
        if not folder.is_dir():
            raise ConfigError(f"shard folder not found: {folder}")
    return folders


def shard_format(files: Sequence[Path]) -> tuple[set[tuple[int, int]], set[str]]:
    """``({(num_frames, size)}, {preprocessing})`` over the clips of ``files``."""
    shapes, kinds = set(), set()
    for f in files:
        t = pq.read_table(f, columns=["num_frames", "size", "preprocessing"])
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


def clip_record(folder: Path) -> dict[str, Any]:
    """The clip settings the shards were prepared with (from ``prepare_config.json``), if recorded."""
    path = folder / PREPARE_CONFIG
    if not path.is_file():
        return {}
    try:
        return dict(json.loads(path.read_text()).get("clip") or {})
    except (ValueError, AttributeError):
        return {}


# ----------------------------------------------------------------------------------- metrics

@dataclass
class VideoScores:
    """Scores of one split, per clip and per video, for every specialist (columns in key order)."""

    keys: list[str]
    clip_probs: np.ndarray
    clip_labels: np.ndarray
    clip_videos: np.ndarray
    videos: np.ndarray
    video_probs: np.ndarray
    video_labels: np.ndarray
    video_methods: np.ndarray
    video_datasets: np.ndarray


def video_key(datasets: np.ndarray, video_ids: np.ndarray) -> np.ndarray:
    """Videos told apart across datasets: ``<dataset>:<video_id>``."""
    return np.char.add(np.char.add(np.asarray(datasets).astype(str), ":"), np.asarray(video_ids).astype(str))


def video_scores(cols: Mapping[str, np.ndarray], keys: Sequence[str], agg: AggregationConfig,
                 mask: np.ndarray | None = None) -> VideoScores:
    """Group scored clip rows (``score_shards`` columns) into videos with ``agg``."""
    mask = np.ones(len(cols["video_id"]), dtype=bool) if mask is None else mask
    vids = video_key(np.asarray(cols["dataset"])[mask], np.asarray(cols["video_id"])[mask])
    labels = np.asarray(cols["label"])[mask].astype(np.int64)
    probs = np.stack([np.asarray(cols[f"prob_{k}"], dtype=np.float64)[mask] for k in keys], axis=1)
    videos, vprobs = aggregate(probs, vids, agg)
    _, vlabels = video_labels(labels, vids)
    where = np.searchsorted(videos, vids)
    methods, datasets = np.empty(len(videos), dtype=object), np.empty(len(videos), dtype=object)
    methods[where] = np.asarray(cols["method"])[mask].astype(str)
    datasets[where] = np.asarray(cols["dataset"])[mask].astype(str)
    return VideoScores(list(keys), probs, labels, vids, videos, vprobs, vlabels, methods, datasets)


def _ece(probs: np.ndarray, labels: np.ndarray, bins: int = 10) -> float:
    import torch
    from torchmetrics.functional.classification import binary_calibration_error

    return float(binary_calibration_error(torch.as_tensor(np.ascontiguousarray(probs), dtype=torch.float64),
                                          torch.as_tensor(labels).long(), n_bins=bins))


def model_scores(ens: Ensemble, s: VideoScores) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """``name -> (clip probabilities, video probabilities)`` for the ensemble, its uncalibrated
    combination, the plain mean of probabilities, and each specialist."""
    out = {
        ENSEMBLE: (ens.predict_proba(s.clip_probs), ens.predict_proba(s.video_probs)),
        UNCALIBRATED: (ens.predict_proba(s.clip_probs, calibrated=False),
                       ens.predict_proba(s.video_probs, calibrated=False)),
        MEAN_PROB: (s.clip_probs.mean(axis=1), s.video_probs.mean(axis=1)),
    }
    for i, k in enumerate(s.keys):
        out[k] = (s.clip_probs[:, i], s.video_probs[:, i])
    return out


def compute_metrics(ens: Ensemble, s: VideoScores) -> dict[str, Any]:
    """Every number of the report (see the module docstring); plain JSON data."""
    models = {}
    for name, (clip_p, video_p) in model_scores(ens, s).items():
        models[name] = {"video_auc": M.auc(video_p, s.video_labels), "frame_auc": M.auc(clip_p, s.clip_labels),
                        **{k: v for k, v in M.summary(video_p, s.video_labels).items() if k not in ("auc", "n")},
                        "ece": _ece(video_p, s.video_labels)}
    families = sorted({str(m) for m, y in zip(s.video_methods, s.video_labels) if y == 1})
    real = s.video_labels == 0
    scores = model_scores(ens, s)
    matrix = {name: {f: M.auc(video_p[real | (s.video_methods == f)], s.video_labels[real | (s.video_methods == f)])
                     for f in families} for name, (_, video_p) in scores.items() if name not in (UNCALIBRATED,)}
    ens_video = scores[ENSEMBLE][1]
    accuracy = {}
    for group in ["real", *families]:
        m = real if group == "real" else s.video_methods == group
        truth = 0 if group == "real" else 1
        accuracy[group] = {"videos": int(m.sum()),
                           "acc": float(((ens_video[m] >= 0.5) == truth).mean()) if m.any() else float("nan")}
    datasets = sorted({str(d) for d in s.video_datasets})
    per_dataset = {name: {d: M.auc(video_p[s.video_datasets == d], s.video_labels[s.video_datasets == d])
                          for d in datasets} for name, (_, video_p) in scores.items()} if len(datasets) > 1 else {}
    return {
        "videos": int(len(s.videos)), "clips": int(len(s.clip_labels)), "datasets": datasets,
        "real_videos": int(real.sum()), "fake_videos": int((~real).sum()),
        "ensemble": models[ENSEMBLE] | {"log_loss_uncalibrated": models[UNCALIBRATED]["log_loss"],
                                       "ece_uncalibrated": models[UNCALIBRATED]["ece"]},
        "models": models,
        "families": families,
        "family_auc": matrix,
        "family_accuracy": accuracy,
        "dataset_auc": per_dataset,
    }


# ----------------------------------------------------------------------------------- report

def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_roc(ens: Ensemble, s: VideoScores, metrics: dict, path: Path) -> None:
    plt = _plt()
    fig, ax = plt.subplots(figsize=(5.5, 5))
    for name, (_, video_p) in model_scores(ens, s).items():
        if name in (UNCALIBRATED, MEAN_PROB) or len(set(s.video_labels.tolist())) < 2:
            continue
        fpr, tpr = M.roc_curve(video_p, s.video_labels)
        main = name == ENSEMBLE
        ax.plot(fpr, tpr, lw=2.5 if main else 1.2, color="black" if main else None, zorder=3 if main else 2,
                label=f"{name} (AUC {metrics['models'][name]['video_auc']:.3f})")
    ax.plot([0, 1], [0, 1], ls=":", color="grey")
    ax.set(xlabel="false positive rate", ylabel="true positive rate", title="Video-level ROC")
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def reliability_bins(probs: np.ndarray, labels: np.ndarray, bins: int = 10) -> list[dict[str, float]]:
    """Per equal-width probability bin: count, mean predicted probability, fraction of fakes."""
    edges = np.linspace(0, 1, bins + 1)
    idx = np.clip(np.digitize(probs, edges[1:-1]), 0, bins - 1)
    out = []
    for b in range(bins):
        m = idx == b
        out.append({"lo": float(edges[b]), "hi": float(edges[b + 1]), "n": int(m.sum()),
                    "mean_prob": float(probs[m].mean()) if m.any() else float("nan"),
                    "fake_rate": float(labels[m].mean()) if m.any() else float("nan")})
    return out


def plot_reliability(ens: Ensemble, s: VideoScores, metrics: dict, path: Path) -> None:
    plt = _plt()
    scores = model_scores(ens, s)
    fig, (ax, hx) = plt.subplots(2, 1, figsize=(5.5, 6.5), gridspec_kw={"height_ratios": [3, 1]}, sharex=True)
    ax.plot([0, 1], [0, 1], ls=":", color="grey", label="perfect calibration")
    for name, style in ((UNCALIBRATED, dict(color="tab:orange", marker="s")), (ENSEMBLE, dict(color="black", marker="o"))):
        video_p = scores[name][1]
        bins = [b for b in reliability_bins(video_p, s.video_labels) if b["n"]]
        m = metrics["models"][name]
        ax.plot([b["mean_prob"] for b in bins], [b["fake_rate"] for b in bins], **style,
                label=f"{'calibrated' if name == ENSEMBLE else 'uncalibrated'} (log loss {m['log_loss']:.3f}, ECE {m['ece']:.3f})")
        hx.hist(video_p, bins=np.linspace(0, 1, 21), alpha=0.5, color=style["color"])
    ax.set(ylabel="fraction of fake videos", title="Reliability of the ensemble (videos)", xlim=(0, 1), ylim=(0, 1))
    ax.legend(fontsize=8, loc="upper left")
    hx.set(xlabel="predicted fake probability", ylabel="videos")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_family_matrix(metrics: dict, path: Path) -> None:
    plt = _plt()
    fams = metrics["families"]
    rows = list(metrics["family_auc"])
    data = np.array([[metrics["family_auc"][r][f] for f in fams] for r in rows], dtype=float)
    fig, ax = plt.subplots(figsize=(1.3 * max(3, len(fams)) + 2, 0.5 * len(rows) + 1.8))
    im = ax.imshow(data, cmap="RdYlGn", vmin=0.5, vmax=1.0, aspect="auto")
    ax.set_xticks(range(len(fams)), fams, rotation=30, ha="right")
    ax.set_yticks(range(len(rows)), rows)
    for i in range(len(rows)):
        for j in range(len(fams)):
            ax.text(j, i, f"{data[i, j]:.2f}", ha="center", va="center", fontsize=8)
    ax.set_title("Video AUC: real vs each manipulation family")
    fig.colorbar(im, ax=ax, fraction=0.04)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _f(v: Any) -> str:
    return f"{v:.3f}" if isinstance(v, (int, float)) and not isinstance(v, bool) and np.isfinite(v) else "-"


def markdown_report(metrics: dict) -> str:
    """The Markdown report of an evaluation (``metrics`` as written to ``metrics.json``)."""
    e = metrics["ensemble"]
    ens = metrics["ensemble_config"]
    lines = [
        f"# Interceptor evaluation: {metrics['name']} / {metrics['split']}", "",
        f"{metrics['videos']} videos ({metrics['real_videos']} real, {metrics['fake_videos']} fake), "
        f"{metrics['clips']} clips from {metrics['shards']} shard(s) of "
        + ", ".join(f"`{d}`" for d in metrics["shard_dirs"]) + ". "
        f"Ensemble fitted on the `{ens['fitted_on']}` split; clips -> video: `{ens['aggregation']['strategy']}`.", "",
        f"**Ensemble:** video AUC {_f(e['video_auc'])}, frame AUC {_f(e['frame_auc'])}, log loss {_f(e['log_loss'])} "
        f"(uncalibrated {_f(e['log_loss_uncalibrated'])}), EER {_f(e['eer'])}, accuracy real/fake "
        f"{_f(e['acc_real'])}/{_f(e['acc_fake'])}.", "",
        "## Models", "",
        "| model | video AUC | frame AUC | log loss | EER | acc real | acc fake | ECE |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, m in metrics["models"].items():
        lines.append(f"| {name} | {_f(m['video_auc'])} | {_f(m['frame_auc'])} | {_f(m['log_loss'])} | {_f(m['eer'])} | "
                     f"{_f(m['acc_real'])} | {_f(m['acc_fake'])} | {_f(m['ece'])} |")
    lines += ["", "`ensemble_uncalibrated` is the fitted combination before temperature/bias; `mean_prob` the "
              "plain mean of the specialists' probabilities (no fitting).", "",
              "## Specialist x manipulation family (video AUC, real vs that family)", ""]
    fams = metrics["families"]
    lines += ["| model | " + " | ".join(fams) + " |", "|---|" + "---|" * len(fams)]
    for name, row in metrics["family_auc"].items():
        lines.append(f"| {name} | " + " | ".join(_f(row[f]) for f in fams) + " |")
    if metrics.get("dataset_auc"):
        ds = metrics["datasets"]
        lines += ["", "Video AUC per dataset:", "", "| model | " + " | ".join(ds) + " |", "|---|" + "---|" * len(ds)]
        lines += [f"| {name} | " + " | ".join(_f(row[d]) for d in ds) + " |" for name, row in metrics["dataset_auc"].items()]
    lines += ["", "Ensemble accuracy (threshold 0.5) per class and family: "
              + ", ".join(f"{f} {_f(d['acc'])} ({d['videos']} videos)" for f, d in metrics["family_accuracy"].items()), "",
              "## Ensemble", "",
              f"Temperature {_f(ens['temperature'])}, bias {_f(ens['bias'])}, output clipped to "
              f"[{ens['clip']}, {1 - ens['clip']}].", "",
              "| specialist | stage | epoch | weight | checkpoint |", "|---|---|---|---|---|"]
    for k, w in ens["weights"].items():
        c = ens["checkpoints"].get(k, {})
        lines.append(f"| {k} | {c.get('stage', '-')} | {c.get('epoch', '-')} | {_f(w)} | `{c.get('checkpoint', '-')}` |")
    fit = ens.get("fit") or {}
    if fit:
        lines += ["", f"Fit on {fit['videos']} validation videos ({fit['real']} real, {fit['fake']} fake): log loss "
                  f"{_f(fit['log_loss_calibrated'])} calibrated, {_f(fit['log_loss_uncalibrated'])} uncalibrated, "
                  f"{_f(fit['log_loss_equal_weights'])} with equal weights."]
    lines += ["", "![ROC](roc.png)", "", "![reliability](reliability.png)", "", "![families](family_auc.png)", ""]
    if metrics.get("notes"):
        lines += ["## Notes", ""] + [f"- {n}" for n in metrics["notes"]] + [""]
    return "\n".join(lines)


def write_report(folder: Path, ens: Ensemble, s: VideoScores, metrics: dict) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "metrics.json").write_text(json.dumps(metrics, indent=2, default=str) + "\n")
    plot_roc(ens, s, metrics, folder / "roc.png")
    plot_reliability(ens, s, metrics, folder / "reliability.png")
    if metrics["families"]:
        plot_family_matrix(metrics, folder / "family_auc.png")
    (folder / "report.md").write_text(markdown_report(metrics))


# ----------------------------------------------------------------------------------- the job

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


def run(cfg: EvaluateConfig) -> dict[str, Any]:
    """Fit (optional) and evaluate; returns the metrics (also written to the output folder)."""
    start = time.perf_counter()
    storage = Storage(cfg.storage_path, cfg.s3_endpoint)
    chain = StageChain.load(cfg.stages_file)
    if cfg.fit:
        members = discover_members(storage, cfg.name, chain, cfg.specialists)
        if not members:
            raise ConfigError(f"no complete specialist checkpoint in {storage.display(cfg.name, 'final')} "
                              f"(run interceptor train first)")
        saved = None
    else:
        saved = load_ensemble(storage, cfg.name)
        members = members_of(saved, storage)
    fmt = check_members(members)
    _log("members: " + ", ".join(f"{m.specialist}/{m.stage}" for m in members))
    folders = shard_folders(cfg, chain, members)
    fit_files, eval_files = [], []
    for folder in folders:
        for what, files, split, wanted in (("fit", fit_files, cfg.fit_split, cfg.fit),
                                           ("evaluate", eval_files, cfg.split, cfg.evaluate)):
            found = list_complete_shards(folder, split=split) if wanted else []
            if wanted and not found:
                raise ConfigError(f"{folder} has no complete {split} shards to {what} on")
            files += found
    files = list(dict.fromkeys([*fit_files, *eval_files]))
    shapes, kinds = shard_format(files)
    want = (fmt["num_frames"], fmt["image_size"])
    if shapes != {want}:
        raise ConfigError(f"the shards hold clips of (frames, size) {sorted(shapes)} but the checkpoints read {want}")
    notes = preprocessing_notes(members, kinds)
    for n in notes:
        _log(f"note: {n}")
    if cfg.evaluate and cfg.fit and cfg.split == cfg.fit_split:
        notes.append(f"evaluated on the split the ensemble was fitted on ({cfg.split}): optimistic")

    from ray_jobs.cluster import init_ray
    from ray_jobs.scoring import score_shards

    init_ray(cfg.address, cfg.ray_num_cpus)
    _log(f"scoring {len(files)} shard(s) of {', '.join(map(str, folders))} with {len(members)} specialist(s)")
    cols = score_shards(storage, {m.specialist: m.parts for m in members}, [str(f) for f in files],
                        batch_size=cfg.batch_size, num_cpus=cfg.num_cpus, num_gpus=1.0 if cfg.use_gpu else 0.0,
                        apply_preprocessing=True, progress=Progress("scored"))
    keys = [m.specialist for m in members]
    split_col = np.asarray(cols["split"]).astype(str)

    if cfg.fit:
        agg = AggregationConfig(strategy=cfg.aggregation)
        fit = video_scores(cols, keys, agg, split_col == cfg.fit_split)
        ens = fit_ensemble(fit.video_probs, fit.video_labels, keys, aggregation=agg, clip=cfg.clip, extra={
            "checkpoints": {m.specialist: m.record() for m in members},
            "clips": clip_record(folders[-1]), "shard_dirs": [str(f.resolve()) for f in folders],
            "fitted_on": cfg.fit_split,
            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z")})
        storage.write_json(ens.to_dict(), *ensemble_parts(cfg.name))
        _log(f"fitted on {len(fit.videos)} {cfg.fit_split} videos: weights "
             + ", ".join(f"{k} {w:.2f}" for k, w in zip(ens.specialists, ens.weights))
             + f"; temperature {ens.temperature:.2f}, bias {ens.bias:+.2f}; {cfg.fit_split} log loss "
             f"{ens.fit.log_loss_uncalibrated:.3f} -> {ens.fit.log_loss_calibrated:.3f} calibrated; saved "
             f"{storage.display(*ensemble_parts(cfg.name))}")
    else:
        assert saved is not None
        ens = saved
    if not cfg.evaluate:
        return {"ensemble_config": ens.to_dict(), "seconds": time.perf_counter() - start}

    scores = video_scores(cols, ens.specialists, ens.aggregation, split_col == cfg.split)
    metrics = {"name": cfg.name, "split": cfg.split, "shard_dirs": [str(f) for f in folders], "shards": len(eval_files),
               **compute_metrics(ens, scores),
               "ensemble_config": {**ens.to_dict(), "checkpoints": ens.extra.get("checkpoints", {}),
                                   "fitted_on": ens.extra.get("fitted_on")},
               "notes": notes, "seconds": time.perf_counter() - start}
    if cfg.out:
        out = Path(cfg.out)
        write_report(out, ens, scores, metrics)
        where = str(out.resolve())
    else:
        with tempfile.TemporaryDirectory() as tmp:
            write_report(Path(tmp), ens, scores, metrics)
            storage.upload_dir(tmp, cfg.name, "reports", f"evaluate-{cfg.split}")
        where = storage.display(cfg.name, "reports", f"evaluate-{cfg.split}")
    metrics["report"] = where
    e = metrics["ensemble"]
    print(f"evaluate {cfg.name}/{cfg.split}: {metrics['videos']} videos, {metrics['clips']} clips; ensemble video AUC "
          f"{e['video_auc']:.3f}, frame AUC {e['frame_auc']:.3f}, log loss {e['log_loss']:.3f} (uncalibrated "
          f"{e['log_loss_uncalibrated']:.3f}), EER {e['eer']:.3f}, acc real/fake {e['acc_real']:.3f}/{e['acc_fake']:.3f}; "
          "specialists' video AUC " + ", ".join(f"{k} {metrics['models'][k]['video_auc']:.3f}" for k in ens.specialists)
          + f"; report {where}", flush=True)
    return metrics


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
            "weights": m["ensemble_config"]["weights"], "temperature": m["ensemble_config"]["temperature"]}


# ----------------------------------------------------------------------------------- CLI

def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="interceptor evaluate", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", help="run config YAML of the train job (storage, name, shards, chain, specialists)")
    ap.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                    help="override an EvaluateConfig field, e.g. --set batch_size=32")
    ap.add_argument("--storage-path", help="local path or s3://bucket/prefix of the runs")
    ap.add_argument("--s3-endpoint", help="custom S3 endpoint, e.g. http://127.0.0.1:9000")
    ap.add_argument("--name", help="experiment name")
    ap.add_argument("--shards", dest="shard_dir", help="shard folder (default: the final stage's dataset's)")
    ap.add_argument("--datasets", nargs="+", help="pool these datasets' shards (from the config's shards)")
    ap.add_argument("--specialists", nargs="+", help="specialists to combine (default: all with a checkpoint)")
    ap.add_argument("--split", choices=["train", "val", "test"], help="split to evaluate (default: test)")
    ap.add_argument("--fit-split", choices=["train", "val"], help="split to fit the ensemble on (default: val)")
    fit = ap.add_mutually_exclusive_group()
    fit.add_argument("--no-fit", action="store_true", help="reuse the saved ensemble instead of fitting")
    fit.add_argument("--fit-only", action="store_true", help="fit and save the ensemble, do not evaluate")
    ap.add_argument("--aggregation", choices=[a.value for a in Aggregation], help="clips -> video (default: mean)")
    ap.add_argument("--out", help="local output folder (default: <storage>/<name>/reports/evaluate-<split>/)")
    ap.add_argument("--address", help="Ray cluster address (default: local Ray / the job's cluster)")
    return ap


def config_from_args(args: argparse.Namespace) -> EvaluateConfig:
    if args.config:
        data = load_yaml(args.config)
        keys = set(TrainConfig.__dataclass_fields__)
        if isinstance(data, dict) and set(data) <= keys:
            cfg = EvaluateConfig.from_train_config(TrainConfig.load(args.config))
        else:
            cfg = from_dict(EvaluateConfig, data if isinstance(data, dict) else {}, "evaluate")
    else:
        cfg = EvaluateConfig()
    data = to_dict(cfg)
    for flag in ("storage_path", "s3_endpoint", "name", "shard_dir", "datasets", "specialists", "split", "fit_split",
                 "aggregation", "out", "address"):
        value = getattr(args, flag)
        if value is not None:
            data[flag] = value
    if args.no_fit:
        data["fit"] = False
    if args.fit_only:
        data["evaluate"] = False
    return apply_overrides(from_dict(EvaluateConfig, data, "evaluate"), args.overrides)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        run(config_from_args(args))
    except (ConfigError, CheckpointError, EnsembleError, SpecialistError, StorageError) as e:
        print(f"interceptor evaluate: error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
