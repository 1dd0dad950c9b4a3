"""``scripts/bench_train.py --quick`` for a couple of rounds: the JSON holds the raw step times and
the figures checked are the ones those times give; bench_table turns it into its two rows.
(Timings themselves are not asserted: they say nothing on a shared CI machine.)"""

from __future__ import annotations

import json

import numpy as np

from scripts import bench_table, bench_train


def test_quick_run_writes_figures_that_follow_from_its_timings(tmp_path, capsys) -> None:
    output = tmp_path / "train.json"
    assert bench_train.main(["--quick", "--rounds", "3", "--workers", "0", "--output", str(output)]) == 0
    printed = capsys.readouterr().out
    assert "association overhead:" in printed and "noise floor, A/A" in printed
    r = json.loads(output.read_text())
    assert r["settings"]["preset"] == "quick" and r["settings"]["rounds"] == 3
    assert r["settings"]["backbone"] == "timm:test_resnet" and r["settings"]["weights"] == "random"
    steps = {k: np.array(v) for k, v in r["step_seconds"].items()}
    assert set(steps) == {"none", "control", "dal"} and all(
        len(v) == 3 and (v > 0).all() for v in steps.values()
    )
    calls = {k: np.array(v) for k, v in r["objective_call_seconds"].items()}
    association = float(calls["dal"].min() - calls["dummy"].min())
    assert r["association_ms_per_step"] == association * 1e3
    assert r["association_overhead"] == association / min(
        float(steps["none"].min()), float(steps["control"].min())
    )
    from_steps = float(np.median(steps["dal"] / ((steps["none"] + steps["control"]) / 2) - 1))
    assert r["association_overhead_from_steps"] == from_steps
    assert r["noise_floor"] == float(np.median(steps["control"] / steps["none"] - 1))
    assert r["subnormal_entries"] == {"feature_gradient": 0, "objective_state": 0}
    assert r["frames_per_s"]["step_dal"] == 64 / steps["dal"].min()
    assert r["loader_step_ratio"] == r["frames_per_s"]["loader_0_workers"] / r["frames_per_s"]["step_dal"]
    assert r["goals"] == {"association_overhead_max": 0.03, "loader_step_ratio_min": 3.0}
    assert r["pass"] == {
        "association_overhead": r["association_overhead"] <= 0.03,
        "loader_step_ratio": r["loader_step_ratio"] >= 3.0,
    }

    rows, _ = bench_table.collect(tmp_path)
    assert [row.figure for row in rows] == [
        "association overhead, timm:test_resnet 64x32 (random), batch 64, 64 anchors",
        "loader, timm:test_resnet 64x32 (random), batch 64, 64 anchors",
    ]
    assert rows[0].met is r["pass"]["association_overhead"] and rows[1].met is r["pass"]["loader_step_ratio"]
    assert rows[0].ratio == f"{100 * r['association_overhead']:.1f} %" and rows[0].goal == "<= 3 %"
    assert r["fastest_step_ms_without_association"] == 1e3 * min(min(steps["none"]), min(steps["control"]))
    assert rows[0].measured == f"{r['association_ms_per_step']:.2f} ms per step"
    fastest = r["fastest_step_ms_without_association"]
    assert rows[0].anchor.startswith(f"fastest step without it {fastest:.0f} ms (whole steps ")
