"""Benchmark of the ranking metrics at MARS scale: the fast path against a per-query NumPy loop.

    .venv/bin/python scripts/bench_evaluate.py            # 1,980 queries x 12,180 gallery, D = 1,024
    .venv/bin/python scripts/bench_evaluate.py --quick    # a smaller problem, a few seconds

Uses the real MARS query/gallery structure (person ids, cameras, query_IDX) when the DAL
reference data is present (``--reference-dir``, default ../shared/data/dal-reference), else a
random structure of the same size. Features are random: one direction per person plus noise,
L2-normalised. Timings are the best of ``--repeat`` runs; the loop (one stable argsort per query,
as torchreid / the MATLAB code) runs on ``--loop-queries`` queries and is extrapolated. The script
fails (exit 1) if the fast path and the loop disagree on any of those queries.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import time
import tracemalloc
from collections.abc import Callable
from pathlib import Path

import numpy as np

from components.evaluate import metrics as M

REPO = Path(__file__).resolve().parents[1]


def _structure(args: argparse.Namespace, rng: np.random.Generator):
    info_dir = Path(args.reference_dir) / "info"
    if not args.random_structure and (info_dir / "query_IDX.mat").is_file():
        from components.ingest.datasets.reference import load_mars_info

        info = load_mars_info(info_dir)
        g_pids, g_cams, queries = info.test[:, 2], info.test[:, 3] - 1, info.query_rows
        if args.quick:  # keep whole persons so every kept query still has its matches
            kept = np.isin(g_pids, np.unique(g_pids)[: len(np.unique(g_pids)) // 4])
            index = np.flatnonzero(kept)
            queries = np.flatnonzero(np.isin(index, queries))
            g_pids, g_cams = g_pids[index], g_cams[index]
        return "MARS (real query/gallery structure)", g_pids, g_cams, queries
    num_gallery = args.num_gallery // (4 if args.quick else 1)
    num_query = args.num_query // (4 if args.quick else 1)
    g_pids = rng.integers(1, max(2, num_gallery // 12), num_gallery)
    special = rng.random(num_gallery)
    g_pids[special < 0.27] = 0  # distractors, as MARS's share
    g_pids[special < 0.07] = -1  # junk
    g_cams = rng.integers(0, 6, num_gallery)
    candidates = np.flatnonzero(g_pids > 0)
    queries = np.sort(rng.choice(candidates, min(num_query, len(candidates)), replace=False))
    return "random structure", g_pids, g_cams, queries


def _best(fn: Callable[[], object], repeat: int) -> tuple[float, object]:
    best, result = float("inf"), None
    for _ in range(repeat):
        start = time.perf_counter()
        result = fn()
        best = min(best, time.perf_counter() - start)
    return best, result


def _peak_mib(fn: Callable[[], object]) -> float:
    """Peak of NumPy allocations (NumPy reports them to tracemalloc) while ``fn`` runs."""
    tracemalloc.start()
    try:
        fn()
        return tracemalloc.get_traced_memory()[1] / 2**20
    finally:
        tracemalloc.stop()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="a quarter of the problem, fewer repeats")
    parser.add_argument("--num-query", type=int, default=1980)
    parser.add_argument("--num-gallery", type=int, default=12180)
    parser.add_argument("--dim", type=int, default=1024)
    parser.add_argument("--loop-queries", type=int, default=200, help="queries timed with the per-query loop")
    parser.add_argument("--chunk-size", type=int, default=M.DEFAULT_CHUNK)
    parser.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)))
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--reference-dir", default=str(REPO.parent / "shared" / "data" / "dal-reference"))
    parser.add_argument("--random-structure", action="store_true", help="ignore the real MARS structure")
    parser.add_argument(
        "--noise", type=float, default=2.5, help="feature noise at D = 256, scaled by (D / 256) ** 0.25"
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--output", default=str(REPO / "work" / "bench" / "evaluate.json"))
    args = parser.parse_args(argv)
    repeat = 1 if args.quick else args.repeat
    dim = args.dim // (4 if args.quick else 1)
    rng = np.random.default_rng(args.seed)

    label, g_pids, g_cams, queries = _structure(args, rng)
    persons = np.unique(g_pids)
    noise = args.noise * (dim / 256) ** 0.25  # about the same difficulty at any feature size
    directions = rng.normal(size=(len(persons), dim)).astype(np.float32)
    gallery = directions[np.searchsorted(persons, g_pids)] + noise * rng.normal(
        size=(len(g_pids), dim)
    ).astype(np.float32)
    gallery /= np.linalg.norm(gallery, axis=1, keepdims=True)
    q_feats, q_pids, q_cams = gallery[queries], g_pids[queries], g_cams[queries]
    ids = (q_pids, g_pids, q_cams, g_cams)
    num_q, num_g = len(queries), len(g_pids)
    print(f"{label}: {num_q} queries x {num_g} gallery, D = {dim}")
    print(f"threads = {args.threads}, chunk = {args.chunk_size} queries, noise = {noise:.2f}")

    t_dist, distmat = _best(lambda: M.pairwise_distances(q_feats, gallery), repeat)
    t_rank1, fast = _best(
        lambda: M.evaluate_rank(distmat, *ids, chunk_size=args.chunk_size, per_query=True), repeat
    )
    t_rank_t, _ = _best(
        lambda: M.evaluate_rank(distmat, *ids, chunk_size=args.chunk_size, workers=args.threads), repeat
    )
    t_feat, chunked = _best(
        lambda: M.evaluate_features(q_feats, gallery, *ids, chunk_size=args.chunk_size, workers=args.threads),
        repeat,
    )
    sample = np.arange(min(args.loop_queries, num_q))
    t_loop, loop = _best(
        lambda: M.evaluate_rank_loop(
            distmat[sample], q_pids[sample], g_pids, q_cams[sample], g_cams, per_query=True
        ),
        1,
    )
    t_loop_all = t_loop * num_q / len(sample)

    disagree = 0
    for key in ("ap", "ap_trapezoid", "inp", "first_rank"):
        a, b = fast["per_query"][key][sample], loop["per_query"][key]
        disagree += int(np.sum(~np.isclose(a, b, rtol=1e-9, atol=1e-12, equal_nan=True)))

    flat_fast, flat_chunked = M.flat_metrics(fast), M.flat_metrics(chunked)
    disagree += sum(not np.isclose(flat_fast[k], flat_chunked[k], rtol=1e-6) for k in flat_fast)

    peak_features = _peak_mib(
        lambda: M.evaluate_features(q_feats, gallery, *ids, chunk_size=args.chunk_size, workers=args.threads)
    )
    full_matrix = num_q * num_g * 4 / 2**20

    rows = [
        ("distance matrix (one float32 matmul)", t_dist),
        ("rank from distmat, fast, 1 thread", t_rank1),
        (f"rank from distmat, fast, {args.threads} threads", t_rank_t),
        (f"features -> metrics, chunked, {args.threads} threads", t_feat),
        (f"rank from distmat, per-query loop (x{num_q / len(sample):.1f} of {len(sample)})", t_loop_all),
    ]
    print(f"\n{'step':<58} {'seconds':>9} {'vs loop':>8}")
    for name, seconds in rows:
        speedup = f"{t_loop_all / seconds:.1f}x" if name.startswith("rank") else "-"
        print(f"{name:<58} {seconds:>9.3f} {speedup:>8}")
    print(f"\nrank-1 {100 * fast['rank1']:.2f} %, mAP {100 * fast['mAP']:.2f} %, "
          f"mAP (trapezoid) {100 * fast['mAP_trapezoid']:.2f} %, queries without match "
          f"{fast['num_queries_without_match']}")  # fmt: skip
    print(f"peak NumPy memory of the chunked features path: {peak_features:.0f} MiB "
          f"(the full distance matrix alone: {full_matrix:.0f} MiB)")  # fmt: skip
    print(f"process peak RSS: {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB")
    verdict = "agree" if not disagree else f"{disagree} DIFFERENCES"
    print(f"fast path vs loop on {len(sample)} queries, distmat vs chunked features path: {verdict}")
    record = {
        "structure": label,
        "num_queries": num_q,
        "num_gallery": num_g,
        "dim": dim,
        "threads": args.threads,
        "quick": args.quick,
        "seconds": dict(zip(("distmat", "rank_1_thread", "rank_threads", "features_chunked", "loop"),
                            (t_dist, t_rank1, t_rank_t, t_feat, t_loop_all), strict=True)),
        "loop_queries_timed": len(sample),
        "speedup_over_loop": t_loop_all / t_rank_t,
        "peak_features_mib": peak_features,
        "agree": not disagree,
        "metrics": {k: flat_fast[k] for k in M.METRIC_KEYS},
    }  # fmt: skip
    output = Path(args.output)
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(record, indent=2, sort_keys=True) + "\n")
    print(f"wrote {output}")
    return 1 if disagree else 0


if __name__ == "__main__":
    sys.exit(main())
