"""Exact top-k search speed: ``components.search.ranking.search`` against faiss ``IndexFlatIP``.

    .venv/bin/python scripts/bench_search.py            # 1,000 queries x 1,000,000 gallery, D = 1,280
    .venv/bin/python scripts/bench_search.py --quick    # 1,000 x 50,000, one repeat: seconds

Queries and gallery are random unit vectors (normal, L2-normalised, float32); D defaults to the
default backbone's feature size (``components.model.catalog``: mobilenet_v2, 1,280), so the
gallery takes G x D x 4 bytes (5.1 GB at full size). It is generated in chunks straight into the
faiss index, and our search reads the index's own storage (no second copy). Both run exact
inner-product top-k with the same number of CPU threads (``torch.set_num_threads`` and
``faiss.omp_set_num_threads``), alternately ``--repeat`` times; the best time of each counts.

Both must return the same neighbours up to exact ties: where their rank lists differ, the
float64 scores of the two entries at each differing rank must agree within the float32 rounding
bound of a D-term dot product of unit vectors (``D * 2**-24``, the standard worst case); else
the script fails (exit 1). Prints a table and writes a JSON (``--output``).
Timings on a shared machine swing a lot: compare the ratio within one run, repeat runs.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import os
import platform
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # run as a script from anywhere
    sys.path.insert(0, str(REPO))

from components.model.catalog import BACKBONES  # noqa: E402
from components.search.ranking import (  # noqa: E402
    CPU_BLAS,
    DEFAULT_GALLERY_CHUNK,
    DEFAULT_QUERY_CHUNK,
    resolve_cpu_blas,
    search,
)
from components.train.config import TrainConfig  # noqa: E402

GENERATE_ROWS = 65_536  # gallery rows generated (and added to faiss) at a time


def default_dim() -> int:
    """The feature size of the default training backbone."""
    backbone = {f.name: f for f in dataclasses.fields(TrainConfig)}["backbone"].default
    return BACKBONES[backbone].feature_dim


def unit_rows(rng: np.random.Generator, rows: int, dim: int) -> np.ndarray:
    x = rng.standard_normal((rows, dim), dtype=np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    return x


def build(num_queries: int, num_gallery: int, dim: int, seed: int) -> tuple[np.ndarray, Any, np.ndarray]:
    """Queries, the faiss index holding the gallery, and a NumPy view of that same storage."""
    import faiss

    rng = np.random.default_rng(seed)
    queries = unit_rows(rng, num_queries, dim)
    index = faiss.IndexFlatIP(dim)
    for start in range(0, num_gallery, GENERATE_ROWS):
        index.add(unit_rows(rng, min(GENERATE_ROWS, num_gallery - start), dim))
    gallery = faiss.rev_swig_ptr(index.get_xb(), index.ntotal * dim).reshape(index.ntotal, dim)
    return queries, index, gallery


def compare(
    queries: np.ndarray,
    gallery: np.ndarray,
    ours: tuple[np.ndarray, np.ndarray],
    theirs: tuple[np.ndarray, np.ndarray],
) -> dict[str, Any]:
    """Same neighbours up to exact ties (module docstring); the differing ranks, counted."""
    dim = queries.shape[1]
    bound = dim * 2.0**-24  # |fl(q.g) - q.g| for unit q, g (Higham: gamma_D, to first order)
    ours_idx, theirs_idx = ours[1], theirs[1]
    rows, ranks = np.nonzero(ours_idx != theirs_idx)
    q64 = queries[rows].astype(np.float64)
    ours64 = np.einsum("ij,ij->i", q64, gallery[ours_idx[rows, ranks]].astype(np.float64))
    theirs64 = np.einsum("ij,ij->i", q64, gallery[theirs_idx[rows, ranks]].astype(np.float64))
    gap = np.abs(ours64 - theirs64)
    real = gap > 2 * bound  # each side's float32 score may be off by the bound
    return {
        "queries": int(len(ours_idx)),
        "queries_with_identical_lists": int(len(ours_idx) - len(np.unique(rows))),
        "differing_ranks": int(len(rows)),
        "differing_ranks_within_rounding": int((~real).sum()),
        "mismatches": int(real.sum()),
        "max_score_gap_at_differing_ranks": float(gap.max()) if len(gap) else 0.0,
        "rounding_bound": 2 * bound,
        "max_abs_score_difference": float(np.abs(ours[0].astype(np.float64) - theirs[0]).max()),
        "equal_neighbours": bool(real.sum() == 0),
    }


def blas_versions() -> list[dict[str, Any]]:
    from threadpoolctl import threadpool_info

    return [
        {k: info.get(k) for k in ("internal_api", "prefix", "version", "num_threads")}
        for info in threadpool_info()
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="1,000 x 50,000, one repeat")
    parser.add_argument("--num-queries", type=int, default=1000)
    parser.add_argument("--num-gallery", type=int, default=None, help="default 1,000,000 (50,000 quick)")
    parser.add_argument("--dim", type=int, default=None, help="default: the default backbone's feature size")
    parser.add_argument("--top-k", type=int, default=10)
    parser.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)))
    parser.add_argument("--query-chunk", type=int, default=DEFAULT_QUERY_CHUNK)
    parser.add_argument("--gallery-chunk", type=int, default=DEFAULT_GALLERY_CHUNK)
    parser.add_argument(
        "--cpu-blas", choices=CPU_BLAS, default="auto", help="whose BLAS runs our products (default: auto)"
    )
    parser.add_argument(
        "--repeat", type=int, default=None, help="alternating runs of each (default 3, quick 1)"
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--output", default=str(REPO / "work" / "bench" / "search.json"))
    args = parser.parse_args(argv)
    num_gallery = args.num_gallery or (50_000 if args.quick else 1_000_000)
    dim = args.dim or default_dim()
    repeat = args.repeat or (1 if args.quick else 3)

    with cpu_threads(args.threads):  # restored after: tests call main() in their own process
        return benchmark(args, num_gallery, dim, repeat)


@contextlib.contextmanager
def cpu_threads(threads: int) -> Iterator[None]:
    import faiss
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    faiss.omp_set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)
        faiss.omp_set_num_threads(before)


def benchmark(args: argparse.Namespace, num_gallery: int, dim: int, repeat: int) -> int:
    import faiss
    import torch

    print(
        f"{args.num_queries:,} queries x {num_gallery:,} gallery, D = {dim}, k = {args.top_k}, "
        f"{args.threads} threads, gallery {num_gallery * dim * 4 / 1e9:.2f} GB, "
        f"our products in {resolve_cpu_blas(args.cpu_blas)}'s BLAS"
    )
    started = time.perf_counter()
    queries, index, gallery = build(args.num_queries, num_gallery, dim, args.seed)
    print(f"generated in {time.perf_counter() - started:.1f} s")

    def ours() -> tuple[np.ndarray, np.ndarray]:
        return search(
            queries,
            gallery,
            args.top_k,
            query_chunk=args.query_chunk,
            gallery_chunk=args.gallery_chunk,
            threads=args.threads,
            cpu_blas=args.cpu_blas,
        )

    def theirs() -> tuple[np.ndarray, np.ndarray]:
        # torch and faiss share one OpenMP runtime here: set faiss's threads before each run.
        faiss.omp_set_num_threads(args.threads)
        return index.search(queries, args.top_k)

    times: dict[str, list[float]] = {"ours": [], "faiss": []}
    results: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    for _ in range(repeat):
        for name, fn in (("ours", ours), ("faiss", theirs)):
            start = time.perf_counter()
            results[name] = fn()
            times[name].append(time.perf_counter() - start)
            print(f"  {name:5s} {times[name][-1]:8.2f} s")
    check = compare(queries, gallery, results["ours"], results["faiss"])
    best = {name: min(values) for name, values in times.items()}
    ratio = best["ours"] / best["faiss"]
    print(f"\n{'method':28s} {'seconds':>9s} {'queries/s':>10s} {'ours/faiss':>11s}")
    for name, label in (("ours", "dal search (torch + BLAS)"), ("faiss", "faiss IndexFlatIP")):
        print(
            f"{label:28s} {best[name]:9.2f} {args.num_queries / best[name]:10.1f} "
            f"{best[name] / best['faiss']:11.2f}"
        )
    print(
        f"neighbours: {check['queries_with_identical_lists']}/{check['queries']} identical rank lists, "
        f"{check['differing_ranks_within_rounding']} differing ranks within rounding (ties), "
        f"{check['mismatches']} mismatches"
    )
    record = {
        "num_queries": args.num_queries,
        "num_gallery": num_gallery,
        "dim": dim,
        "top_k": args.top_k,
        "threads": args.threads,
        "query_chunk": args.query_chunk,
        "gallery_chunk": args.gallery_chunk,
        "cpu_blas": resolve_cpu_blas(args.cpu_blas),
        "repeat": repeat,
        "seconds": times,
        "best_seconds": best,
        "queries_per_s": {name: args.num_queries / value for name, value in best.items()},
        "ratio_ours_over_faiss": ratio,
        "neighbours": check,
        "versions": {
            "python": platform.python_version(),
            "numpy": np.__version__,
            "torch": torch.__version__,
            "faiss": faiss.__version__,
            "blas": blas_versions(),
        },
        "cpu": platform.processor() or platform.machine(),
    }
    output = Path(args.output)
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(record, indent=2, sort_keys=True) + "\n")
    print(f"wrote {output}")
    return 0 if check["equal_neighbours"] else 1


if __name__ == "__main__":
    sys.exit(main())
