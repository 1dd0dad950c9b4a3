"""``scripts/bench_search.py --quick`` at a tiny size: it runs both searches and writes its JSON
with equal neighbours (timings are not asserted: they say nothing on a shared CI machine)."""

from __future__ import annotations

import json

from scripts import bench_search


def test_quick_run_writes_equal_neighbours(tmp_path) -> None:
    output = tmp_path / "search.json"
    code = bench_search.main(
        ["--quick", "--num-queries", "37", "--num-gallery", "3001", "--dim", "48", "--gallery-chunk", "500",
         "--query-chunk", "16", "--threads", "1", "--output", str(output)]
    )  # fmt: skip
    assert code == 0
    record = json.loads(output.read_text())
    assert (record["num_queries"], record["num_gallery"], record["dim"], record["top_k"]) == (
        37,
        3001,
        48,
        10,
    )
    check = record["neighbours"]
    assert check["equal_neighbours"] is True and check["mismatches"] == 0 and check["queries"] == 37
    assert check["max_abs_score_difference"] <= check["rounding_bound"]
    assert set(record["best_seconds"]) == {"ours", "faiss"} and record["repeat"] == 1
    assert record["ratio_ours_over_faiss"] > 0 and record["cpu_blas"] in ("torch", "numpy")


def test_a_wrong_neighbour_is_reported() -> None:
    import numpy as np

    rng = np.random.default_rng(0)
    queries, gallery = bench_search.unit_rows(rng, 3, 8), bench_search.unit_rows(rng, 50, 8)
    scores = queries @ gallery.T
    order = np.argsort(-scores, axis=1, kind="stable")[:, :4]
    ours = (np.take_along_axis(scores, order, 1), order)
    wrong = order.copy()
    wrong[1, 0] = order[1, 3]  # a clearly worse entry at rank 1
    check = bench_search.compare(queries, gallery, ours, (ours[0], wrong))
    assert check["mismatches"] >= 1 and not check["equal_neighbours"]
    assert bench_search.compare(queries, gallery, ours, ours)["equal_neighbours"]
