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
import sys

from ray_jobs.checkpoints import CheckpointError
from ray_jobs.cli_common import add_address_flag, add_storage_flags, flag_overrides, job_parser, run_cli
from ray_jobs.config import apply_overrides
from ray_jobs.evaluation import EvaluateConfig, run
from specialists.ensemble import Aggregation, EnsembleError

#: flags that set the EvaluateConfig field of the same name
FLAG_FIELDS = ("storage_path", "s3_endpoint", "name", "shard_dir", "datasets", "specialists", "split", "fit_split",
               "aggregation", "out", "address")


def build_parser() -> argparse.ArgumentParser:
    ap = job_parser("interceptor evaluate", __doc__)
    ap.add_argument("--config", help="run config YAML of the train job (storage, name, shards, chain, specialists)")
    ap.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                    help="override an EvaluateConfig field, e.g. --set batch_size=32")
    add_storage_flags(ap, storage_help="local path or s3://bucket/prefix of the runs")
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
    add_address_flag(ap)
    return ap


def config_from_args(args: argparse.Namespace) -> EvaluateConfig:
    flags = flag_overrides(args, FLAG_FIELDS)
    if args.no_fit:
        flags.append("fit=false")
    if args.fit_only:
        flags.append("evaluate=false")
    return apply_overrides(EvaluateConfig.load(args.config), [*flags, *args.overrides])


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return run_cli("interceptor evaluate", lambda: run(config_from_args(args)), errors=(CheckpointError, EnsembleError))


if __name__ == "__main__":
    sys.exit(main())
