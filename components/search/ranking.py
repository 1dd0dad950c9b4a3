"""Exact top-k search by inner product: the pure maths of ``dal search`` (torch, no I/O).

Rules:

* Score: the inner product ``q . g`` in float32. For the L2-normalised tracklet features of a
  ``features.parquet`` it is their cosine similarity, in [-1, 1]; higher is more similar.
* Exact: every query x gallery score is computed (a matrix product per block), nothing is
  approximated or indexed. Memory beyond the inputs is bounded: one (``query_chunk``,
  ``gallery_chunk``) float32 score block, a boolean mask of the same shape while same-camera
  entries are excluded, the block's maxima per 64 columns and O(``query_chunk`` x k x 64)
  candidates: with the defaults about 1,024 x 16,384 x 5 bytes = 80 MiB, whatever the gallery's
  size. A gallery that is not float32 (or not on the device) is converted one gallery chunk at
  a time.
* Speed: the matrix product is the whole cost (2 x Q x G x D flops). On the CPU its BLAS is
  ``cpu_blas``: ``"torch"`` (its MKL on x86, whose thread pool screens the blocks too) or
  ``"numpy"`` (its OpenBLAS with ``threads`` threads, torch screening on one thread); ``"auto"``
  takes torch's MKL on Intel CPUs and NumPy's OpenBLAS elsewhere, the faster on each. On CUDA
  it is torch's.
* Order: descending score; equal scores are ordered by gallery index, lower first, so the result
  is deterministic and independent of the chunk sizes and of how ``torch.topk`` picks among ties
  (a row whose k-th score is tied beyond the k slots of a block is re-ranked exactly). The
  scores themselves are float32 sums whose last bits can differ between BLAS kernels or devices.
* Exclusions (per query): its own gallery row (``exclude_index``) and the gallery entries of its
  own camera (``query_cameras`` / ``gallery_cameras``). Excluded entries never appear; a query with
  fewer than k candidates is padded with index -1 and score -inf.
* Blocks: only rows whose block maximum beats their running k-th score, and in them only the
  k segments of 64 columns with the highest maxima, are ranked; the block's top-k is merged
  into the running top-k (a stable sort of 2k candidates). The whole score matrix never exists.
"""

from __future__ import annotations

import contextlib
import functools
import platform
import warnings
from collections.abc import Iterator

import numpy as np
import torch

from components.common.errors import DalError

DEFAULT_QUERY_CHUNK = 1024
DEFAULT_GALLERY_CHUNK = 16384
NO_INDEX = -1
SEGMENT = 64  # columns per segment whose maximum screens a block (see _merge_block)
CPU_BLAS = ("auto", "torch", "numpy")  # whose BLAS runs the CPU products (resolve_cpu_blas)


class SearchError(DalError, ValueError):
    """Inputs a search cannot run on (shapes, NaN, bad sizes); the message says which."""


@functools.cache
def _intel_cpu() -> bool:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("vendor_id"):
                    return "GenuineIntel" in line
    except OSError:  # not Linux
        pass
    return "intel" in platform.processor().lower()


def resolve_cpu_blas(cpu_blas: str) -> str:
    """Whose BLAS a CPU search runs its products in: ``cpu_blas``, or for ``"auto"`` torch's on
    Intel CPUs where it is MKL, and NumPy's (OpenBLAS) elsewhere.

    Measured with ``scripts/bench_search.py`` (1,000 x 1,000,000 x 1,280, 2 cores): on an AMD
    CPU OpenBLAS was ~20 % faster than MKL, which does not pick its fast kernels there; on an
    Intel Xeon (Sapphire Rapids) MKL was ~7 % faster than OpenBLAS (0.99 vs 1.07 of faiss's time).
    """
    if cpu_blas not in CPU_BLAS:
        raise SearchError(f"cpu_blas must be one of {', '.join(CPU_BLAS)}, got {cpu_blas!r}")
    if cpu_blas != "auto":
        return cpu_blas
    return "torch" if _intel_cpu() and torch.backends.mkl.is_available() else "numpy"


@contextlib.contextmanager
def cpu_threads(threads: int | None, device: torch.device, blas: str) -> Iterator[None]:
    """The thread setting of a search on ``device`` whose CPU products run in ``blas``.

    ``threads`` (None or 0: the library's default, all cores) is the BLAS's. With torch's BLAS
    its one thread pool runs the products and the screening alike. With NumPy's BLAS, torch,
    which only screens and merges the score blocks, runs on one thread: with both thread pools
    awake on the same cores the whole search was ~10 % slower (2 cores,
    ``scripts/bench_search.py``). On CUDA nothing changes.
    """
    if device.type != "cpu":
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads((threads or before) if blas == "torch" else 1)
    try:
        if threads and blas == "numpy":
            from threadpoolctl import threadpool_limits

            with threadpool_limits(limits=threads, user_api="blas"):
                yield
        else:
            yield
    finally:
        torch.set_num_threads(before)


def _as_matrix(array: np.ndarray | torch.Tensor, name: str) -> torch.Tensor:
    if isinstance(array, torch.Tensor):
        tensor = array
    else:
        with warnings.catch_warnings():  # read-only arrays (e.g. from Parquet): only ever read here
            warnings.filterwarnings("ignore", "The given NumPy array is not writable")
            tensor = torch.from_numpy(np.asarray(array))
    if tensor.ndim != 2:
        raise SearchError(f"{name} must be 2-D (rows x dimensions), got shape {tuple(tensor.shape)}")
    if not (tensor.is_floating_point()):
        raise SearchError(f"{name} must be floating point, got {tensor.dtype}")
    return tensor


def _check_finite(rows: torch.Tensor, name: str, first_row: int) -> None:
    _check_sums(rows.sum(dim=1), name, first_row)


def _check_sums(sums: torch.Tensor, name: str, first_row: int) -> None:
    """A row sum is NaN or inf when any entry of the row is (or the row overflows float32)."""
    bad = ~torch.isfinite(sums)
    if bool(bad.any()):
        row = first_row + int(torch.nonzero(bad)[0, 0])
        raise SearchError(f"{name}: row {row} contains NaN or inf (or values too large for float32)")


def _ordered(values: torch.Tensor, indices: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Candidates per row sorted by (score descending, index ascending)."""
    by_index = torch.argsort(indices, dim=1, stable=True)
    values, indices = values.gather(1, by_index), indices.gather(1, by_index)
    by_score = torch.argsort(values, dim=1, descending=True, stable=True)
    return values.gather(1, by_score), indices.gather(1, by_score)


def _exact_row(scores: torch.Tensor, kth: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The top-k of one row by (score desc, column asc), from its entries >= its k-th score."""
    columns = torch.nonzero(scores >= kth).flatten()  # ascending columns
    order = torch.argsort(scores[columns], descending=True, stable=True)[:k]
    return scores[columns[order]], columns[order]


def _block_topk(block: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Exact top-k of each row of ``block`` by (score desc, column asc); columns are block-local."""
    extra = 1 if k < block.shape[1] else 0  # one more than asked, to see a tie at the boundary
    values, indices = torch.topk(block, k + extra, dim=1, largest=True, sorted=True)
    if extra:
        # torch.topk picks any of the entries tied with the k-th score; where the (k+1)-th entry
        # ties with it, more entries than the k slots reach that score and the lowest columns
        # among them must win: those rows are re-ranked exactly.
        kth = values[:, k - 1]
        crowded = torch.nonzero((values[:, k] == kth) & (kth > -torch.inf)).flatten().tolist()
        values, indices = values[:, :k].clone(), indices[:, :k].clone()
        for row in crowded:
            values[row], indices[row] = _exact_row(block[row], kth[row], k)
    return _ordered(values, indices)


def _segment_topk(
    block: torch.Tensor, maxima: torch.Tensor, rows: torch.Tensor, k: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """``_block_topk`` of ``block[rows]`` from its segments' maxima (``maxima``: (rows of block,
    segments)), reading only the k segments with the highest maxima per row.

    Those hold every entry above the row's k-th score; an entry equal to it may sit in a segment
    left out only when more than k segments reach that score, which is a tie at the boundary
    like a (k+1)-th candidate equal to the k-th: either way the row is re-ranked exactly.
    """
    segments = maxima.shape[1]
    chosen = maxima[rows]
    top = torch.topk(chosen, k, dim=1, sorted=False).indices  # (R, k) segments
    candidates = block.view(len(block), segments, SEGMENT)[rows[:, None], top].reshape(len(rows), -1)
    columns = (top[:, :, None] * SEGMENT + torch.arange(SEGMENT, device=block.device)).reshape(len(rows), -1)
    values, positions = torch.topk(candidates, k + 1, dim=1, largest=True, sorted=True)
    indices = columns.gather(1, positions)
    kth = values[:, k - 1]
    crowded = ((values[:, k] == kth) | ((chosen >= kth[:, None]).sum(dim=1) > k)) & (kth > -torch.inf)
    values, indices = values[:, :k].clone(), indices[:, :k].clone()
    for i in torch.nonzero(crowded).flatten().tolist():
        values[i], indices[i] = _exact_row(block[int(rows[i])], kth[i], k)
    return _ordered(values, indices)


def search(
    query: np.ndarray | torch.Tensor,
    gallery: np.ndarray | torch.Tensor,
    top_k: int,
    *,
    exclude_index: np.ndarray | None = None,
    query_cameras: np.ndarray | None = None,
    gallery_cameras: np.ndarray | None = None,
    query_chunk: int = DEFAULT_QUERY_CHUNK,
    gallery_chunk: int = DEFAULT_GALLERY_CHUNK,
    device: torch.device | str = "cpu",
    threads: int | None = None,
    cpu_blas: str = "auto",
) -> tuple[np.ndarray, np.ndarray]:
    """The exact ``top_k`` gallery rows of each query by inner product (module docstring).

    ``query`` (Q, D) and ``gallery`` (G, D): NumPy arrays or torch tensors (the CPU gallery is
    read in place). ``exclude_index`` (Q,): a gallery row to leave out per query (-1: none), e.g.
    the query itself. ``query_cameras`` (Q,) with ``gallery_cameras`` (G,): leave out the
    gallery entries in the query's camera. ``threads``: BLAS threads of the CPU matrix products
    (None: the BLAS default, all cores); ``cpu_blas``: their BLAS (``resolve_cpu_blas``). Returns
    ``scores`` (Q, top_k) float32 and ``indices`` (Q, top_k) int64, best first, padded with
    -inf / -1 where fewer than ``top_k`` candidates remain.
    """
    q_all = _as_matrix(query, "query")
    g_all = _as_matrix(gallery, "gallery")
    num_queries, num_gallery = q_all.shape[0], g_all.shape[0]
    if q_all.shape[1] != g_all.shape[1]:
        raise SearchError(f"query dimension {q_all.shape[1]} differs from the gallery's {g_all.shape[1]}")
    if top_k < 1 or query_chunk < 1 or gallery_chunk < 1:
        raise SearchError(
            f"top_k, query_chunk and gallery_chunk must be >= 1, got {top_k}, {query_chunk}, {gallery_chunk}"
        )
    if (query_cameras is None) != (gallery_cameras is None):
        raise SearchError("query_cameras and gallery_cameras go together (both or neither)")
    device = torch.device(device)
    blas = resolve_cpu_blas(cpu_blas)
    exclude = _index_vector(exclude_index, num_queries, num_gallery)
    cams = None
    if query_cameras is not None and gallery_cameras is not None:
        cams = (
            _id_vector(query_cameras, num_queries, "query_cameras", device),
            _id_vector(gallery_cameras, num_gallery, "gallery_cameras", device),
        )
    scores = np.full((num_queries, top_k), -np.inf, dtype=np.float32)
    indices = np.full((num_queries, top_k), NO_INDEX, dtype=np.int64)
    if num_queries == 0 or num_gallery == 0:
        return scores, indices
    q_chunk, g_chunk = min(query_chunk, num_queries), min(gallery_chunk, num_gallery)
    in_numpy = device.type == "cpu" and blas == "numpy"
    # Reused by every block; one row more for the gallery check of the first query chunk.
    buffer = torch.empty((q_chunk + 1) * g_chunk, dtype=torch.float32, device=device)
    with cpu_threads(threads, device, blas), torch.inference_mode():
        for q_start in range(0, num_queries, q_chunk):
            q_stop = min(q_start + q_chunk, num_queries)
            q = q_all[q_start:q_stop].to(device, torch.float32)
            _check_finite(q, "query", q_start)
            rows = len(q)
            if q_start == 0:
                # A row of ones makes the product's last row the gallery's row sums, NaN or inf
                # where a gallery row holds one: each gallery row is checked once, at no extra pass.
                q = torch.cat([q, torch.ones(1, q.shape[1], dtype=torch.float32, device=device)])
            q = q.contiguous()
            best_values = torch.full((rows, top_k), -torch.inf, dtype=torch.float32, device=device)
            best_indices = torch.full((rows, top_k), NO_INDEX, dtype=torch.int64, device=device)
            for g_start in range(0, num_gallery, g_chunk):
                g_stop = min(g_start + g_chunk, num_gallery)
                g = g_all[g_start:g_stop].to(device, torch.float32)
                product = buffer[: len(q) * len(g)].view(len(q), len(g))
                if in_numpy:  # the same product in place, in NumPy's BLAS (resolve_cpu_blas)
                    np.matmul(q.numpy(), g.numpy().T, out=product.numpy())
                else:
                    torch.mm(q, g.T, out=product)
                if q_start == 0:
                    _check_sums(product[rows], "gallery", g_start)
                block = product[:rows]
                _exclude(block, exclude, cams, q_start, q_stop, g_start, g_stop)
                _merge_block(block, g_start, best_values, best_indices)
            best_indices = torch.where(best_values > -torch.inf, best_indices, NO_INDEX)
            scores[q_start:q_stop] = best_values.cpu().numpy()
            indices[q_start:q_stop] = best_indices.cpu().numpy()
    return scores, indices


def _merge_block(
    block: torch.Tensor, g_start: int, best_values: torch.Tensor, best_indices: torch.Tensor
) -> None:
    """Fold one score block (gallery rows from ``g_start``) into the running top-k, in place.

    Only rows whose block maximum beats their current k-th score can change (an equal score
    loses: it has a higher gallery index), and within them only the segments (``SEGMENT``
    columns) with the highest maxima are ranked: most of a block costs one max per segment.
    """
    top_k = best_values.shape[1]
    width = block.shape[1]
    segmented = width % SEGMENT == 0 and width // SEGMENT > top_k
    maxima = block.view(len(block), -1, SEGMENT).amax(dim=2) if segmented else block.amax(dim=1, keepdim=True)
    row_max = maxima.amax(dim=1)
    if bool(torch.isnan(row_max).any()):  # finite inputs whose products overflow float32
        raise SearchError("a score is NaN (features overflow float32 products)")
    rows = torch.nonzero(row_max > best_values[:, -1]).flatten()
    if len(rows) == 0:
        return
    k = min(top_k, width)
    if segmented:
        values, columns = _segment_topk(block, maxima, rows, k)
    else:
        values, columns = _block_topk(block if len(rows) == len(block) else block.index_select(0, rows), k)
    # The running entries come from earlier blocks (lower gallery indices): a stable sort keeps
    # them first among equal scores.
    merged_values = torch.cat([best_values[rows], values], dim=1)
    merged_indices = torch.cat([best_indices[rows], columns + g_start], dim=1)
    order = torch.argsort(merged_values, dim=1, descending=True, stable=True)[:, :top_k]
    best_values[rows] = merged_values.gather(1, order)
    best_indices[rows] = merged_indices.gather(1, order)


def _index_vector(exclude_index: np.ndarray | None, num_queries: int, num_gallery: int) -> np.ndarray | None:
    if exclude_index is None:
        return None
    vector = np.asarray(exclude_index, dtype=np.int64).ravel()
    if len(vector) != num_queries:
        raise SearchError(f"exclude_index: {len(vector)} entries, expected one per query ({num_queries})")
    if ((vector < NO_INDEX) | (vector >= num_gallery)).any():
        raise SearchError(f"exclude_index: values must be gallery rows 0..{num_gallery - 1} or -1")
    return vector


def _id_vector(values: np.ndarray, size: int, name: str, device: torch.device) -> torch.Tensor:
    vector = np.asarray(values).ravel()
    if len(vector) != size:
        raise SearchError(f"{name}: {len(vector)} entries, expected {size}")
    return torch.from_numpy(vector.astype(np.int64)).to(device)


def _exclude(
    block: torch.Tensor,
    exclude: np.ndarray | None,
    cams: tuple[torch.Tensor, torch.Tensor] | None,
    q_start: int,
    q_stop: int,
    g_start: int,
    g_stop: int,
) -> None:
    """Set the excluded entries of a score block to -inf (they can then never be chosen)."""
    if cams is not None:
        block.masked_fill_(cams[0][q_start:q_stop, None] == cams[1][None, g_start:g_stop], -torch.inf)
    if exclude is not None:
        own = exclude[q_start:q_stop]
        rows = np.flatnonzero((own >= g_start) & (own < g_stop))
        if len(rows):
            at = (
                torch.from_numpy(rows).to(block.device),
                torch.from_numpy(own[rows] - g_start).to(block.device),
            )
            block[at] = -torch.inf


def brute_force(
    query: np.ndarray, gallery: np.ndarray, top_k: int, exclude: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """The reference: all scores in float64, one lexicographic sort (score desc, index asc) per
    query; ``exclude`` (Q, G) bool marks pairs to leave out. Slow; for tests and checks."""
    scores = np.asarray(query, np.float64) @ np.asarray(gallery, np.float64).T
    out_scores = np.full((len(scores), top_k), -np.inf)
    out_indices = np.full((len(scores), top_k), NO_INDEX, dtype=np.int64)
    for row, values in enumerate(scores):
        keep = np.flatnonzero(~exclude[row]) if exclude is not None else np.arange(len(values))
        order = keep[np.lexsort((keep, -values[keep]))][:top_k]
        out_scores[row, : len(order)] = values[order]
        out_indices[row, : len(order)] = order
    return out_scores, out_indices
