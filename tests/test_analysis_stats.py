"""The statistics behind the built-in analyses, against known answers: scipy called directly, closed
forms, textbook tables and hand-made sets."""

import math

import numpy as np
import pytest
from scipy import stats

from specrun.analysis import stats as S
from specrun.runner.evaluate import classification_metrics


def test_bootstrap_of_the_mean_is_scipys_interval():
    rng = np.random.default_rng(3)
    values = rng.normal(0.8, 0.02, size=12)
    low, high = S.bootstrap_interval((values,), np.mean, 0.9, 3000, "BCa", seed=7)
    expected = stats.bootstrap(
        (values,), np.mean, confidence_level=0.9, n_resamples=3000, method="BCa", rng=np.random.default_rng(7)
    )
    assert (low, high) == pytest.approx((expected.confidence_interval.low, expected.confidence_interval.high))
    assert low < values.mean() < high


def test_accuracy_interval_matches_the_normal_approximation():
    """For a large evaluation set the bootstrap CI of an accuracy is p ± 1.96·sqrt(p(1-p)/n)."""
    n, p = 4000, 0.8
    correct = np.zeros(n)
    correct[: int(n * p)] = 1
    low, high = S.bootstrap_interval((correct,), S.accuracy_statistic, 0.95, 4000, "percentile", seed=0)
    half = 1.96 * math.sqrt(p * (1 - p) / n)
    assert low == pytest.approx(p - half, abs=0.003)
    assert high == pytest.approx(p + half, abs=0.003)


def test_summarize_one_seed_has_no_interval_and_equal_values_a_point():
    one = S.summarize([0.81])
    assert (
        one["n"] == 1 and one["mean"] == 0.81 and one["sd"] is None and one["ci_low"] is None and one["ci_high"] is None
    )
    same = S.summarize([0.5, 0.5, 0.5])
    assert (same["ci_low"], same["ci_high"], same["sd"]) == (0.5, 0.5, 0.0)


@pytest.mark.parametrize("num_labels", [2, 4])
def test_f1_statistic_matches_the_recorded_f1(num_labels):
    rng = np.random.default_rng(num_labels)
    labels, predictions = rng.integers(0, num_labels, 300), rng.integers(0, num_labels, 300)
    recorded = classification_metrics(labels, predictions, num_labels)["f1"]
    assert float(S.f1_statistic(num_labels)(labels, predictions)) == pytest.approx(recorded)
    batched = S.f1_statistic(num_labels)(np.stack([labels, labels]), np.stack([predictions, labels]), axis=-1)
    assert batched.tolist() == pytest.approx([recorded, 1.0])


def test_mcnemar_on_a_textbook_table():
    """b = 10 discordant pairs one way, c = 2 the other: exact two-sided p = 2·P(X ≤ 2), X ~ Bin(12, 1/2)."""
    assert S.mcnemar_p(10, 2) == pytest.approx(2 * (1 + 12 + 66) / 4096)
    assert S.mcnemar_p(2, 10) == S.mcnemar_p(10, 2)
    assert S.mcnemar_p(0, 0) == 1.0


def test_holm_and_bonferroni():
    p = [0.01, 0.04, 0.03, 0.005]
    assert S.adjust_pvalues(p, "holm") == pytest.approx([0.03, 0.06, 0.06, 0.02])
    assert S.adjust_pvalues(p, "bonferroni") == pytest.approx([0.04, 0.16, 0.12, 0.02])
    assert S.adjust_pvalues(p, "none") == p


def test_pareto_front_of_a_hand_made_set():
    #            cheap+bad  mid+good  mid+worse  dear+best  dear+same-as-mid
    costs = [1, 5, 5, 10, 10]
    values = [0.6, 0.8, 0.7, 0.9, 0.8]
    assert S.pareto_front(costs, values) == [True, True, False, True, False]
    assert S.pareto_front(costs, [-v for v in values], higher_is_better=False) == [True, True, False, True, False]
    assert S.pareto_front([1, 1], [0.5, 0.5]) == [True, True]  # ties dominate nothing


def _matrix(singular_values, shape=(40, 30), seed=0):
    rng = np.random.default_rng(seed)
    u, _ = np.linalg.qr(rng.normal(size=(shape[0], shape[0])))
    v, _ = np.linalg.qr(rng.normal(size=(shape[1], shape[1])))
    s = np.zeros(shape)
    s[: len(singular_values), : len(singular_values)] = np.diag(singular_values)
    return u @ s @ v.T


@pytest.mark.parametrize("k", [1, 3, 8])
def test_stable_and_effective_rank_of_a_constructed_rank_k_matrix(k):
    sigma = np.linalg.svd(_matrix([2.0] * k), compute_uv=False)
    summary = S.singular_value_summary(sigma)
    assert summary["stable_rank"] == pytest.approx(k)
    assert summary["effective_rank"] == pytest.approx(k, rel=1e-6)
    assert summary["spectral_norm"] == pytest.approx(2.0)
    assert summary["frobenius_norm"] == pytest.approx(2.0 * math.sqrt(k))


def test_stable_rank_weighs_directions_by_energy():
    sigma = np.linalg.svd(_matrix([3.0, 1.0]), compute_uv=False)
    assert S.singular_value_summary(sigma)["stable_rank"] == pytest.approx((9 + 1) / 9)
    p = np.array([0.75, 0.25])
    assert S.singular_value_summary(sigma)["effective_rank"] == pytest.approx(
        math.exp(-(p * np.log(p)).sum()), rel=1e-6
    )
    assert S.singular_value_summary(np.zeros(4))["stable_rank"] is None


def test_first_reaching():
    assert S.first_reaching([10, 20, 30], [0.5, 0.79, 0.81], 0.8) == 2
    assert S.first_reaching([10, 20], [0.9, 0.4], 0.5, higher_is_better=False) == 1
    assert S.first_reaching([10], [0.1], 0.5) is None


def test_configuration_labels_name_what_tells_them_apart():
    from specrun.spec.load import describe_configs

    zipped = "method, train.learning_rate"
    methods = [
        ("full", {zipped: [{"name": "full"}, 5e-5]}),
        ("lora", {zipped: [{"name": "lora", "rank": 8}, 1e-3]}),
        ("lora", {zipped: [{"name": "lora", "rank": 8, "quantize": "8bit"}, 1e-3]}),
    ]
    assert describe_configs(methods) == ["full", "lora", "lora quantize=8bit"]
    grid = [("lora", {"method.rank": r, "train.learning_rate": lr}) for r in (4, 8) for lr in (1e-3, 1e-4)]
    assert describe_configs(grid) == [
        "lora rank=4 learning_rate=0.001",
        "lora rank=4 learning_rate=0.0001",
        "lora rank=8 learning_rate=0.001",
        "lora rank=8 learning_rate=0.0001",
    ]
    assert describe_configs([("lora", {}), ("lora", {})]) == ["lora", "lora"]  # seeds of one configuration


def test_metric_references():
    from specrun.metrics import MetricRef

    assert MetricRef.parse("accuracy") == MetricRef(None, "accuracy")
    assert MetricRef.parse("noisy.f1") == MetricRef("noisy", "f1")
    assert MetricRef.parse("train_seconds") == MetricRef("cost", "train_seconds")
    assert MetricRef.parse("cost.latency_ms_p95").split_for("validation") == "cost"
    assert MetricRef.parse("accuracy").split_for("test") == "test"
    assert (
        MetricRef.parse("acuracy").problem(("validation",)).startswith("no metric 'acuracy' (did you mean 'accuracy'?)")
    )
    assert "no evaluation set 'nosy'" in MetricRef.parse("nosy.accuracy").problem(("validation", "noisy"))
    assert MetricRef.parse("noisy.accuracy").problem(("validation", "noisy")) is None
    assert "no cost metric 'secs'" in MetricRef.parse("cost.secs").problem(("validation",))


@pytest.mark.parametrize("method", ["percentile", "basic"])
def test_counted_interval_of_an_accuracy_is_scipys_bootstrap(method):
    """Drawing how often each distinct observation occurs is the same bootstrap as resampling the
    observations: the bounds agree with scipy's to Monte Carlo precision (both 20,000 resamples)."""
    rng = np.random.default_rng(5)
    correct = (rng.random(872) < 0.83).astype(float)
    counted = S.counted_interval((correct,), S.weighted_mean, 0.95, 20_000, method, seed=1)
    scipy = S.bootstrap_interval((correct,), S.accuracy_statistic, 0.95, 20_000, method, seed=1)
    assert counted == pytest.approx(scipy, abs=0.003)
    assert counted[0] < correct.mean() < counted[1]


@pytest.mark.parametrize("num_labels", [2, 3])
def test_counted_interval_of_f1_is_scipys_paired_bootstrap(num_labels):
    rng = np.random.default_rng(num_labels)
    labels = rng.integers(0, num_labels, 600)
    predictions = np.where(rng.random(600) < 0.7, labels, rng.integers(0, num_labels, 600))
    f1 = S.f1_statistic(num_labels)
    counted = S.counted_interval((labels, predictions), f1, 0.9, 20_000, "percentile", seed=2)
    scipy = S.bootstrap_interval((labels, predictions), f1, 0.9, 20_000, "percentile", seed=2, paired=True)
    assert counted == pytest.approx(scipy, abs=0.004)
    # the weighted statistic is the plain one when every pair counts once
    assert float(f1(labels, predictions, weights=np.ones(600))) == pytest.approx(float(f1(labels, predictions)))


def test_counted_interval_leaves_what_it_cannot_do_to_scipy():
    rng = np.random.default_rng(0)
    continuous = rng.random(200)  # QA F1 per question: many distinct values
    assert S.counted_interval((continuous,), S.weighted_mean) is None
    assert S.counted_interval(((continuous > 0.5).astype(float),), S.weighted_mean, method="BCa") is None
    assert S.counted_interval((np.array([1.0]),), S.weighted_mean) is None  # one observation: no interval
    assert S.counted_interval((np.ones(50),), S.weighted_mean) == (1.0, 1.0)  # all alike: that point
