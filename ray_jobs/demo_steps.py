"""The steps of ``interceptor demo``: synthetic benchmark -> prepare -> train chain -> ensemble -> report.

:class:`DemoConfig` is ``ray_jobs/configs/demo.yaml``; :func:`run_demo` runs every step on a local
Ray through the library modules (:func:`ray_jobs.sharding.run`, :func:`ray_jobs.chains.train_chain`,
:func:`ray_jobs.evaluation.run_for_demo`). The datasets and their stage filters come from the
packaged stage chain.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from data_pipeline.filters import Preprocessing
from ray_jobs.config import StageChain, TrainConfig, from_dict
from ray_jobs.sharding import PrepareConfig, run, stage_preprocessing

#: every specialist's final-stage video-level test AUC should be above this
TARGET_TEST_AUC = 0.8
#: every specialist's video AUC on its own family should reach this, and be the highest of the six
#: there (or within :data:`LEAD_MARGIN` of it); the ensemble should reach it on every family
TARGET_FAMILY_AUC = 0.9
LEAD_MARGIN = 0.01
#: the demo's summary, next to its outputs
SUMMARY_FILE = "demo_summary.json"


@dataclass
class SyntheticSettings:
    scale: str = "demo"
    """Synthetic benchmark size: ``tiny``, ``small``, ``demo`` or ``default``
    (``data_pipeline.synthetic.SCALES``)."""
    seed: int = 0


@dataclass
class DemoConfig:
    """The demo: where it writes, how big the benchmark is, and the prepare/train settings."""

    out: str = "demo_out"
    """Output folder: ``synthetic/``, ``shards/<dataset>/``, ``runs/`` (storage), ``evaluation/``."""
    synthetic: SyntheticSettings = field(default_factory=SyntheticSettings)
    prepare: dict[str, Any] = field(default_factory=dict)
    """PrepareConfig fields applied to every dataset (size, clip_len, clips_per_video, ...)."""
    readers: dict[str, dict[str, Any]] = field(default_factory=dict)
    """Reader options per dataset (e.g. ``dfdc: {parts_per_chunk: 2}``)."""
    train: dict[str, Any] = field(default_factory=dict)
    """TrainConfig fields (shards and storage_path are set by the demo)."""
    num_cpus: int | None = None
    """CPUs of the local Ray."""
    evaluate: bool = True
    """Fit and evaluate the ensemble after training."""


def generate_benchmark(cfg: DemoConfig, synth_root: Path, datasets: list[str]) -> None:
    """The synthetic benchmark in every dataset's layout (skipped when it is there)."""
    from data_pipeline import synthetic

    if not all((synth_root / ds / "synthetic_truth.json").is_file() for ds in datasets):
        t = time.time()
        synthetic.generate(synth_root, synthetic.config_for_scale(cfg.synthetic.scale, seed=cfg.synthetic.seed))
        print(f"[demo] synthetic benchmark ({cfg.synthetic.scale}) in {time.time() - t:.0f}s -> {synth_root}", flush=True)


def prepare_all(cfg: DemoConfig, out: Path, filters: dict[str, Preprocessing]) -> dict[str, str]:
    """Shards of every dataset of ``filters`` (``{dataset: its stage's filter}``); ``{dataset: folder}``."""
    shards = {}
    for ds, preprocessing in filters.items():
        folder = out / "shards" / ds
        pcfg = from_dict(PrepareConfig, {**cfg.prepare, "dataset": ds, "root": str(out / "synthetic" / ds),
                                         "reader": cfg.readers.get(ds, {}),
                                         "out": str(folder), "preprocessing": preprocessing.value,
                                         "num_cpus": cfg.num_cpus})
        t = time.time()
        run(pcfg)
        print(f"[demo] prepared {ds} shards in {time.time() - t:.0f}s -> {folder}", flush=True)
        shards[ds] = str(folder)
    return shards


def print_verdict(final_stage: str, final: list[dict], minutes: float, out: Path) -> None:
    """The final stage's test AUC per specialist, against :data:`TARGET_TEST_AUC`."""
    failing = [r["specialist"] for r in final if not (r.get("test_video_auc") or 0) > TARGET_TEST_AUC]
    print(f"\n[demo] final-stage ({final_stage}) test AUC per specialist, clip / video level: "
          + ", ".join(f"{r['specialist']} {r.get('test_auc', float('nan')):.3f} / "
                      f"{r.get('test_video_auc', float('nan')):.3f}" for r in final))
    if failing:
        print(f"[demo] video-level test AUC below the {TARGET_TEST_AUC} target: {', '.join(failing)}")
    else:
        print(f"[demo] every specialist's video-level test AUC is above {TARGET_TEST_AUC}")
    print(f"[demo] done in {minutes:.1f} min; outputs in {out}")


def print_faces(faces: dict[str, Any]) -> None:
    """Several-face fakes against one-face fakes of the same families (ensemble video AUC)."""
    if not faces:
        return
    one, several = faces["one_face"], faces["several_faces"]
    gap = abs(several["video_auc"] - one["video_auc"])
    print(f"[demo] {'/'.join(faces['datasets'])} fakes showing two or more faces: ensemble video AUC "
          f"{several['video_auc']:.3f} ({several['fake_videos']} fakes) vs one-face fakes of the same families "
          f"{one['video_auc']:.3f} ({one['fake_videos']} fakes), each against {one['real_videos']} real videos; "
          f"gap {gap:.3f} ({'within' if gap <= 0.05 else 'above'} 0.05)")


def family_leads(matrix: dict[str, dict[str, float]]) -> dict[str, dict[str, Any]]:
    """Per specialist of ``matrix`` (model -> family -> video AUC, the ensemble's row included):
    its own family (:data:`~data_pipeline.synthetic.SPECIALIST_FAMILY`), its AUC there, the best
    specialist there, and whether it leads (>= :data:`TARGET_FAMILY_AUC` and within
    :data:`LEAD_MARGIN` of the best)."""
    from data_pipeline.synthetic import SPECIALIST_FAMILY
    from ray_jobs.video_metrics import ENSEMBLE, MEAN_PROB, UNCALIBRATED

    specialists = [m for m in matrix if m not in (ENSEMBLE, UNCALIBRATED, MEAN_PROB)]
    out = {}
    for key in specialists:
        family = SPECIALIST_FAMILY.get(key)
        if family is None or family not in matrix[key]:
            continue
        auc = matrix[key][family]
        best = max(specialists, key=lambda m: matrix[m][family])
        out[key] = {"family": family, "auc": auc, "best": best, "best_auc": matrix[best][family],
                    "leads": auc >= TARGET_FAMILY_AUC and auc >= matrix[best][family] - LEAD_MARGIN}
    return out


def print_family_matrix(matrix: dict[str, dict[str, float]], leads: dict[str, dict[str, Any]]) -> None:
    """The model x family video AUC matrix (test split), then one line per specialist: does it lead
    its own family? and one for the ensemble: is it >= the target on every family?"""
    if not matrix:
        return
    families = list(next(iter(matrix.values())))
    short = [f.split("_")[0] for f in families]  # double, face, lighting, lip, low, resolution, temporal
    print("\n[demo] video AUC, real vs each manipulation family (test split; columns: "
          + ", ".join(families) + "):")
    print("  " + "model".ljust(22) + "".join(f.rjust(11) for f in short))
    for model, row in matrix.items():
        print("  " + model.ljust(22) + "".join(f"{row[f]:.3f}".rjust(11) for f in families))
    for key, d in leads.items():
        verdict = "leads" if d["leads"] else "does NOT lead"
        print(f"[demo] {key} {verdict} its family {d['family']}: {d['auc']:.3f} "
              f"(best specialist {d['best']} {d['best_auc']:.3f}; target >= {TARGET_FAMILY_AUC} and within {LEAD_MARGIN})")
    ens = next((row for model, row in matrix.items() if model == "ensemble"), None)
    if ens is not None:
        low = {f: v for f, v in ens.items() if not v >= TARGET_FAMILY_AUC}
        print(f"[demo] ensemble >= {TARGET_FAMILY_AUC} on every family" if not low else
              f"[demo] ensemble below {TARGET_FAMILY_AUC} on: " + ", ".join(f"{f} {v:.3f}" for f, v in low.items()))


def run_demo(cfg: DemoConfig) -> int:
    """Every step of the demo; writes ``demo_summary.json`` and prints the verdict."""
    from ray_jobs.chains import train_chain
    from ray_jobs.cluster import init_ray

    start = time.time()
    out = Path(cfg.out).resolve()
    chain = StageChain.load()
    filters = stage_preprocessing(chain)
    generate_benchmark(cfg, out / "synthetic", list(filters))
    init_ray(None, cfg.num_cpus)
    shards = prepare_all(cfg, out, filters)
    tcfg = from_dict(TrainConfig, {**cfg.train, "shards": shards, "storage_path": str(out / "runs"),
                                   "num_cpus": cfg.num_cpus})
    t = time.time()
    rows = train_chain(tcfg)
    print(f"[demo] trained {len(rows)} (specialist, stage) runs in {time.time() - t:.0f}s", flush=True)

    ensemble = None
    if cfg.evaluate:
        from ray_jobs.evaluation import run_for_demo

        ensemble = run_for_demo(tcfg, out / "evaluation")

    final_stage = chain.stages[-1].name
    final = [r for r in rows if r["stage"] == final_stage]
    summary = {"minutes": (time.time() - start) / 60,
               "final_stage_test_clip_auc": {r["specialist"]: r.get("test_auc") for r in final},
               "final_stage_test_video_auc": {r["specialist"]: r.get("test_video_auc") for r in final},
               "ensemble": ensemble}
    matrix = (ensemble or {}).get("family_auc", {})
    summary["family_leads"] = family_leads(matrix) if matrix else {}
    (out / SUMMARY_FILE).write_text(json.dumps(summary, indent=2, default=str))
    print_family_matrix(matrix, summary["family_leads"])
    print_faces((ensemble or {}).get("faces_auc", {}))
    print_verdict(final_stage, final, summary["minutes"], out)
    return 0
