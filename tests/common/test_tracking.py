"""Step runs in MLflow: params, config artifact, parent linking, status, and no-tracking mode."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from components.common.tracking import (
    TrackingOptions,
    find_pipeline_run,
    finish_pipeline_run,
    start_pipeline_run,
    step_run,
)


@dataclasses.dataclass(frozen=True, kw_only=True)
class StepConfig(TrackingOptions):
    dataset: str = "d"
    steps: int = 3


@pytest.fixture
def store(tmp_path, monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    return f"sqlite:///{tmp_path / 'mlflow.db'}"


def test_child_run_under_pipeline_parent(store: str, tmp_path) -> None:
    parent = start_pipeline_run(store, "exp", "job-1", "pipeline", {"steps": 3}, (tmp_path / "art").as_uri())
    assert find_pipeline_run(store, "exp", "job-1") == parent
    config = StepConfig(
        mlflow_tracking_uri=store, mlflow_parent_run_id=parent, mlflow_run_name="train-split0"
    )
    with step_run("train", config, tags={"extra": 1}) as logger:
        logger.log_metrics({"loss": 1.5}, step=2)
    client = MlflowClient(store)
    run = client.get_run(logger.run_id)
    assert run.info.run_name == "train-split0" and run.info.status == "FINISHED"
    assert run.data.tags["mlflow.parentRunId"] == parent and run.data.tags["dal.step"] == "train"
    assert run.data.params == {"dataset": "d", "steps": "3"}  # no mlflow_* plumbing
    assert run.data.metrics == {"loss": 1.5}
    config_file = client.download_artifacts(run.info.run_id, "config.json", str(tmp_path))
    assert json.loads(Path(config_file).read_text()) == {"dataset": "d", "steps": 3}
    assert finish_pipeline_run(store, "exp", "job-1", succeeded=True) == parent
    assert client.get_run(parent).info.status == "FINISHED"


def test_failed_step_ends_failed(store: str) -> None:
    config = StepConfig(mlflow_tracking_uri=store)
    with pytest.raises(RuntimeError), step_run("ingest", config) as logger:
        raise RuntimeError("broken input")
    assert MlflowClient(store).get_run(logger.run_id).info.status == "FAILED"


def test_no_tracking_without_uri_and_on_other_ranks(store: str) -> None:
    with step_run("train", StepConfig()) as logger:  # no URI, no env: inert
        logger.log_metrics({"loss": 1.0})
        assert not logger.active and logger.run_id is None
    with step_run("train", StepConfig(mlflow_tracking_uri=store), enabled=False) as logger:
        assert not logger.active
