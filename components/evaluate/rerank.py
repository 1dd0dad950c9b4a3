"""Post-processing of query / gallery features before ranking: k-reciprocal re-ranking and
average query expansion, as pure NumPy (and ``scipy.sparse``) functions on the CPU.

Conventions are those of ``components.evaluate.metrics``: features are float32 rows (normally
L2-normalised), distances are **squared Euclidean** (``metrics.pairwise_distances``, ``2 - 2 cos``
for unit rows), smaller is more similar, and ties are broken by index (lower first), as a stable
sort would. The output of ``k_reciprocal_distances`` is a (Q, G) float32 distance matrix that
``metrics.evaluate_rank`` takes as it is (junk rules unchanged).

k-reciprocal re-ranking (Zhong, Zheng, Cao and Li, "Re-ranking Person Re-identification with
k-reciprocal Encoding", CVPR 2017; the authors' ``re_ranking``, as torchreid and fast-reid ship it)
-------------------------------------------------------------------------------------------------
All ``n = Q + G`` rows take part (query rows first; under the MARS protocol the query tracklets are
also in the gallery, so duplicates are expected). With ``d(i, j)`` the squared distance:

* ``original(i, j) = d(i, j) / max_l d(i, l)`` (each row scaled by its maximum over all n columns;
  the distance matrix is exactly symmetric here, so this is also the authors' column-wise form).
* ``N(i, k)``: the first k entries of row i's ascending order (``initial_rank[i, :k]``), ties to
  the lower index. ``R(i, k) = {j in N(i, k + 1) : i in N(j, k + 1)}`` (k-reciprocal set).
* Expansion: ``E(i) = R(i, k1)`` united with every ``R(c, h)``, ``h = round(k1 / 2)`` (NumPy's
  round half to even), of a candidate ``c in R(i, k1)`` for which
  ``|R(c, h) & R(i, k1)| > 2/3 |R(c, h)|``.
* ``V[i, j] = exp(-original(i, j)) / sum_{l in E(i)} exp(-original(i, l))`` for ``j in E(i)``, else 0.
* Local query expansion (only when ``k2 != 1``): ``V[i] <- mean of V[r] for r in N(i, k2)``.
* Jaccard distance: ``J(i, j) = 1 - m / (2 - m)`` with ``m = sum_l min(V[i, l], V[j, l])``.
* Result: ``J * (1 - lambda) + original * lambda`` on the (query row, gallery row) block.

How it is computed here (no n x n matrix is ever held: at MARS's n = 14,160 each takes 800 MB):

* Distances, block by block (``squared_distance_block``, ``DISTANCE_BLOCK`` rows and columns, one
  BLAS product each, ``(-2 x.y + |x|^2) + |y|^2`` clamped at 0 as ``metrics.pairwise_distances``),
  over the blocks on and above the diagonal only: an entry below it is its mirror, and a diagonal
  block (``ssyrk``) is mirrored from its lower triangle. So the virtual n x n matrix is exactly
  symmetric and costs n^2 D flops, half of a full product. The blocks run in ``threads`` worker
  threads with single-threaded BLAS (their values do not depend on the thread count), the
  diagonal ones first. ``full_squared_distances`` assembles that very matrix from the very same
  calls: it is what the tests and the benchmark give the reference.
* From the blocks only each row's maximum, its ``keep`` nearest (distance, index) pairs (a running
  selection on int64 keys ``float bits << 32 | index``, which sort like (value, index); a block's
  entries are screened against the selections' current keep-th values) and the raw distances of
  the query rows (written into the (Q, G) result, plus a (Q, Q) block) are kept.
  ``initial_rank[:, :k1 + 1]`` is the kept list re-sorted by (scaled value, index). It is exact
  when a row's last kept scaled value exceeds its (k1 + 1)-th; else (scaling can merge distinct
  distances into one float32, and exact ties can straddle the boundary) ``keep`` doubles and the
  pass reruns. Hence the same ``initial_rank`` as a stable argsort of the scaled matrix, bit for bit.
* Reciprocity, the 2/3 test and the sets ``E(i)`` are gathers on the (n, k1 + 1) rank table and
  boolean (rows, n) marks, ``reciprocal_chunk`` rows at a time. ``d(i, j)`` for ``j in E(i)`` comes
  from the stored query rows or the kept lists (in either direction: the matrix is symmetric), bit
  for bit the blocks' values; a far member that neither row kept (it came in with a candidate's
  set; a few thousand of MARS's 242,000 entries) is recomputed alone: float64 dot product rounded
  to float32, which can differ from the BLAS value in its last bits.
* ``V`` is a sparse (CSR) matrix, the query expansion a sparse product, and the sums of minima are
  accumulated (``np.add.at``, in float64, always in the same order) over the (query row, gallery
  row) pairs that share a column of ``V``'s support (the inverted index, CSC), ``query_chunk``
  query rows and at most ``pair_budget`` pairs per step (9.5 million pairs at MARS scale).
* At MARS scale (Q = 1,980, G = 12,180, D = 1,024) the process peaks at about 0.5 GB, inputs
  included; the only dense (Q, G) array is the result (96 MB).

Agreement with the authors' algorithm (``scripts/bench_rerank.py:reference_re_ranking`` on the
matrix of ``full_squared_distances``): the ranking, hence every set above and the support of
``V``, is identical. What differs is rounding. (1) The reference sums in float32 (the
normalisation of a row of ``V``, the mean of k2 rows, ``m``); here the sums are float64, rounded to
float32 once. Every term is in [0, 1] and the rows of ``V`` sum to 1, so with ``u = 2^-24`` the
reference's ``m`` is off by at most about ``(s + e + k2 + 4) u`` to first order (``s``: the columns
the two rows share; ``e``: the size of an expansion set; a worst case in which every rounding
falls the same way), and ``J`` by at most twice that (``|dJ/dm| = 2 / (2 - m)^2 <= 2``); the final
float32 operations are the same on both sides. (2) A far pair's distance may be off by the BLAS
rounding of a D-term dot product, about ``sqrt(D) u`` relative in practice (``D u`` at worst); it
only enters that pair's weight in ``V``, by a relative ``exp`` change of that size. With the tens
of terms of real neighbourhoods the worst case of (1) is a few 1e-6; the observed differences are
below 1e-6 (5e-7 at MARS scale): hence the tolerance of 1e-5 that the tests and the benchmark use.

Average query expansion (alpha-weighted, fast-reid's ``aqe``; Radenovic, Tolias and Chum,
TPAMI 2018): with all rows ``x`` (query then gallery) and ``s = x_hat x_hat^T`` the cosine
similarities of their L2-normalised copies, each row becomes
``mean_{j in top_k(i)} x_j * s_ij ** alpha`` over its k most similar rows (itself included), and
this repeats ``times`` times. The top-k is exact per chunk of rows (ties to the lower index) and no
n x n matrix is formed. Unlike fast-reid, which returns the weighted means and normalises them
when it ranks, the rows returned here are L2-normalised, ready for ``pairwise_distances``.
"""

from __future__ import annotations

import contextlib
import math
import os
import time
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import numpy as np
import scipy.sparse as sp
from scipy.linalg.blas import ssyrk

from components.evaluate.metrics import MetricsError

DISTANCE_BLOCK = 2048  # rows (and columns) of one squared-distance block
QUERY_CHUNK = 256  # query rows per step of the Jaccard accumulation ((QUERY_CHUNK, G) float64)
PAIR_BUDGET = 1 << 21  # (query, gallery) pairs expanded per step of that accumulation
RECIPROCAL_CHUNK = 1024  # rows per step of the reciprocal-set gathers
AQE_CHUNK = 1024  # rows per similarity block of the query expansion
_RECOMPUTE_CHUNK = 1 << 13  # pairs per step of the recomputation of far pairs
_EMPTY = np.iinfo(np.int64).max  # an unfilled slot of a running selection
_LOW32 = np.int64(0xFFFFFFFF)


# -- order keys ----------------------------------------------------------------------------------
def _order_keys(values: np.ndarray, indices: np.ndarray) -> np.ndarray:
    """int64 keys that sort like (float32 value, index): value bits mapped to a monotone int32."""
    bits = (np.asarray(values, dtype=np.float32) + np.float32(0.0)).view(np.int32)  # -0.0 -> +0.0
    bits = bits ^ ((bits >> 31) & np.int32(0x7FFFFFFF))
    return (bits.astype(np.int64) << 32) | np.asarray(indices, dtype=np.int64)


def _key_values(keys: np.ndarray) -> np.ndarray:
    """The float32 values of ``_order_keys`` keys."""
    bits = (keys >> 32).astype(np.int32)
    return (bits ^ ((bits >> 31) & np.int32(0x7FFFFFFF))).view(np.float32)


def _key_indices(keys: np.ndarray) -> np.ndarray:
    return keys & _LOW32


def _where(mask: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Flat indices, rows and columns of the True entries of a C-contiguous 2-D mask (``np.nonzero``
    is about 6x slower)."""
    flat = np.flatnonzero(mask)
    rows, cols = np.divmod(flat, mask.shape[1])
    return flat, rows, cols


def _smallest_keys(values: np.ndarray, k: int, col_offset: int) -> np.ndarray:
    """Per row of a float32 (m, w) array, the sorted keys of its k smallest (value, column) pairs.
    Every entry tied with the k-th value is a candidate until the final sort: exact."""
    k = min(k, values.shape[1])
    kth = np.partition(values, k - 1, axis=1)[:, k - 1]
    flat, rows, cols = _where(values <= kth[:, None])
    return _table(rows, _order_keys(values.ravel()[flat], cols + col_offset), len(values), k)


def _table(targets: np.ndarray, keys: np.ndarray, m: int, k: int) -> np.ndarray:
    """(m, <= k) table of the smallest keys per target row, from (target, key) lists sorted by target;
    padded with ``_EMPTY``."""
    counts = np.bincount(targets, minlength=m)
    width = int(counts.max()) if len(targets) else 0
    table = np.full((m, max(width, 1)), _EMPTY, dtype=np.int64)
    table[targets, np.arange(len(targets)) - np.repeat(np.cumsum(counts) - counts, counts)] = keys
    table.sort(axis=1)
    return table[:, :k]


def _candidates(
    values: np.ndarray, last: np.ndarray, keep: int, offset: int, axis: int
) -> tuple[np.ndarray, np.ndarray]:
    """The entries of a block that may enter the running selections of its rows (``axis=1``: the
    columns are indices offset + c) or of its columns (``axis=0``: the rows are indices offset + r):
    those <= the selection's current keep-th value ``last`` (ties included: they may win on index).
    Returns (target, key) sorted by target."""
    cutoff = np.where(last != _EMPTY, _key_values(last), np.float32(np.inf))
    if np.isinf(cutoff).any():  # selections not yet full (their first block is narrower than keep)
        k = min(keep, values.shape[axis])
        cutoff = np.minimum(cutoff, np.partition(values, k - 1, axis=axis).take(k - 1, axis=axis))
    if axis == 1:
        flat, targets, sources = _where(values <= cutoff[:, None])
    else:
        flat, sources, targets = _where(values <= cutoff[None, :])
    keys = _order_keys(values.ravel()[flat], sources + offset)
    if axis == 0:  # group by target (a radix sort for 16-bit targets)
        order = np.argsort(targets.astype(np.uint16) if len(cutoff) <= 1 << 16 else targets, kind="stable")
        targets, keys = targets[order], keys[order]
    return targets, keys


def _merge(top: np.ndarray, start: int, stop: int, targets: np.ndarray, keys: np.ndarray) -> None:
    """Merge (target, key) candidates into rows start..stop of the running selection ``top``."""
    if len(targets) == 0:
        return
    current = top[start:stop]
    merged = np.concatenate([current, _table(targets, keys, stop - start, top.shape[1])], axis=1)
    merged.sort(axis=1)
    current[...] = merged[:, : top.shape[1]]


def _table_padded(table: np.ndarray, width: int) -> np.ndarray:
    if table.shape[1] == width:
        return table
    return np.concatenate([table, np.full((len(table), width - table.shape[1]), _EMPTY, np.int64)], axis=1)


# -- distances -----------------------------------------------------------------------------------
def squared_norms(features: np.ndarray) -> np.ndarray:
    """Row-wise squared norms, float32 (the ones every block uses)."""
    return np.einsum("ij,ij->i", features, features)


def _combine(scaled_dot: np.ndarray, norms_a: np.ndarray, norms_b: np.ndarray) -> np.ndarray:
    """``(-2 x.y + |x|^2) + |y|^2`` in float32 (the order of ``metrics.pairwise_distances``), clamped
    at 0, in place (the argument is always a fresh array). The sums of non-negative norms cannot
    give -0.0, so every zero is +0.0."""
    scaled_dot += norms_a
    scaled_dot += norms_b
    np.maximum(scaled_dot, np.float32(0.0), out=scaled_dot)
    return scaled_dot


def _mirror_lower(block: np.ndarray, tile: int = 128) -> None:
    """Copy the lower triangle of a square block onto its upper one, tile by tile (cache-friendly)."""
    m = len(block)
    for t0 in range(0, m, tile):
        t1 = min(t0 + tile, m)
        diagonal = block[t0:t1, t0:t1]
        upper = np.triu_indices(t1 - t0, 1)
        diagonal[upper] = diagonal.T[upper]
        for s0 in range(t1, m, tile):
            s1 = min(s0 + tile, m)
            block[t0:t1, s0:s1] = block[s0:s1, t0:t1].T


def squared_distance_block(
    features: np.ndarray, norms: np.ndarray, row_start: int, row_stop: int, col_start: int, col_stop: int
) -> np.ndarray:
    """Squared distances (float32) between ``features[row_start:row_stop]`` and
    ``features[col_start:col_stop]``: ``(-2 x.y + |x|^2) + |y|^2`` clamped at 0 (the formula of
    ``metrics.pairwise_distances``; the factor -2 inside the product is exact). ``norms``:
    ``squared_norms(features)``. A diagonal block (the same row and column range) takes the
    product from BLAS ``ssyrk`` (one triangle, half the flops) and is exactly symmetric."""
    rows = features[row_start:row_stop]
    if (row_start, row_stop) != (col_start, col_stop):
        product = (rows * np.float32(-2.0)) @ features[col_start:col_stop].T
        return _combine(product, norms[row_start:row_stop, None], norms[None, col_start:col_stop])
    product = ssyrk(-2.0, rows.T, trans=1).T  # C-ordered: its lower triangle holds -2 x.y
    block = _combine(product, norms[row_start:row_stop, None], norms[None, row_start:row_stop])
    _mirror_lower(block)  # after the sums, whose order depends on (row, column)
    return block


def _block_ranges(n: int, block: int) -> list[tuple[int, int]]:
    return [(s, min(s + block, n)) for s in range(0, n, block)]


def _block_jobs(
    n: int, block: int
) -> tuple[list[tuple[int, int, int, int]], list[tuple[int, int, int, int]]]:
    """(row_start, row_stop, col_start, col_stop) of the diagonal blocks and of those above them."""
    ranges = _block_ranges(n, block)
    diagonal = [(r0, r1, r0, r1) for r0, r1 in ranges]
    upper = [(r0, r1, c0, c1) for a, (r0, r1) in enumerate(ranges) for c0, c1 in ranges[a + 1 :]]
    return diagonal, upper


def _threads(threads: int | None) -> int:
    return len(os.sched_getaffinity(0)) if threads is None else _positive_int(threads, "threads")


@contextlib.contextmanager
def _block_pool(threads: int) -> Iterator[ThreadPoolExecutor]:
    """Worker threads that each run a whole block with single-threaded BLAS: the values never
    depend on the thread count, and no BLAS barrier stalls when another process takes a core (on 2
    shared cores this saved a quarter of the CPU time of 2-thread BLAS products)."""
    from threadpoolctl import threadpool_limits

    with threadpool_limits(limits=1, user_api="blas"), ThreadPoolExecutor(max_workers=threads) as pool:
        yield pool


def _in_order(
    pool: ThreadPoolExecutor,
    jobs: list,
    run: Callable[..., Any],
    depth: int,
    arguments: Callable[[Any], tuple] = tuple,
) -> Iterator[Any]:
    """``run(*arguments(job))`` for every job on the pool, at most ``depth`` in flight, results in
    job order; ``arguments`` is called when the job is submitted."""
    pending: deque[Future] = deque()
    for job in jobs:
        if len(pending) >= depth:
            yield pending.popleft().result()
        pending.append(pool.submit(run, *arguments(job)))
    while pending:
        yield pending.popleft().result()


def distance_blocks(
    features: np.ndarray, block: int = DISTANCE_BLOCK, threads: int | None = None
) -> Iterator[tuple[int, int, int, int, np.ndarray]]:
    """``(row_start, row_stop, col_start, col_stop, distances)`` of the diagonal blocks, then of the
    blocks above the diagonal (row-major), computed as ``k_reciprocal_distances`` computes them
    (``squared_distance_block`` with single-threaded BLAS in ``threads`` worker threads; BLAS stays
    at one thread, process-wide, until the generator is exhausted or closed); the entries below the
    diagonal are those blocks transposed."""
    features = np.ascontiguousarray(features, dtype=np.float32)
    norms = squared_norms(features)
    threads = _threads(threads)
    diagonal, upper = _block_jobs(len(features), _positive_int(block, "block"))

    def run(r0: int, r1: int, c0: int, c1: int) -> tuple[int, int, int, int, np.ndarray]:
        return r0, r1, c0, c1, squared_distance_block(features, norms, r0, r1, c0, c1)

    with _block_pool(threads) as pool:
        yield from _in_order(pool, diagonal + upper, run, 2 * threads)


def full_squared_distances(
    features: np.ndarray, block: int = DISTANCE_BLOCK, threads: int | None = None
) -> np.ndarray:
    """The whole (n, n) matrix that ``k_reciprocal_distances(query, gallery, block=block)`` works on,
    with ``features = concatenate([query, gallery])``: for checks and the reference implementation
    (n^2 x 4 bytes). Exactly symmetric."""
    n = len(features)
    dist = np.empty((n, n), dtype=np.float32)
    for r0, r1, c0, c1, values in distance_blocks(features, block, threads):
        dist[r0:r1, c0:c1] = values
        dist[c0:c1, r0:r1] = values.T
    return dist


# -- validation ----------------------------------------------------------------------------------
def _features(query: Any, gallery: Any) -> tuple[np.ndarray, int]:
    """query and gallery stacked as one float32 (n, D) array, after checking them; and Q."""
    q = np.asarray(query, dtype=np.float32)
    g = np.asarray(gallery, dtype=np.float32)
    if q.ndim != 2 or g.ndim != 2 or q.shape[1] != g.shape[1]:
        raise MetricsError(f"features must be (Q, D) and (G, D), got {q.shape} and {g.shape}")
    if len(q) == 0 or len(g) == 0 or q.shape[1] == 0:
        raise MetricsError(
            f"need at least one query, one gallery row and one dimension, got {q.shape}, {g.shape}"
        )
    for name, array in (("query", q), ("gallery", g)):
        if not np.isfinite(array).all():
            bad = tuple(int(i) for i in np.argwhere(~np.isfinite(array))[0])
            raise MetricsError(f"{name} features: NaN or infinite value at index {bad}")
    return np.ascontiguousarray(np.concatenate([q, g])), len(q)


def _positive_int(value: Any, name: str, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < minimum:
        raise MetricsError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return int(value)


# -- k-reciprocal re-ranking ---------------------------------------------------------------------
def _first_pass(
    features: np.ndarray,
    num_query: int,
    keep: int,
    block: int,
    threads: int,
    out: np.ndarray,
    query_query: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
    """Row maxima, the running selection of ``keep`` (distance, index) keys per row, and the raw
    distances of the query rows (into ``out`` for gallery columns, ``query_query`` for query ones).
    Workers make the blocks and their candidates; this thread merges them (in any order the
    merged selections would be the same: they keep the smallest of distinct keys)."""
    n = len(features)
    norms = squared_norms(features)
    rowmax = np.zeros(n, dtype=np.float32)
    top = np.full((n, keep), _EMPTY, dtype=np.int64)

    def store(r0: int, r1: int, c0: int, c1: int, values: np.ndarray) -> None:
        """Rows r0..r1 (global) x columns c0..c1 of the query rows among them (each entry is
        written by one block only, so workers never write the same place)."""
        stop = min(r1, num_query)
        if r0 >= stop:
            return
        rows = values[: stop - r0]
        split = min(max(num_query, c0), c1)  # columns c0..split are queries, split..c1 gallery
        if split > c0:
            query_query[r0:stop, c0:split] = rows[:, : split - c0]
        if c1 > split:
            out[r0:stop, split - num_query : c1 - num_query] = rows[:, split - c0 :]

    def diagonal_block(r0: int, r1: int, c0: int, c1: int) -> tuple[int, int, np.ndarray, np.ndarray]:
        values = squared_distance_block(features, norms, r0, r1, r0, r1)
        store(r0, r1, r0, r1, values)
        return r0, r1, values.max(axis=1), _table_padded(_smallest_keys(values, keep, r0), keep)

    def upper_block(job: tuple[int, int, int, int], row_last: np.ndarray, col_last: np.ndarray) -> tuple:
        r0, r1, c0, c1 = job
        values = squared_distance_block(features, norms, r0, r1, c0, c1)
        store(r0, r1, c0, c1, values)
        if c0 < num_query:
            store(c0, c1, r0, r1, values[:, : num_query - c0].T)
        rows = _candidates(values, row_last, keep, c0, axis=1)
        cols = _candidates(values, col_last, keep, r0, axis=0)
        return job, values.max(axis=1), values.max(axis=0), rows, cols

    def with_cutoffs(job: tuple[int, int, int, int]) -> tuple:
        # Candidates are screened against the selections as they are when the job is submitted:
        # a later, tighter state would only have screened out a few more of them.
        return job, top[job[0] : job[1], -1].copy(), top[job[2] : job[3], -1].copy()

    diagonal, upper = _block_jobs(n, block)
    with _block_pool(threads) as pool:
        for r0, r1, block_max, table in _in_order(pool, diagonal, diagonal_block, 2 * threads):
            rowmax[r0:r1] = block_max  # diagonal blocks first: every row starts with one full list
            top[r0:r1] = table
        results = _in_order(pool, upper, upper_block, 2 * threads, with_cutoffs)
        for (r0, r1, c0, c1), row_max, col_max, rows, cols in results:
            np.maximum(rowmax[r0:r1], row_max, out=rowmax[r0:r1])
            np.maximum(rowmax[c0:c1], col_max, out=rowmax[c0:c1])
            _merge(top, r0, r1, *rows)
            _merge(top, c0, c1, *cols)
    return rowmax, top


def _ranks(top: np.ndarray, rowmax: np.ndarray, depth: int) -> tuple[np.ndarray, bool]:
    """``initial_rank[:, :depth]`` from the kept raw keys, and whether it is exact for every row."""
    scaled = _key_values(top) / rowmax[:, None]
    keys = _order_keys(scaled, _key_indices(top))
    keys.sort(axis=1)
    exact = top.shape[1] == len(top) or bool(
        np.all(_key_values(keys[:, -1]) > _key_values(keys[:, depth - 1]))
    )
    return _key_indices(keys[:, :depth]), exact


def _reciprocal(rank: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """mask[r, a]: whether rows[r] is among the neighbours of its a-th neighbour rank[rows[r], a]."""
    forward = rank[rows]
    return (rank[forward] == rows[:, None, None]).any(axis=2)


def _expansion_pairs(rank: np.ndarray, k1: int, chunk: int) -> tuple[np.ndarray, np.ndarray]:
    """(row, column) of every j in E(i), sorted by row then column (CSR order)."""
    n, depth = rank.shape
    half_depth = min(int(np.around(k1 / 2.0)) + 1, n)
    rank = rank.astype(np.int32)  # half the memory traffic of the gathers below
    half = np.ascontiguousarray(rank[:, :half_depth])
    half_mask = _reciprocal(half, np.arange(n))
    half_size = half_mask.sum(axis=1)
    out_rows, out_cols = [], []
    for start in range(0, n, chunk):
        rows = np.arange(start, min(start + chunk, n))
        forward = rank[rows]  # (m, K): candidates
        recip = _reciprocal(rank, rows)  # (m, K): which candidates are in R(i)
        # member: flat (m, n) marks, member[r * n + j] for j in R(rows[r]), then for j in E(rows[r])
        member = np.zeros(len(rows) * n, dtype=bool)
        base = (np.arange(len(rows), dtype=np.int64) * n)[:, None]
        member[(base + forward)[recip]] = True
        cand_sets = half[forward]  # (m, K, Kh): the candidates' half-depth lists
        cand_masks = half_mask[forward]  # (m, K, Kh): ... restricted to R(c, h)
        cand_at = base[:, :, None] + cand_sets
        shared = (member[cand_at] & cand_masks).sum(axis=2)
        accepted = recip & (shared > 2.0 / 3 * half_size[forward])
        member[cand_at[accepted[:, :, None] & cand_masks]] = True
        pair_rows, pair_cols = np.divmod(np.flatnonzero(member), n)  # sorted by row, then column
        out_rows.append(pair_rows + start)
        out_cols.append(pair_cols)
    return np.concatenate(out_rows), np.concatenate(out_cols)


def _pair_distances(
    features: np.ndarray,
    rows: np.ndarray,
    cols: np.ndarray,
    top: np.ndarray,
    out: np.ndarray,
    query_query: np.ndarray,
    stats: dict[str, Any],
) -> np.ndarray:
    """Raw distances d(rows, cols): from the stored query rows or the kept lists (either direction:
    the matrix is symmetric), all bit for bit the blocks' values; a pair found in neither (a far
    member of an expansion set) is recomputed alone, its dot product in float64 rounded to float32."""
    num_query = len(query_query)
    values = np.empty(len(rows), dtype=np.float32)
    # A pair with a query on either side is in the stored query rows: d(i, j) = d(q, other).
    with_query = np.flatnonzero((rows < num_query) | (cols < num_query))
    q = np.minimum(rows[with_query], cols[with_query])
    other = np.maximum(rows[with_query], cols[with_query])
    gallery = other >= num_query
    values[with_query[gallery]] = out[q[gallery], other[gallery] - num_query]
    values[with_query[~gallery]] = query_query[q[~gallery], other[~gallery]]
    rest = np.flatnonzero((rows >= num_query) & (cols >= num_query))
    # The kept lists as one sorted array of keys row * n + index (each row sorted by index), so
    # that one binary search finds a pair in either direction.
    n, keep = top.shape
    order = np.argsort(_key_indices(top), axis=1)
    kept = np.take_along_axis(top, order, axis=1).ravel()
    kept_keys = np.repeat(np.arange(n, dtype=np.int64) * n, keep) + _key_indices(kept)
    found = np.zeros(len(rest), dtype=bool)
    for a, b in ((rows[rest], cols[rest]), (cols[rest], rows[rest])):  # b kept by a, or a by b
        todo = np.flatnonzero(~found)
        wanted = a[todo] * n + b[todo]
        at = np.minimum(np.searchsorted(kept_keys, wanted), len(kept_keys) - 1)
        hit = kept_keys[at] == wanted
        values[rest[todo[hit]]] = _key_values(kept[at[hit]])
        found[todo[hit]] = True
    missing = rest[~found]
    stats["pairs_recomputed"] = int(len(missing))
    norms = squared_norms(features)
    for start in range(0, len(missing), _RECOMPUTE_CHUNK):
        part = missing[start : start + _RECOMPUTE_CHUNK]
        i, j = rows[part], cols[part]
        dot = np.einsum("ij,ij->i", features[i], features[j], dtype=np.float64)
        values[part] = _combine(np.float32(-2.0) * dot.astype(np.float32), norms[i], norms[j])
    return values


def _jaccard_into(
    out: np.ndarray,
    v: sp.csr_matrix,
    num_query: int,
    lambda_value: float,
    query_chunk: int,
    pair_budget: int,
) -> None:
    """``out``, the scaled original (Q, G) distances, becomes ``J * (1 - lambda) + original * lambda``
    in float32, operation for operation as the reference; J = 1 - m / (2 - m) with m the sums of
    minima over the columns that a query row and a gallery row of ``V`` share (0 elsewhere: J = 1)."""
    num_gallery = out.shape[1]
    queries = v[:num_query].tocsr()
    gallery = v[num_query:].tocsc()  # the inverted index: gallery rows per column
    g_ptr, g_rows, g_vals = gallery.indptr.astype(np.int64), gallery.indices.astype(np.int64), gallery.data
    one_minus = np.float32(1 - lambda_value)

    def chunk(q0: int, q1: int) -> None:
        block = out[q0:q1].reshape(-1)  # a view: out is C-contiguous
        block *= np.float32(lambda_value)
        lo, hi = queries.indptr[q0], queries.indptr[q1]
        a_keys = np.repeat(
            np.arange(q1 - q0, dtype=np.int64) * num_gallery, np.diff(queries.indptr[q0 : q1 + 1])
        )
        a_cols, a_vals = queries.indices[lo:hi], queries.data[lo:hi]
        counts = (g_ptr[a_cols + 1] - g_ptr[a_cols]).astype(np.int64)
        ends = np.cumsum(counts)
        minima = np.zeros(len(block))
        piece = 0
        while piece < len(a_cols):  # pieces of the query entries, <= pair_budget pairs each
            base = ends[piece - 1] if piece else 0
            stop = max(piece + 1, int(np.searchsorted(ends, base + pair_budget, side="right")))
            c = counts[piece:stop]
            # pair p of entry e: gallery entry g_ptr[col(e)] + (p - first pair of e)
            first = g_ptr[a_cols[piece:stop]] - (ends[piece:stop] - c - base)
            at = np.repeat(first, c) + np.arange(ends[stop - 1] - base)
            np.add.at(
                minima,
                np.repeat(a_keys[piece:stop], c) + g_rows[at],
                np.minimum(np.repeat(a_vals[piece:stop], c), g_vals[at]),
            )
            piece = stop
        shared = np.flatnonzero(minima > 0)
        m = minima[shared].astype(np.float32)
        original = block[shared]
        block += one_minus  # J = 1 where nothing is shared
        block[shared] = (1 - m / (2.0 - m)) * one_minus + original

    for q0 in range(0, num_query, query_chunk):
        chunk(q0, min(q0 + query_chunk, num_query))


def k_reciprocal_distances(
    query: np.ndarray,
    gallery: np.ndarray,
    k1: int = 20,
    k2: int = 6,
    lambda_value: float = 0.3,
    *,
    block: int = DISTANCE_BLOCK,
    keep: int | None = None,
    query_chunk: int = QUERY_CHUNK,
    pair_budget: int = PAIR_BUDGET,
    reciprocal_chunk: int = RECIPROCAL_CHUNK,
    threads: int | None = None,
    stats: dict[str, Any] | None = None,
) -> np.ndarray:
    """k-reciprocal re-ranked (Q, G) float32 distances of query against gallery features (module
    docstring: the authors' ``re_ranking`` with the query rows also among all n = Q + G rows).

    ``k1``, ``k2``, ``lambda_value``: the paper's parameters (20, 6, 0.3). ``block``: rows and
    columns of a squared-distance block; ``keep``: neighbours kept per row in the distance pass
    (default ``3 (k1 + 1)``; at least k1 + 2; doubled automatically where it cannot prove the
    ranking exact); ``query_chunk`` / ``pair_budget`` / ``reciprocal_chunk``: the steps of the
    sparse stages; ``threads``: worker threads of the distance pass (default: the CPUs this
    process may use; during the pass BLAS is held at one thread per call, process-wide, with
    ``threadpoolctl``, and restored after). Only ``block`` changes the distances (other BLAS
    products, other last bits, which can decide near-ties of the neighbourhoods); ``keep`` can move
    the last bit of a result (it decides which far pairs are recomputed); the others change nothing.
    ``stats``, if given, is filled with what happened: ``keep`` and ``passes`` (of the distance
    pass), ``expansion_pairs`` (entries of V before the query expansion), ``expansion_set_max`` and
    ``support_max`` (the largest row of V before and after it), ``pairs_recomputed`` (far pairs,
    ``_pair_distances``) and ``seconds`` per phase.
    """
    features, num_query = _features(query, gallery)
    k1 = _positive_int(k1, "k1")
    k2 = _positive_int(k2, "k2")
    if k2 > k1 + 1:
        raise MetricsError(
            f"k2 must be <= k1 + 1 = {k1 + 1} (it averages over the k1 + 1 nearest rows), got {k2}"
        )
    if isinstance(lambda_value, bool) or not isinstance(lambda_value, int | float | np.floating):
        raise MetricsError(f"lambda_value must be a number in [0, 1], got {lambda_value!r}")
    if not 0.0 <= float(lambda_value) <= 1.0:
        raise MetricsError(f"lambda_value must be in [0, 1], got {lambda_value!r}")
    lambda_value = float(lambda_value)
    block = _positive_int(block, "block")
    query_chunk = _positive_int(query_chunk, "query_chunk")
    pair_budget = _positive_int(pair_budget, "pair_budget")
    reciprocal_chunk = _positive_int(reciprocal_chunk, "reciprocal_chunk")
    threads = _threads(threads)
    n = len(features)
    depth = min(k1 + 1, n)
    keep = min(n, max(depth + 1, 3 * (k1 + 1) if keep is None else _positive_int(keep, "keep")))
    info: dict[str, Any] = {} if stats is None else stats
    seconds: dict[str, float] = {}
    clock = [time.perf_counter()]

    def phase(name: str) -> None:
        now = time.perf_counter()
        seconds[name] = seconds.get(name, 0.0) + now - clock[0]
        clock[0] = now

    out = np.empty((num_query, n - num_query), dtype=np.float32)  # raw query rows, then the result
    query_query = np.empty((num_query, num_query), dtype=np.float32)
    passes = 0
    while True:
        passes += 1
        rowmax, top = _first_pass(features, num_query, keep, block, threads, out, query_query)
        if not np.all(rowmax > 0):
            row = int(np.argmin(rowmax))
            raise MetricsError(f"row {row} is at distance 0 from every row: its distances cannot be scaled")
        rank, exact = _ranks(top, rowmax, depth)
        phase("distances_and_ranks")
        if exact:
            break
        keep = min(n, 2 * keep)  # scaled ties may reach past the kept neighbours: keep more

    rows, cols = _expansion_pairs(rank, k1, reciprocal_chunk)
    phase("expansion_sets")
    raw = _pair_distances(features, rows, cols, top, out, query_query, info)
    del top, query_query
    phase("expansion_distances")
    weights = np.exp(-(raw / rowmax[rows]))
    starts = np.flatnonzero(np.r_[True, rows[1:] != rows[:-1]])
    sums = np.add.reduceat(weights.astype(np.float64), starts).astype(np.float32)
    data = (weights / np.repeat(sums, np.diff(np.r_[starts, len(rows)]))).astype(np.float64)
    v = sp.csr_matrix((data, cols, np.r_[0, np.cumsum(np.bincount(rows, minlength=n))]), shape=(n, n))
    expansion_max = int(np.diff(v.indptr).max())
    phase("encoding_v")
    if k2 != 1:
        expand = sp.csr_matrix(
            (np.ones(n * k2), (np.repeat(np.arange(n), k2), rank[:, :k2].ravel())), shape=(n, n)
        )
        v = (expand @ v).tocsr()
        v.data /= k2
    phase("query_expansion")
    out /= rowmax[:num_query, None]  # the original (scaled) distances of the query rows
    _jaccard_into(out, v, num_query, lambda_value, query_chunk, pair_budget)
    phase("jaccard")
    info.update(
        keep=keep,
        passes=passes,
        expansion_pairs=len(rows),
        expansion_set_max=expansion_max,
        support_max=int(np.diff(v.indptr).max()),
        seconds=seconds,
    )
    return out


# -- average query expansion ---------------------------------------------------------------------
def _normalized(x: np.ndarray) -> np.ndarray:
    """Rows divided by max(norm, 1e-12) (torch.nn.functional.normalize)."""
    norms = np.sqrt(np.einsum("ij,ij->i", x, x))
    return x / np.maximum(norms, np.float32(1e-12))[:, None]


def average_query_expansion(
    query: np.ndarray,
    gallery: np.ndarray,
    k: int = 10,
    alpha: float = 3.0,
    times: int = 1,
    *,
    chunk: int = AQE_CHUNK,
) -> tuple[np.ndarray, np.ndarray]:
    """alpha-weighted average query expansion of query and gallery features together (fast-reid's
    ``aqe``; module docstring). Returns the new (L2-normalised, float32) query and gallery rows.

    ``k``: rows averaged, the row itself included (``qe_k``); ``alpha``: the similarity exponent;
    ``times``: rounds (0 returns the normalised inputs); ``chunk``: rows per similarity block.
    """
    features, num_query = _features(query, gallery)
    n = len(features)
    k = _positive_int(k, "k")
    if k > n:
        raise MetricsError(f"k must be <= the {n} query and gallery rows, got {k}")
    times = _positive_int(times, "times", minimum=0)
    chunk = _positive_int(chunk, "chunk")
    if (
        isinstance(alpha, bool)
        or not isinstance(alpha, int | float | np.floating)
        or not math.isfinite(alpha)
    ):
        raise MetricsError(f"alpha must be a finite number, got {alpha!r}")
    unit = _normalized(features)
    for _ in range(times):
        expanded = np.empty_like(features)
        for start in range(0, n, chunk):
            stop = min(start + chunk, n)
            similarity = unit[start:stop] @ unit.T
            keys = _smallest_keys(-similarity, k, 0)  # most similar first, ties to the lower index
            index = _key_indices(keys)
            weights = np.power(np.take_along_axis(similarity, index, axis=1), alpha)
            expanded[start:stop] = np.mean(features[index] * weights[:, :, None], axis=1)
        features = expanded
        unit = _normalized(features)
    return unit[:num_query], unit[num_query:]
