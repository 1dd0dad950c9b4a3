"""``components.search.ranking.search`` against the brute-force NumPy oracle (``brute_force``).

Small integer-valued features make every dot product exact in float32 whatever the summation
order, so the two must agree bit for bit, ties included (and there are many); continuous unit
vectors are compared up to the float32 rounding bound of a dot product.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from components.search.ranking import SearchError, brute_force, resolve_cpu_blas, search


def _integer_data(seed: int, num_queries: int = 13, num_gallery: int = 157, dim: int = 6):
    rng = np.random.default_rng(seed)
    query = rng.integers(-2, 3, (num_queries, dim)).astype(np.float32)
    gallery = rng.integers(-2, 3, (num_gallery, dim)).astype(np.float32)
    return query, gallery


@pytest.mark.parametrize("cpu_blas", ["torch", "numpy"])
@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize(
    ("top_k", "query_chunk", "gallery_chunk"),
    [(1, 100, 1000), (5, 4, 16), (10, 1, 3), (7, 13, 1), (40, 5, 64), (200, 6, 50)],
)
def test_equals_the_oracle_bit_for_bit_with_ties(seed, top_k, query_chunk, gallery_chunk, cpu_blas) -> None:
    query, gallery = _integer_data(seed)
    scores, indices = search(
        query, gallery, top_k, query_chunk=query_chunk, gallery_chunk=gallery_chunk, cpu_blas=cpu_blas
    )
    want_scores, want_indices = brute_force(query, gallery, top_k)
    exact = query.astype(np.float64) @ gallery.astype(np.float64).T
    assert len(np.unique(exact)) < exact.size / 20  # the data is tie-heavy indeed
    np.testing.assert_array_equal(indices, want_indices)
    np.testing.assert_array_equal(scores, want_scores.astype(np.float32))
    if top_k > len(gallery):  # padded beyond the gallery
        assert (indices[:, len(gallery) :] == -1).all() and np.isneginf(scores[:, len(gallery) :]).all()


@pytest.mark.parametrize("cpu_blas", ["torch", "numpy"])
@pytest.mark.parametrize(("dim", "span"), [(4, 1), (6, 2), (16, 3)])  # ties from everywhere to few
@pytest.mark.parametrize("top_k", [1, 5, 15])
def test_segment_screening_equals_the_oracle(dim, span, top_k, cpu_blas) -> None:
    """Blocks of 1,024 columns are screened by 64-column segment maxima (16 segments > k)."""
    rng = np.random.default_rng(dim * 100 + top_k)
    query = rng.integers(-span, span + 1, (40, dim)).astype(np.float32)
    gallery = rng.integers(-span, span + 1, (3 * 1024 + 100, dim)).astype(np.float32)
    scores, indices = search(query, gallery, top_k, query_chunk=17, gallery_chunk=1024, cpu_blas=cpu_blas)
    want_scores, want_indices = brute_force(query, gallery, top_k)
    np.testing.assert_array_equal(indices, want_indices)
    np.testing.assert_array_equal(scores, want_scores.astype(np.float32))


def test_all_equal_scores_give_the_lowest_indices_in_order() -> None:
    gallery = np.zeros((2100, 4), np.float32)  # e.g. tracklets without frames: score 0 everywhere
    query = np.ones((3, 4), np.float32)
    for chunk in (1, 7, 50, 1024):
        scores, indices = search(query, gallery, 6, gallery_chunk=chunk)
        np.testing.assert_array_equal(indices, np.tile(np.arange(6), (3, 1)))
        np.testing.assert_array_equal(scores, 0.0)


def test_exclusions_match_the_oracle() -> None:
    query, gallery = _integer_data(3, num_queries=20, num_gallery=1900)
    rng = np.random.default_rng(4)
    q_cams, g_cams = rng.integers(0, 3, 20), rng.integers(0, 3, 1900)
    own = rng.integers(-1, 1900, 20)
    mask = q_cams[:, None] == g_cams[None, :]
    mask[np.flatnonzero(own >= 0), own[own >= 0]] = True
    for chunk in (4, 90):
        scores, indices = search(
            query,
            gallery,
            12,
            exclude_index=own,
            query_cameras=q_cams,
            gallery_cameras=g_cams,
            query_chunk=6,
            gallery_chunk=chunk,
        )
        want_scores, want_indices = brute_force(query, gallery, 12, exclude=mask)
        np.testing.assert_array_equal(indices, want_indices)
        np.testing.assert_array_equal(scores, want_scores.astype(np.float32))
        assert not mask[np.arange(20)[:, None], indices].any()


def test_fewer_candidates_than_k_are_padded() -> None:
    query, gallery = _integer_data(5, num_queries=2, num_gallery=5)
    cams = np.array([0, 0, 1, 1, 1])
    scores, indices = search(query, gallery, 4, query_cameras=np.array([1, 0]), gallery_cameras=cams)
    _, want = brute_force(query, gallery, 4, exclude=np.array([1, 0])[:, None] == cams[None, :])
    np.testing.assert_array_equal(indices, want)
    assert (indices[0, 2:] == -1).all() and (indices[1, 3:] == -1).all()
    assert np.isneginf(scores[0, 2:]).all() and np.isfinite(scores[0, :2]).all()


def test_unit_vectors_agree_up_to_rounding() -> None:
    rng = np.random.default_rng(6)
    dim = 32
    query = rng.normal(size=(40, dim)).astype(np.float32)
    gallery = rng.normal(size=(3000, dim)).astype(np.float32)
    query /= np.linalg.norm(query, axis=1, keepdims=True)
    gallery /= np.linalg.norm(gallery, axis=1, keepdims=True)
    scores, indices = search(query, gallery, 10, gallery_chunk=256)
    want_scores, want_indices = brute_force(query, gallery, 10)
    bound = 2 * dim * 2.0**-24  # float32 dot product of unit vectors vs the exact one, twice
    np.testing.assert_allclose(scores, want_scores, rtol=0, atol=bound)
    exact = query.astype(np.float64) @ gallery.astype(np.float64).T
    rows, ranks = np.nonzero(indices != want_indices)
    # A different entry is only allowed where the two are tied within rounding.
    gaps = np.abs(exact[rows, indices[rows, ranks]] - exact[rows, want_indices[rows, ranks]])
    assert (gaps <= bound).all()
    assert len(rows) <= 2  # continuous data: near-ties are rare


def test_inputs_as_tensors_and_float64_give_the_same_result() -> None:
    query, gallery = _integer_data(7)
    want = search(query, gallery, 5)
    for q, g in ((torch.from_numpy(query), torch.from_numpy(gallery)), (query.astype(np.float64), gallery)):
        got = search(q, g, 5, gallery_chunk=20)
        np.testing.assert_array_equal(got[1], want[1])
        np.testing.assert_array_equal(got[0], want[0])


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_equals_the_oracle() -> None:
    query, gallery = _integer_data(8, num_gallery=2100)
    rng = np.random.default_rng(8)
    q_cams, g_cams, own = (
        rng.integers(0, 3, len(query)),
        rng.integers(0, 3, 2100),
        rng.integers(-1, 2100, len(query)),
    )
    mask = q_cams[:, None] == g_cams[None, :]
    mask[np.flatnonzero(own >= 0), own[own >= 0]] = True
    scores, indices = search(query, gallery, 9, device="cuda", gallery_chunk=1024, exclude_index=own,
                             query_cameras=q_cams, gallery_cameras=g_cams)  # fmt: skip
    want_scores, want_indices = brute_force(query, gallery, 9, exclude=mask)
    np.testing.assert_array_equal(indices, want_indices)
    np.testing.assert_array_equal(scores, want_scores.astype(np.float32))


@pytest.mark.parametrize("cpu_blas", ["torch", "numpy"])
def test_threads_are_restored(cpu_blas) -> None:
    query, gallery = _integer_data(9)
    before = torch.get_num_threads()
    search(query, gallery, 3, threads=1, cpu_blas=cpu_blas)
    assert torch.get_num_threads() == before


def test_cpu_blas_choice() -> None:
    assert resolve_cpu_blas("auto") in ("torch", "numpy")
    assert resolve_cpu_blas("auto") == resolve_cpu_blas("auto")  # one per machine: reproducible
    assert resolve_cpu_blas("numpy") == "numpy"
    with pytest.raises(SearchError, match="cpu_blas must be one of auto, torch, numpy, got 'mkl'"):
        search(*_integer_data(12), 3, cpu_blas="mkl")


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda q, g: (q, g[:, :3]), "dimension"),
        (lambda q, g: (q, np.where(np.arange(len(g))[:, None] == 17, np.nan, g)), "gallery: row 17"),
        (lambda q, g: (np.where(np.arange(len(q))[:, None] == 2, np.inf, q), g), "query: row 2"),
        (lambda q, g: (q[0], g), "2-D"),
        (lambda q, g: (q.astype(np.int64), g), "floating point"),
    ],
)
def test_bad_inputs_are_clear_errors(change, message) -> None:
    query, gallery = _integer_data(10)
    with pytest.raises(SearchError, match=message):
        search(*change(query, gallery), 3, gallery_chunk=8)


def test_bad_sizes_are_clear_errors() -> None:
    query, gallery = _integer_data(11)
    with pytest.raises(SearchError, match="top_k"):
        search(query, gallery, 0)
    with pytest.raises(SearchError, match="exclude_index"):
        search(query, gallery, 2, exclude_index=np.zeros(3, np.int64))
    with pytest.raises(SearchError, match="exclude_index"):
        search(query, gallery, 2, exclude_index=np.full(len(query), len(gallery)))
    with pytest.raises(SearchError, match="together"):
        search(query, gallery, 2, query_cameras=np.zeros(len(query)))
