"""k-reciprocal re-ranking at MARS scale: ``components.evaluate.rerank.k_reciprocal_distances``
against the authors' algorithm (``reference_re_ranking`` below), speed, peak memory, agreement.

    .venv/bin/python scripts/bench_rerank.py            # 1,980 queries x 12,180 gallery, D = 1,024
    .venv/bin/python scripts/bench_rerank.py --quick    # 198 x 1,218, D = 256: seconds
    .venv/bin/python scripts/bench_rerank.py --reference-rows 5000   # reference on a smaller instance

Data (``mars_like``): seeded synthetic tracklet features, L2-normalised float32, clustered by
identity (about 20 gallery tracklets per person over 6 cameras, a camera bias, distractors with
person id 0 and junk with -1); the queries are copies of gallery tracklets, so each query is also
in the gallery, as under the MARS protocol. k1 = 20, k2 = 6, lambda = 0.3.

The parent generates the data once (``.npy`` files); each method then runs in a fresh Python
process (``--worker``) that loads them, times only the re-ranking (wall clock and the process's
CPU time, all threads) and reports its peak resident memory (``VmHWM`` of /proc/self/status: the
whole process, Python, NumPy and the features included; the peak before the timed call is reported
beside it). The reference's time includes building its n x n squared-distance matrix with
``rerank.full_squared_distances`` (the same blocks and worker threads as ours: ours computes its
distances too). The reference is the authors' algorithm in NumPy (torchreid's ``re_ranking``:
per-row loops, float32, n x n matrices; stable argsort), the oracle of
``tests/evaluate/test_rerank.py``. Goals: at least 20x faster (wall clock), at most 2 GiB peak.
On a shared machine the timings swing with the other load: compare within one run.

With ``--reference-rows N`` the reference (and ours again, for the agreement) runs on a smaller
instance of about N rows made the same way, and its full-size time is extrapolated from its
timed phases: the n^2 phases (distance matrix, scaling, query expansion, inverted index, Jaccard)
by (n / N)^2, the argsort by (n / N)^2 log n / log N, the per-row k-reciprocal loop by n / N; its
memory as the resident size before the call plus 24 bytes per n^2 (its n x n arrays alive at the
argsort: measured 4.81 GB at full size). The JSON says which numbers are measured, which extrapolated.

Agreement: ours against the reference on the instance the reference ran on: the largest absolute
difference of the distances (<= 1e-5, see the tolerance argument in ``rerank``), the same ranking
per query up to swaps of entries whose reference distances differ by less than that tolerance, and
the same ``evaluate_rank`` metrics. Prints a table and writes a JSON (``--output``); exits 1 when
the agreement fails (speed and memory goals are reported as pass/fail fields, not exit codes).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import scipy

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # run as a script from anywhere
    sys.path.insert(0, str(REPO))

from components.evaluate.metrics import METRIC_KEYS, evaluate_rank, pairwise_distances  # noqa: E402
from components.evaluate.rerank import DISTANCE_BLOCK, full_squared_distances, k_reciprocal_distances  # noqa: E402

MARS_QUERIES, MARS_GALLERY, MARS_DIM = 1980, 12180, 1024
K1, K2, LAMBDA = 20, 6, 0.3
TOLERANCE = 1e-5
SPEEDUP_GOAL = 20.0
# The reference's peak: the n x n float32 input, its scaled copy, V, and argsort's int64 result with
# its int32 copy, alive together (4 + 4 + 4 + 8 + 4 bytes); 4.81 GB measured at MARS's n = 14,160.
REFERENCE_BYTES_PER_PAIR = 24
MEMORY_GOAL_BYTES = 2 * 1024**3
CAMERAS = 6


# -- data ----------------------------------------------------------------------------------------
def mars_like(
    num_queries: int,
    num_gallery: int,
    dim: int,
    seed: int = 0,
    noise: float = 1.4,
    per_person: int = 20,
    latent: int = 48,
) -> dict[str, np.ndarray]:
    """Synthetic MARS-like features (module docstring): ``query``, ``gallery`` (float32, unit rows)
    and ``q_pids``, ``g_pids``, ``q_cams``, ``g_cams`` (int64). Queries are copies of gallery rows.

    Identity centres, camera biases and tracklet noise live in a ``latent``-dimensional subspace
    (real features are far from isotropic), embedded in ``dim`` dimensions with a little
    isotropic noise, so that the difficulty hardly depends on ``dim``."""
    rng = np.random.default_rng(seed)
    r = min(latent, dim)
    num_people = max(2, num_gallery // per_person)
    kind = rng.random(num_gallery)
    g_pids = rng.integers(1, num_people + 1, num_gallery)
    g_pids[kind < 0.07] = 0  # distractors
    g_pids[kind < 0.02] = -1  # junk
    g_cams = rng.integers(1, CAMERAS + 1, num_gallery)
    centres = rng.standard_normal((num_people + 1, r)) / math.sqrt(r)
    centre = centres[np.maximum(g_pids, 0)]
    lone = g_pids <= 0  # distractors and junk: each its own random "person"
    centre[lone] = rng.standard_normal((int(lone.sum()), r)) / math.sqrt(r)
    camera_bias = rng.standard_normal((CAMERAS, r)) * (0.4 / math.sqrt(r))
    spread = rng.standard_normal((num_gallery, r)) * (noise / math.sqrt(r))
    basis = np.linalg.qr(rng.standard_normal((dim, r)))[0].T  # (r, dim), orthonormal rows
    gallery = (centre + camera_bias[g_cams - 1] + spread) @ basis
    gallery += rng.standard_normal((num_gallery, dim)) * (0.2 / math.sqrt(dim))
    gallery = (gallery / np.linalg.norm(gallery, axis=1, keepdims=True)).astype(np.float32)
    # Queries: gallery tracklets of real people (one per person and camera first, as MARS picks).
    order = rng.permutation(np.flatnonzero(g_pids > 0))
    _, first = np.unique(g_pids[order] * (CAMERAS + 1) + g_cams[order], return_index=True)
    picked = np.r_[order[np.sort(first)], np.delete(order, first)]
    if num_queries > len(picked):
        raise ValueError(f"only {len(picked)} gallery rows can be queries, asked for {num_queries}")
    chosen = np.sort(picked[:num_queries])
    return {
        "query": np.ascontiguousarray(gallery[chosen]),
        "gallery": gallery,
        "q_pids": g_pids[chosen].astype(np.int64),
        "g_pids": g_pids.astype(np.int64),
        "q_cams": g_cams[chosen].astype(np.int64),
        "g_cams": g_cams.astype(np.int64),
    }


# -- the reference -------------------------------------------------------------------------------
def reference_re_ranking(
    squared_distances: np.ndarray,
    num_query: int,
    k1: int = K1,
    k2: int = K2,
    lambda_value: float = LAMBDA,
    timings: dict[str, float] | None = None,
) -> np.ndarray:
    """The authors' k-reciprocal re-ranking (zhunzhong07/person-re-ranking ``re_ranking``, as
    torchreid ships it), on the full (n, n) squared-distance matrix of query rows then gallery
    rows, instead of squaring distances itself; NumPy, float32, per-row loops as written there.
    The one change: the argsort is stable (ties to the lower index), as in ``rerank``.
    Returns the (Q, G) block. ``timings``, if given, gets the seconds of each phase."""
    clock = time.perf_counter()
    phases: dict[str, float] = {}

    def phase(name: str) -> None:
        nonlocal clock
        now = time.perf_counter()
        phases[name] = now - clock
        clock = now

    original_dist = np.transpose(squared_distances / np.max(squared_distances, axis=0))
    all_num = original_dist.shape[0]
    V = np.zeros_like(original_dist, dtype=np.float32)  # noqa: N806 (the paper's name)
    initial_rank = np.argsort(original_dist, axis=1, kind="stable").astype(np.int32)
    phase("scale_and_argsort")

    half = int(np.around(k1 / 2.0))
    for i in range(all_num):
        forward = initial_rank[i, : k1 + 1]
        backward = initial_rank[forward, : k1 + 1]
        k_reciprocal_index = forward[np.where(backward == i)[0]]
        expansion_index = k_reciprocal_index
        for candidate in k_reciprocal_index:
            candidate_forward = initial_rank[candidate, : half + 1]
            candidate_backward = initial_rank[candidate_forward, : half + 1]
            candidate_index = candidate_forward[np.where(candidate_backward == candidate)[0]]
            if len(np.intersect1d(candidate_index, k_reciprocal_index)) > 2.0 / 3 * len(candidate_index):
                expansion_index = np.append(expansion_index, candidate_index)
        expansion_index = np.unique(expansion_index)
        weight = np.exp(-original_dist[i, expansion_index])
        V[i, expansion_index] = weight / np.sum(weight)
    phase("k_reciprocal_sets")

    original_dist = original_dist[:num_query,]
    if k2 != 1:
        V_qe = np.zeros_like(V, dtype=np.float32)  # noqa: N806
        for i in range(all_num):
            V_qe[i, :] = np.mean(V[initial_rank[i, :k2], :], axis=0)
        V = V_qe  # noqa: N806
        del V_qe
    del initial_rank
    phase("query_expansion")

    inv_index = [np.where(V[:, i] != 0)[0] for i in range(all_num)]
    phase("inverted_index")

    jaccard_dist = np.zeros_like(original_dist, dtype=np.float32)
    for i in range(num_query):
        temp_min = np.zeros(shape=[1, all_num], dtype=np.float32)
        ind_non_zero = np.where(V[i, :] != 0)[0]
        ind_images = [inv_index[ind] for ind in ind_non_zero]
        for j in range(len(ind_non_zero)):
            temp_min[0, ind_images[j]] = temp_min[0, ind_images[j]] + np.minimum(
                V[i, ind_non_zero[j]], V[ind_images[j], ind_non_zero[j]]
            )
        jaccard_dist[i] = 1 - temp_min / (2.0 - temp_min)
    phase("jaccard")

    final_dist = jaccard_dist * (1 - lambda_value) + original_dist * lambda_value
    final_dist = final_dist[:num_query, num_query:]
    phase("combine")
    if timings is not None:
        timings.update(phases)
    return final_dist


# -- agreement -----------------------------------------------------------------------------------
def compare(
    ours: np.ndarray, reference: np.ndarray, ids: dict[str, np.ndarray], tolerance: float = TOLERANCE
) -> dict[str, Any]:
    """Distances within ``tolerance``; rankings equal up to swaps of entries whose reference
    distances differ by less than ``tolerance``; equal ``evaluate_rank`` metrics."""
    difference = np.abs(ours.astype(np.float64) - reference)
    ours_order = np.argsort(ours, axis=1, kind="stable")
    reference_order = np.argsort(reference, axis=1, kind="stable")
    rows, ranks = np.nonzero(ours_order != reference_order)
    gap = np.abs(
        reference[rows, ours_order[rows, ranks]].astype(np.float64)
        - reference[rows, reference_order[rows, ranks]]
    )
    wrong = gap >= tolerance
    args = (ids["q_pids"], ids["g_pids"], ids["q_cams"], ids["g_cams"])
    metrics_ours, metrics_reference = evaluate_rank(ours, *args), evaluate_rank(reference, *args)
    metric_gap = max(abs(metrics_ours[k] - metrics_reference[k]) for k in METRIC_KEYS)
    return {
        "max_abs_difference": float(difference.max()),
        "mean_abs_difference": float(difference.mean()),
        "tolerance": tolerance,
        "distances_within_tolerance": bool(difference.max() <= tolerance),
        "queries": int(len(ours)),
        "queries_with_identical_ranking": int(len(ours) - len(np.unique(rows))),
        "differing_ranks": int(len(rows)),
        "differing_ranks_beyond_tolerance": int(wrong.sum()),
        "same_ranking": bool(not wrong.any()),
        "metrics_ours": {k: metrics_ours[k] for k in METRIC_KEYS},
        "metrics_reference": {k: metrics_reference[k] for k in METRIC_KEYS},
        "max_metric_difference": float(metric_gap),
        "same_metrics": bool(metric_gap <= 1e-12),
    }


# -- workers -------------------------------------------------------------------------------------
def _maxrss_bytes() -> int:
    """Peak resident memory of this process: ``VmHWM`` (its own address space; ``ru_maxrss`` would
    also count the parent's resident size at the spawn), else ``ru_maxrss``."""
    with contextlib.suppress(OSError):
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024  # kB
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # kilobytes on Linux


def _cpu_seconds() -> float:
    """User + system CPU time of this process, all its threads."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def worker(method: str, folder: Path, block: int, threads: int) -> None:
    """Run one method in this fresh process on ``folder``'s query.npy / gallery.npy: the timed call
    and the peak memory; writes ``<method>.npy`` (the distances) and ``<method>.json``."""
    query, gallery = np.load(folder / "query.npy"), np.load(folder / "gallery.npy")
    record: dict[str, Any] = {"rss_before_bytes": _maxrss_bytes()}
    cpu_start = _cpu_seconds()
    start = time.perf_counter()
    if method == "ours":
        stats: dict[str, Any] = {}
        result = k_reciprocal_distances(
            query, gallery, K1, K2, LAMBDA, block=block, threads=threads, stats=stats
        )
        record["stats"] = stats
    else:
        timings: dict[str, float] = {}
        distances = full_squared_distances(np.concatenate([query, gallery]), block, threads)
        timings["distance_matrix"] = time.perf_counter() - start
        result = reference_re_ranking(distances, len(query), K1, K2, LAMBDA, timings)
        del distances
        record["phases"] = timings
    record["seconds"] = time.perf_counter() - start
    record["cpu_seconds"] = _cpu_seconds() - cpu_start
    record["peak_rss_bytes"] = _maxrss_bytes()
    np.save(folder / f"{method}.npy", result)
    (folder / f"{method}.json").write_text(json.dumps(record))


def run_worker(method: str, folder: Path, block: int, threads: int) -> tuple[dict[str, Any], np.ndarray]:
    command = [sys.executable, str(Path(__file__).resolve()), "--worker", method, "--block", str(block),
               "--threads", str(threads), "--output", str(folder)]  # fmt: skip
    subprocess.run(command, check=True, cwd=REPO)
    return json.loads((folder / f"{method}.json").read_text()), np.load(folder / f"{method}.npy")


def write_instance(sizes: dict[str, int], seed: int, folder: Path) -> dict[str, np.ndarray]:
    folder.mkdir(parents=True, exist_ok=True)
    data = mars_like(sizes["num_queries"], sizes["num_gallery"], sizes["dim"], seed)
    np.save(folder / "query.npy", data["query"])
    np.save(folder / "gallery.npy", data["gallery"])
    return data


def extrapolate(phases: dict[str, float], n_small: int, n_full: int) -> float:
    """Full-size seconds of the reference from its phases on n_small rows (module docstring)."""
    square = (n_full / n_small) ** 2
    scale = {
        "k_reciprocal_sets": n_full / n_small,
        "scale_and_argsort": square * math.log(n_full) / math.log(n_small),
    }
    return sum(seconds * scale.get(name, square) for name, seconds in phases.items())


# -- main ----------------------------------------------------------------------------------------
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="a tenth of MARS's sizes, D = 256")
    parser.add_argument("--num-queries", type=int, default=None)
    parser.add_argument("--num-gallery", type=int, default=None)
    parser.add_argument("--dim", type=int, default=None)
    parser.add_argument(
        "--reference-rows",
        type=int,
        default=0,
        help="run the reference on ~N rows and extrapolate (0: full size)",
    )
    parser.add_argument("--block", type=int, default=DISTANCE_BLOCK)
    parser.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--output", default=str(REPO / "work" / "bench" / "rerank.json"))
    parser.add_argument("--worker", choices=("ours", "reference"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    scale = 10 if args.quick else 1
    sizes = {
        "num_queries": args.num_queries or MARS_QUERIES // scale,
        "num_gallery": args.num_gallery or MARS_GALLERY // scale,
        "dim": args.dim or (256 if args.quick else MARS_DIM),
    }
    if args.worker:
        worker(args.worker, Path(args.output), args.block, args.threads)
        return 0
    return benchmark(args, sizes)


def benchmark(args: argparse.Namespace, sizes: dict[str, int]) -> int:
    n = sizes["num_queries"] + sizes["num_gallery"]
    subset = 0 < args.reference_rows < n
    small = dict(sizes)
    if subset:
        small["num_queries"] = max(1, round(sizes["num_queries"] * args.reference_rows / n))
        small["num_gallery"] = max(1, args.reference_rows - small["num_queries"])
    n_small = small["num_queries"] + small["num_gallery"]
    where = f"{small['num_queries']:,} x {small['num_gallery']:,} (n = {n_small:,}), extrapolated"
    print(
        f"{sizes['num_queries']:,} queries x {sizes['num_gallery']:,} gallery (n = {n:,}), "
        f"D = {sizes['dim']}, k1 = {K1}, k2 = {K2}, lambda = {LAMBDA}, {args.threads} threads; "
        f"reference on " + (where if subset else "the same")
    )
    with tempfile.TemporaryDirectory() as temporary:
        full_folder, small_folder = Path(temporary) / "full", Path(temporary) / "small"
        data = write_instance(sizes, args.seed, full_folder)
        ours, ours_result = run_worker("ours", full_folder, args.block, args.threads)
        print(f"  ours       {ours['seconds']:8.2f} s  peak {ours['peak_rss_bytes'] / 1e9:.2f} GB")
        ours_small = ours
        if subset:
            data = write_instance(small, args.seed, small_folder)
            ours_small, ours_result = run_worker("ours", small_folder, args.block, args.threads)
        reference_folder = small_folder if subset else full_folder
        reference, reference_result = run_worker("reference", reference_folder, args.block, args.threads)
        print(f"  reference  {reference['seconds']:8.2f} s  peak {reference['peak_rss_bytes'] / 1e9:.2f} GB"
              + (f" (n = {n_small:,})" if subset else ""))  # fmt: skip
    check = compare(ours_result, reference_result, data)
    if subset:
        reference_seconds = extrapolate(reference["phases"], n_small, n)
        reference_peak = ours["rss_before_bytes"] + REFERENCE_BYTES_PER_PAIR * n**2
    else:
        reference_seconds, reference_peak = reference["seconds"], reference["peak_rss_bytes"]
    speedup = reference_seconds / ours["seconds"]
    speed_ok, memory_ok = speedup >= SPEEDUP_GOAL, ours["peak_rss_bytes"] <= MEMORY_GOAL_BYTES
    agreement_ok = check["distances_within_tolerance"] and check["same_ranking"] and check["same_metrics"]
    how = "extrapolated" if subset else "measured"
    print(f"\n{'method':44s} {'seconds':>9s} {'CPU s':>9s} {'peak GB':>8s}")
    print(f"{'ours (rerank.k_reciprocal_distances)':44s} {ours['seconds']:9.2f} {ours['cpu_seconds']:9.2f} "
          f"{ours['peak_rss_bytes'] / 1e9:8.2f}")  # fmt: skip
    cpu = "" if subset else f"{reference['cpu_seconds']:9.2f}"
    label = f"reference (authors, NumPy), {how}"
    print(f"{label:44s} {reference_seconds:9.2f} {cpu:>9s} {reference_peak / 1e9:8.2f}")
    phases = ", ".join(f"{k} {v:.2f}" for k, v in reference["phases"].items())
    print(f"  reference phases (s, n = {n_small:,}): {phases}")
    print("  our phases (s): " + ", ".join(f"{k} {v:.2f}" for k, v in ours["stats"]["seconds"].items()))
    print(
        f"speed-up {speedup:.1f}x (goal >= {SPEEDUP_GOAL:g}x: {'pass' if speed_ok else 'FAIL'}), our peak "
        f"{ours['peak_rss_bytes'] / 2**30:.2f} GiB (goal <= 2 GiB: {'pass' if memory_ok else 'FAIL'})"
    )
    print(
        f"agreement (n = {n_small:,}): max |difference| {check['max_abs_difference']:.2e} "
        f"(<= {TOLERANCE:g}: {check['distances_within_tolerance']}), "
        f"{check['queries_with_identical_ranking']}/{check['queries']} identical rankings, "
        f"{check['differing_ranks_beyond_tolerance']} swaps beyond tolerance, same metrics: "
        f"{check['same_metrics']} (rank1 {check['metrics_ours']['rank1']:.4f}, "
        f"mAP {check['metrics_ours']['mAP']:.4f})"
    )
    args_ids = (data["q_pids"], data["g_pids"], data["q_cams"], data["g_cams"])
    baseline = evaluate_rank(pairwise_distances(data["query"], data["gallery"]), *args_ids)
    record = {
        "sizes": sizes,
        "n": n,
        "k1": K1,
        "k2": K2,
        "lambda": LAMBDA,
        "block": args.block,
        "threads": args.threads,
        "seed": args.seed,
        "memory_measure": "VmHWM of a fresh worker process (all of it: Python, NumPy, the features)",
        "ours": ours,
        "reference": {
            **reference,
            "sizes": small,
            "n": n_small,
            "full_size_seconds": reference_seconds,
            "full_size_peak_rss_bytes": reference_peak,
            "full_size": how,
        },
        "ours_on_reference_instance": ours_small,
        "speedup": speedup,
        "cpu_speedup": None if subset else reference["cpu_seconds"] / ours["cpu_seconds"],
        "speedup_goal": SPEEDUP_GOAL,
        "speedup_pass": bool(speed_ok),
        "memory_goal_bytes": MEMORY_GOAL_BYTES,
        "memory_pass": bool(memory_ok),
        "agreement": check,
        "agreement_pass": bool(agreement_ok),
        "metrics_without_rerank": {k: baseline[k] for k in METRIC_KEYS},  # on the agreement's instance
        "versions": {
            "python": platform.python_version(),
            "numpy": np.__version__,
            "scipy": scipy.__version__,
        },
        "cpu": platform.processor() or platform.machine(),
    }
    output = Path(args.output)
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(record, indent=2, sort_keys=True) + "\n")
    print(f"wrote {output}")
    return 0 if agreement_ok else 1


if __name__ == "__main__":
    sys.exit(main())
