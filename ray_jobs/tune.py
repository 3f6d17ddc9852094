"""``interceptor tune``: Ray Tune sweeps of a stage's learning rate and focal-loss gamma / alpha.

    interceptor tune --config ray_jobs/configs/sweep.yaml --train-config run.yaml --sweep s1 --stage celebdf
    interceptor tune --config sweep.yaml --set num_samples=16 --set space.lr=[1e-5,1e-3] --specialists cm tm
    python -m ray_jobs.tune --config sweep.yaml             # the same, as a module
    ray job submit --address http://127.0.0.1:8265 --working-dir . -- python -m ray_jobs.tune --config sweep.yaml
    interceptor train --config run.yaml --from-sweep s1     # then train the chain with what it found

One Ray Tune experiment sweeps every chosen specialist at once. For each it samples ``lr`` (log-uniform, by default
``[lr / 10, lr * 10]`` around the stage recipe's value), ``focal_gamma`` (uniform, focal stages) and
``focal_alpha`` (uniform, where the stage's loss has an alpha). Each trial is one ``TorchTrainer``
built exactly as the chain builds it (``plan.plan`` -> ``Job`` -> ``trainer.build_trainer``), with
the job's recipe replaced by the trial's values: same shards, same class balancing, initialised from
the previous stage's final checkpoint. The trainer's per-epoch reports reach Tune through
``TuneReportCallback``; an ASHA scheduler (``time_attr="epoch"``, ``val_auc`` max) stops poor trials
early, comparing a trial only with its own specialist's; Optuna's TPE proposes the values when
``optuna`` is installed (``pip install 'interceptor-specialists[tune]'``), otherwise random search,
one searcher per specialist. The specialists' trials run side by side, taking turns to start, at
most ``max_concurrent`` at once in all (one cap for the sweep, as ``max_concurrent_trials``).

Storage, under ``<storage>/<name>/sweeps/<sweep>/``:

```
sweep.json                    the resolved search space and scheduler settings (a rerun must match)
tune/<specialists>/           the Ray Tune experiment, e.g. tune/cm_tm (what ``Tuner.restore`` resumes)
trials/<specialist>-<trial>/  that trial's Ray Train run (checkpoints) and, once it finished, trial.json
trials.csv  trials.json       every trial: hyperparameters, status, epochs, best val AUC, per-epoch history
trials.png                    val AUC vs lr coloured by gamma, and val AUC curves per trial
best/<specialist>/            the best trial's best checkpoint (an ordinary chain checkpoint folder)
best.json                     {"stage", "best": {<specialist>: {"hparams", "checkpoint", "val_auc", ...}}}
```

``interceptor train --from-sweep <sweep>`` reads ``best.json`` (see :func:`ray_jobs.layout.best_config_parts`) and
trains that stage with each specialist's best values; the checkpoints record them in their recipe.

Rerunning the same command with the same sweep name resumes an interrupted sweep
(``Tuner.restore``): finished trials are kept, unfinished and errored ones continue from their last
checkpoint (their Ray Train run has the same name), and the searcher goes on to ``num_samples``. A
rerun of a finished sweep only prints its summary. The search space and scheduler of a sweep are
fixed once it started: a rerun with different ones is refused (use another sweep name).
"""

from __future__ import annotations

import argparse
import sys

from ray_jobs import cli_common as cli
from ray_jobs.sweep import run_sweep
from ray_jobs.sweep_config import SEARCHES, SweepConfig


def build_parser() -> argparse.ArgumentParser:
    ap = cli.job_parser("interceptor tune", __doc__)
    cli.add_config_flags(ap, "sweep config YAML (see ray_jobs/configs/sweep.yaml)",
                         "--set num_samples=16 --set space.lr=[1e-5,1e-3] --set train.batch_size=16")
    ap.add_argument("--train-config", help="train config YAML the sweep belongs to (as for interceptor train)")
    ap.add_argument("--sweep", help="sweep name (folder under <storage>/<name>/sweeps/)")
    ap.add_argument("--stage", help="stage to sweep (name or seed alias)")
    ap.add_argument("--specialists", nargs="+", help="specialists to sweep (default: the train config's, else all)")
    ap.add_argument("--num-samples", type=int, help="trials per specialist")
    ap.add_argument("--max-concurrent", type=int, help="trials at once, all specialists together (0: no limit)")
    ap.add_argument("--lr-range", nargs=2, type=float, metavar=("LOW", "HIGH"), help="absolute lr bounds")
    ap.add_argument("--gamma-range", nargs=2, type=float, metavar=("LOW", "HIGH"), help="focal gamma bounds")
    ap.add_argument("--alpha-range", nargs=2, type=float, metavar=("LOW", "HIGH"), help="focal alpha bounds")
    ap.add_argument("--search", choices=SEARCHES, help="search algorithm (default: auto)")
    cli.add_storage_flags(ap, name_help="experiment name (the run the sweep belongs to)")
    cli.add_address_flag(ap)
    return ap


#: flag -> SweepConfig field
FLAG_FIELDS = {"sweep": "sweep", "stage": "stage", "specialists": "train.specialists", "num_samples": "num_samples",
               "max_concurrent": "max_concurrent", "lr_range": "space.lr", "gamma_range": "space.focal_gamma",
               "alpha_range": "space.focal_alpha", "search": "search", "storage_path": "train.storage_path",
               "s3_endpoint": "train.s3_endpoint", "name": "train.name", "address": "train.address"}


def config_from_args(args: argparse.Namespace) -> SweepConfig:
    return SweepConfig.load(args.config, [*args.overrides, *cli.flag_overrides(args, FLAG_FIELDS)],
                            train_config=args.train_config)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return cli.run_cli("interceptor tune", lambda: run_sweep(config_from_args(args)), failures=(RuntimeError,))


if __name__ == "__main__":
    sys.exit(main())
