"""Ranking metrics: hand-computed cases for both AP conventions, junk, distractors, ties and
queries without a match; the fast path against the straightforward per-query argsort loop."""

from __future__ import annotations

import numpy as np
import pytest

from components.evaluate import metrics as M

# Gallery for the hand-computed cases: (person, camera, distance to every query).
GALLERY = np.array(
    [
        (-1, 1, 0.05),  # junk id: removed for every query
        (1, 0, 0.10),  # person 1 in camera 0: junk for a camera-0 query of person 1
        (1, 1, 0.20),
        (0, 1, 0.30),  # distractor: stays as a negative
        (2, 1, 0.40),
        (1, 2, 0.50),
        (3, 0, 0.60),
    ]
)
G_PIDS, G_CAMS, ROW = GALLERY[:, 0].astype(int), GALLERY[:, 1].astype(int), GALLERY[:, 2]
# Queries: person 1 / cam 0, person 3 / cam 1, person 4 (absent from the gallery).
Q_PIDS, Q_CAMS = np.array([1, 3, 4]), np.array([0, 1, 0])
DISTMAT = np.tile(ROW, (3, 1))


@pytest.mark.parametrize("implementation", [M.evaluate_rank, M.evaluate_rank_loop])
def test_hand_computed_junk_distractors_and_no_match(implementation) -> None:
    result = implementation(DISTMAT, Q_PIDS, G_PIDS, Q_CAMS, G_CAMS, max_rank=20, per_query=True)
    # Query 0: non-junk ranking is g2 (good), g3 (distractor), g4, g5 (good), g6 -> goods at ranks 1 and 4.
    #   AP = (1/1 + 2/4) / 2 = 3/4; trapezoid = ((1 + 1)/2 + (1/3 + 2/4)/2) / 2 = 17/24.
    # Query 1: its only good (g6) is 6th among g1..g6 -> AP = 1/6; trapezoid = (0/5 + 1/6) / 2 = 1/12.
    # Query 2: no good entry -> excluded and counted.
    per_query = result["per_query"]
    np.testing.assert_allclose(per_query["ap"][:2], [3 / 4, 1 / 6])
    np.testing.assert_allclose(per_query["ap_trapezoid"][:2], [17 / 24, 1 / 12])
    assert np.isnan(per_query["ap"][2])
    assert per_query["first_rank"].tolist() == [1, 6, 0]
    assert result["mAP"] == pytest.approx((3 / 4 + 1 / 6) / 2)
    assert result["mAP_trapezoid"] == pytest.approx((17 / 24 + 1 / 12) / 2)
    # INP = goods / rank of the hardest good: query 0: 2 / 4; query 1: 1 / 6 (query 2 excluded).
    np.testing.assert_allclose(per_query["inp"][:2], [2 / 4, 1 / 6])
    assert np.isnan(per_query["inp"][2])
    assert result["mINP"] == pytest.approx((1 / 2 + 1 / 6) / 2)
    assert (result["rank1"], result["rank5"], result["rank10"], result["rank20"]) == (0.5, 0.5, 1.0, 1.0)
    np.testing.assert_allclose(result["cmc"], [0.5] * 5 + [1.0] * 15)
    assert (result["num_queries"], result["num_valid_queries"], result["num_queries_without_match"]) == (
        3,
        2,
        1,
    )
    assert result["num_gallery"] == 7


@pytest.mark.parametrize("implementation", [M.evaluate_rank, M.evaluate_rank_loop])
def test_ties_are_broken_by_gallery_index(implementation) -> None:
    # All at the same distance: the ranking is the gallery order (a stable sort, as MATLAB's).
    g_pids, g_cams = np.array([2, 1, 2, 1]), np.array([1, 1, 0, 2])
    result = implementation(np.full((1, 4), 0.5), [1], g_pids, [0], g_cams, max_rank=4, per_query=True)
    # Goods at ranks 2 and 4: AP = (1/2 + 2/4) / 2; trapezoid = ((0 + 1/2)/2 + (1/3 + 2/4)/2) / 2 = 1/3.
    assert result["per_query"]["first_rank"].tolist() == [2]
    assert result["mAP"] == pytest.approx(0.5)
    assert result["mAP_trapezoid"] == pytest.approx(1 / 3)
    np.testing.assert_allclose(result["cmc"], [0, 1, 1, 1])
    assert "rank5" not in result  # only ranks <= max_rank are reported


def test_trapezoid_starts_from_precision_one() -> None:
    # One good at rank 1: both APs are 1. One good at rank 2: AP 1/2, trapezoid (0 + 1/2) / 2 = 1/4.
    g_pids, g_cams = np.array([1, 2]), np.array([1, 1])
    first = M.evaluate_rank([[0.1, 0.2]], [1], g_pids, [0], g_cams)
    second = M.evaluate_rank([[0.3, 0.2]], [1], g_pids, [0], g_cams)
    assert (first["mAP"], first["mAP_trapezoid"]) == (1.0, 1.0)
    assert (second["mAP"], second["mAP_trapezoid"]) == (pytest.approx(0.5), pytest.approx(0.25))


def test_query_in_its_own_gallery_is_junk() -> None:
    # MARS: queries are part of the gallery; the query (distance 0, same person and camera) is dropped.
    feats = np.eye(4, dtype=np.float32)
    feats[1] = feats[0]  # tracklet 1: the same person in another camera, identical feature
    pids, cams = np.array([7, 7, 8, 9]), np.array([0, 1, 0, 1])
    result = M.evaluate_features(feats[[0]], feats, pids[[0]], pids, cams[[0]], cams, per_query=True)
    assert result["per_query"]["first_rank"].tolist() == [1]
    assert result["mAP"] == 1.0


def _random_case(rng: np.random.Generator):
    num_q, num_g = int(rng.integers(1, 60)), int(rng.integers(1, 120))
    # Few distinct values: many exact ties, which must be broken by gallery index.
    distmat = rng.integers(0, 6, (num_q, num_g)).astype(np.float32) / 4
    g_pids, g_cams = rng.integers(-1, 8, num_g), rng.integers(0, 3, num_g)
    q_pids, q_cams = rng.integers(-1, 8, num_q), rng.integers(0, 3, num_q)
    return distmat, q_pids, g_pids, q_cams, g_cams


@pytest.mark.parametrize("seed", range(8))
def test_fast_path_equals_per_query_argsort_loop(seed: int) -> None:
    rng = np.random.default_rng(seed)
    checked = 0
    for _ in range(25):
        case = _random_case(rng)
        max_rank = int(rng.integers(1, 25))
        try:
            expected = M.evaluate_rank_loop(*case, max_rank=max_rank, per_query=True)
        except M.MetricsError:
            with pytest.raises(M.MetricsError, match="no.* valid match|none of the"):
                M.evaluate_rank(*case, max_rank=max_rank)
            continue
        kwargs = {"chunk_size": int(rng.integers(1, 20)), "workers": int(rng.integers(1, 3))}
        actual = M.evaluate_rank(*case, max_rank=max_rank, per_query=True, **kwargs)
        for key in ("ap", "ap_trapezoid", "inp", "first_rank"):
            np.testing.assert_allclose(actual["per_query"][key], expected["per_query"][key], equal_nan=True)
        np.testing.assert_allclose(actual["cmc"], expected["cmc"])
        assert M.flat_metrics(actual) == pytest.approx(M.flat_metrics(expected))
        checked += 1
    assert checked > 10


def test_features_path_equals_distance_matrix_path() -> None:
    rng = np.random.default_rng(3)
    q, g = rng.normal(size=(37, 16)).astype(np.float32), rng.normal(size=(90, 16)).astype(np.float32)
    g[5] = q[2]  # an exact duplicate: distance 0
    ids = rng.integers(0, 6, 90), rng.integers(0, 3, 90)
    q_ids = rng.integers(1, 6, 37), rng.integers(0, 3, 37)
    direct = M.evaluate_rank(M.pairwise_distances(q, g), q_ids[0], ids[0], q_ids[1], ids[1], per_query=True)
    chunked = M.evaluate_features(q, g, q_ids[0], ids[0], q_ids[1], ids[1], chunk_size=8, per_query=True)
    np.testing.assert_allclose(chunked["per_query"]["ap"], direct["per_query"]["ap"], equal_nan=True)
    assert M.flat_metrics(chunked) == pytest.approx(M.flat_metrics(direct))


def test_pairwise_distances_brute_force() -> None:
    rng = np.random.default_rng(0)
    q, g = rng.normal(size=(6, 5)), rng.normal(size=(9, 5))
    expected = np.array([[np.sum((a - b) ** 2) for b in g] for a in q])
    actual = M.pairwise_distances(q, g)
    assert actual.dtype == np.float32 and actual.shape == (6, 9)
    np.testing.assert_allclose(actual, expected, rtol=1e-5, atol=1e-5)
    # For L2-normalised features the squared distance is 2 - 2 cos (same ranking as cosine).
    qn, gn = q / np.linalg.norm(q, axis=1, keepdims=True), g / np.linalg.norm(g, axis=1, keepdims=True)
    np.testing.assert_allclose(M.pairwise_distances(qn, gn), 2 - 2 * qn @ gn.T, atol=1e-5)
    assert (M.pairwise_distances(q, q).diagonal() >= 0).all()


def test_ranked_gallery_skips_junk_in_stable_order() -> None:
    top, matches = M.ranked_gallery(DISTMAT[:1], Q_PIDS[:1], G_PIDS, Q_CAMS[:1], G_CAMS, top_k=6)
    assert top.tolist() == [[2, 3, 4, 5, 6, -1]]  # g0 (id -1) and g1 (same camera) are junk
    assert matches.tolist() == [[True, False, False, True, False, False]]


@pytest.mark.parametrize(
    ("distmat", "q_pids", "message"),
    [
        (np.array([[0.1, np.nan, 0.2, 0.3, 0.4, 0.5, 0.6]]), [1], "NaN"),
        (np.zeros((1, 6)), [1], "g_pids: 7 entries, expected 6"),
        (np.zeros((0, 7)), [], "no queries"),
        (DISTMAT[:1], [4], "none of the 1 queries has a valid match"),
    ],
)
def test_bad_input_raises(distmat, q_pids, message: str) -> None:
    with pytest.raises(M.MetricsError, match=message):
        M.evaluate_rank(distmat, q_pids, G_PIDS, np.zeros(len(q_pids), int), G_CAMS)
