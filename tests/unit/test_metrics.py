import numpy as np

from edgeq import metrics


def test_sqnr_matches_definition():
    rng = np.random.default_rng(0)
    ref = rng.standard_normal(1000)
    noise = 0.1 * rng.standard_normal(1000)
    expected = 10 * np.log10(np.sum(ref**2) / np.sum(noise**2))
    assert abs(metrics.sqnr_db(ref, ref + noise) - expected) < 1e-9
    assert metrics.sqnr_db(ref, ref) == float("inf")


def test_cosine_and_pooling():
    hidden = np.array([[[1.0, 0.0], [0.0, 1.0], [9.0, 9.0]]])
    mask = np.array([[1, 1, 0]])
    np.testing.assert_allclose(metrics.masked_mean_pool(hidden, mask), [[0.5, 0.5]])
    assert abs(metrics.cosine([1, 0], [1, 1]) - 1 / np.sqrt(2)) < 1e-12


def test_agreement_overlap_kl():
    ref = np.array([[3.0, 1.0, 0.0], [0.0, 1.0, 2.0]])
    cand = np.array([[3.0, 1.0, 0.0], [2.0, 1.0, 0.0]])
    assert metrics.top1_agreement(ref, cand) == 0.5
    assert metrics.topk_overlap(ref, cand, k=2) == 0.75
    assert metrics.kl_divergence(ref, ref) == 0.0
    assert metrics.kl_divergence(ref, cand) > 0
    agree, n = metrics.confident_top1_agreement(ref, cand, threshold=0.6)
    assert n == 2 and agree == 0.5
