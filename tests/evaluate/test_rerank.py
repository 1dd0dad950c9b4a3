"""k-reciprocal re-ranking and average query expansion (``components.evaluate.rerank``) against
their references: the authors' ``re_ranking`` (``scripts.bench_rerank.reference_re_ranking``, the
oracle, given the very n x n matrix that our blocks make) and fast-reid's ``aqe`` (ported below),
on a few hundred MARS-like tracklets; plus cases small enough to check by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F  # noqa: N812

from components.evaluate.metrics import METRIC_KEYS, MetricsError, evaluate_rank, pairwise_distances
from components.evaluate.rerank import (
    average_query_expansion,
    full_squared_distances,
    k_reciprocal_distances,
    squared_distance_block,
    squared_norms,
)
from scripts.bench_rerank import mars_like, reference_re_ranking

TOLERANCE = 1e-5  # the rerank module docstring argues it from float32 rounding
BLOCK = 128  # several distance blocks (and a partial last one) for ~400 rows


@pytest.fixture(scope="module")
def tracklets() -> dict[str, np.ndarray]:
    """60 queries x 320 gallery tracklets, D = 64: real matches and confusions (6 cameras,
    distractors, junk), each query also in the gallery, and 10 gallery rows present three times
    (exact ties in every neighbourhood that reaches them)."""
    data = mars_like(60, 300, 64, seed=3)
    for key in ("gallery", "g_pids", "g_cams"):
        data[key] = np.concatenate([data[key], data[key][:10], data[key][:10]])
    return data


def ids(data: dict[str, np.ndarray]) -> tuple[np.ndarray, ...]:
    return data["q_pids"], data["g_pids"], data["q_cams"], data["g_cams"]


def oracle(
    data: dict[str, np.ndarray], k1: int = 20, k2: int = 6, lambda_value: float = 0.3, block: int = BLOCK
):
    features = np.concatenate([data["query"], data["gallery"]])
    return reference_re_ranking(
        full_squared_distances(features, block), len(data["query"]), k1, k2, lambda_value
    )


def assert_same_ranking(ours: np.ndarray, reference: np.ndarray, tolerance: float = TOLERANCE) -> None:
    """Per query the same gallery order, except swaps of entries whose reference distances differ
    by less than the tolerance."""
    ours_order = np.argsort(ours, axis=1, kind="stable")
    reference_order = np.argsort(reference, axis=1, kind="stable")
    rows, ranks = np.nonzero(ours_order != reference_order)
    gap = np.abs(reference[rows, ours_order[rows, ranks]] - reference[rows, reference_order[rows, ranks]])
    assert (gap < tolerance).all(), f"{int((gap >= tolerance).sum())} ranks differ beyond the tolerance"


# -- k-reciprocal re-ranking against the authors' algorithm --------------------------------------
def test_matches_the_reference_on_mars_like_tracklets(tracklets) -> None:
    stats: dict = {}
    ours = k_reciprocal_distances(tracklets["query"], tracklets["gallery"], block=BLOCK, stats=stats)
    reference = oracle(tracklets)
    assert ours.shape == reference.shape == (60, 320) and ours.dtype == np.float32
    difference = np.abs(ours.astype(np.float64) - reference)
    assert difference.max() <= TOLERANCE
    assert_same_ranking(ours, reference)
    ours_metrics, reference_metrics = (
        evaluate_rank(ours, *ids(tracklets)),
        evaluate_rank(reference, *ids(tracklets)),
    )
    for key in METRIC_KEYS:
        assert ours_metrics[key] == pytest.approx(reference_metrics[key], abs=1e-12), key
    # The data exercise what they should: several passes' worth of structure, far pairs
    # recomputed alone, a re-ranking that really changes the ranking.
    assert stats["pairs_recomputed"] > 0 and stats["passes"] == 1 and stats["expansion_set_max"] > 21
    plain = evaluate_rank(pairwise_distances(tracklets["query"], tracklets["gallery"]), *ids(tracklets))
    assert plain["num_valid_queries"] == 60 and 0.3 < plain["mAP"] < 0.9
    assert abs(ours_metrics["mAP"] - plain["mAP"]) > 0.05


@pytest.mark.parametrize(("k1", "k2", "lambda_value"), [(20, 1, 0.3), (7, 8, 0.0), (5, 3, 0.9), (1, 2, 0.5)])
def test_matches_the_reference_for_other_parameters(tracklets, k1: int, k2: int, lambda_value: float) -> None:
    ours = k_reciprocal_distances(tracklets["query"], tracklets["gallery"], k1, k2, lambda_value, block=BLOCK)
    reference = oracle(tracklets, k1, k2, lambda_value)
    assert np.abs(ours.astype(np.float64) - reference).max() <= TOLERANCE
    assert_same_ranking(ours, reference)


def test_a_rerun_with_more_kept_neighbours_still_matches(tracklets) -> None:
    """keep = k1 + 2 cannot prove its ranking exact on rows with ties at the boundary (the query
    copies): the distance pass reruns with more neighbours, and many more pairs are far pairs."""
    stats: dict = {}
    ours = k_reciprocal_distances(tracklets["query"], tracklets["gallery"], keep=22, block=BLOCK, stats=stats)
    assert stats["passes"] >= 2 and stats["keep"] >= 44
    assert np.abs(ours.astype(np.float64) - oracle(tracklets)).max() <= TOLERANCE


def test_results_do_not_depend_on_chunk_sizes(tracklets) -> None:
    query, gallery = tracklets["query"], tracklets["gallery"]
    base = k_reciprocal_distances(query, gallery, block=BLOCK)
    # The very same arithmetic in other steps (and threads): bit for bit the same result.
    for options in ({"query_chunk": 1}, {"query_chunk": 7, "pair_budget": 1}, {"pair_budget": 100},
                    {"reciprocal_chunk": 1}, {"reciprocal_chunk": 50},
                    {"threads": 1}, {"threads": 3}):  # fmt: skip
        np.testing.assert_array_equal(k_reciprocal_distances(query, gallery, block=BLOCK, **options), base)
    # More kept neighbours: fewer far pairs recomputed in float64, which may move a last bit.
    stats: dict = {}
    other = k_reciprocal_distances(query, gallery, block=BLOCK, keep=200, stats=stats)
    assert stats["keep"] == 200 and np.abs(other - base).max() <= 2.4e-7


def test_other_blocks_match_their_reference_and_each_other() -> None:
    """Another block size is another set of BLAS products: the distances move in their last bits.
    Each result equals the reference on its own matrix; without exact ties (no query copies in
    the gallery here) the neighbourhoods do not change, so the results agree within the tolerance.
    (With exact ties, which of two equal rows enters a neighbourhood can hang on one bit.)"""
    data = mars_like(60, 300, 64, seed=5)
    rng = np.random.default_rng(5)
    query = data["query"] + rng.standard_normal(data["query"].shape).astype(np.float32) * np.float32(0.02)
    data["query"] = query / np.linalg.norm(query, axis=1, keepdims=True)
    base = k_reciprocal_distances(data["query"], data["gallery"], block=BLOCK)
    for block in (16, 1000):
        other = k_reciprocal_distances(data["query"], data["gallery"], block=block)
        assert np.abs(other.astype(np.float64) - oracle(data, block=block)).max() <= TOLERANCE
        assert np.abs(other - base).max() <= TOLERANCE
        assert_same_ranking(other, base)


def test_lambda_one_gives_the_row_scaled_original_distances(tracklets) -> None:
    features = np.concatenate([tracklets["query"], tracklets["gallery"]])
    full = full_squared_distances(features, BLOCK)
    expected = (full / full.max(axis=1, keepdims=True))[:60, 60:]
    ours = k_reciprocal_distances(tracklets["query"], tracklets["gallery"], lambda_value=1.0, block=BLOCK)
    np.testing.assert_array_equal(ours, expected)


def _two_pairs(eps: float) -> tuple[np.ndarray, np.ndarray]:
    """Query a = (1, e); gallery a' = (1, -e), b = (-1, e), b' = (-1, -e), all normalised: two
    tight pairs far apart, every row at the same largest distance (to its diagonal opposite)."""
    points = np.array([[1, eps], [1, -eps], [-1, eps], [-1, -eps]], dtype=np.float64)
    points /= np.linalg.norm(points, axis=1, keepdims=True)
    points = points.astype(np.float32)
    return points[:1], points[1:]


@pytest.mark.parametrize("lambda_value", [0.0, 0.25])
def test_two_pairs_by_hand(lambda_value: float) -> None:
    """k1 = 1: N(i, 2) = {i, its partner}, so R(a) = E(a) = {a, a'} (the half sets round(1/2) = 0
    are singletons and change nothing). With t = d(a, a') / d(a, b'), V[a] = (p, q) on (a, a'),
    V[a'] = (q, p), p = 1 / (1 + e^-t), q = 1 - p; m = 2 q and J = 1 - m / (2 - m); b and b' share
    nothing with a: J = 1. With k2 = 2 both rows become (1/2, 1/2): m = 1 and J = 0."""
    query, gallery = _two_pairs(0.2)
    unit = np.concatenate([query, gallery]).astype(np.float64)
    d = ((unit[:, None] - unit[None]) ** 2).sum(-1)
    t = d[0, 1] / d[0].max()
    scaled = d[0, 1:] / d[0].max()
    q = math.exp(-t) / (1 + math.exp(-t))
    m = 2 * q
    jaccard = np.array([1 - m / (2 - m), 1.0, 1.0])
    ours = k_reciprocal_distances(query, gallery, k1=1, k2=1, lambda_value=lambda_value)
    np.testing.assert_allclose(ours[0], jaccard * (1 - lambda_value) + scaled * lambda_value, atol=1e-6)
    expanded = k_reciprocal_distances(query, gallery, k1=1, k2=2, lambda_value=lambda_value)
    np.testing.assert_allclose(
        expanded[0], np.array([0.0, 1.0, 1.0]) * (1 - lambda_value) + scaled * lambda_value, atol=1e-6
    )


def test_a_short_chain_matches_the_reference() -> None:
    """Six points along an arc (ascending distance along it), k1 = 2: N(i, 3) and half sets
    N(c, 2). Query 0's reciprocal set is {0, 1} (point 2's three nearest are 2, 1, 3), so it shares
    no support with the far end of the chain before query expansion: J = 1 there."""
    x = np.array([0.0, 1.0, 2.2, 3.6, 5.3, 7.3])
    features = np.stack([np.cos(x / 8), np.sin(x / 8)], axis=1).astype(np.float32)
    data = {"query": features[:2], "gallery": features[2:]}
    for k2 in (1, 2, 3):
        ours = k_reciprocal_distances(data["query"], data["gallery"], k1=2, k2=k2, lambda_value=0.0)
        assert np.abs(ours.astype(np.float64) - oracle(data, 2, k2, 0.0)).max() <= 1e-6
    ours = k_reciprocal_distances(data["query"], data["gallery"], k1=2, k2=1, lambda_value=0.0)
    assert ours[0, -1] == 1.0 and ours[0, -2] == 1.0 and ours[0, 0] < 1.0


def test_identical_features_cannot_be_scaled() -> None:
    rows = np.ones((4, 3), dtype=np.float32) / np.sqrt(np.float32(3))
    with pytest.raises(MetricsError, match="distance 0 from every row"):
        k_reciprocal_distances(rows[:1], rows[1:])


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"query": np.zeros((3, 4)), "gallery": np.zeros((5, 3))}, r"\(Q, D\) and \(G, D\)"),
        ({"query": np.zeros(4), "gallery": np.zeros((5, 4))}, r"\(Q, D\) and \(G, D\)"),
        ({"query": np.zeros((0, 4)), "gallery": np.zeros((5, 4))}, "at least one query"),
        ({"query": np.zeros((2, 4)), "gallery": np.zeros((0, 4))}, "at least one query"),
        ({"gallery": np.full((5, 4), np.nan)}, r"gallery features: NaN or infinite value at index \(0, 0\)"),
        ({"query": np.array([[0.0, 1.0, np.inf, 0.0]] * 2)}, r"query features: NaN .* \(0, 2\)"),
        ({"k1": 0}, "k1 must be an integer >= 1"),
        ({"k1": 2.5}, "k1 must be an integer >= 1"),
        ({"k1": True}, "k1 must be an integer >= 1"),
        ({"k2": 0}, "k2 must be an integer >= 1"),
        ({"k1": 4, "k2": 6}, r"k2 must be <= k1 \+ 1 = 5"),
        ({"lambda_value": -0.1}, r"lambda_value must be in \[0, 1\]"),
        ({"lambda_value": 1.5}, r"lambda_value must be in \[0, 1\]"),
        ({"lambda_value": float("nan")}, r"lambda_value must be in \[0, 1\]"),
        ({"lambda_value": "0.3"}, "lambda_value must be a number"),
        ({"block": 0}, "block must be an integer >= 1"),
        ({"keep": 0}, "keep must be an integer >= 1"),
        ({"query_chunk": 0}, "query_chunk must be an integer >= 1"),
        ({"pair_budget": 0}, "pair_budget must be an integer >= 1"),
        ({"reciprocal_chunk": -1}, "reciprocal_chunk must be an integer >= 1"),
    ],
)
def test_bad_inputs_are_refused(kwargs: dict, message: str) -> None:
    rng = np.random.default_rng(0)
    arguments = {"query": rng.standard_normal((2, 4)), "gallery": rng.standard_normal((5, 4)), **kwargs}
    with pytest.raises(MetricsError, match=message):
        k_reciprocal_distances(**arguments)


def test_distance_blocks_make_one_exactly_symmetric_matrix() -> None:
    rng = np.random.default_rng(1)
    features = rng.standard_normal((300, 24)).astype(np.float32)
    features /= np.linalg.norm(features, axis=1, keepdims=True)
    full = full_squared_distances(features, 64)
    np.testing.assert_array_equal(full, full.T)
    assert (full >= 0).all() and np.abs(np.diag(full)).max() <= 1e-6
    np.testing.assert_allclose(full, pairwise_distances(features, features), atol=1e-6)
    norms = squared_norms(features)
    np.testing.assert_array_equal(
        squared_distance_block(features, norms, 64, 128, 192, 256), full[64:128, 192:256]
    )
    np.testing.assert_array_equal(
        squared_distance_block(features, norms, 256, 300, 256, 300), full[256:, 256:]
    )


# -- average query expansion against fast-reid -----------------------------------------------------
def fastreid_aqe(query_feat, gallery_feat, qe_times: int = 1, qe_k: int = 10, alpha: float = 3.0):
    """fast-reid's ``aqe`` (fastreid/evaluation/query_expansion.py), as written there."""
    num_query = query_feat.shape[0]
    all_feat = torch.cat((query_feat, gallery_feat), dim=0)
    norm_feat = F.normalize(all_feat, p=2, dim=1)
    all_feat = all_feat.numpy()
    for _ in range(qe_times):
        all_feat_list = []
        sims = torch.mm(norm_feat, norm_feat.t())
        sims = sims.data.cpu().numpy()
        for sim in sims:
            init_rank = np.argpartition(-sim, range(1, qe_k + 1))
            weights = sim[init_rank[:qe_k]].reshape((-1, 1))
            weights = np.power(weights, alpha)
            all_feat_list.append(np.mean(all_feat[init_rank[:qe_k], :] * weights, axis=0))
        all_feat = np.stack(all_feat_list, axis=0)
        norm_feat = F.normalize(torch.from_numpy(all_feat), p=2, dim=1)
    return torch.from_numpy(all_feat[:num_query]), torch.from_numpy(all_feat[num_query:])


@pytest.mark.parametrize(("k", "alpha", "times"), [(10, 3.0, 1), (10, 3.0, 2), (4, 1.0, 1), (25, 2.0, 3)])
def test_aqe_matches_fastreid(tracklets, k: int, alpha: float, times: int) -> None:
    query, gallery = tracklets["query"], tracklets["gallery"]
    ours_q, ours_g = average_query_expansion(query, gallery, k, alpha, times, chunk=100)
    theirs_q, theirs_g = fastreid_aqe(torch.from_numpy(query), torch.from_numpy(gallery), times, k, alpha)
    # fast-reid returns the weighted means and normalises them when it ranks; ours are unit rows.
    for ours, theirs in ((ours_q, theirs_q), (ours_g, theirs_g)):
        assert ours.dtype == np.float32 and ours.shape == theirs.shape
        np.testing.assert_allclose(ours, F.normalize(theirs, dim=1).numpy(), atol=2e-6)
    np.testing.assert_allclose(np.linalg.norm(ours_g, axis=1), 1.0, atol=1e-6)
    # It is a real change: the ranking moves.
    assert np.abs(ours_q - query).max() > 0.05
    expanded = evaluate_rank(pairwise_distances(ours_q, ours_g), *ids(tracklets))
    plain = evaluate_rank(pairwise_distances(query, gallery), *ids(tracklets))
    assert expanded["mAP"] != plain["mAP"]


def test_aqe_by_hand() -> None:
    """Three unit rows in the plane, k = 2, alpha = 1: each row becomes the mean of itself and its
    most similar other row, each weighted by its cosine similarity (1 for itself)."""
    angles = np.array([0.0, 0.3, 1.5])
    rows = np.stack([np.cos(angles), np.sin(angles)], axis=1)
    cos = rows @ rows.T
    nearest = [1, 0, 1]
    expected = np.stack([(rows[i] + cos[i, j] * rows[j]) / 2 for i, j in enumerate(nearest)])
    expected /= np.linalg.norm(expected, axis=1, keepdims=True)
    query, gallery = average_query_expansion(
        rows[:1].astype(np.float32), rows[1:].astype(np.float32), k=2, alpha=1.0
    )
    np.testing.assert_allclose(np.concatenate([query, gallery]), expected, atol=1e-6)


def test_aqe_with_k_one_or_no_rounds_only_normalises(tracklets) -> None:
    query, gallery = tracklets["query"] * 3.0, tracklets["gallery"] * 0.5
    for kwargs in ({"k": 1}, {"times": 0}):
        new_q, new_g = average_query_expansion(query, gallery, **kwargs)
        np.testing.assert_allclose(new_q, tracklets["query"], atol=1e-6)
        np.testing.assert_allclose(new_g, tracklets["gallery"], atol=1e-6)


def test_aqe_does_not_depend_on_the_chunk(tracklets) -> None:
    query, gallery = tracklets["query"], tracklets["gallery"]
    base = average_query_expansion(query, gallery, times=2)
    for chunk in (1, 33):
        other = average_query_expansion(query, gallery, times=2, chunk=chunk)
        for a, b in zip(base, other, strict=True):
            np.testing.assert_allclose(a, b, atol=1e-6)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"k": 0}, "k must be an integer >= 1"),
        ({"k": 15}, "k must be <= the 14 query and gallery rows, got 15"),
        ({"times": -1}, "times must be an integer >= 0"),
        ({"alpha": float("inf")}, "alpha must be a finite number"),
        ({"alpha": None}, "alpha must be a finite number"),
        ({"chunk": 0}, "chunk must be an integer >= 1"),
        ({"gallery": np.zeros((12, 3))}, r"\(Q, D\) and \(G, D\)"),
        ({"query": np.full((2, 4), np.nan)}, "query features: NaN"),
    ],
)
def test_aqe_bad_inputs_are_refused(kwargs: dict, message: str) -> None:
    rng = np.random.default_rng(0)
    arguments = {"query": rng.standard_normal((2, 4)), "gallery": rng.standard_normal((12, 4)), **kwargs}
    with pytest.raises(MetricsError, match=message):
        average_query_expansion(**arguments)
