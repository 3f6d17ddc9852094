"""Leave-one-family-out: the Interceptor on a manipulation family it never trained on, with and
without self-blended pseudo-fakes (issue 16), in one run.

    python benchmarks/leave_one_family_out.py --shards demo_out/shards [--out lofo_out] [--epochs 6]
        [--method sbi+av_shift] [--ratio 0.5] [--train-clips 2] [--processes 2] [--families face_swap ...]
        [--specialists av cm ...]

``--shards`` is a folder with one prepared shard folder per dataset (``ffpp``, ``celebdf``,
``dfdc``: what ``make demo`` writes under ``demo_out/shards``). For every family F and both
variants (``without``: dataset fakes only; ``with``: half of each batch's fakes (``--ratio``)
replaced by pseudo-fakes of its real clips, made with ``--method``: self-blended for every
specialist, voice-shifted too for AV), every specialist is trained with F's fakes removed
from its training and validation data, the calibrated ensemble is fitted on the validation videos
(F's left out too), and the test split's real videos are scored against F's test fakes (video AUC,
each face's clips averaged, the maximum over faces). Nothing of F is seen before the test.

At a scale that fits a 2-CPU machine in under 30 minutes, the stage chain is collapsed into one
stage over the three datasets' training shards pooled (each clip keeps its dataset's filter), with
the demo's model and first-stage recipe (``ray_jobs/configs/demo.yaml``) and the first
``--train-clips`` clips of each training video; the training loop is the
workers' own: :class:`~ray_jobs.runner.SpecialistRunner` fed by :class:`~ray_jobs.collate.ClipCollate`
(class balancing, then the pseudo-fakes), with the best-by-validation epoch kept. The held-out
filter is the one ``TrainConfig.hold_out`` applies (:func:`ray_jobs.plan.hold_out_filter`).

Prints a table per family (ensemble and each specialist, without / with pseudo-fakes) and the
pseudo-fake cost; writes ``lofo.json``, ``lofo.md`` and ``lofo.png`` to ``--out``.
Target (issue 16): the ensemble's mean leave-one-family-out video AUC with pseudo-fakes >= 0.85
and at least 0.05 above without them.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

VARIANTS = ("without", "with")
READ_COLUMNS = ("frames", "num_frames", "size", "audio", "audio_shape", "has_audio", "grid", "grid_size", "sync",
                "sync_shape", "lighting", "label", "face_box", "method", "dataset", "video_id", "face_index", "clip_index")
_CACHE: dict = {}


def read_split(shards: str, split: str) -> dict[str, np.ndarray]:
    """Every dataset's clip rows of ``split`` as NumPy columns (as Ray Data hands them to a collate function)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from data_pipeline.shards import list_complete_shards

    files = [f for d in sorted(Path(shards).iterdir()) if d.is_dir() for f in list_complete_shards(d, split=split)]
    if not files:
        raise SystemExit(f"no complete {split} shards under {shards} (run make demo, or interceptor prepare)")
    table = pa.concat_tables([pq.read_table(str(f), columns=list(READ_COLUMNS)) for f in files])
    return {c: table.column(c).to_numpy(zero_copy_only=False) for c in table.column_names}


def _rows(cols: dict[str, np.ndarray], keep: np.ndarray) -> dict[str, np.ndarray]:
    return {k: v[keep] for k, v in cols.items()}


def _split(shards: str, split: str) -> dict[str, np.ndarray]:
    if (shards, split) not in _CACHE:
        _CACHE[(shards, split)] = read_split(shards, split)
    return _CACHE[(shards, split)]


def held_in(cols: dict[str, np.ndarray], family: str) -> np.ndarray:
    """Rows kept when ``family`` is held out: the filter ``TrainConfig.hold_out`` applies to shards."""
    import pyarrow as pa

    from ray_jobs.plan import hold_out_filter

    n = len(cols["label"])
    table = pa.table({"label": cols["label"], "method": cols["method"].astype(str), "i": np.arange(n)})
    keep = np.zeros(n, dtype=bool)
    keep[table.filter(hold_out_filter([family])).column("i").to_numpy()] = True
    return keep


def train_task(task: dict) -> dict:
    """Train one specialist with one family held out; its clip probabilities on validation and test."""
    import torch

    from data_pipeline.batch import rows_to_batch
    from data_pipeline.pseudo_fakes import PseudoFakes
    from ray_jobs.collate import ClipCollate, balance_rates
    from ray_jobs.config import CONFIG_DIR, StageRecipe, from_dict, load_yaml
    from ray_jobs.runner import SpecialistRunner
    from specialists.model import ModelConfig, SpecialistModel
    from specialists.registry import get_spec

    torch.set_num_threads(1)
    t0 = time.perf_counter()
    demo = load_yaml(CONFIG_DIR / "demo.yaml")["train"]
    first = demo["stage_overrides"]["ffpp"]
    train = _split(task["shards"], "train")
    train = _rows(train, held_in(train, task["family"]) & (train["clip_index"] < task["train_clips"]))
    val = _split(task["shards"], "val")
    val = _rows(val, held_in(val, task["family"]))
    test = _split(task["shards"], "test")
    pseudo = (PseudoFakes(method=task["method"], ratio=task["ratio"]).for_model(get_spec(task["specialist"]).uses_sync)
              if task["variant"] == "with" else None)
    recipe = StageRecipe(name="lofo", dataset="pooled", lr=first["lr"], epochs=task["epochs"], loss="cross_entropy",
                         dropout=first["dropout"], warmup_steps=first["warmup_steps"], pseudo_fakes=pseudo)
    model_cfg = from_dict(ModelConfig, {**demo["model"], "specialist": task["specialist"],
                                        "image_size": int(train["size"][0]), "num_frames": int(train["num_frames"][0])})
    torch.manual_seed(task["seed"])
    runner = SpecialistRunner(SpecialistModel(model_cfg), recipe, seed=task["seed"], log_every=0, log=lambda _: None)
    labels = train["label"].astype(np.int64)
    rates = balance_rates({c: int((labels == c).sum()) for c in (0, 1)})
    batch_size, collate_s = int(demo["batch_size"]), [0.0, 0]

    def train_batches(epoch: int):
        collate = ClipCollate(rates, seed=(task["seed"], epoch, 0), uint8_frames=True, pseudo_fakes=pseudo)
        order = np.random.default_rng([task["seed"], epoch]).permutation(len(labels))
        for i in range(0, len(order) - batch_size + 1, batch_size):
            t = time.perf_counter()
            batch = collate(_rows(train, order[i:i + batch_size]))
            collate_s[0] += time.perf_counter() - t
            collate_s[1] += 1
            yield batch

    def batches(cols):
        return [rows_to_batch(_rows(cols, np.arange(i, min(i + 128, len(cols["label"])))), uint8_frames=True)
                for i in range(0, len(cols["label"]), 128)]

    val_batches = batches(val)
    runner.fit(train_batches, lambda: val_batches, keep_best=True)
    best_epoch, best_auc, weights = runner.best
    runner.core.load_state_dict(weights)
    val_p = runner.predict(val_batches)[0].double().numpy()
    test_p = runner.predict(batches(test))[0].double().numpy()
    return {**task, "val_probs": val_p, "test_probs": test_p, "best_epoch": best_epoch, "val_auc": best_auc,
            "seconds": time.perf_counter() - t0, "collate_s_per_batch": collate_s[0] / max(collate_s[1], 1)}


def score_family(shards: str, family: str, results: list[dict], keys: list[str]) -> dict:
    """The ensemble (fitted on the held-in validation videos) and each specialist on real test
    videos against ``family``'s test fakes; videos scored by the evaluation's own grouping
    (:func:`~ray_jobs.video_metrics.video_scores`: each face's clips averaged, the maximum over faces)."""
    from ray_jobs.video_metrics import video_scores
    from specialists import metrics as M
    from specialists.ensemble import AggregationConfig, fit_ensemble

    by_key = {r["specialist"]: r for r in results}
    val = _split(shards, "val")
    val = _rows(val, held_in(val, family))

    def videos(cols: dict[str, np.ndarray], split: str):
        return video_scores({**cols, **{f"prob_{k}": by_key[k][f"{split}_probs"] for k in keys}}, keys, AggregationConfig())

    v, t = videos(val, "val"), videos(_split(shards, "test"), "test")
    ens = fit_ensemble(v.video_probs, v.video_labels, keys)
    sel = (t.video_labels == 0) | ((t.video_labels == 1) & (t.video_methods == family))
    out = {"ensemble": M.auc(ens.predict_proba(t.video_probs)[sel], t.video_labels[sel]),
           "real_videos": int((sel & (t.video_labels == 0)).sum()), "fake_videos": int((sel & (t.video_labels == 1)).sum())}
    for i, k in enumerate(keys):
        out[k] = M.auc(t.video_probs[sel, i], t.video_labels[sel])
    return out


def merge_runs(runs: list[dict]) -> tuple[dict, list[str], dict]:
    """Several runs' ``lofo.json`` (seeds) as one: each cell their mean; each run's table kept in ``runs``."""
    keys = runs[0]["specialists"]
    families = [f for f in runs[0]["table"] if all(f in r["table"] for r in runs)]
    def cell(f: str, v: str, c: str):
        values = [r["table"][f][v][c] for r in runs]
        return values[0] if c.endswith("_videos") else float(np.mean(values))  # counts: the same test split

    table = {f: {v: {c: cell(f, v, c) for c in runs[0]["table"][f][v]} for v in VARIANTS} for f in families}
    meta = {k: v for k, v in runs[0].items() if k not in ("table", "mean", "seed", "seconds", "runs")}
    if len(runs) > 1:
        meta["runs"] = [{k: r[k] for k in ("seed", "seconds", "table", "mean") if k in r} for r in runs]
    else:
        meta.update({k: runs[0][k] for k in ("seed", "seconds") if k in runs[0]})
    return table, keys, meta


def write_outputs(out: Path, table: dict, keys: list[str], meta: dict) -> str:
    """``lofo.json``, ``lofo.md`` (the table) and ``lofo.png`` (ensemble AUC per family, both variants)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    families = list(table)
    mean = {v: float(np.mean([table[f][v]["ensemble"] for f in families])) for v in VARIANTS}
    lines = ["| held-out family | real / fake test videos | ensemble without | ensemble with | "
             + " | ".join(f"{k} without / with" for k in keys) + " |",
             "| --- | --- | --- | --- | " + " | ".join("---" for _ in keys) + " |"]
    for f in families:
        w, p = table[f]["without"], table[f]["with"]
        lines.append(f"| {f} | {w['real_videos']} / {w['fake_videos']} | {w['ensemble']:.3f} | {p['ensemble']:.3f} | "
                     + " | ".join(f"{w[k]:.3f} / {p[k]:.3f}" for k in keys) + " |")
    lines.append(f"| **mean** | | **{mean['without']:.3f}** | **{mean['with']:.3f}** | "
                 + " | ".join(f"{np.mean([table[f]['without'][k] for f in families]):.3f} / "
                              f"{np.mean([table[f]['with'][k] for f in families]):.3f}" for k in keys) + " |")
    md = "\n".join(lines)
    out.mkdir(parents=True, exist_ok=True)
    (out / "lofo.md").write_text(md + "\n")
    (out / "lofo.json").write_text(json.dumps({"table": table, "mean": mean, **meta}, indent=2))
    fig, ax = plt.subplots(figsize=(9, 3.6))
    x = np.arange(len(families))
    runs = meta.get("runs", [])
    for j, v in enumerate(VARIANTS):
        ax.bar(x + (j - 0.5) * 0.38, [table[f][v]["ensemble"] for f in families], 0.38,
               label=f"{v} pseudo-fakes (mean {mean[v]:.3f})")
        for r in runs:  # each run (seed) of an averaged table
            ax.plot(x + (j - 0.5) * 0.38, [r["table"][f][v]["ensemble"] for f in families], "k.", ms=4)
    ax.axhline(0.5, color="grey", lw=0.8, ls=":")
    ax.axhline(0.85, color="k", lw=0.8, ls="--", label="target 0.85")
    ax.set_xticks(x, [f.replace("_", "\n") for f in families], fontsize=8)
    ax.set_ylim(0.0, 1.0)
    ax.set_ylabel("ensemble video AUC on the held-out family")
    ax.set_title("Leave-one-family-out (synthetic benchmark, demo scale"
                 + (f", mean of {len(runs)} seeds; dots: each seed)" if runs else ")"))
    ax.legend(fontsize=8, loc="lower left")
    fig.tight_layout()
    fig.savefig(out / "lofo.png", dpi=110)
    return md


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--shards", help="folder of per-dataset shard folders (demo_out/shards)")
    ap.add_argument("--replot", metavar="LOFO_JSON", nargs="+",
                    help="rewrite the table and PNG from earlier runs' lofo.json (several: their mean, each run a dot)")
    ap.add_argument("--out", default="lofo_out")
    ap.add_argument("--epochs", type=int, default=4)
    ap.add_argument("--method", default="sbi+av_shift", help="pseudo_fakes.method of the 'with' variant")
    ap.add_argument("--ratio", type=float, default=0.5, help="pseudo_fakes.ratio of the 'with' variant")
    ap.add_argument("--train-clips", type=int, default=2, help="clips per training video (the shards' first ones)")
    ap.add_argument("--processes", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--families", nargs="*", help="default: every family with test fakes")
    ap.add_argument("--specialists", nargs="*", help="default: every registered specialist")
    args = ap.parse_args()
    if args.replot:
        table, keys, meta = merge_runs([json.loads(Path(p).read_text()) for p in args.replot])
        print(write_outputs(Path(args.out), table, keys, meta))
        return
    if not args.shards:
        ap.error("--shards is required (or --replot)")

    from specialists import list_specialists

    test = _split(args.shards, "test")
    families = args.families or sorted({str(m) for m, y in zip(test["method"], test["label"]) if y == 1})
    keys = args.specialists or list_specialists()
    tasks = [{"shards": args.shards, "family": f, "variant": v, "specialist": k, "epochs": args.epochs,
              "method": args.method, "ratio": args.ratio, "train_clips": args.train_clips, "seed": args.seed}
             for f in families for v in VARIANTS for k in keys]
    print(f"[lofo] {len(families)} families x {len(VARIANTS)} variants x {len(keys)} specialists = {len(tasks)} "
          f"trainings of {args.epochs} epochs, {args.processes} processes", flush=True)
    t0 = time.perf_counter()
    results: list[dict] = []
    with ProcessPoolExecutor(args.processes, mp_context=multiprocessing.get_context("spawn")) as pool:
        for r in pool.map(train_task, tasks):
            results.append(r)
            print(f"[lofo] {r['family']:24s} {r['variant']:7s} {r['specialist']}: best epoch {r['best_epoch']} "
                  f"val AUC {r['val_auc']:.3f} ({r['seconds']:.0f}s)", flush=True)
    table = {f: {v: score_family(args.shards, f, [r for r in results if r["family"] == f and r["variant"] == v], keys)
                 for v in VARIANTS} for f in families}
    cost = {v: float(np.mean([r["collate_s_per_batch"] for r in results if r["variant"] == v])) for v in VARIANTS}
    meta = {"epochs": args.epochs, "method": args.method, "ratio": args.ratio, "train_clips": args.train_clips,
            "seed": args.seed, "specialists": keys,
            "seconds": time.perf_counter() - t0, "collate_s_per_batch": cost}
    md = write_outputs(Path(args.out), table, keys, meta)
    print(md)
    mean = {v: np.mean([table[f][v]["ensemble"] for f in families]) for v in VARIANTS}
    print(f"[lofo] ensemble mean leave-one-family-out video AUC: without {mean['without']:.3f}, with "
          f"{mean['with']:.3f} (target: with >= 0.85 and >= without + 0.05)")
    print(f"[lofo] collate per batch of 32 (class balancing, pseudo-fakes, rows -> tensors): without "
          f"{cost['without'] * 1000:.1f} ms, with {cost['with'] * 1000:.1f} ms; whole run {meta['seconds'] / 60:.1f} min")


if __name__ == "__main__":
    main()
