"""The Interceptor's math: aggregation rules, fitted weights, calibration, clipping, JSON."""

import numpy as np
import pytest

from specialists import metrics as M
from specialists.ensemble import (
    Aggregation,
    AggregationConfig,
    Ensemble,
    EnsembleError,
    aggregate,
    aggregate_video,
    fit_ensemble,
    platt_targets,
    to_logits,
    video_labels,
)

CONFIDENT = AggregationConfig(strategy=Aggregation.CONFIDENT)


def _sigmoid(x):
    return 1 / (1 + np.exp(-x))


def _videos(n, seed, scales=(1.0,), shift=0.0, noise=1.0):
    """Video probabilities of len(scales) specialists seeing one latent evidence with their own
    noise; scale < 0 makes an inverted specialist, scale 0 a useless one."""
    rng = np.random.default_rng(seed)
    y = np.arange(n) % 2
    evidence = (2 * y - 1) * 1.5
    cols = [_sigmoid(s * (evidence + noise * rng.standard_normal(n)) + shift) for s in scales]
    return np.stack(cols, axis=1), y


# ----------------------------------------------------------------------------- aggregation

def test_mean_aggregation_groups_by_video():
    ids = np.array(["b", "a", "b", "a", "c"])
    p = np.array([[0.2, 0.9], [0.4, 0.1], [0.6, 0.7], [0.8, 0.3], [0.5, 0.5]])
    videos, out = aggregate(p, ids)
    assert list(videos) == ["a", "b", "c"]
    np.testing.assert_allclose(out, [[0.6, 0.2], [0.4, 0.8], [0.5, 0.5]])
    videos1, out1 = aggregate(p[:, 0], ids)
    np.testing.assert_allclose(out1, out[:, 0])


def test_confident_frames_follow_the_dfdc_winner_rule():
    # more than 40 % of clips confidently fake: average only those
    assert aggregate_video([0.9, 0.95, 0.3, 0.4, 0.85], CONFIDENT) == pytest.approx(np.mean([0.9, 0.95, 0.85]))
    # exactly 40 % is not "more than": plain mean
    assert aggregate_video([0.9, 0.95, 0.3, 0.4, 0.5], CONFIDENT) == pytest.approx(np.mean([0.9, 0.95, 0.3, 0.4, 0.5]))
    # more than 90 % confidently real: average those
    p = [0.05] * 10 + [0.15] * 9 + [0.6]
    assert aggregate_video(p, CONFIDENT) == pytest.approx(np.mean([0.05] * 10 + [0.15] * 9))
    # a few clearly manipulated clips outweigh many uncertain ones, unlike the mean
    p = [0.95, 0.97, 0.99] + [0.45] * 4
    assert aggregate_video(p, CONFIDENT) > 0.9 > 0.7 > aggregate_video(p)
    # per video, per column, in aggregate()
    ids = ["v"] * 7 + ["w"] * 2
    videos, out = aggregate(np.array(p + [0.1, 0.3]), ids, CONFIDENT)
    assert out[0] == pytest.approx(np.mean([0.95, 0.97, 0.99])) and out[1] == pytest.approx(0.2)


def test_aggregation_settings_are_checked():
    with pytest.raises(EnsembleError, match="unknown aggregation"):
        AggregationConfig(strategy="median")
    with pytest.raises(EnsembleError, match="threshold"):
        AggregationConfig(threshold=0.3)
    assert aggregate_video([]) == 0.5


def test_video_labels_and_probabilities_take_the_maximum_over_faces():
    """A video is fake when any face is; its probability is the maximum of its faces' aggregates."""
    videos, y = video_labels([1, 1, 0, 0, 1], ["a", "a", "b", "c", "c"])
    assert list(videos) == ["a", "b", "c"] and list(y) == [1, 0, 1]
    probs = np.array([0.2, 0.4, 0.9, 0.7, 0.1, 0.3])
    ids = ["v", "v", "v", "v", "w", "w"]
    faces = [0, 0, 1, 1, 0, 0]
    videos, out = aggregate(probs, ids, None, faces)
    assert list(videos) == ["v", "w"] and out == pytest.approx([0.8, 0.2])
    _, per_column = aggregate(np.stack([probs, 1 - probs], axis=1), ids, None, faces)
    assert per_column[0] == pytest.approx([0.8, 0.7])  # each specialist's own maximum face
    _, one_face = aggregate(probs, ids, None, [0] * 6)
    assert one_face == pytest.approx([0.55, 0.2])


# ----------------------------------------------------------------------------- fitting

def test_weights_favour_the_informative_specialist_and_never_invert():
    # a good specialist, a useless one, an inverted one
    p, y = _videos(400, seed=0, scales=(1.0, 0.0, -1.0), noise=0.7)
    ens = fit_ensemble(p, y, ["good", "useless", "inverted"])
    w = dict(zip(ens.specialists, ens.weights))
    assert w["good"] > 0.9 and min(ens.weights) >= 0 and sum(ens.weights) == pytest.approx(1)
    test_p, test_y = _videos(400, seed=1, scales=(1.0, 0.0, -1.0), noise=0.7)
    assert M.auc(ens.predict_proba(test_p), test_y) >= M.auc(test_p[:, 0], test_y) - 0.01


def test_combining_complementary_specialists_beats_each():
    rng = np.random.default_rng(3)
    n = 600
    y = np.arange(n) % 2
    # two specialists with independent noise on the same evidence: the pool averages the noise out
    ev = (2 * y - 1) * 1.0
    p = np.stack([_sigmoid(ev + rng.standard_normal(n)), _sigmoid(ev + rng.standard_normal(n))], axis=1)
    ens = fit_ensemble(p[:300], y[:300], ["a", "b"])
    test = ens.predict_proba(p[300:])
    assert M.auc(test, y[300:]) > max(M.auc(p[300:, 0], y[300:]), M.auc(p[300:, 1], y[300:]))


def test_temperature_and_bias_calibrate_overconfident_shifted_scores():
    # one specialist scores 4 * x + 2 where x = +-1.5 + N(0, 1.5^2): the true log-odds are
    # 2 * 1.5 * x / 1.5^2 = (4/3) x, i.e. temperature 3 and bias -2/3 after the temperature
    p, y = _videos(2000, seed=4, scales=(4.0,), shift=2.0, noise=1.5)
    ens = fit_ensemble(p, y, ["a"])
    assert ens.temperature == pytest.approx(3.0, rel=0.15) and ens.bias == pytest.approx(-2 / 3, abs=0.2)
    test_p, test_y = _videos(500, seed=5, scales=(4.0, 4.0), shift=2.0, noise=1.5)
    ens2 = fit_ensemble(*_videos(500, seed=6, scales=(4.0, 4.0), shift=2.0, noise=1.5), ["a", "b"])
    calibrated = M.log_loss(ens2.predict_proba(test_p), test_y)
    uncalibrated = M.log_loss(ens2.predict_proba(test_p, calibrated=False), test_y)
    assert calibrated < uncalibrated - 0.03
    assert ens2.fit.log_loss_calibrated < ens2.fit.log_loss_uncalibrated


def test_separable_validation_data_gives_finite_calibrated_confidence():
    y = np.arange(20) % 2
    p = np.where(y[:, None] == 1, 0.9, 0.1) + np.zeros((20, 2))
    ens = fit_ensemble(p, y, ["a", "b"])
    out = ens.predict_proba(p)
    assert np.isfinite([ens.temperature, ens.bias]).all()
    # Platt targets bound the confidence: no better than the smoothed labels
    assert out[y == 1].max() <= platt_targets(y)[y == 1][0] + 0.02


def test_output_is_clipped_and_fitting_refuses_one_class():
    ens = Ensemble(["a"], [1.0], clip=0.01)
    assert ens.predict_proba(np.array([[1.0], [0.0]])).tolist() == pytest.approx([0.99, 0.01])
    with pytest.raises(EnsembleError, match="real and fake"):
        fit_ensemble(np.full((4, 1), 0.3), [1, 1, 1, 1], ["a"])
    with pytest.raises(EnsembleError, match="sum to 1"):
        Ensemble(["a", "b"], [0.7, 0.7])


def test_json_round_trip_keeps_predictions(tmp_path):
    p, y = _videos(100, seed=6, scales=(1.0, 2.0, 0.5))
    ens = fit_ensemble({"cm": p[:, 0], "tm": p[:, 1], "ll": p[:, 2]}, y, aggregation=CONFIDENT,
                       extra={"checkpoints": {"cm": "x"}})
    again = Ensemble.load(ens.save(tmp_path / "e" / "ensemble.json"))
    assert again.specialists == ["cm", "tm", "ll"] and again.aggregation.strategy is Aggregation.CONFIDENT
    assert again.extra == {"checkpoints": {"cm": "x"}} and again.fit == ens.fit
    np.testing.assert_allclose(again.predict_proba(p), ens.predict_proba(p))
    # a mapping by key gives the same as the matrix
    np.testing.assert_allclose(ens.predict_proba({"ll": p[:, 2], "tm": p[:, 1], "cm": p[:, 0]}), ens.predict_proba(p))
    (tmp_path / "bad.json").write_text('{"format": "something-else"}')
    with pytest.raises(EnsembleError, match="not an Interceptor ensemble"):
        Ensemble.load(tmp_path / "bad.json")


def test_score_clips_aggregates_each_specialist_then_combines():
    ens = Ensemble(["a", "b"], [0.5, 0.5], temperature=2.0, bias=0.1)
    prob, per = ens.score_clips({"a": [0.8, 0.6], "b": [0.3, 0.1]})
    assert per == pytest.approx({"a": 0.7, "b": 0.2})
    expected = _sigmoid((0.5 * to_logits(0.7) + 0.5 * to_logits(0.2)) / 2.0 + 0.1)
    assert prob == pytest.approx(expected)


def test_priors_keep_a_tiny_validation_set_near_the_equal_weight_pool():
    def data(n, seed):
        p, y = _videos(n, seed=seed, scales=(1.0, 3.0))
        noise = _sigmoid(2 * np.random.default_rng(seed + 100).standard_normal(n))  # unrelated to y
        return np.column_stack([p[:, 0], noise, p[:, 1]]), y

    keys = ["a", "noise", "c"]
    small = fit_ensemble(*data(2, 7), keys)
    flat = fit_ensemble(*data(2, 7), keys, weight_prior_std=1e6, temperature_prior_std=1e6, bias_prior_std=1e6)
    assert max(abs(w - 1 / 3) for w in small.weights) < 0.15
    # the priors pull towards the neutral pool: equal weights, T = 1, no bias
    assert abs(np.log(small.temperature)) < abs(np.log(flat.temperature))
    assert abs(small.bias) < abs(flat.bias)
    big = fit_ensemble(*data(2000, 8), ["a", "noise", "c"])
    assert big.weights[1] < 0.05  # with data, the uninformative specialist is dropped
