"""``scripts/bench_rerank.py --quick`` at a tiny size: both methods run in their own processes and
the JSON says they agree (timings and the speed goal are not asserted: they say nothing on a shared
CI machine)."""

from __future__ import annotations

import json

import numpy as np

from scripts import bench_rerank


def test_quick_run_writes_agreement(tmp_path) -> None:
    output = tmp_path / "rerank.json"
    code = bench_rerank.main(
        ["--quick", "--num-queries", "30", "--num-gallery", "220", "--dim", "32", "--block", "64",
         "--output", str(output)]
    )  # fmt: skip
    assert code == 0
    record = json.loads(output.read_text())
    assert record["sizes"] == {"num_queries": 30, "num_gallery": 220, "dim": 32} and record["n"] == 250
    assert record["reference"]["full_size"] == "measured" and record["reference"]["n"] == 250
    check = record["agreement"]
    assert check["distances_within_tolerance"] is True and check["max_abs_difference"] <= check["tolerance"]
    assert check["same_ranking"] is True and check["differing_ranks_beyond_tolerance"] == 0
    assert check["same_metrics"] is True and check["queries"] == 30
    assert record["agreement_pass"] is True
    for method in ("ours", "reference"):
        assert record[method]["seconds"] > 0 and record[method]["peak_rss_bytes"] > 0
    assert set(record["reference"]["phases"]) >= {"distance_matrix", "scale_and_argsort", "jaccard"}
    assert isinstance(record["speedup_pass"], bool) and isinstance(record["memory_pass"], bool)
    assert record["ours"]["stats"]["passes"] >= 1


def test_reference_on_a_smaller_instance_is_extrapolated(tmp_path) -> None:
    output = tmp_path / "rerank.json"
    code = bench_rerank.main(
        ["--quick", "--num-queries", "30", "--num-gallery", "220", "--dim", "32", "--reference-rows", "150",
         "--output", str(output)]
    )  # fmt: skip
    assert code == 0
    record = json.loads(output.read_text())
    reference = record["reference"]
    assert reference["full_size"] == "extrapolated" and reference["n"] == 150 and record["n"] == 250
    assert reference["full_size_seconds"] > reference["seconds"]
    assert record["ours_on_reference_instance"]["seconds"] > 0
    assert record["agreement"]["queries"] == reference["sizes"]["num_queries"] == 18
    assert record["agreement_pass"] is True


def test_a_disagreement_is_reported() -> None:
    data = bench_rerank.mars_like(8, 60, 16, seed=1)
    rng = np.random.default_rng(0)
    reference = rng.random((8, 60)).astype(np.float32)
    assert bench_rerank.compare(reference.copy(), reference, data)["same_ranking"] is True
    wrong = reference.copy()
    wrong[2, [3, 7]] = wrong[2, [7, 3]]  # two entries swapped: distances and ranking both off
    check = bench_rerank.compare(wrong, reference, data)
    assert not check["distances_within_tolerance"] and not check["same_ranking"]
    assert check["differing_ranks_beyond_tolerance"] >= 2
    nudged = reference + np.float32(2e-5)  # uniformly shifted: same ranking, distances off
    check = bench_rerank.compare(nudged, reference, data)
    assert not check["distances_within_tolerance"] and check["same_ranking"] and check["same_metrics"]
