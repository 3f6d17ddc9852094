"""``interceptor train``: every selected specialist through the stage chain on Ray.

    python -m ray_jobs.train --config run.yaml [--set key=value ...]
    ray job submit --address http://127.0.0.1:8265 --working-dir . -- python -m ray_jobs.train --config run.yaml

All selected specialists train concurrently: a Ray Tune run whose trials (one per specialist)
each build and fit that specialist's ``TorchTrainer`` for every stage it still needs, in chain
order (Ray 2.60's pattern for several trainers at once). Each trainer streams the stage's shards with Ray Data, balances
classes while streaming, runs DDP across its workers (AMP on GPU), reports every epoch with a
checkpoint (rank 0 writes), keeps the best N by validation AUC and restarts failed workers from
the last checkpoint. Its workers also score the test split with the best-by-validation weights
(for the report only). When it ends, the best-by-validation checkpoint is exported to
``<storage>/<name>/final/<specialist>-<stage>/`` (see ``ray_jobs/layout.py``) and the
specialist's next stage initialises from that export.

Rerunning the same command skips every finished (specialist, stage); an unfinished one resumes
from its latest checkpoint in storage (Ray Train restores a run by its name), which for DFDC
means at the chunk where it stopped.
"""

from __future__ import annotations

import argparse
import sys

from ray_jobs import cli_common as cli
from ray_jobs.chains import train_chain
from ray_jobs.config import TrainConfig


def build_parser() -> argparse.ArgumentParser:
    ap = cli.job_parser("interceptor train", __doc__)
    cli.add_config_flags(ap, "run config YAML (see ray_jobs/configs/demo.yaml)",
                         "--set num_workers=2 --set stage_overrides.dfdc.chunks=2")
    ap.add_argument("--specialists", nargs="+", help="specialists to train (default: all)")
    ap.add_argument("--stages", nargs="+", help="stages to run (default: the whole chain)")
    cli.add_storage_flags(ap)
    ap.add_argument("--from-sweep", help="use the best hyperparameters of this finished sweep")
    cli.add_address_flag(ap)
    return ap


def config_from_args(args: argparse.Namespace) -> TrainConfig:
    flags = ("specialists", "stages", "storage_path", "s3_endpoint", "name", "from_sweep", "address")
    return TrainConfig.load(args.config, [*args.overrides, *cli.flag_overrides(args, flags)])


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return cli.run_cli("interceptor train", lambda: train_chain(config_from_args(args)))


if __name__ == "__main__":
    sys.exit(main())
