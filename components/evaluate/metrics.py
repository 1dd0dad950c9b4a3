"""Re-ID ranking metrics as pure functions on NumPy arrays (no torch, no I/O).

Conventions (those of the MARS evaluation code that the DAL release ships, and of torchreid /
fast-reid where they agree):

* Distances: smaller is more similar. ``pairwise_distances`` gives **squared Euclidean** distances,
  which for L2-normalised features equal ``2 - 2 cos`` and so rank exactly like cosine distance
  (and like the plain Euclidean distance of the MATLAB code).
* Ranking: ascending distance; ties are broken by gallery index (a stable sort, as MATLAB's ``sort``).
* Junk for a query: gallery entries with person id -1, and entries with the query's person id *and*
  camera (this drops the query itself when it is in the gallery). Junk is removed from the ranking
  before CMC and AP. "Good" entries: the query's person id in another camera. Distractors (id 0)
  stay in the ranking as negatives.
* Queries without any good entry are excluded from every average; their number is reported.
* ``cmc[k - 1]``: fraction of the (valid) queries whose first good entry is within the top k.
* ``mAP``: non-interpolated AP, ``(1/G) * sum_i i / r_i`` with ``r_i`` the rank (among non-junk
  entries) of the i-th good entry (torchreid, fast-reid).
* ``mAP_trapezoid``: the MARS evaluation code (and the DAL paper): walking down the ranking,
  ``AP += (recall_k - recall_{k-1}) * (precision_{k-1} + precision_k) / 2`` with ``precision_0 = 1``,
  stopping at the last good entry; only good positions add, so it equals
  ``(1/G) * sum_i ((i - 1) / (r_i - 1) + i / r_i) / 2`` with ``(i - 1) / (r_i - 1) := 1`` when ``r_i = 1``.
* ``mINP`` (Ye et al., "Deep Learning for Person Re-identification: A Survey and Outlook", TPAMI
  2021): per query ``INP = G / r_G``, the number of good entries over the rank of the hardest
  (last) one, i.e. ``1 - NP`` with ``NP = (r_G - G) / r_G``; averaged over the valid queries (as
  fast-reid's ``evaluate_rank``). 1 when every good entry precedes every other entry.

Verification (``verification_*``): every non-junk query x gallery pair is a decision "same
person?" on its cosine similarity ``q . g`` (the features are L2-normalised; higher is more
similar). Genuine pairs are the good entries above (same person, other camera), impostor pairs
are the non-junk entries of other persons (distractors included); junk is skipped exactly as in
ranking. A pair is accepted when its similarity is ``>= t``. For each false positive rate
``alpha`` (``VERIFICATION_FPRS``) the reported threshold ``threshold_at_fpr_<alpha>`` is the
smallest float32 ``t`` that accepts at most ``floor(alpha * num_impostor_pairs)`` impostor pairs
(the float32 successor of the next impostor score), and ``tpr_at_fpr_<alpha>`` is the fraction of
genuine pairs it accepts: the highest TPR at an FPR <= alpha. ``roc_auc`` is
P(genuine > impostor) + P(tie) / 2 over all genuine x impostor pairs. All scores are kept: memory
is 4 bytes per query x gallery pair (~96 MB at MARS's 1,980 x 12,180), twice while sorting.

Every ranking value is a fraction in [0, 1]. The fast path never argsorts a query's gallery: per chunk of
queries it sorts the distance *values* (junk set to +inf), finds each good entry's rank by binary
search, and resolves exact ties by gallery index; ``evaluate_rank_loop`` is the straightforward
per-query argsort implementation it is tested (and benchmarked) against.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from fractions import Fraction
from typing import Any

import numpy as np

from components.common.errors import DalError

REPORTED_RANKS = (1, 5, 10, 20)
# The headline metrics, in the order they are reported.
METRIC_KEYS = ("rank1", "rank5", "rank10", "rank20", "mAP", "mAP_trapezoid", "mINP")
DEFAULT_CHUNK = 256
VERIFICATION_FPRS = (1e-3, 1e-2, 1e-1)
ROC_POINTS = 200  # operating points kept for the ROC curve (log-spaced in FPR)


def tpr_key(fpr: float) -> str:
    """``tpr_at_fpr_0.01``: a valid MLflow metric name (and registry tag ``metric.<key>``)."""
    return f"tpr_at_fpr_{fpr:g}"


def threshold_key(fpr: float) -> str:
    """``threshold_at_fpr_0.01``: the similarity threshold of that operating point."""
    return f"threshold_at_fpr_{fpr:g}"


# The counts an evaluation reports beside its metrics (averaged as mean_<key>, never a metric).
COUNT_KEYS = (
    "num_queries",
    "num_valid_queries",
    "num_queries_without_match",
    "num_gallery",
    "num_genuine_pairs",
    "num_impostor_pairs",
)
# The verification scalars of an evaluation, in the order they are reported.
VERIFICATION_KEYS = (
    *(tpr_key(f) for f in VERIFICATION_FPRS),
    *(threshold_key(f) for f in VERIFICATION_FPRS),
    "roc_auc",
)


class MetricsError(DalError, ValueError):
    """Inputs the metrics cannot be computed from (shapes, NaN, no valid query)."""


# -- distances -----------------------------------------------------------------------------------
def pairwise_distances(query: np.ndarray, gallery: np.ndarray) -> np.ndarray:
    """Squared Euclidean distances (Q, G) in float32 through one matrix product."""
    q = np.asarray(query, dtype=np.float32)
    g = np.asarray(gallery, dtype=np.float32)
    if q.ndim != 2 or g.ndim != 2 or q.shape[1] != g.shape[1]:
        raise MetricsError(f"features must be (Q, D) and (G, D), got {q.shape} and {g.shape}")
    dist = q @ g.T
    dist *= -2.0
    dist += np.einsum("ij,ij->i", q, q)[:, None]
    dist += np.einsum("ij,ij->i", g, g)[None, :]
    # Rounding can make a zero distance slightly negative; +0.0 also turns -0.0 into +0.0.
    np.maximum(dist, 0.0, out=dist)
    dist += np.float32(0.0)
    return dist


JUNK_PERSON = -1  # MARS's junk detections ("00-1"); distractors (person 0) stay as negatives


def is_junk(q_pids: np.ndarray, q_cams: np.ndarray, g_pids: np.ndarray, g_cams: np.ndarray) -> np.ndarray:
    """The junk rule, the one place it is written (MARS evaluation code, torchreid): a gallery
    entry is ignored for a query when it is a junk detection or shows the query's person in the
    query's camera. Broadcasts query against gallery arrays."""
    return (g_pids == JUNK_PERSON) | ((g_pids == q_pids) & (g_cams == q_cams))


# -- the fast path -------------------------------------------------------------------------------
class _GalleryIndex:
    """Gallery entries grouped by person id, to list each query's same-person entries sparsely.

    A query's good and junk entries are all among its own person's entries (plus the global
    junk id -1), so no (queries x gallery) boolean mask is ever built.
    """

    def __init__(self, g_pids: np.ndarray, g_cams: np.ndarray) -> None:
        self.g_pids = g_pids
        self.g_cams = g_cams
        self.by_pid = np.argsort(g_pids, kind="stable")
        self.sorted_pids = g_pids[self.by_pid]
        self.junk_columns = np.flatnonzero(g_pids == JUNK_PERSON)  # junk for every query

    def same_person(self, q_pids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(row, gallery column) of every gallery entry sharing the row's person id."""
        lo = np.searchsorted(self.sorted_pids, q_pids, side="left")
        counts = np.searchsorted(self.sorted_pids, q_pids, side="right") - lo
        rows = np.repeat(np.arange(len(q_pids)), counts)
        # Consecutive ranges lo[r] .. lo[r] + counts[r] - 1, concatenated without a Python loop.
        within = np.arange(len(rows)) - np.repeat(np.cumsum(counts) - counts, counts)
        return rows, self.by_pid[np.repeat(lo, counts) + within]

    def is_junk(self, cols: np.ndarray, q_pid: int, q_cam: int) -> np.ndarray:
        return is_junk(np.int64(q_pid), np.int64(q_cam), self.g_pids[cols], self.g_cams[cols])

    def junk_and_good(
        self, q_pids: np.ndarray, q_cams: np.ndarray
    ) -> tuple[tuple[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]:
        rows, cols = self.same_person(q_pids)
        junk = is_junk(q_pids[rows], q_cams[rows], self.g_pids[cols], self.g_cams[cols])
        return (rows[junk], cols[junk]), (rows[~junk], cols[~junk])


def _count_below(sorted_rows: np.ndarray, rows: np.ndarray, targets: np.ndarray, strict: bool) -> np.ndarray:
    """Per target, how many values of its (ascending) row are < target (strict) or <= target."""
    lo = np.zeros(len(rows), dtype=np.int64)
    hi = np.full(len(rows), sorted_rows.shape[1], dtype=np.int64)
    while True:  # a binary search over all targets at once: ~log2(G) vectorised steps
        active = np.flatnonzero(lo < hi)
        if len(active) == 0:
            return lo
        mid = (lo[active] + hi[active]) // 2
        values = sorted_rows[rows[active], mid]
        below = values < targets[active] if strict else values <= targets[active]
        lo[active[below]] = mid[below] + 1
        hi[active[~below]] = mid[~below]


def _good_ranks(
    dist: np.ndarray, gallery: _GalleryIndex, q_pids: np.ndarray, q_cams: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """(row, rank) of every good entry of a chunk; rank is 1-based among the non-junk entries."""
    (junk_rows, junk_cols), (rows, cols) = gallery.junk_and_good(q_pids, q_cams)
    if len(rows) == 0:
        return rows, rows.copy()
    masked = np.array(dist, dtype=np.float32)  # a copy: junk becomes +inf, then sorted in place
    masked[:, gallery.junk_columns] = np.inf
    masked[junk_rows, junk_cols] = np.inf
    targets = masked[rows, cols]
    masked.sort(axis=1)
    less = _count_below(masked, rows, targets, strict=True)
    less_equal = _count_below(masked, rows, targets, strict=False)
    ranks = less + 1
    # Exact ties (rare): entries at the same distance rank first if their gallery index is lower.
    for k in np.flatnonzero(less_equal - less > 1):
        row, col = rows[k], cols[k]
        tied = np.flatnonzero(dist[row, :col] == targets[k])
        ranks[k] += np.count_nonzero(~gallery.is_junk(tied, q_pids[row], q_cams[row]))
    return rows, ranks


class _Accumulator:
    """Sums CMC hits and APs over chunks of queries."""

    def __init__(self, num_queries: int, max_rank: int) -> None:
        self.max_rank = max_rank
        self.cmc_hits = np.zeros(max_rank, dtype=np.int64)
        self.ap = np.full(num_queries, np.nan)
        self.ap_trapezoid = np.full(num_queries, np.nan)
        self.inp = np.full(num_queries, np.nan)
        self.first_rank = np.zeros(num_queries, dtype=np.int64)  # 0: no good entry

    def add(self, first_query: int, rows: np.ndarray, ranks: np.ndarray) -> None:
        if len(rows) == 0:
            return
        order = np.lexsort((ranks, rows))
        rows, ranks = rows[order], ranks[order].astype(np.float64)
        starts = np.flatnonzero(np.r_[True, rows[1:] != rows[:-1]])
        counts = np.diff(np.r_[starts, len(rows)])
        position = np.arange(len(rows)) - np.repeat(starts, counts) + 1.0  # i: 1-based among goods
        precision = position / ranks
        previous = np.where(ranks > 1, (position - 1) / np.maximum(ranks - 1, 1), 1.0)
        queries = first_query + rows[starts]
        self.ap[queries] = np.add.reduceat(precision, starts) / counts
        self.ap_trapezoid[queries] = np.add.reduceat((previous + precision) / 2, starts) / counts
        self.inp[queries] = counts / ranks[starts + counts - 1]  # ranks ascend within a query
        first = ranks[starts].astype(np.int64)
        self.first_rank[queries] = first
        hits = first[first <= self.max_rank]
        self.cmc_hits += np.cumsum(np.bincount(hits - 1, minlength=self.max_rank))[: self.max_rank]

    def result(self, num_gallery: int, per_query: bool) -> dict[str, Any]:
        valid = self.first_rank > 0
        num_valid = int(valid.sum())
        if num_valid == 0:
            raise MetricsError(
                f"none of the {len(valid)} queries has a valid match in the gallery "
                "(same person, other camera): CMC and mAP are undefined"
            )
        cmc = self.cmc_hits / num_valid
        result: dict[str, Any] = {f"rank{k}": float(cmc[k - 1]) for k in REPORTED_RANKS if k <= self.max_rank}
        result |= {
            "mAP": float(np.mean(self.ap[valid])),
            "mAP_trapezoid": float(np.mean(self.ap_trapezoid[valid])),
            "mINP": float(np.mean(self.inp[valid])),
            "cmc": cmc,
            "num_queries": len(valid),
            "num_valid_queries": num_valid,
            "num_queries_without_match": len(valid) - num_valid,
            "num_gallery": num_gallery,
        }
        if per_query:
            result["per_query"] = {
                "ap": self.ap,
                "ap_trapezoid": self.ap_trapezoid,
                "inp": self.inp,
                "first_rank": self.first_rank,
            }
        return result


def _check_ids(
    num_queries: int,
    num_gallery: int,
    q_pids: Any,
    g_pids: Any,
    q_camids: Any,
    g_camids: Any,
    max_rank: int,
) -> tuple[np.ndarray, ...]:
    arrays = tuple(np.asarray(a).ravel() for a in (q_pids, g_pids, q_camids, g_camids))
    expected = (num_queries, num_gallery, num_queries, num_gallery)
    names = ("q_pids", "g_pids", "q_camids", "g_camids")
    for name, array, size in zip(names, arrays, expected, strict=True):
        if len(array) != size:
            raise MetricsError(f"{name}: {len(array)} entries, expected {size}")
    if num_queries == 0:
        raise MetricsError("no queries to evaluate")
    if num_gallery == 0:
        raise MetricsError("the gallery is empty")
    if max_rank < 1:
        raise MetricsError(f"max_rank must be >= 1, got {max_rank}")
    return arrays


def _checked_features(q_feats: np.ndarray, g_feats: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Query and gallery features as float32 (Q, D) and (G, D), finite, of one dimension D."""
    q_feats = np.asarray(q_feats, dtype=np.float32)
    g_feats = np.asarray(g_feats, dtype=np.float32)
    if q_feats.ndim != 2 or g_feats.ndim != 2 or q_feats.shape[1] != g_feats.shape[1]:
        raise MetricsError(f"features must be (Q, D) and (G, D), got {q_feats.shape} and {g_feats.shape}")
    _check_finite(q_feats, "query features")
    _check_finite(g_feats, "gallery features")
    return q_feats, g_feats


def _check_finite(array: np.ndarray, what: str) -> None:
    if not np.isfinite(array).all():
        bad = np.argwhere(~np.isfinite(array))[0]
        raise MetricsError(f"{what}: NaN or infinite value at index {tuple(int(i) for i in bad)}")


def _run_chunks(
    distances: Callable[[int, int], np.ndarray],
    q_pids: np.ndarray,
    g_pids: np.ndarray,
    q_camids: np.ndarray,
    g_camids: np.ndarray,
    max_rank: int,
    chunk_size: int,
    workers: int,
    per_query: bool,
) -> dict[str, Any]:
    """Rank query chunks (in ``workers`` threads: NumPy's sort and BLAS release the GIL)."""
    if chunk_size < 1 or workers < 1:
        raise MetricsError(f"chunk_size and workers must be >= 1, got {chunk_size} and {workers}")
    gallery = _GalleryIndex(g_pids, g_camids)
    num_queries = len(q_pids)
    acc = _Accumulator(num_queries, max_rank)

    def rank_chunk(start: int) -> tuple[int, np.ndarray, np.ndarray]:
        stop = min(start + chunk_size, num_queries)
        dist = distances(start, stop)
        return start, *_good_ranks(dist, gallery, q_pids[start:stop], q_camids[start:stop])

    starts = range(0, num_queries, chunk_size)
    if workers == 1 or len(starts) == 1:
        for start in starts:
            acc.add(*rank_chunk(start))
    else:
        with ThreadPoolExecutor(max_workers=workers) as pool:
            pending: deque[Future] = deque()
            for start in starts:  # at most 2 chunks per worker in flight: bounded memory
                if len(pending) >= 2 * workers:
                    acc.add(*pending.popleft().result())
                pending.append(pool.submit(rank_chunk, start))
            while pending:
                acc.add(*pending.popleft().result())
    return acc.result(len(g_pids), per_query)


def evaluate_rank(
    distmat: np.ndarray,
    q_pids: np.ndarray,
    g_pids: np.ndarray,
    q_camids: np.ndarray,
    g_camids: np.ndarray,
    max_rank: int = 20,
    *,
    chunk_size: int = DEFAULT_CHUNK,
    workers: int = 1,
    per_query: bool = False,
) -> dict[str, Any]:
    """CMC and both mAPs from a (Q, G) distance matrix.

    Returns ``rank1``/``rank5``/``rank10``/``rank20`` (those <= max_rank), ``mAP``,
    ``mAP_trapezoid``, ``mINP``, ``cmc`` (float array of length ``max_rank``), ``num_queries``,
    ``num_valid_queries``, ``num_queries_without_match``, ``num_gallery``; with ``per_query``
    also per-query ``ap``, ``ap_trapezoid``, ``inp`` (NaN where excluded) and ``first_rank``
    (0 = no match).
    Works in chunks of ``chunk_size`` queries, so temporaries stay bounded.
    """
    distmat = np.asarray(distmat)
    if distmat.ndim != 2:
        raise MetricsError(f"distmat must be 2-D (queries x gallery), got shape {distmat.shape}")
    q_pids, g_pids, q_camids, g_camids = _check_ids(
        *distmat.shape, q_pids, g_pids, q_camids, g_camids, max_rank
    )

    def chunk(start: int, stop: int) -> np.ndarray:
        block = np.asarray(distmat[start:stop], dtype=np.float32)
        _check_finite(block, f"distmat rows {start}..{stop - 1}")
        return block

    return _run_chunks(chunk, q_pids, g_pids, q_camids, g_camids, max_rank, chunk_size, workers, per_query)


def evaluate_features(
    q_feats: np.ndarray,
    g_feats: np.ndarray,
    q_pids: np.ndarray,
    g_pids: np.ndarray,
    q_camids: np.ndarray,
    g_camids: np.ndarray,
    max_rank: int = 20,
    *,
    chunk_size: int = DEFAULT_CHUNK,
    workers: int = 1,
    per_query: bool = False,
) -> dict[str, Any]:
    """``evaluate_rank`` on squared Euclidean distances computed one query chunk at a time.

    Peak memory is one (chunk_size, G) block instead of the whole (Q, G) matrix.
    """
    q_feats, g_feats = _checked_features(q_feats, g_feats)
    q_pids, g_pids, q_camids, g_camids = _check_ids(
        len(q_feats), len(g_feats), q_pids, g_pids, q_camids, g_camids, max_rank
    )

    def chunk(start: int, stop: int) -> np.ndarray:
        return pairwise_distances(q_feats[start:stop], g_feats)

    return _run_chunks(chunk, q_pids, g_pids, q_camids, g_camids, max_rank, chunk_size, workers, per_query)


# -- the straightforward reference ---------------------------------------------------------------
def evaluate_rank_loop(
    distmat: np.ndarray,
    q_pids: np.ndarray,
    g_pids: np.ndarray,
    q_camids: np.ndarray,
    g_camids: np.ndarray,
    max_rank: int = 20,
    *,
    per_query: bool = False,
) -> dict[str, Any]:
    """One stable argsort per query, then the MARS-code walk down the ranking (slow; for checks)."""
    distmat = np.asarray(distmat, dtype=np.float32)
    q_pids, g_pids, q_camids, g_camids = _check_ids(
        *distmat.shape, q_pids, g_pids, q_camids, g_camids, max_rank
    )
    _check_finite(distmat, "distmat")
    acc = _Accumulator(distmat.shape[0], max_rank)
    for q in range(distmat.shape[0]):
        order = np.argsort(distmat[q], kind="stable")
        junk = is_junk(q_pids[q], q_camids[q], g_pids[order], g_camids[order])
        matches = (g_pids[order] == q_pids[q])[~junk]
        num_good = int(matches.sum())
        if num_good == 0:
            continue
        hits = np.cumsum(matches)
        acc.first_rank[q] = int(np.argmax(matches)) + 1
        if acc.first_rank[q] <= max_rank:
            acc.cmc_hits[acc.first_rank[q] - 1 :] += 1
        k = np.arange(1, len(matches) + 1)
        precision = hits / k
        acc.ap[q] = precision[matches].sum() / num_good
        last = int(np.flatnonzero(matches)[-1]) + 1  # the walk stops at the last good entry
        acc.inp[q] = num_good / last
        recall = np.r_[0.0, hits[:last] / num_good]
        prev_precision = np.r_[1.0, precision[: last - 1]]
        acc.ap_trapezoid[q] = float(np.sum(np.diff(recall) * (prev_precision + precision[:last]) / 2))
    return acc.result(distmat.shape[1], per_query)


# -- verification ---------------------------------------------------------------------------------
def _accepting(scores_ascending: np.ndarray, threshold: np.ndarray | float) -> np.ndarray:
    """How many of the sorted scores are >= threshold."""
    return len(scores_ascending) - np.searchsorted(scores_ascending, threshold, side="left")


def _threshold_at(impostor_ascending: np.ndarray, fpr: float) -> np.float32:
    """The smallest float32 threshold accepting at most floor(fpr * N) impostor scores."""
    # Exact (0.29 * 100 is 28.999... in floats); fpr < 1, so fewer than all impostors are allowed.
    allowed = math.floor(Fraction(repr(float(fpr))) * len(impostor_ascending))
    next_impostor = impostor_ascending[len(impostor_ascending) - 1 - allowed]  # the (allowed+1)-th largest
    return np.nextafter(np.float32(next_impostor), np.float32(np.inf))


def verification_metrics(
    genuine: np.ndarray,
    impostor: np.ndarray,
    fprs: tuple[float, ...] = VERIFICATION_FPRS,
    roc_points: int = ROC_POINTS,
) -> dict[str, Any]:
    """TPR and threshold at each FPR, ROC AUC and ROC points from the pairs' similarities.

    ``genuine`` / ``impostor``: float32 similarities of the genuine / impostor pairs (module
    docstring). Returns ``tpr_at_fpr_<a>``, ``threshold_at_fpr_<a>`` per ``a`` in ``fprs``,
    ``roc_auc``, ``num_genuine_pairs``, ``num_impostor_pairs`` and ``roc``: exact operating
    points (``fpr``, ``tpr``, ``threshold`` arrays, FPR ascending) at thresholds chosen for
    about ``roc_points`` log-spaced FPRs from 1 / num_impostor_pairs to 1, and at FPR 0.
    """
    gen = np.sort(np.asarray(genuine, dtype=np.float32).ravel())
    imp = np.sort(np.asarray(impostor, dtype=np.float32).ravel())
    if len(gen) == 0 or len(imp) == 0:
        raise MetricsError(
            f"verification needs genuine and impostor pairs, got {len(gen)} genuine and {len(imp)} impostor"
        )
    _check_finite(gen, "genuine similarities")
    _check_finite(imp, "impostor similarities")
    bad = [f for f in fprs if not 0.0 < f < 1.0]
    if bad:
        raise MetricsError(f"false positive rates must be in (0, 1), got {bad}")
    result: dict[str, Any] = {}
    for fpr in fprs:
        threshold = _threshold_at(imp, fpr)
        result[tpr_key(fpr)] = float(_accepting(gen, threshold) / len(gen))
        result[threshold_key(fpr)] = float(threshold)
    below = np.searchsorted(imp, gen, side="left").astype(np.float64)
    ties = np.searchsorted(imp, gen, side="right") - below
    result["roc_auc"] = float((below.sum() + 0.5 * ties.sum()) / (len(gen) * float(len(imp))))
    result["num_genuine_pairs"] = len(gen)
    result["num_impostor_pairs"] = len(imp)
    targets = np.geomspace(1.0 / len(imp), 1.0, max(2, roc_points))[:-1]
    # FPR 0 (no impostor accepted, the most genuine pairs that allows), the log-spaced rates, and
    # the lowest score (everything accepted).
    points = [_threshold_at(imp, f) for f in (0.0, *targets)] + [np.float32(min(gen[0], imp[0]))]
    thresholds = np.unique(points)
    thresholds = np.concatenate([[np.nextafter(np.float32(max(gen[-1], imp[-1])), np.float32(np.inf))],
                                 thresholds[::-1]])  # fmt: skip
    result["roc"] = {
        "fpr": _accepting(imp, thresholds) / len(imp),
        "tpr": _accepting(gen, thresholds) / len(gen),
        "threshold": thresholds.astype(np.float32),
    }
    return result


def _pair_scores(
    similarity: np.ndarray, gallery: _GalleryIndex, q_pids: np.ndarray, q_cams: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """(genuine, impostor) similarities of a chunk of queries; junk pairs skipped as in ranking."""
    _, (rows, cols) = gallery.junk_and_good(q_pids, q_cams)
    impostor = (gallery.g_pids[None, :] != q_pids[:, None]) & (gallery.g_pids != JUNK_PERSON)[None, :]
    return similarity[rows, cols], similarity[impostor]


def verification_from_similarity(
    similarity: np.ndarray,
    q_pids: np.ndarray,
    g_pids: np.ndarray,
    q_camids: np.ndarray,
    g_camids: np.ndarray,
    fprs: tuple[float, ...] = VERIFICATION_FPRS,
) -> dict[str, Any]:
    """``verification_metrics`` of a (Q, G) cosine-similarity matrix (higher = more similar)."""
    similarity = np.asarray(similarity, dtype=np.float32)
    if similarity.ndim != 2:
        raise MetricsError(f"similarity must be 2-D (queries x gallery), got shape {similarity.shape}")
    q_pids, g_pids, q_camids, g_camids = _check_ids(*similarity.shape, q_pids, g_pids, q_camids, g_camids, 1)
    _check_finite(similarity, "similarity")
    genuine, impostor = _pair_scores(similarity, _GalleryIndex(g_pids, g_camids), q_pids, q_camids)
    return verification_metrics(genuine, impostor, fprs)


def verification_features(
    q_feats: np.ndarray,
    g_feats: np.ndarray,
    q_pids: np.ndarray,
    g_pids: np.ndarray,
    q_camids: np.ndarray,
    g_camids: np.ndarray,
    fprs: tuple[float, ...] = VERIFICATION_FPRS,
    *,
    chunk_size: int = DEFAULT_CHUNK,
) -> dict[str, Any]:
    """``verification_metrics`` on the features' inner products, one query chunk at a time (the
    similarities of the kept pairs are collected: 4 bytes per pair)."""
    q_feats, g_feats = _checked_features(q_feats, g_feats)
    q_pids, g_pids, q_camids, g_camids = _check_ids(
        len(q_feats), len(g_feats), q_pids, g_pids, q_camids, g_camids, 1
    )
    if chunk_size < 1:
        raise MetricsError(f"chunk_size must be >= 1, got {chunk_size}")
    gallery = _GalleryIndex(g_pids, g_camids)
    # Impostors per query: the gallery minus its own person and the junk id (counted up front so
    # that one array is filled in place instead of concatenating chunks: half the peak memory).
    persons, counts = np.unique(g_pids, return_counts=True)
    own = np.zeros(len(q_pids), dtype=np.int64)
    found = np.isin(q_pids, persons)
    own[found] = counts[np.searchsorted(persons, q_pids[found])]
    junk = int((g_pids == JUNK_PERSON).sum())
    per_query = len(g_pids) - own - np.where(q_pids == JUNK_PERSON, 0, junk)
    impostor = np.empty(int(per_query.sum()), dtype=np.float32)
    genuine_parts, filled = [], 0
    for start in range(0, len(q_feats), chunk_size):
        stop = min(start + chunk_size, len(q_feats))
        similarity = q_feats[start:stop] @ g_feats.T
        genuine, chunk_impostor = _pair_scores(similarity, gallery, q_pids[start:stop], q_camids[start:stop])
        genuine_parts.append(genuine)
        impostor[filled : filled + len(chunk_impostor)] = chunk_impostor
        filled += len(chunk_impostor)
    assert filled == len(impostor), (filled, len(impostor))  # the count above is the mask's
    genuine_all = np.concatenate(genuine_parts) if genuine_parts else np.zeros(0, np.float32)
    return verification_metrics(genuine_all, impostor, fprs)


# -- rank lists ----------------------------------------------------------------------------------
def ranked_gallery(
    distmat: np.ndarray,
    q_pids: np.ndarray,
    g_pids: np.ndarray,
    q_camids: np.ndarray,
    g_camids: np.ndarray,
    top_k: int = 10,
) -> tuple[np.ndarray, np.ndarray]:
    """Top-k non-junk gallery indices per query row (stable order) and whether each is a match.

    For a few queries (rank-list plots); rows with fewer than k non-junk entries are padded
    with -1 (and False).
    """
    distmat = np.asarray(distmat, dtype=np.float32)
    q_pids, g_pids, q_camids, g_camids = _check_ids(*distmat.shape, q_pids, g_pids, q_camids, g_camids, 1)
    junk = is_junk(q_pids[:, None], q_camids[:, None], g_pids[None, :], g_camids[None, :])
    good = (g_pids[None, :] == q_pids[:, None]) & ~junk
    indices = np.full((distmat.shape[0], top_k), -1, dtype=np.int64)
    matches = np.zeros((distmat.shape[0], top_k), dtype=bool)
    for q in range(distmat.shape[0]):
        order = np.argsort(np.where(junk[q], np.inf, distmat[q]), kind="stable")
        order = order[~junk[q][order]][:top_k]
        indices[q, : len(order)] = order
        matches[q, : len(order)] = good[q][order]
    return indices, matches


def flat_metrics(result: dict[str, Any]) -> dict[str, float | int]:
    """The scalar entries of an ``evaluate_rank`` result (for metrics.json, MLflow and KFP)."""
    flat: dict[str, float | int] = {}
    for key, value in result.items():
        if isinstance(value, bool | np.bool_):
            continue
        if isinstance(value, int | np.integer):
            flat[key] = int(value)
        elif isinstance(value, float | np.floating):
            flat[key] = float(value)
    return flat
