"""Layer 1: the KFP components' Python functions, called directly on tiny synthetic data."""

from __future__ import annotations

import json
import os

import pytest
from kfp import dsl

from components.common import storage
from components.common.dataset import Dataset
from components.evaluate.component import aggregate, evaluate
from components.extract.component import extract
from components.ingest.component import ingest, plan_splits, prepare_source
from components.tracking.component import finish_run, register_model, start_run
from components.train.component import train

NO_TRACKING = {"mlflow_tracking_uri": "", "mlflow_experiment": "dal", "mlflow_parent_run_id": ""}


def _artifact(cls: type, tmp_path, name: str) -> dsl.Artifact:
    return cls(name=name, uri=str(tmp_path / "artifacts" / name), metadata={})


@pytest.fixture(autouse=True)
def _no_env_tracking(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("DAL_STORE", raising=False)


@pytest.fixture(scope="module")
def ingested_prid(tmp_path_factory: pytest.TempPathFactory) -> tuple[dsl.Dataset, str]:
    root = tmp_path_factory.mktemp("store")
    source = prepare_source.python_func(
        dataset="prid2011", source_uri="", storage_root=str(root), synthetic_identities=6, seed=3
    )
    artifact = dsl.Dataset(name="ingested", uri=str(root / "artifacts" / "ingested"), metadata={})
    ingest.python_func(
        dataset="prid2011",
        source=source,
        split_lists="",
        storage_root=str(root),
        ingested=artifact,
        **NO_TRACKING,
    )
    return artifact, str(root)


def test_prepare_source_passes_a_given_uri_and_reuses_a_generated_one(tmp_path) -> None:
    given = prepare_source.python_func(
        dataset="mars",
        source_uri="s3://bucket/MARS",
        storage_root=str(tmp_path),
        synthetic_identities=4,
        seed=0,
    )
    assert given == "s3://bucket/MARS"
    first = prepare_source.python_func(
        dataset="mars", source_uri="", storage_root=str(tmp_path), synthetic_identities=4, seed=0
    )
    assert os.path.isdir(os.path.join(first, "bbox_train"))
    marker = os.path.join(first, "synth.json")
    stamp = os.stat(marker).st_mtime_ns
    again = prepare_source.python_func(
        dataset="mars", source_uri="", storage_root=str(tmp_path), synthetic_identities=4, seed=0
    )
    assert again == first and os.stat(marker).st_mtime_ns == stamp  # not generated twice


def test_prepare_source_uploads_a_generated_source_to_s3(s3_bucket: str) -> None:
    uri = prepare_source.python_func(
        dataset="ilidsvid", source_uri="", storage_root=s3_bucket, synthetic_identities=3, seed=1
    )
    assert uri.startswith(s3_bucket)
    files = storage.list_files(uri)
    assert storage.join(uri, "synth.json") in files
    assert any("/sequences/cam2/person" in f and f.endswith(".png") for f in files)


def test_storage_root_falls_back_to_env_and_fails_clearly_without(monkeypatch, tmp_path) -> None:
    from components.common.errors import DalError

    with pytest.raises(DalError, match="storage_root"):
        prepare_source.python_func(
            dataset="mars", source_uri="", storage_root="", synthetic_identities=3, seed=0
        )
    monkeypatch.setenv("DAL_STORE", str(tmp_path))
    uri = prepare_source.python_func(
        dataset="mars", source_uri="", storage_root="", synthetic_identities=3, seed=0
    )
    assert uri.startswith(str(tmp_path))


def test_ingest_publishes_a_pointer_and_plans_the_splits(ingested_prid) -> None:
    artifact, _ = ingested_prid
    with open(artifact.path) as handle:
        pointer = json.load(handle)
    assert pointer["uri"] == artifact.metadata["uri"]
    dataset = Dataset.open(pointer["uri"])
    assert dataset.name == "prid2011" and dataset.num_splits == 10
    assert plan_splits.python_func(ingested=artifact) == list(range(10))


@pytest.fixture(scope="module")
def ingested_small_row_groups(ingested_prid, tmp_path_factory) -> dsl.Dataset:
    """The same raw data with small row groups, so that two ranks each get some of them."""
    from components.common.kfp_io import publish
    from components.ingest.config import IngestConfig
    from components.ingest.run import run

    _, root = ingested_prid
    output = str(tmp_path_factory.mktemp("small") / "dataset")
    source = storage.join(root, "raw", "synthetic-prid2011-6-3")
    run(IngestConfig(dataset="prid2011", source=source, output=output, row_group_rows=64, progress=False))
    artifact = dsl.Dataset(name="small", uri=output + ".pointer", metadata={})
    publish(artifact, output)
    return artifact


def test_split_chain_train_on_two_processes_then_extract_evaluate_aggregate(
    ingested_prid, ingested_small_row_groups, tmp_path
) -> None:
    """The train component's torchrun branch (2 CPU processes, gloo) feeding the later steps."""
    _, root = ingested_prid
    artifact = ingested_small_row_groups
    evaluations = []
    for split, gpus in ((1, 2), (4, 1)):
        model = _artifact(dsl.Model, tmp_path, f"model{split}")
        initial = _artifact(dsl.Model, tmp_path, f"initial{split}")
        mlflow_model = train.python_func(
            ingested=artifact,
            split=float(split),  # ParallelFor hands items over as floats
            objective="dal",
            backbone="timm:test_resnet",
            weights="",
            steps=4,
            batch_size=8,
            image_height=32,
            image_width=16,
            gpus=gpus,
            seed=0,
            storage_root=root,
            run_key="job1",
            model=model,
            initial_model=initial,
            **NO_TRACKING,
        )
        assert mlflow_model == ""  # tracking off
        assert model.metadata["uri"] == storage.join(
            root, "runs", "job1", f"split-{split}", "dal", "model.pt"
        )
        assert storage.exists(model.metadata["uri"]) and model.metadata["steps"] == 4
        assert initial.metadata["uri"] == storage.join(
            root, "runs", "job1", f"split-{split}", "dal", "initial.pt"
        )
        assert initial.metadata["steps"] == 0 and storage.exists(initial.metadata["uri"])
        features = _artifact(dsl.Dataset, tmp_path, f"features{split}")
        extract.python_func(
            ingested=artifact,
            model=model,
            split=split,
            storage_root=root,
            run_key="job1",
            features=features,
            **NO_TRACKING,
        )
        metrics = _artifact(dsl.Metrics, tmp_path, f"metrics{split}")
        evaluations.append(
            evaluate.python_func(
                ingested=artifact,
                features=features,
                split=split,
                storage_root=root,
                run_key="job1",
                metrics=metrics,
                **NO_TRACKING,
            )
        )
        assert (
            0.0 <= metrics.metadata["rank1"] <= 1.0 and storage.read_json(evaluations[-1])["split"] == split
        )
    averaged = _artifact(dsl.Metrics, tmp_path, "averaged")
    result = aggregate.python_func(
        evaluations=evaluations, storage_root=root, run_key="job1", metrics=averaged, **NO_TRACKING
    )
    assert result["num_splits"] == 2 and averaged.metadata["rank1"] == pytest.approx(result["rank1"])

    # The initial weights of the last split, scored beside it: the "initial" variant's own folders.
    initial_features = _artifact(dsl.Dataset, tmp_path, "initial_features")
    extract.python_func(
        ingested=artifact,
        model=initial,
        split=4,
        storage_root=root,
        run_key="job1",
        features=initial_features,
        variant="initial",
        **NO_TRACKING,
    )
    assert initial_features.metadata["uri"] == storage.join(
        root, "runs", "job1", "split-4", "initial", "features.parquet"
    )
    initial_metrics = _artifact(dsl.Metrics, tmp_path, "initial_metrics")
    initial_evaluation = evaluate.python_func(
        ingested=artifact,
        features=initial_features,
        split=4,
        storage_root=root,
        run_key="job1",
        metrics=initial_metrics,
        variant="initial",
        **NO_TRACKING,
    )
    assert initial_evaluation.startswith(
        storage.join(root, "runs", "job1", "split-4", "initial", "evaluation")
    )
    initial_result = aggregate.python_func(
        evaluations=[initial_evaluation],
        storage_root=root,
        run_key="job1",
        metrics=_artifact(dsl.Metrics, tmp_path, "initial_averaged"),
        variant="initial",
        **NO_TRACKING,
    )
    assert initial_result["num_splits"] == 1
    assert storage.exists(storage.join(root, "runs", "job1", "initial", "evaluation", "metrics.json"))


def test_tracking_components_open_close_and_register(tmp_path) -> None:
    from mlflow.tracking import MlflowClient

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    artifacts = (tmp_path / "mlartifacts").as_uri()
    assert (
        start_run.python_func(
            mlflow_tracking_uri="",
            mlflow_experiment="e",
            mlflow_artifact_location="",
            job_id="j",
            run_name="",
            params={},
        )
        == ""
    )
    parent = start_run.python_func(
        mlflow_tracking_uri=uri,
        mlflow_experiment="e",
        mlflow_artifact_location=artifacts,
        job_id="job-7",
        run_name="",
        params={"steps": 5, "dataset": "mars"},
    )
    client = MlflowClient(uri)
    run = client.get_run(parent)
    assert run.info.status == "RUNNING" and run.data.params == {"steps": "5", "dataset": "mars"}
    assert client.get_experiment_by_name("e").artifact_location == artifacts

    # A model to register: logged by a child run, as the train step does.
    import mlflow
    import torch

    mlflow.set_tracking_uri(uri)
    with mlflow.start_run(experiment_id=run.info.experiment_id, parent_run_id=parent):
        logged = mlflow.pytorch.log_model(torch.nn.Linear(2, 2), name="model", serialization_format="pickle")
    evaluation = tmp_path / "metrics.json"
    evaluation.write_text(json.dumps({"rank1": 0.5, "mAP": 0.25, "mAP_trapezoid": 0.2, "split": 0}))
    model = dsl.Model(name="m", uri=str(tmp_path / "m"), metadata={"split": 2.0, "backbone": "resnet50"})
    version = register_model.python_func(
        model=model,
        mlflow_model_uri=str(logged.model_uri),
        evaluation_uri=str(evaluation),
        dataset="mars",
        model_name="",
        mlflow_tracking_uri=uri,
    )
    registered = client.get_model_version("dal-mars", version)
    assert registered.tags["metric.rank1"] == "0.5" and registered.tags["split"] == "2"

    status = dsl.PipelineTaskFinalStatus(
        state="FAILED",
        pipeline_job_resource_name="r",
        pipeline_task_name="t",
        error_code=1,
        error_message="boom",
    )
    finish_run.python_func(mlflow_tracking_uri=uri, mlflow_experiment="e", job_id="job-7", status=status)
    closed = client.get_run(parent)
    assert closed.info.status == "FAILED" and closed.data.tags["dal.pipeline_error"] == "boom"
