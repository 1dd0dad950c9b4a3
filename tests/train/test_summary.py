"""The train summary: one typed record, the same in memory, in summary.json and on stdout."""

from __future__ import annotations

import dataclasses

import pytest

from components.common.errors import DalError
from components.train.summary import SUMMARY_FILE, TrainSummary

SUMMARY = TrainSummary(
    steps=6,
    resumed_from="",
    objective="dal",
    optimizer="rmsprop",
    lr=0.045,
    warmup_steps=2,
    final={"loss": 1.25, "lr": 0.045},
    model_uri="run/model.pt",
    initial_model_uri="run/initial.pt",
    mlflow_model_uri="",
    mlflow_run_id="",
    checkpoint="run/checkpoints/step-000006.pt",
    eval_history=[{"step": 0, "eval_rank1": 0.25}],
)


def test_round_trip_through_storage(tmp_path) -> None:
    SUMMARY.write(str(tmp_path))
    assert (tmp_path / SUMMARY_FILE).exists()
    assert TrainSummary.read(str(tmp_path)) == SUMMARY
    assert TrainSummary.from_json(SUMMARY.to_json()) == SUMMARY


def test_a_record_that_is_not_a_summary_is_refused(tmp_path) -> None:
    record = SUMMARY.to_json()
    del record["steps"]
    with pytest.raises(DalError, match=r"x\.json: not a train summary \(missing \['steps'\], unknown \[\]\)"):
        TrainSummary.from_json(record, "x.json")
    with pytest.raises(DalError, match=r"unknown \['extra'\]"):
        TrainSummary.from_json({**SUMMARY.to_json(), "extra": 1})
    assert dataclasses.is_dataclass(SUMMARY) and SUMMARY.__dataclass_params__.frozen
