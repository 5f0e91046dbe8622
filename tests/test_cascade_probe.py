"""Adaptive classification (the confidence cascade and its calibration) and linear probes."""

import numpy as np
import pytest
import torch

from mrl.eval.cascade import (
    adaptive_classification,
    calibrate_thresholds,
    cascade_predict,
    cascade_summary,
    oracle,
    per_head_accuracy,
    smallest_dim_at_accuracy,
    smallest_fixed_dim,
    split_calibration,
    threshold_sweep,
)
from mrl.eval.probe import LinearProbe, fit_linear_probe, probe_per_dim

DIMS = (2, 4, 8)


@pytest.fixture(autouse=True)
def one_torch_thread():
    """Tiny probes run fastest on one thread; two threads on a busy machine spin for seconds."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def two_class(p: float, cls: int) -> list[float]:
    """A 2-class softmax row with max probability ``p`` on class ``cls``."""
    return [p, 1 - p] if cls == 0 else [1 - p, p]


def random_heads(rng: np.random.Generator, k: int, n: int, c: int) -> tuple[np.ndarray, np.ndarray]:
    """Softmax outputs of k heads that grow more accurate and more confident with k."""
    labels = rng.integers(0, c, n)
    logits = rng.normal(size=(k, n, c))
    for head in range(k):
        logits[head, np.arange(n), labels] += 0.5 + 1.0 * head
    probs = np.exp(logits) / np.exp(logits).sum(axis=2, keepdims=True)
    return probs, labels


# ---------------------------------------------------------------- cascade


def constructed_cascade() -> tuple[np.ndarray, np.ndarray, list[float]]:
    # Per example, the (max prob, argmax) of heads at dims 2, 4, 8 under thresholds 0.8, 0.6.
    rows = [
        [(0.9, 0), (0.99, 1), (0.99, 1)],  # exits at 2 (later heads disagree, unused)
        [(0.5, 0), (0.7, 1), (0.9, 0)],  # exits at 4
        [(0.5, 1), (0.55, 1), (0.6, 0)],  # nobody confident: the largest head takes it
        [(0.8, 1), (0.5, 0), (0.5, 0)],  # exactly at the threshold: exits at 2
        [(0.4, 0), (0.6, 0), (0.99, 1)],  # exactly at the second threshold: exits at 4
    ]
    probs = np.array([[two_class(p, c) for p, c in ex] for ex in rows]).transpose(1, 0, 2)
    labels = np.array([0, 0, 0, 1, 1])
    return probs, labels, [0.8, 0.6, 0.99]


def test_cascade_on_constructed_probs():
    probs, labels, thresholds = constructed_cascade()
    exit_index, predictions = cascade_predict(probs, thresholds)
    np.testing.assert_array_equal(exit_index, [0, 1, 2, 0, 1])
    np.testing.assert_array_equal(predictions, [0, 1, 0, 1, 0])
    summary = cascade_summary(probs, labels, DIMS, thresholds)
    assert summary["accuracy"] == pytest.approx(3 / 5)
    assert summary["expected_dim"] == pytest.approx((2 + 4 + 8 + 2 + 4) / 5)
    assert summary["exit_fractions"] == pytest.approx({2: 0.4, 4: 0.4, 8: 0.2})
    # K-1 thresholds mean the same; the last threshold never matters.
    np.testing.assert_array_equal(cascade_predict(probs, [0.8, 0.6])[0], exit_index)
    np.testing.assert_array_equal(cascade_predict(probs, [0.8, 0.6, 5.0])[0], exit_index)
    # Thresholds above 1 send everyone to the largest head.
    exit_all, pred_all = cascade_predict(probs, [np.inf, 1.5, 0.0])
    np.testing.assert_array_equal(exit_all, [2] * 5)
    np.testing.assert_array_equal(pred_all, probs[2].argmax(axis=1))


def test_cascade_matches_a_python_loop():
    rng = np.random.default_rng(3)
    probs, labels = random_heads(rng, k=4, n=300, c=7)
    thresholds = [0.5, 0.6, 0.45, 0.3]
    exit_index, predictions = cascade_predict(probs, thresholds)
    expected_exit, expected_pred = [], []
    for i in range(probs.shape[1]):
        for k in range(probs.shape[0]):
            if k == probs.shape[0] - 1 or probs[k, i].max() >= thresholds[k]:
                expected_exit.append(k)
                expected_pred.append(int(np.argmax(probs[k, i])))
                break
    np.testing.assert_array_equal(exit_index, expected_exit)
    np.testing.assert_array_equal(predictions, expected_pred)
    assert len(set(expected_exit)) == 4  # every head is exercised


def test_calibrate_thresholds_by_hand():
    # Head 0 (max prob, correct?): 0.95 y, 0.9 y, 0.85 n, 0.8 y, 0.7 y, 0.6 n. At target 0.75
    # the groups {>= t} have accuracies 1, 1, 2/3, 3/4, 4/5, 4/6: the smallest passing t is 0.7.
    # Only the 0.6 example reaches head 1, where it is right at 0.55: threshold 0.55. The others
    # are confidently wrong at head 1, which would block any threshold if they were counted.
    head0 = [(0.95, 0), (0.9, 0), (0.85, 0), (0.8, 0), (0.7, 0), (0.6, 0)]
    labels = np.array([0, 0, 1, 0, 0, 1])
    head1 = [(0.99, 1), (0.99, 1), (0.99, 0), (0.99, 1), (0.99, 1), (0.55, 1)]
    head2 = [(0.9, 0)] * 6
    probs = np.array([[two_class(p, c) for p, c in h] for h in (head0, head1, head2)])
    np.testing.assert_allclose(calibrate_thresholds(probs, labels, 0.75), [0.7, 0.55, 0.0])
    # At 0.8 the group {>= 0.7} still passes (4/5); at 0.85 only {>= 0.9} does, and the 0.85
    # and 0.8 examples then reach head 1, where they are wrong: nothing passes there.
    np.testing.assert_allclose(calibrate_thresholds(probs, labels, 0.8), [0.7, 0.55, 0.0])
    np.testing.assert_allclose(calibrate_thresholds(probs, labels, 0.85), [0.9, np.inf, 0.0])


def test_calibrate_impossible_target_gives_inf():
    probs = np.array([[two_class(p, 0) for p in (0.9, 0.7, 0.6)]] * 3)
    labels = np.array([1, 0, 1])  # the most confident example of every head is wrong
    thresholds = calibrate_thresholds(probs, labels, 1.0)
    np.testing.assert_array_equal(thresholds, [np.inf, np.inf, 0.0])
    exit_index, _ = cascade_predict(probs, thresholds)
    np.testing.assert_array_equal(exit_index, [2, 2, 2])


@pytest.mark.parametrize("target", [0.6, 0.8, 0.95])
def test_calibrated_exit_groups_reach_the_target(target):
    rng = np.random.default_rng(int(target * 100))
    probs, labels = random_heads(rng, k=4, n=2000, c=5)
    thresholds = calibrate_thresholds(probs, labels, target)
    assert thresholds[-1] == 0.0
    exit_index, predictions = cascade_predict(probs, thresholds)
    early = 0
    for k in range(3):
        group = exit_index == k
        early += group.sum()
        # A finite threshold is some remaining example's max prob, so someone exits there.
        assert group.any() == np.isfinite(thresholds[k])
        if group.any():
            assert np.mean(predictions[group] == labels[group]) >= target
    assert early > 0  # the check above ran on real groups


def test_split_calibration():
    cal, rep = split_calibration(101, 0.3, seed=7)
    cal2, rep2 = split_calibration(101, 0.3, seed=7)
    np.testing.assert_array_equal(cal, cal2)
    np.testing.assert_array_equal(rep, rep2)
    assert len(cal) == 30 and len(rep) == 71
    assert not set(cal) & set(rep)
    np.testing.assert_array_equal(np.sort(np.concatenate([cal, rep])), np.arange(101))
    other, _ = split_calibration(101, 0.3, seed=8)
    assert not np.array_equal(cal, other)
    with pytest.raises(ValueError, match="fraction"):
        split_calibration(10, 1.0, seed=0)


def test_oracle_by_hand():
    heads = [
        [(0.9, 0), (0.6, 0), (0.6, 0), (0.6, 0)],  # dim 2: right on ex 0 only
        [(0.6, 1), (0.6, 1), (0.6, 0), (0.6, 0)],  # dim 4: right on ex 1 (wrong on ex 0)
        [(0.6, 0), (0.6, 1), (0.6, 1), (0.6, 0)],  # dim 8: right on ex 0, 1, 2
    ]
    probs = np.array([[two_class(p, c) for p, c in h] for h in heads])
    labels = np.array([0, 1, 1, 1])  # ex 3: no head is right
    result = oracle(probs, labels, DIMS)
    assert result["accuracy"] == pytest.approx(3 / 4)
    assert result["expected_dim"] == pytest.approx((2 + 4 + 8 + 8) / 4)
    assert result["exit_fractions"] == pytest.approx({2: 0.25, 4: 0.25, 8: 0.5})


def test_smallest_dim_at_accuracy():
    rows = [
        {"target": 0.5, "accuracy": 0.700, "expected_dim": 2.0},
        {"target": 0.8, "accuracy": 0.8985, "expected_dim": 3.0},
        {"target": 0.85, "accuracy": 0.9005, "expected_dim": 3.0},
        {"target": 0.9, "accuracy": 0.905, "expected_dim": 5.0},
        {"target": 1.0, "accuracy": 0.910, "expected_dim": 8.0},
    ]
    # Reference 0.9: 0.8985 is 0.15 points short, 0.9005 qualifies at the same expected dim.
    assert smallest_dim_at_accuracy(rows, 0.9) == rows[2]
    assert smallest_dim_at_accuracy(rows, 0.9, tolerance=0.002)["expected_dim"] == 3.0
    assert smallest_dim_at_accuracy(rows, 0.906) == rows[3]  # 0.905 is within 0.1 points
    assert smallest_dim_at_accuracy(rows, 0.91) == rows[4]
    assert smallest_dim_at_accuracy(rows, 0.95) is None


def test_adaptive_classification_end_to_end():
    rng = np.random.default_rng(0)
    n, c = 4000, 10
    labels = rng.integers(0, c, n)
    # Every head knows the label of "easy" examples with confidence; only the largest head
    # knows the hard ones. A cascade can then serve most examples at dim 2.
    easy = rng.random(n) < 0.7
    logits = rng.normal(size=(3, n, c))
    logits[:, easy, labels[easy]] += 6.0
    logits[2, ~easy, labels[~easy]] += 3.0
    probs = np.exp(logits) / np.exp(logits).sum(axis=2, keepdims=True)

    result = adaptive_classification(probs, labels, DIMS, cal_fraction=0.5, seed=1)
    _, report = split_calibration(n, 0.5, seed=1)
    assert result["n_report"] == len(report)
    heads = per_head_accuracy(probs, labels, DIMS, report)
    assert result["per_head_accuracy"] == heads
    assert result["largest_dim_accuracy"] == heads[8]
    assert heads[2] < heads[8] - 0.1
    match = result["matching_row"]
    assert match["accuracy"] >= heads[8] - 0.001
    assert result["smallest_expected_dim"] == match["expected_dim"] < 5
    assert result["dim_reduction"] == pytest.approx(8 / match["expected_dim"])
    assert result["oracle"]["expected_dim"] <= match["expected_dim"]
    # The smallest single head as accurate as the largest, by a loop over the heads.
    as_good = [d for d in DIMS if heads[d] >= heads[8] - 0.001]
    assert result["smallest_fixed_dim"] == as_good[0]

    rows = result["sweep"]
    assert rows == threshold_sweep(probs, labels, DIMS, cal_fraction=0.5, seed=1)
    dims_seen = [r["expected_dim"] for r in rows]
    assert dims_seen == sorted(dims_seen) and 2 <= dims_seen[0] and dims_seen[-1] <= 8
    for r in rows:
        assert {"target", "accuracy", "expected_dim", "exit@2", "exit@4", "exit@8"} <= r.keys()
        assert r["exit@2"] + r["exit@4"] + r["exit@8"] == pytest.approx(1)
    custom = threshold_sweep(probs, labels, DIMS, targets=[0.9, 0.99])
    assert sorted(r["target"] for r in custom) == [0.9, 0.99]


# ---------------------------------------------------------------- probes


def blobs(
    rng: np.random.Generator, n: int, d: int, c: int, spread: float
) -> tuple[np.ndarray, np.ndarray]:
    centers = rng.normal(size=(c, d)) * 3.0
    y = rng.integers(0, c, n)
    return (centers[y] + spread * rng.normal(size=(n, d))).astype(np.float32), y


def test_probe_separates_gaussian_blobs():
    rng = np.random.default_rng(0)
    x, y = blobs(rng, 3000, 16, 8, spread=1.0)
    xq, yq = blobs(np.random.default_rng(0), 3000, 16, 8, spread=1.0)  # same centres
    probe = fit_linear_probe(x[:2000], y[:2000], num_classes=8)
    assert isinstance(probe, LinearProbe)
    scores = probe.accuracy(x[2000:], y[2000:])
    assert scores["top1"] > 0.95 and scores["top1"] > 4 * (1 / 8)
    assert scores["top5"] >= scores["top1"]
    assert probe.accuracy(xq, yq)["top1"] > 0.95
    logits = probe.predict_logits(torch.from_numpy(x[:5]))
    assert logits.shape == (5, 8) and logits.dtype == torch.float32
    again = fit_linear_probe(x[:2000], y[:2000], num_classes=8)
    torch.testing.assert_close(again.weight, probe.weight, rtol=0, atol=0)


def test_probe_agrees_with_sklearn():
    linear_model = pytest.importorskip("sklearn.linear_model")
    rng = np.random.default_rng(1)
    x, y = blobs(rng, 3000, 20, 5, spread=4.0)  # overlapping: the decision boundary matters
    x = x * rng.uniform(0.1, 10.0, size=20).astype(np.float32) + 5.0
    train, test = slice(0, 2000), slice(2000, None)
    wd = 1e-3
    probe = fit_linear_probe(x[train], y[train], num_classes=5, weight_decay=wd, max_iter=200)
    mean, std = x[train].mean(axis=0), x[train].std(axis=0)
    sk = linear_model.LogisticRegression(C=1.0 / (wd * 2000), max_iter=2000, tol=1e-8)
    sk.fit((x[train] - mean) / std, y[train])
    ours = probe.predict_logits(x[test]).argmax(dim=1).numpy()
    theirs = sk.predict((x[test] - mean) / std)
    assert 0.5 < np.mean(theirs == y[test]) < 0.99  # a non-trivial problem
    assert np.mean(ours == theirs) >= 0.97


def test_probe_standardisation_guards_constant_features():
    rng = np.random.default_rng(2)
    x, y = blobs(rng, 600, 4, 3, spread=0.5)
    x = np.concatenate([x, np.full((600, 1), 7.0, dtype=np.float32)], axis=1)
    probe = fit_linear_probe(x, y, num_classes=3)
    assert torch.isfinite(probe.weight).all() and torch.isfinite(probe.std).all()
    assert probe.std[-1] == 1.0 and probe.mean[-1] == pytest.approx(7.0)
    assert torch.isfinite(probe.predict_logits(x)).all()
    assert probe.accuracy(x, y, top_k=(1,))["top1"] > 0.95
    # Without standardisation the probe stores the identity transform.
    raw = fit_linear_probe(x, y, num_classes=3, standardize=False)
    assert torch.equal(raw.mean, torch.zeros(5)) and torch.equal(raw.std, torch.ones(5))


def test_probe_subsamples_large_inputs_deterministically():
    rng = np.random.default_rng(4)
    x, y = blobs(rng, 1000, 6, 4, spread=1.0)
    a = fit_linear_probe(x, y, num_classes=4, max_samples=300, seed=5)
    b = fit_linear_probe(x, y, num_classes=4, max_samples=300, seed=5)
    c = fit_linear_probe(x, y, num_classes=4, max_samples=300, seed=6)
    torch.testing.assert_close(a.weight, b.weight, rtol=0, atol=0)
    assert not torch.equal(a.mean, c.mean)  # a different subsample
    assert a.accuracy(x, y)["top1"] > 0.9


def test_probe_per_dim_rows():
    rng = np.random.default_rng(5)
    x, y = blobs(rng, 1200, 12, 6, spread=1.0)
    rows = probe_per_dim(
        x[:800], y[:800], x[800:], y[800:], dims=[2, 6, 12], num_classes=6, progress=False
    )
    assert [(r["dim"], r["metric"]) for r in rows] == [
        (m, f"probe_top{k}") for m in (2, 6, 12) for k in (1, 5)
    ]
    top1 = {r["dim"]: r["value"] for r in rows if r["metric"] == "probe_top1"}
    assert top1[12] > 0.95 and top1[12] >= top1[2]
    rows3 = probe_per_dim(x[:800], y[:800] % 3, x[800:], y[800:] % 3, [4], 3, progress=False)
    assert [r["metric"] for r in rows3] == ["probe_top1"]
    with pytest.raises(ValueError, match="dim 13"):
        probe_per_dim(x, y, x, y, [13], 6, progress=False)


def test_smallest_fixed_dim_by_hand():
    heads = {2: 0.80, 4: 0.9191, 8: 0.9200, 16: 0.9150}
    assert smallest_fixed_dim(heads, 0.9200) == 4  # within 0.1 pt
    assert smallest_fixed_dim(heads, 0.9200, tolerance=0.0) == 8
    assert smallest_fixed_dim(heads, 0.95) is None
