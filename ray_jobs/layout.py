"""The storage layout: every path and file name the jobs write or read, in one place.

Paths are tuples of *parts* below a :class:`~ray_jobs.storage.Storage` root (a local/NFS folder or
``s3://bucket/prefix``); ``storage.path(*parts)`` / ``storage.display(*parts)`` turn them into
strings. Jobs build paths only with the functions here, so that a job never imports another job
to find what it wrote::

    <root>/<name>/
      <specialist>-<stage>/             Ray Train's run of one stage (checkpoint_*/, keep-N by val AUC)
        test_scores.json                the workers' test-split scores of the best-by-validation epoch
      final/<specialist>-<stage>/       the stage's selected checkpoint, which the next stage starts from
        checkpoint.pt  meta.json        the weights (``weights_only``) and their description
        COMPLETE.json                   written last: the stage is done (a rerun skips it)
      _tune/chain-<time>/               the Ray Tune run that drives the specialists' chains
      sweeps/<sweep>/                   ``interceptor tune``
        sweep.json                      the resolved search space (a rerun must match it)
        tune/<specialists>/             the Tune experiment of those specialists, e.g. ``cm_tm`` (what
                                        ``Tuner.restore`` resumes)
        trials/<specialist>-<trial>/    a trial's Ray Train run, and trial.json once it ended
        trials.csv  trials.json  trials.png
        best/<specialist>/              the best trial's best checkpoint
        best.json                       what ``interceptor train --from-sweep`` reads
      ensemble/ensemble.json            the fitted Interceptor (``interceptor evaluate``)
      reports/                          train_report.{json,md}, val_auc_curves.png
        evaluate-<split>/               metrics.json, report.md, roc.png, reliability.png, family_auc.png

A shard folder written by ``interceptor prepare`` holds ``*.parquet`` shards,
``prepare_config.json`` (the clip settings, which ``evaluate`` and ``predict`` reuse) and
``summary.json``.
"""

from __future__ import annotations

# ----------------------------------------------------------------------------------- file names

COMPLETE_FILE = "COMPLETE.json"
CHECKPOINT_FILE = "checkpoint.pt"
META_FILE = "meta.json"
TEST_SCORES_FILE = "test_scores.json"
SWEEP_FILE = "sweep.json"
BEST_FILE = "best.json"
TRIAL_FILE = "trial.json"
TRIALS_CSV = "trials.csv"
TRIALS_JSON = "trials.json"
TRIALS_PNG = "trials.png"
ENSEMBLE_DIR = "ensemble"
ENSEMBLE_FILE = "ensemble.json"
REPORTS_DIR = "reports"
TRAIN_REPORT_JSON = "train_report.json"
TRAIN_REPORT_MD = "train_report.md"
VAL_CURVES_PNG = "val_auc_curves.png"
#: an evaluation report (in ``evaluate_report_parts(name, split)`` or ``evaluate --out``)
EVALUATE_METRICS_JSON = "metrics.json"
EVALUATE_REPORT_MD = "report.md"
ROC_PNG = "roc.png"
RELIABILITY_PNG = "reliability.png"
FAMILY_AUC_PNG = "family_auc.png"
#: the per-epoch columns of a stage's stored history (``meta.json``, ``COMPLETE.json``, ``trials.json``); the Ray
#: workers add ``nodes``, the Ray node id of every rank that trained the epoch
HISTORY_KEYS = ("epoch", "chunk", "train_loss", "val_auc", "val_log_loss", "val_loss", "val_acc_real", "val_acc_fake",
                "epoch_time_s")
#: in a shard folder
PREPARE_CONFIG_FILE = "prepare_config.json"
PREPARE_SUMMARY_FILE = "summary.json"


# ----------------------------------------------------------------------------------- training

def run_name(specialist: str, stage: str) -> str:
    """The name of a (specialist, stage)'s Ray Train run, and of its final export."""
    return f"{specialist}-{stage}"


def run_parts(name: str, specialist: str, stage: str) -> tuple[str, ...]:
    """A (specialist, stage)'s Ray Train run folder."""
    return (name, run_name(specialist, stage))


def test_scores_parts(name: str, specialist: str, stage: str) -> tuple[str, ...]:
    return (*run_parts(name, specialist, stage), TEST_SCORES_FILE)


def finals_parts(name: str) -> tuple[str, ...]:
    """The folder of every exported final checkpoint of a run."""
    return (name, "final")


def final_parts(name: str, specialist: str, stage: str) -> tuple[str, ...]:
    """A (specialist, stage)'s exported final checkpoint (a predictable name the next stage reads)."""
    return (*finals_parts(name), run_name(specialist, stage))


def chain_tune_parts(name: str) -> tuple[str, ...]:
    """Where the Ray Tune runs that drive the specialists' chains keep their state."""
    return (name, "_tune")


def reports_parts(name: str, *more: str) -> tuple[str, ...]:
    return (name, REPORTS_DIR, *more)


def evaluate_report_parts(name: str, split: str) -> tuple[str, ...]:
    return reports_parts(name, f"evaluate-{split}")


# ----------------------------------------------------------------------------------- sweeps

def sweep_parts(name: str, sweep: str, *more: str) -> tuple[str, ...]:
    """A sweep's folder (and paths below it)."""
    return (name, "sweeps", sweep, *more)


def best_config_parts(name: str, sweep: str) -> tuple[str, ...]:
    """A finished sweep's ``best.json`` (read by ``interceptor train --from-sweep``)."""
    return sweep_parts(name, sweep, BEST_FILE)


def trial_run_parts(name: str, sweep: str, specialist: str, trial_id: str) -> tuple[str, ...]:
    """A trial's Ray Train run."""
    return sweep_parts(name, sweep, "trials", f"{specialist}-{trial_id}")


def sweep_tune_parts(name: str, sweep: str, *experiment: str) -> tuple[str, ...]:
    """The Tune experiments of a sweep: one per set of specialists swept together (named by their
    keys, sorted, joined with ``_``)."""
    return sweep_parts(name, sweep, "tune", *experiment)


def sweep_best_parts(name: str, sweep: str, specialist: str) -> tuple[str, ...]:
    """The best trial's best checkpoint of one specialist."""
    return sweep_parts(name, sweep, "best", specialist)


# ----------------------------------------------------------------------------------- ensemble

def ensemble_parts(name: str) -> tuple[str, ...]:
    """An experiment's fitted ensemble file."""
    return (name, ENSEMBLE_DIR, ENSEMBLE_FILE)
