"""``interceptor demo`` (``make demo``): synthetic benchmark -> prepare -> train chain -> ensemble -> report.

Everything runs on a local Ray on this machine (CPU), configured by ``ray_jobs/configs/demo.yaml``:

1. generate the synthetic benchmark in the FF++, Celeb-DF v2 and DFDC layouts (skipped if present);
2. prepare face-clip shards for each dataset with its stage's preprocessing (Ray Data; resumable);
3. train every specialist through ffpp -> celebdf -> dfdc (Ray Train, all specialists of a stage
   at once; a rerun skips what is finished);
4. fit the Interceptor ensemble on the validation split and evaluate it on the test split;
5. print the report: validation and test AUC / log loss per specialist per stage, and the ensemble.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ray_jobs.config import CONFIG_DIR, ConfigError, apply_overrides, from_dict, load_yaml
from ray_jobs.train import TrainConfig

STAGE_DATASETS = ("ffpp", "celebdf", "dfdc")
TARGET_TEST_AUC = 0.8


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


def _stage_preprocessing() -> dict[str, str]:
    from ray_jobs.config import StageChain

    return {s.dataset: s.preprocessing.value for s in StageChain.load().stages}


def prepare_all(cfg: DemoConfig, out: Path) -> dict[str, str]:
    from ray_jobs.prepare import PrepareConfig, run

    shards = {}
    prep = _stage_preprocessing()
    for ds in STAGE_DATASETS:
        folder = out / "shards" / ds
        pcfg = from_dict(PrepareConfig, {**cfg.prepare, "dataset": ds, "root": str(out / "synthetic" / ds),
                                         "reader": cfg.readers.get(ds, {}),
                                         "out": str(folder), "preprocessing": prep[ds], "num_cpus": cfg.num_cpus})
        t = time.time()
        run(pcfg)
        print(f"[demo] prepared {ds} shards in {time.time() - t:.0f}s -> {folder}", flush=True)
        shards[ds] = str(folder)
    return shards


def run_demo(cfg: DemoConfig) -> int:
    from data_pipeline import synthetic
    from ray_jobs.cluster import init_ray
    from ray_jobs.train import train_chain

    start = time.time()
    out = Path(cfg.out).resolve()
    synth_root = out / "synthetic"
    if not all((synth_root / ds / "synthetic_truth.json").is_file() for ds in STAGE_DATASETS):
        t = time.time()
        synthetic.generate(synth_root, synthetic.config_for_scale(cfg.synthetic.scale, seed=cfg.synthetic.seed))
        print(f"[demo] synthetic benchmark ({cfg.synthetic.scale}) in {time.time() - t:.0f}s -> {synth_root}", flush=True)
    init_ray(None, cfg.num_cpus)
    shards = prepare_all(cfg, out)
    tcfg = from_dict(TrainConfig, {**cfg.train, "shards": shards, "storage_path": str(out / "runs"),
                                   "num_cpus": cfg.num_cpus})
    t = time.time()
    rows = train_chain(tcfg)
    print(f"[demo] trained {len(rows)} (specialist, stage) runs in {time.time() - t:.0f}s", flush=True)

    ensemble = None
    if cfg.evaluate:
        from ray_jobs import evaluate

        ensemble = evaluate.run_for_demo(tcfg, out / "evaluation")

    final = [r for r in rows if r["stage"] == STAGE_DATASETS[-1]]
    failing = [r["specialist"] for r in final if not (r.get("test_video_auc") or 0) > TARGET_TEST_AUC]
    summary = {"minutes": (time.time() - start) / 60,
               "final_stage_test_clip_auc": {r["specialist"]: r.get("test_auc") for r in final},
               "final_stage_test_video_auc": {r["specialist"]: r.get("test_video_auc") for r in final},
               "ensemble": ensemble}
    (out / "demo_summary.json").write_text(json.dumps(summary, indent=2, default=str))
    print("\n[demo] final-stage (dfdc) test AUC per specialist, clip / video level: "
          + ", ".join(f"{r['specialist']} {r.get('test_auc', float('nan')):.3f} / "
                      f"{r.get('test_video_auc', float('nan')):.3f}" for r in final))
    if failing:
        print(f"[demo] video-level test AUC below the {TARGET_TEST_AUC} target: {', '.join(failing)}")
    else:
        print(f"[demo] every specialist's video-level test AUC is above {TARGET_TEST_AUC}")
    print(f"[demo] done in {summary['minutes']:.1f} min; outputs in {out}")
    return 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="interceptor demo", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", default=str(CONFIG_DIR / "demo.yaml"), help="demo config YAML")
    ap.add_argument("--out", help="output folder (default: demo_out)")
    ap.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    args = ap.parse_args(argv)
    try:
        cfg = from_dict(DemoConfig, load_yaml(args.config))
        if args.out:
            cfg = dataclasses.replace(cfg, out=args.out)
        cfg = apply_overrides(cfg, args.overrides)
        return run_demo(cfg)
    except ConfigError as e:
        print(f"interceptor demo: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
