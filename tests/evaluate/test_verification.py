"""Verification metrics: a case computed by hand, and a brute-force property check.

The brute force enumerates every candidate threshold (each score and its float32 successor,
plus +inf), counts accepted pairs directly, and picks the smallest threshold whose FPR is within
the target; AUC counts genuine > impostor pairs (ties half) in a double loop.
"""

from __future__ import annotations

from fractions import Fraction

import numpy as np
import pytest

from components.evaluate import metrics as M

UP = np.float32(np.inf)

# Queries: A = person 1 / camera 0, B = person 2 / camera 0.
Q_PIDS, Q_CAMS = np.array([1, 2]), np.array([0, 0])
# Gallery: g0 person 1 cam 1, g1 person 1 cam 0 (junk for A), g2 person 2 cam 1, g3 junk id,
# g4 person 3, g5 a distractor (person 0).
G_PIDS, G_CAMS = np.array([1, 1, 2, -1, 3, 0]), np.array([1, 0, 1, 1, 1, 1])
SIMILARITY = np.array(
    [
        [0.90, 0.95, 0.30, 0.99, 0.50, 0.10],
        [0.20, 0.60, 0.80, 0.70, 0.40, 0.85],
    ],
    dtype=np.float32,
)


def test_hand_computed_example() -> None:
    # Genuine: A-g0 0.90, B-g2 0.80. Junk skipped: A-g1 (same person and camera), A-g3, B-g3.
    # Impostors (7): 0.85 (B-g5), 0.60 (B-g1), 0.50, 0.40, 0.30, 0.20, 0.10.
    result = M.verification_from_similarity(SIMILARITY, Q_PIDS, G_PIDS, Q_CAMS, G_CAMS, fprs=(0.1, 0.2, 0.5))
    assert (result["num_genuine_pairs"], result["num_impostor_pairs"]) == (2, 7)
    # FPR 0.1: floor(0.7) = 0 impostors allowed -> t just above 0.85 -> only 0.90 passes.
    assert result["threshold_at_fpr_0.1"] == float(np.nextafter(np.float32(0.85), UP))
    assert result["tpr_at_fpr_0.1"] == 0.5
    # FPR 0.2: floor(1.4) = 1 allowed (0.85) -> t just above 0.60 -> both genuine pass.
    assert result["threshold_at_fpr_0.2"] == float(np.nextafter(np.float32(0.60), UP))
    assert result["tpr_at_fpr_0.2"] == 1.0
    # FPR 0.5: floor(3.5) = 3 allowed -> t just above the 4th largest impostor, 0.40.
    assert result["threshold_at_fpr_0.5"] == float(np.nextafter(np.float32(0.40), UP))
    assert result["tpr_at_fpr_0.5"] == 1.0
    # AUC: 0.90 beats all 7 impostors, 0.80 beats 6 of them -> 13 / 14.
    assert result["roc_auc"] == pytest.approx(13 / 14, abs=1e-15)
    roc = result["roc"]
    assert (roc["fpr"][0], roc["tpr"][0]) == (0.0, 0.0) and (roc["fpr"][-1], roc["tpr"][-1]) == (1.0, 1.0)
    assert (np.diff(roc["fpr"]) >= 0).all() and (np.diff(roc["tpr"]) >= 0).all()
    # The best point without any false positive: threshold just above 0.85, TPR 1/2.
    at_zero = np.flatnonzero(roc["fpr"] == 0)
    assert roc["tpr"][at_zero].max() == 0.5


def test_the_junk_rule_is_the_rankings() -> None:
    # The genuine pairs are exactly the "good" entries of ranking, per query.
    result = M.evaluate_rank(1 - SIMILARITY, Q_PIDS, G_PIDS, Q_CAMS, G_CAMS, per_query=True)
    assert result["num_valid_queries"] == 2
    verification = M.verification_from_similarity(SIMILARITY, Q_PIDS, G_PIDS, Q_CAMS, G_CAMS)
    good = (G_PIDS[None] == Q_PIDS[:, None]) & ~M.is_junk(Q_PIDS[:, None], Q_CAMS[:, None], G_PIDS, G_CAMS)
    assert verification["num_genuine_pairs"] == int(good.sum())
    assert verification["num_impostor_pairs"] == int(
        ((G_PIDS[None] != Q_PIDS[:, None]) & (G_PIDS[None] != -1)).sum()
    )


def _brute_force(genuine: np.ndarray, impostor: np.ndarray, fpr: float) -> tuple[float, float]:
    scores = np.concatenate([genuine, impostor]).astype(np.float32)
    candidates = np.unique(np.concatenate([scores, np.nextafter(scores, UP), [UP]]))
    best = None
    for t in candidates:  # ascending: the first within the FPR is the smallest threshold
        if Fraction(int((impostor >= t).sum()), len(impostor)) <= Fraction(str(fpr)):  # FPR <= rate, exactly
            best = t
            break
    return float((genuine >= best).mean()), float(best)


@pytest.mark.parametrize("seed", range(6))
def test_against_brute_force(seed: int) -> None:
    rng = np.random.default_rng(seed)
    # Scores on a coarse grid: many ties, within and across the two sets.
    genuine = (rng.integers(0, 40, rng.integers(1, 30)) / 40).astype(np.float32)
    impostor = (rng.integers(-20, 30, rng.integers(1, 400)) / 40).astype(np.float32)
    fprs = (1e-3, 1e-2, 0.05, 0.1, 0.29, 0.3)
    result = M.verification_metrics(genuine, impostor, fprs)
    for fpr in fprs:
        tpr, threshold = _brute_force(genuine, impostor, fpr)
        assert result[M.tpr_key(fpr)] == tpr, fpr
        assert result[M.threshold_key(fpr)] == threshold, fpr
        assert (impostor >= threshold).mean() <= fpr
    pairs = genuine[:, None] - impostor[None, :]
    assert result["roc_auc"] == pytest.approx((pairs > 0).mean() + 0.5 * (pairs == 0).mean(), abs=1e-12)
    roc = result["roc"]
    for f, t, th in zip(roc["fpr"], roc["tpr"], roc["threshold"], strict=True):  # exact points
        assert f == (impostor >= th).mean() and t == (genuine >= th).mean()


def test_features_in_chunks_equal_the_similarity_matrix() -> None:
    rng = np.random.default_rng(7)
    g_pids, g_cams = rng.integers(-1, 8, 60), rng.integers(0, 3, 60)
    q_pids, q_cams = rng.integers(-1, 8, 25), rng.integers(0, 3, 25)
    # Integer features: every product is exact whatever the BLAS kernel a chunk size picks.
    q_feats = rng.integers(-3, 4, (25, 8)).astype(np.float32)
    g_feats = rng.integers(-3, 4, (60, 8)).astype(np.float32)
    want = M.verification_from_similarity(q_feats @ g_feats.T, q_pids, g_pids, q_cams, g_cams)
    for chunk in (1, 7, 100):
        got = M.verification_features(q_feats, g_feats, q_pids, g_pids, q_cams, g_cams, chunk_size=chunk)
        for key in (*M.VERIFICATION_KEYS, "num_genuine_pairs", "num_impostor_pairs"):
            assert got[key] == want[key], (chunk, key)


def test_flat_metrics_carry_the_verification_scalars() -> None:
    result = M.verification_from_similarity(SIMILARITY, Q_PIDS, G_PIDS, Q_CAMS, G_CAMS)
    flat = M.flat_metrics(result)
    assert set(M.VERIFICATION_KEYS) <= set(flat) and "roc" not in flat
    assert M.VERIFICATION_KEYS[:3] == ("tpr_at_fpr_0.001", "tpr_at_fpr_0.01", "tpr_at_fpr_0.1")


def test_no_impostor_or_bad_rate_is_an_error() -> None:
    with pytest.raises(M.MetricsError, match="impostor"):
        M.verification_metrics(np.ones(3, np.float32), np.zeros(0, np.float32))
    with pytest.raises(M.MetricsError, match=r"\(0, 1\)"):
        M.verification_metrics(np.ones(3, np.float32), np.zeros(3, np.float32), fprs=(1.0,))
    with pytest.raises(M.MetricsError, match="NaN"):
        M.verification_metrics(np.array([np.nan], np.float32), np.zeros(3, np.float32))


def test_the_allowed_false_positives_are_counted_exactly() -> None:
    # 0.29 * 100 is 28.999999999999996 in floats: 29 impostors may still pass at FPR 0.29.
    impostor = np.arange(100, dtype=np.float32)  # 0 .. 99
    result = M.verification_metrics(np.array([71.0], np.float32), impostor, fprs=(0.29,))
    assert result["threshold_at_fpr_0.29"] == float(np.nextafter(np.float32(70), UP))  # accepts 71..99
    assert result["tpr_at_fpr_0.29"] == 1.0
