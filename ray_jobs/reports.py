"""Tables and plots of the jobs' reports, in one place: training (per stage), sweeps (per trial) and
the ensemble's evaluation.

Plots share one style: integer epoch ticks, log-scale axes labelled with plain numbers that do
not overlap, and legends whose entries carry the colours of the lines they name.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ray_jobs import layout
from ray_jobs.storage import Storage

if TYPE_CHECKING:  # the evaluation's plots import these when they run: the train driver and every
    # chain trial import this module for the train report, and torchmetrics alone costs ~2 s there
    from ray_jobs.video_metrics import VideoScores
    from specialists.ensemble import Ensemble


def pyplot():
    """matplotlib's pyplot on the Agg backend (reports are written on machines without a display)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def integer_epochs(ax: Any, last_epoch: int | None = None) -> None:
    """Epoch axes tick whole epochs only."""
    from matplotlib.ticker import MaxNLocator

    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    if last_epoch:
        ax.set_xlim(0.5, last_epoch + 0.5)


def log_axis(ax: Any, axis: str = "x") -> None:
    """A log axis with plain-number labels (``0.0003``, not ``3x10^-4``), few enough not to overlap."""
    from matplotlib.ticker import LogLocator, NullFormatter, StrMethodFormatter

    target = ax.xaxis if axis == "x" else ax.yaxis
    (ax.set_xscale if axis == "x" else ax.set_yscale)("log")
    target.set_major_locator(LogLocator(base=10, subs=(1.0, 3.0), numticks=6))
    target.set_major_formatter(StrMethodFormatter("{x:.2g}"))
    target.set_minor_formatter(NullFormatter())


def fmt(v: Any, spec: str = "{:.3f}") -> str:
    """A table cell: the number formatted, or ``-`` for a missing / non-finite value."""
    import math

    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
        return "-"
    return spec.format(v)


# ----------------------------------------------------------------------------------- training

def format_train_report(rows: list[dict]) -> str:
    """The Markdown table of a training run: one row per (specialist, stage)."""
    head = ("| specialist | stage | epoch | val AUC | val log loss | test clip AUC | test video AUC | "
            "test log loss | test acc real/fake |")
    lines = [head, "|" + "---|" * 9]
    for r in rows:
        lines.append(f"| {r['specialist']} | {r['stage']} | {r.get('selected_epoch', '-')} | {fmt(r.get('val_auc'))} | "
                     f"{fmt(r.get('val_log_loss'))} | {fmt(r.get('test_auc'))} | {fmt(r.get('test_video_auc'))} | "
                     f"{fmt(r.get('test_log_loss'))} | {fmt(r.get('test_acc_real'))}/{fmt(r.get('test_acc_fake'))} |")
    return "\n".join(lines)


def plot_val_curves(rows: list[dict], path: Path) -> None:
    """Validation AUC per epoch, one panel per stage, one line per specialist."""
    plt = pyplot()
    stages = list(dict.fromkeys(r["stage"] for r in rows))
    fig, axes = plt.subplots(1, max(1, len(stages)), figsize=(5 * max(1, len(stages)), 4), squeeze=False)
    for ax, stage in zip(axes[0], stages):
        last = 0
        for r in rows:
            if r["stage"] == stage and r.get("history"):
                ep = [h["epoch"] for h in r["history"]]
                last = max(last, *ep)
                ax.plot(ep, [h["val_auc"] for h in r["history"]], marker="o", label=r["specialist"])
        ax.set(title=f"{stage}: validation AUC", xlabel="epoch", ylabel="AUC", ylim=(0.4, 1.01))
        integer_epochs(ax, last)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def write_train_report(storage: Storage, name: str, rows: list[dict]) -> str:
    """``reports/train_report.{json,md}`` and ``val_auc_curves.png`` of a run; returns the table."""
    table = format_train_report(rows)
    storage.write_json({"rows": rows}, *layout.reports_parts(name, layout.TRAIN_REPORT_JSON))
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / layout.TRAIN_REPORT_MD).write_text(f"# Training report: {name}\n\n{table}\n")
        if rows:
            plot_val_curves(rows, Path(tmp) / layout.VAL_CURVES_PNG)
        storage.upload_dir(tmp, *layout.reports_parts(name))
    return table


# ----------------------------------------------------------------------------------- sweeps

_STATUS_MARKERS = (("o", "finished"), ("x", "stopped"), ("^", "error"))


def _trial_scatter(fig: Any, ax: Any, rows: list[dict], title: str) -> None:
    """Best val AUC against lr, one marker per status, coloured by focal gamma where it was searched."""
    from matplotlib.lines import Line2D

    gammas = [t["hparams"]["focal_gamma"] for t in rows if "focal_gamma" in t["hparams"]]
    colour = {"cmap": "viridis", "vmin": min(gammas), "vmax": max(gammas)} if gammas else {"color": "tab:blue"}
    mappable, handles = None, []
    for marker, status in _STATUS_MARKERS:
        sel = [t for t in rows if t["status"] == status]
        if not sel:
            continue
        if gammas:
            colour["c"] = [t["hparams"].get("focal_gamma", 0.0) for t in sel]
        mappable = ax.scatter([t["hparams"]["lr"] for t in sel], [t["best_val_auc"] for t in sel],
                              marker=marker, s=60, **colour)
        # the legend names the marker (status); with gamma searched, colour is gamma (the colour bar)
        handles.append(Line2D([], [], marker=marker, linestyle="", color="dimgrey" if gammas else "tab:blue",
                              label=f"{status} ({len(sel)})"))
    if gammas and mappable is not None:
        fig.colorbar(mappable, ax=ax, label="focal gamma")
    log_axis(ax, "x")
    ax.set(xlabel="learning rate", ylabel="best val AUC", title=title)
    ax.grid(alpha=0.3)
    if handles:
        ax.legend(handles=handles, fontsize=8)


def _trial_curves(ax: Any, rows: list[dict], title: str, max_epochs: int) -> None:
    """Val AUC per epoch of every trial, coloured by its lr (dashed: stopped before the last epoch)."""
    from matplotlib.colors import LogNorm

    plt = pyplot()
    lrs = [t["hparams"]["lr"] for t in rows] or [1e-4]
    norm = LogNorm(vmin=min(lrs), vmax=max(lrs) * (1.0001 if min(lrs) == max(lrs) else 1))
    cmap = plt.get_cmap("plasma")
    for t in rows:
        hist = [h for h in t["history"] if h.get("val_auc") is not None]
        ax.plot([h["epoch"] for h in hist], [h["val_auc"] for h in hist], marker="o", markersize=3,
                color=cmap(norm(t["hparams"]["lr"])), linestyle="-" if t["status"] == "finished" else "--",
                label=f"{t['trial_id']} lr {t['hparams']['lr']:.2g}")
    ax.set(xlabel="epoch", ylabel="val AUC", title=title)
    integer_epochs(ax, max_epochs)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, ncol=2)


def plot_trials(trials: list[dict], path: Path, stage: str, max_epochs: int) -> None:
    """Per specialist: best val AUC vs lr (colour: gamma; marker: status), and val AUC curves per trial."""
    plt = pyplot()
    keys = list(dict.fromkeys(t["specialist"] for t in trials))
    fig, axes = plt.subplots(len(keys), 2, figsize=(11, 4 * len(keys)), squeeze=False)
    for (ax_scatter, ax_curves), key in zip(axes, keys):
        rows = [t for t in trials if t["specialist"] == key and t["best_val_auc"] is not None]
        _trial_scatter(fig, ax_scatter, rows, f"{key} / {stage}: best val AUC per trial")
        _trial_curves(ax_curves, rows, f"{key}: val AUC per trial (dashed: stopped early)", max_epochs)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def format_sweep_summary(keys: list[str], trials: list[dict], best: dict[str, dict]) -> str:
    """The trials table (searched hyperparameters ``keys``) and the best configuration per specialist."""
    lines = [f"| specialist | trial | {' | '.join(keys)} | status | epochs | best val AUC | best epoch |",
             "|" + "---|" * (6 + len(keys))]
    for t in trials:
        auc = f"{t['best_val_auc']:.4f}" if t["best_val_auc"] is not None else "-"
        lines.append(f"| {t['specialist']} | {t['trial_id']} | "
                     + " | ".join(f"{t['hparams'].get(k, float('nan')):.3g}" for k in keys)
                     + f" | {t['status']} | {t['epochs']}/{t['max_epochs']} | {auc} | {t['best_epoch'] or '-'} |")
    for key, b in best.items():
        hp = " ".join(f"{k}={v:.3g}" for k, v in b["hparams"].items())
        lines.append(f"[tune] best {key}: {hp} -> val AUC {b['val_auc']:.4f} (epoch {b['epoch']}, "
                     f"trial {b['trial_id']}); checkpoint {b['checkpoint']}")
    return "\n".join(lines)


# ----------------------------------------------------------------------------------- evaluation
# (``interceptor evaluate``'s report: the numbers come from ray_jobs.video_metrics)


def plot_roc(ens: Ensemble, s: VideoScores, metrics: dict, path: Path) -> None:
    """Video-level ROC of the ensemble (black) and every specialist, AUC in the legend."""
    from ray_jobs.video_metrics import ENSEMBLE, MEAN_PROB, UNCALIBRATED, model_scores
    from specialists import metrics as M

    plt = pyplot()
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


def plot_reliability(ens: Ensemble, s: VideoScores, metrics: dict, path: Path) -> None:
    """Reliability diagram of the ensemble's video probabilities, calibrated and not, over their histogram."""
    from ray_jobs.video_metrics import ENSEMBLE, UNCALIBRATED, model_scores, reliability_bins

    plt = pyplot()
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


#: the mark of a family absent from training in the evaluation's tables and plot
UNSEEN_MARK = "*"


def family_label(metrics: dict, family: str) -> str:
    """A family's name in the evaluation's tables, marked when no member trained on it."""
    return family + UNSEEN_MARK if family in metrics.get("unseen_families", ()) else family


def unseen_legend(metrics: dict) -> list[str]:
    """The legend of the mark (none when every evaluated family was trained on, or nothing is recorded)."""
    unseen = metrics.get("unseen_families") or []
    if not unseen:
        return []
    return ["", f"Families marked `{UNSEEN_MARK}` were absent from training (held out, or in no member's "
            f"training data): {', '.join(unseen)}."]


def plot_family_matrix(metrics: dict, path: Path) -> None:
    """The model x manipulation-family video AUC matrix as an annotated heat map."""
    plt = pyplot()
    fams = metrics["families"]
    rows = list(metrics["family_auc"])
    data = np.array([[metrics["family_auc"][r][f] for f in fams] for r in rows], dtype=float)
    fig, ax = plt.subplots(figsize=(1.3 * max(3, len(fams)) + 2, 0.5 * len(rows) + 1.8))
    im = ax.imshow(data, cmap="RdYlGn", vmin=0.5, vmax=1.0, aspect="auto")
    ax.set_xticks(range(len(fams)), [family_label(metrics, f) for f in fams], rotation=30, ha="right")
    ax.set_yticks(range(len(rows)), rows)
    for i in range(len(rows)):
        for j in range(len(fams)):
            ax.text(j, i, f"{data[i, j]:.2f}", ha="center", va="center", fontsize=8)
    ax.set_title("Video AUC: real vs each manipulation family"
                 + (f" ({UNSEEN_MARK}: absent from training)" if metrics.get("unseen_families") else ""))
    fig.colorbar(im, ax=ax, fraction=0.04)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _evaluate_tables(metrics: dict) -> list[str]:
    """The report's models table and its family (and, pooled, per-dataset) AUC matrices."""
    lines = ["## Models", "",
             "| model | video AUC | frame AUC | log loss | EER | acc real | acc fake | ECE |",
             "|---|---|---|---|---|---|---|---|"]
    for name, m in metrics["models"].items():
        lines.append(f"| {name} | {fmt(m['video_auc'])} | {fmt(m['frame_auc'])} | {fmt(m['log_loss'])} | "
                     f"{fmt(m['eer'])} | {fmt(m['acc_real'])} | {fmt(m['acc_fake'])} | {fmt(m['ece'])} |")
    lines += ["", "`ensemble_uncalibrated` is the fitted combination before temperature/bias; `mean_prob` the "
              "plain mean of the specialists' probabilities (no fitting).", "",
              "## Specialist x manipulation family (video AUC, real vs that family)", ""]
    fams = metrics["families"]
    lines += ["| model | " + " | ".join(family_label(metrics, f) for f in fams) + " |", "|---|" + "---|" * len(fams)]
    for name, row in metrics["family_auc"].items():
        lines.append(f"| {name} | " + " | ".join(fmt(row[f]) for f in fams) + " |")
    lines += unseen_legend(metrics)
    if metrics.get("dataset_auc"):
        ds = metrics["datasets"]
        lines += ["", "Video AUC per dataset:", "", "| model | " + " | ".join(ds) + " |", "|---|" + "---|" * len(ds)]
        lines += [f"| {name} | " + " | ".join(fmt(row[d]) for d in ds) + " |" for name, row in metrics["dataset_auc"].items()]
        lines += _dataset_family_table(metrics)
    return lines


def _dataset_family_table(metrics: dict) -> list[str]:
    """Pooled datasets: one row per dataset and family (its reals against that family's fakes), one
    column per model of the family matrix."""
    per = metrics.get("dataset_family_auc") or {}
    names = list(metrics["family_auc"])
    lines = ["", "## Dataset x manipulation family (video AUC, the dataset's real videos vs that family)", "",
             "| dataset | family | real | fake | " + " | ".join(names) + " |", "|---|---|---|---|" + "---|" * len(names)]
    for d, cell in per.items():
        for f, n in cell["fake_videos"].items():
            lines.append(f"| {d} | {family_label(metrics, f)} | {cell['real_videos']} | {n} | "
                         + " | ".join(fmt(cell["auc"][name][f]) for name in names) + " |")
    return lines + unseen_legend(metrics)


def _ensemble_section(metrics: dict) -> list[str]:
    """The report's accuracy per family and the fitted ensemble: weights, checkpoints, fit."""
    ens = metrics["ensemble_config"]
    lines = ["", "Ensemble accuracy (threshold 0.5) per class and family: "
             + ", ".join(f"{family_label(metrics, f)} {fmt(d['acc'])} ({d['videos']} videos)"
                         for f, d in metrics["family_accuracy"].items()), "",
             "## Ensemble", "",
             f"Temperature {fmt(ens['temperature'])}, bias {fmt(ens['bias'])}, output clipped to "
             f"[{ens['clip']}, {1 - ens['clip']}].", "",
             "| specialist | stage | epoch | weight | checkpoint |", "|---|---|---|---|---|"]
    for k, w in ens["weights"].items():
        c = ens["checkpoints"].get(k, {})
        lines.append(f"| {k} | {c.get('stage', '-')} | {c.get('epoch', '-')} | {fmt(w)} | `{c.get('checkpoint', '-')}` |")
    fit = ens.get("fit") or {}
    if fit:
        lines += ["", f"Fit on {fit['videos']} validation videos ({fit['real']} real, {fit['fake']} fake): log loss "
                  f"{fmt(fit['log_loss_calibrated'])} calibrated, {fmt(fit['log_loss_uncalibrated'])} uncalibrated, "
                  f"{fmt(fit['log_loss_equal_weights'])} with equal weights."]
    return lines


def _faces_line(faces: dict) -> list[str]:
    """Fakes showing several faces against one-face fakes of the same families (ensemble video AUC)."""
    if not faces:
        return []
    one, several = faces["one_face"], faces["several_faces"]
    return [f"**Several faces** ({', '.join(faces['datasets'])}; video probability = the maximum over the faces): "
            f"ensemble video AUC {fmt(several['video_auc'])} on {several['fake_videos']} fakes showing two or more "
            f"faces, {fmt(one['video_auc'])} on {one['fake_videos']} one-face fakes of the same families "
            f"({', '.join(faces['families'])}), each against {one['real_videos']} real videos.", ""]


def format_evaluate_report(metrics: dict) -> str:
    """The Markdown report of an evaluation (``metrics`` as written to ``metrics.json``)."""
    e = metrics["ensemble"]
    ens = metrics["ensemble_config"]
    lines = [
        f"# Interceptor evaluation: {metrics['name']} / {metrics['split']}", "",
        f"{metrics['videos']} videos ({metrics['real_videos']} real, {metrics['fake_videos']} fake), "
        f"{metrics['clips']} clips from {metrics['shards']} shard(s) of "
        + ", ".join(f"`{d}`" for d in metrics["shard_dirs"]) + ". "
        f"Ensemble fitted on the `{ens['fitted_on']}` split; clips -> video: `{ens['aggregation']['strategy']}`.", "",
        f"**Ensemble:** video AUC {fmt(e['video_auc'])}, frame AUC {fmt(e['frame_auc'])}, log loss {fmt(e['log_loss'])} "
        f"(uncalibrated {fmt(e['log_loss_uncalibrated'])}), EER {fmt(e['eer'])}, accuracy real/fake "
        f"{fmt(e['acc_real'])}/{fmt(e['acc_fake'])}.", "",
        *_faces_line(metrics.get("faces_auc") or {}),
        *_evaluate_tables(metrics),
        *_ensemble_section(metrics),
        "", f"![ROC]({layout.ROC_PNG})", "", f"![reliability]({layout.RELIABILITY_PNG})", "", f"![families]({layout.FAMILY_AUC_PNG})", "",
    ]
    if metrics.get("notes"):
        lines += ["## Notes", ""] + [f"- {n}" for n in metrics["notes"]] + [""]
    return "\n".join(lines)


def write_evaluate_report(folder: Path, ens: Ensemble, s: VideoScores, metrics: dict) -> None:
    """An evaluation's report in ``folder``: ``metrics.json``, the ROC, reliability and family plots, ``report.md``."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / layout.EVALUATE_METRICS_JSON).write_text(json.dumps(metrics, indent=2, default=str) + "\n")
    plot_roc(ens, s, metrics, folder / layout.ROC_PNG)
    plot_reliability(ens, s, metrics, folder / layout.RELIABILITY_PNG)
    if metrics["families"]:
        plot_family_matrix(metrics, folder / layout.FAMILY_AUC_PNG)
    (folder / layout.EVALUATE_REPORT_MD).write_text(format_evaluate_report(metrics))
