"""``interceptor demo`` (``make demo``): synthetic benchmark -> prepare -> train chain -> ensemble -> report.

Everything runs on a local Ray on this machine (CPU), configured by ``ray_jobs/configs/demo.yaml``:

1. generate the synthetic benchmark in the FF++, Celeb-DF v2 and DFDC layouts (skipped if present);
2. prepare face-clip shards for each dataset with its stage's preprocessing (Ray Data; resumable);
3. train every specialist through ffpp -> celebdf -> dfdc (Ray Train; each specialist's chain runs
   on its own, ``train.max_concurrent`` specialists at a time; a rerun skips what is finished);
4. fit the Interceptor ensemble on the validation split and evaluate it on the test split;
5. print the report: validation and test AUC / log loss per specialist per stage, and the ensemble.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys

from ray_jobs.cli_common import job_parser, run_cli
from ray_jobs.config import CONFIG_DIR, apply_overrides, from_dict, load_yaml
from ray_jobs.demo_steps import DemoConfig, run_demo


def build_parser() -> argparse.ArgumentParser:
    ap = job_parser("interceptor demo", __doc__)
    ap.add_argument("--config", default=str(CONFIG_DIR / "demo.yaml"), help="demo config YAML")
    ap.add_argument("--out", help="output folder (default: demo_out)")
    ap.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    return ap


def config_from_args(args: argparse.Namespace) -> DemoConfig:
    cfg = from_dict(DemoConfig, load_yaml(args.config))
    if args.out:
        cfg = dataclasses.replace(cfg, out=args.out)
    return apply_overrides(cfg, args.overrides)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return run_cli("interceptor demo", lambda: run_demo(config_from_args(args)))


if __name__ == "__main__":
    sys.exit(main())
