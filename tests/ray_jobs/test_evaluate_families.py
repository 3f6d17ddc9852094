"""``interceptor evaluate``'s per dataset x family AUC and its mark on families absent from training,
on hand-made scores (no Ray, no checkpoints).

Two specialists score two datasets: in ``ffpp`` specialist ``a`` ranks every ``swap`` fake above
every real video, every ``reenact`` fake below, and its one ``blend`` fake between the two reals;
``b`` the other way round. In ``celebdf`` (``swap`` fakes only) ``a`` is inverted and ``b`` perfect,
so ``a``'s pooled ``swap`` AUC (0.5) hides a 1 and a 0. The ensemble puts all its weight on ``a``.
"""

import json
import math

import numpy as np

from ray_jobs.evaluation import training_families_note, unseen_clause
from ray_jobs.members import Member, absent_from_training
from ray_jobs.reports import format_evaluate_report, write_evaluate_report
from ray_jobs.video_metrics import ENSEMBLE, MEAN_PROB, UNCALIBRATED, compute_metrics, video_scores
from specialists.ensemble import AggregationConfig, Ensemble

#: (dataset, method, label, prob of a, prob of b) per video, one clip each
VIDEOS = [
    ("ffpp", "real", 0, 0.3, 0.3), ("ffpp", "real", 0, 0.4, 0.4),
    ("ffpp", "swap", 1, 0.9, 0.2), ("ffpp", "swap", 1, 0.8, 0.1),
    ("ffpp", "reenact", 1, 0.1, 0.8), ("ffpp", "reenact", 1, 0.2, 0.9),
    ("ffpp", "blend", 1, 0.35, 0.35),
    ("celebdf", "real", 0, 0.6, 0.6), ("celebdf", "real", 0, 0.7, 0.7),
    ("celebdf", "swap", 1, 0.1, 0.9), ("celebdf", "swap", 1, 0.2, 0.95),
]


def scores(videos=VIDEOS):
    cols = {"video_id": np.array([f"v{i}" for i in range(len(videos))]),
            "dataset": np.array([v[0] for v in videos]), "method": np.array([v[1] for v in videos]),
            "label": np.array([v[2] for v in videos]),
            "prob_a": np.array([v[3] for v in videos]), "prob_b": np.array([v[4] for v in videos])}
    return video_scores(cols, ["a", "b"], AggregationConfig())


ENS = Ensemble(["a", "b"], [1.0, 0.0])


def report_metrics(unseen=()):
    """``metrics`` as ``evaluate_split`` writes them, around ``compute_metrics``."""
    return {"name": "exp", "split": "test", "shard_dirs": ["shards"], "shards": 2,
            **compute_metrics(ENS, scores(), unseen),
            "ensemble_config": {**ENS.to_dict(), "checkpoints": {}, "fitted_on": "val"}, "notes": []}


def test_dataset_family_auc_nests_the_family_matrix_by_dataset():
    m = compute_metrics(ENS, scores())
    assert m["families"] == ["blend", "reenact", "swap"] and m["datasets"] == ["celebdf", "ffpp"]
    per = m["dataset_family_auc"]
    assert list(per) == ["celebdf", "ffpp"]
    assert per["ffpp"]["real_videos"] == 2 and per["ffpp"]["fake_videos"] == {"blend": 1, "reenact": 2, "swap": 2}
    assert per["celebdf"]["real_videos"] == 2 and per["celebdf"]["fake_videos"] == {"swap": 2}
    # the models of the family matrix (not the uncalibrated combination), each with its dataset's families
    assert set(per["ffpp"]["auc"]) == set(m["family_auc"]) == {ENSEMBLE, MEAN_PROB, "a", "b"}
    assert UNCALIBRATED not in per["ffpp"]["auc"]
    assert per["ffpp"]["auc"]["a"] == {"blend": 0.5, "reenact": 0.0, "swap": 1.0}
    assert per["ffpp"]["auc"]["b"] == {"blend": 0.5, "reenact": 1.0, "swap": 0.0}
    assert per["celebdf"]["auc"]["a"] == {"swap": 0.0} and per["celebdf"]["auc"]["b"] == {"swap": 1.0}
    assert per["ffpp"]["auc"][ENSEMBLE] == per["ffpp"]["auc"]["a"]  # all the weight on a
    assert per["celebdf"]["auc"][ENSEMBLE] == {"swap": 0.0}
    # the pooled matrix is unchanged, and averages a's 1 and 0 on swap away
    assert m["family_auc"]["a"]["swap"] == 0.5 and m["family_auc"]["a"]["reenact"] == 0.0
    assert set(m["dataset_auc"]) == {ENSEMBLE, UNCALIBRATED, MEAN_PROB, "a", "b"}
    assert {"family_accuracy", "faces_auc", "models", "ensemble"} <= set(m)
    json.dumps(m)  # plain JSON data


def test_a_dataset_without_real_videos_has_no_family_auc():
    per = compute_metrics(ENS, scores([v for v in VIDEOS if v[:2] != ("celebdf", "real")]))["dataset_family_auc"]
    assert per["celebdf"]["real_videos"] == 0 and math.isnan(per["celebdf"]["auc"]["a"]["swap"])
    assert per["ffpp"]["auc"]["a"]["swap"] == 1.0


def test_families_absent_from_training_are_flagged():
    m = compute_metrics(ENS, scores(), {"reenact", "faceshifter"})  # faceshifter: not evaluated here
    assert m["unseen_families"] == ["reenact"]
    assert m["family_unseen"] == {"blend": False, "reenact": True, "swap": False}
    plain = compute_metrics(ENS, scores())
    assert plain["unseen_families"] == [] and not any(plain["family_unseen"].values())


def test_the_report_marks_absent_families_in_both_tables(tmp_path):
    metrics = report_metrics({"reenact"})
    report = format_evaluate_report(metrics)
    assert "| model | blend | reenact* | swap |" in report
    assert "## Dataset x manipulation family" in report
    assert "| dataset | family | real | fake | ensemble | mean_prob | a | b |" in report
    assert "| ffpp | reenact* | 2 | 2 | 0.000 | 1.000 | 0.000 | 1.000 |" in report
    assert "| ffpp | swap | 2 | 2 | 1.000 |" in report and "| celebdf | swap | 2 | 2 | 0.000 |" in report
    assert report.count("Families marked `*` were absent from training") == 2 and "training data): reenact." in report
    assert "reenact* " in report.split("Ensemble accuracy")[1].splitlines()[0]
    assert unseen_clause(metrics) == "; absent from training: reenact (ensemble video AUC 0.000)"

    plain = report_metrics()
    text = format_evaluate_report(plain)
    assert "| model | blend | reenact | swap |" in text and "| ffpp | reenact | 2 | 2 |" in text
    assert "*" not in text.replace("**", "") and "absent from training" not in text and unseen_clause(plain) == ""

    write_evaluate_report(tmp_path, ENS, scores(), metrics)
    saved = json.loads((tmp_path / "metrics.json").read_text())
    assert saved["unseen_families"] == ["reenact"] and saved["dataset_family_auc"]["celebdf"]["fake_videos"] == {"swap": 2}
    assert (tmp_path / "family_auc.png").stat().st_size > 5000 and "reenact*" in (tmp_path / "report.md").read_text()


def member(key: str, extra: dict | None) -> Member:
    meta = {"specialist": key} if extra is None else {"specialist": key, "extra": extra}
    return Member(key, "ffpp", ("exp", key), meta, f"runs/exp/{key}")


FAMILIES = ["blend", "reenact", "swap"]


def test_a_held_out_family_is_absent_from_training():
    members = [member("a", {"hold_out": ["reenact"], "trained_methods": ["blend", "swap"]}),
               member("b", {"hold_out": ["reenact"], "trained_methods": ["blend", "pseudo_sbi", "swap"]})]
    assert absent_from_training(members, FAMILIES) == {"reenact"}
    # held out by one member is enough, even if another trained on it
    members = [member("a", {"hold_out": ["swap"], "trained_methods": ["blend", "reenact"]}),
               member("b", {"hold_out": [], "trained_methods": ["blend", "reenact", "swap"]})]
    assert absent_from_training(members, FAMILIES) == {"swap"}


def test_a_family_in_no_members_training_data_is_absent():
    members = [member("a", {"hold_out": [], "trained_methods": ["swap"]}),
               member("b", {"hold_out": [], "trained_methods": ["blend", "pseudo_sbi"]})]
    assert absent_from_training(members, FAMILIES) == {"reenact"}
    assert absent_from_training(members, [*FAMILIES, "pseudo_sbi", "pseudo_av_shift"]) == {"reenact"}  # never marked
    members.append(member("c", {"hold_out": [], "trained_methods": ["reenact"]}))
    assert absent_from_training(members, FAMILIES) == set()


def test_older_checkpoints_mark_nothing():
    old = [member("a", None), member("b", {"run": "exp", "world_size": 1})]
    assert absent_from_training(old, FAMILIES) == set() and absent_from_training([], FAMILIES) == set()
    assert len(training_families_note(old)) == 1
    # one older member: its training data is unknown, so only hold_out counts
    mixed = [member("a", {"hold_out": ["blend"], "trained_methods": ["blend", "swap"]}), member("b", None)]
    assert absent_from_training(mixed, FAMILIES) == {"blend"}
    assert training_families_note(mixed) == []
