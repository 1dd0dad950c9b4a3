"""Step runs in MLflow: params, config artifact, parent linking, status, no-tracking mode, the
experiment kind the UI opens with, and the dataset inputs."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from components.common.dataset import Dataset, manifest_digest
from components.common.tracking import (
    EXPERIMENT_KIND_TAG,
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


def test_experiments_open_as_model_training(store: str, tmp_path) -> None:
    client = MlflowClient(store)
    start_pipeline_run(store, "created", "job-1", "pipeline", {}, (tmp_path / "a").as_uri())
    with step_run("ingest", StepConfig(mlflow_tracking_uri=store, mlflow_experiment="by-step")):
        pass
    client.create_experiment("untagged", artifact_location=(tmp_path / "b").as_uri())
    start_pipeline_run(store, "untagged", "job-2", "pipeline", {})
    client.create_experiment("untagged-step", artifact_location=(tmp_path / "c").as_uri())
    with step_run("ingest", StepConfig(mlflow_tracking_uri=store, mlflow_experiment="untagged-step")):
        pass
    for name in ("created", "by-step", "untagged", "untagged-step"):
        assert client.get_experiment_by_name(name).tags[EXPERIMENT_KIND_TAG] == "custom_model_development", (
            name
        )
    # A kind someone chose stays.
    client.create_experiment(
        "genai", (tmp_path / "d").as_uri(), tags={EXPERIMENT_KIND_TAG: "genai_development"}
    )
    with step_run("ingest", StepConfig(mlflow_tracking_uri=store, mlflow_experiment="genai")):
        pass
    assert client.get_experiment_by_name("genai").tags[EXPERIMENT_KIND_TAG] == "genai_development"


def _written_dataset(root: Path) -> Dataset:
    from tests.train.test_support import Spec, write_dataset

    write_dataset(str(root), Spec(persons=2, cameras=2, frames=2, test_persons=1, height=16, width=8))
    return Dataset.open(str(root))


def test_dataset_inputs(store: str, tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    dataset = _written_dataset(tmp_path / "ds")
    monkeypatch.chdir(tmp_path)  # a relative root is recorded as an absolute path
    parent = start_pipeline_run(store, "exp", "job-1", "pipeline", {}, (tmp_path / "art").as_uri())
    config = StepConfig(mlflow_tracking_uri=store, mlflow_parent_run_id=parent)
    with step_run("train", config) as logger:
        logger.log_dataset(dataset.name, "ds", dataset.digest, "training")
        logger.log_dataset("mars", "s3://bucket/datasets/mars", "0123abcd", "evaluation")
    inputs = MlflowClient(store).get_run(logger.run_id).inputs.dataset_inputs
    logged = {i.dataset.name: i for i in inputs}
    assert set(logged) == {"synthetic", "mars"}
    local, remote = logged["synthetic"], logged["mars"]
    assert local.dataset.digest == dataset.digest and local.dataset.source_type == "local"
    assert json.loads(local.dataset.source) == {"uri": str(tmp_path / "ds")}
    assert {t.key: t.value for t in local.tags} == {"mlflow.data.context": "training"}
    assert remote.dataset.source_type == "s3" and json.loads(remote.dataset.source) == {
        "uri": "s3://bucket/datasets/mars"
    }
    assert {t.key: t.value for t in remote.tags} == {"mlflow.data.context": "evaluation"}


def test_dataset_digest_follows_the_manifest(tmp_path) -> None:
    dataset = _written_dataset(tmp_path / "ds")
    assert len(dataset.digest) == 8 and Dataset.open(dataset.root).digest == dataset.digest
    reordered = dict(reversed(list(dataset.manifest.items())))
    assert manifest_digest(reordered) == dataset.digest  # key order is not content
    changed = json.loads(json.dumps(dataset.manifest))
    changed["shards"][0]["sha256"] = "0" * 64
    assert manifest_digest(changed) != dataset.digest
