"""Averaging per-split evaluations: mean and std, per-split values kept, inconsistent inputs refused."""

from __future__ import annotations

import json

import numpy as np
import pytest

from components.common import storage
from components.evaluate.aggregate import AggregateError, aggregate_metrics, run
from components.evaluate.config import AggregateConfig


def _split_result(split: int, rank1: float, mAP: float, cmc_first: float) -> dict:
    return {
        "rank1": rank1,
        "rank5": 0.8,
        "rank10": 0.9,
        "rank20": 1.0,
        "mAP": mAP,
        "mAP_trapezoid": mAP - 0.1,
        "mINP": mAP - 0.2,
        "num_queries": 89,
        "cmc": [cmc_first] + [1.0] * 19,
        "split": split,
        "protocol": "splits",
        "direction": "forward",
        "dataset": "prid2011",
    }


def test_mean_std_and_per_split_values() -> None:
    results = [_split_result(2, 0.6, 0.7, 0.6), _split_result(0, 0.8, 0.9, 0.8)]
    agg = aggregate_metrics(results)
    assert agg["rank1"] == pytest.approx(0.7) and agg["rank1_std"] == pytest.approx(0.1)
    assert agg["mAP"] == pytest.approx(0.8) and agg["mAP_trapezoid"] == pytest.approx(0.7)
    assert agg["rank5_std"] == 0.0
    assert agg["cmc"][0] == pytest.approx(0.7) and agg["cmc_std"][0] == pytest.approx(0.1)
    assert [s["split"] for s in agg["per_split"]] == [0, 2]  # sorted by split
    assert [s["rank1"] for s in agg["per_split"]] == [0.8, 0.6]
    assert (agg["num_splits"], agg["protocol"], agg["dataset"]) == (2, "splits", "prid2011")
    assert agg["mean_num_queries"] == 89


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"split": 0}, "a split appears twice"),
        ({"direction": "reverse"}, "mix direction"),
        ({"cmc": [1.0] * 30}, "differ in length"),
        ({"mAP": None}, None),
    ],
)
def test_inconsistent_inputs(change: dict, message: str | None) -> None:
    second = {**_split_result(1, 0.5, 0.5, 0.5), **change}
    if message is None:
        del second["mAP"]
        message = "input 1: missing mAP"
    with pytest.raises(AggregateError, match=message):
        aggregate_metrics([_split_result(0, 0.5, 0.5, 0.5), second])


def test_run_reads_files_and_directories(tmp_path) -> None:
    inputs = []
    for split in range(3):
        directory = tmp_path / f"split{split}"
        storage.write_json(str(directory / "metrics.json"), _split_result(split, 0.5 + 0.1 * split, 0.6, 0.5))
        inputs.append(str(directory) if split else str(directory / "metrics.json"))
    summary = run(AggregateConfig(inputs=tuple(inputs), output=str(tmp_path / "agg"), mlflow_tracking_uri=""))
    written = json.loads((tmp_path / "agg" / "metrics.json").read_text())
    assert written["rank1"] == pytest.approx(0.6) and written["num_splits"] == 3
    assert summary["percent"]["rank1"] == pytest.approx(60.0)
    assert summary["percent_std"]["rank1"] == pytest.approx(100 * np.std([0.5, 0.6, 0.7]), abs=0.01)
    assert (tmp_path / "agg" / "cmc.png").read_bytes()[:4] == b"\x89PNG"


def test_run_missing_input_is_an_error(tmp_path) -> None:
    with pytest.raises(storage.StorageError, match="nope/metrics.json"):
        run(AggregateConfig(inputs=(str(tmp_path / "nope"),), output=str(tmp_path / "agg")))
    assert not (tmp_path / "agg" / "metrics.json").exists()


def test_config_builds_cli_flags() -> None:
    # `dal aggregate` gets its flags from the config like every step (inputs: one or more URIs).
    import argparse

    from components.common.config import ConfigError, add_arguments, from_args

    parser = argparse.ArgumentParser()
    add_arguments(parser, AggregateConfig)
    config = from_args(
        AggregateConfig, parser.parse_args(["--inputs", "a/metrics.json", "b", "--output", "o"])
    )
    assert config.inputs == ("a/metrics.json", "b") and config.output == "o"
    with pytest.raises(ConfigError, match="inputs: lists a URI twice"):
        AggregateConfig(inputs=("a", "a"), output="o")


def test_other_numbers_every_split_reports_are_averaged_too() -> None:
    results = [_split_result(0, 0.6, 0.7, 0.6), _split_result(1, 0.8, 0.9, 0.8)]
    results[0]["tpr_at_fpr_0.01"], results[1]["tpr_at_fpr_0.01"] = 0.5, 0.7
    results[0]["only_here"] = 1.0  # not in every split: not averaged
    results[0]["num_genuine_pairs"], results[1]["num_genuine_pairs"] = 80, 90  # a count, no metric
    agg = aggregate_metrics(results)
    assert agg["tpr_at_fpr_0.01"] == pytest.approx(0.6) and agg["tpr_at_fpr_0.01_std"] == pytest.approx(0.1)
    assert "only_here" not in agg and "split_std" not in agg
    assert agg["mean_num_genuine_pairs"] == 85 and "num_genuine_pairs" not in agg
    assert "num_genuine_pairs_std" not in agg


SKIPPED = {
    "evaluated": False,
    "note": "protocol labelled: no labelled test tracklets",
    "dataset": "tracklets",
}


def test_skipped_evaluations_aggregate_to_their_note(tmp_path) -> None:
    storage.write_json(str(tmp_path / "e0" / "metrics.json"), {**SKIPPED, "split": 0})
    summary = run(AggregateConfig(inputs=(str(tmp_path / "e0"),), output=str(tmp_path / "agg")))
    assert summary["evaluated"] is False and summary["metrics"] == {} and summary["note"] == SKIPPED["note"]
    written = json.loads((tmp_path / "agg" / "metrics.json").read_text())
    assert written == {**SKIPPED, "num_splits": 1}
    assert not (tmp_path / "agg" / "cmc.png").exists()


def test_skipped_and_scored_splits_do_not_mix() -> None:
    with pytest.raises(AggregateError, match="was not evaluated but other splits were"):
        aggregate_metrics([{**SKIPPED, "split": 1}, _split_result(0, 0.6, 0.7, 0.6)], ["a", "b"])
