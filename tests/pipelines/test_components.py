"""Layer 1: the KFP components' Python functions, called directly on tiny synthetic data."""

from __future__ import annotations

import dataclasses
import json
import os

import pytest
from kfp import dsl

from components.common import storage
from components.common.config import ConfigError
from components.common.dataset import Dataset
from components.common.kfp_io import TrainedModel
from components.evaluate.component import aggregate, evaluate, report
from components.extract.component import extract
from components.ingest.component import ingest, plan_splits, prepare_source
from components.tracking.component import finish_run, promote_champion, register_candidate, start_run
from components.train.component import publish_models, train

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
        ingest_options={"workers": 2.0},  # a Struct: numbers arrive as doubles
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
        trained = train.python_func(
            ingested=artifact,
            split=float(split),  # ParallelFor hands items over as floats
            # As the pipeline hands them over: a Struct, numbers as doubles.
            train_options={
                "objective": "dal",
                "backbone": "timm:test_resnet",
                "weights": "",
                "steps": 4.0,
                "batch_size": 8.0,
                "image_height": 32.0,
                "image_width": 16.0,
                "seed": 0.0,
            },
            gpus=gpus,
            storage_root=root,
            run_key="job1",
            **NO_TRACKING,
        )
        record = TrainedModel.from_json(trained)
        assert record.split == split and record.mlflow_model_uri == ""  # tracking off
        assert publish_models.python_func(trained=trained, model=model, initial_model=initial) == trained
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
            extract_options={},
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
                evaluate_options={"max_rank": 25.0},
                storage_root=root,
                run_key="job1",
                metrics=metrics,
                report=_artifact(dsl.HTML, tmp_path, f"report{split}"),
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
        extract_options={"pooling": "mean"},
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
        evaluate_options={},
        storage_root=root,
        run_key="job1",
        metrics=initial_metrics,
        report=_artifact(dsl.HTML, tmp_path, "initial_report"),
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

    # What the KFP UI shows: per split an HTML page, per run a Markdown table and the curves.
    page = (tmp_path / "artifacts" / "report1").read_text()
    assert page.startswith("<!DOCTYPE html>") and "data:image/png;base64," in page
    table = _artifact(dsl.Markdown, tmp_path, "table")
    curves = _artifact(dsl.HTML, tmp_path, "curves")
    report.python_func(storage_root=root, run_key="job1", table=table, curves=curves)
    markdown = (tmp_path / "artifacts" / "table").read_text()
    assert "| rank-1 |" in markdown and "initial weights" in markdown
    assert f"| rank-1 | {100 * result['rank1']:.2f} ± " in markdown
    assert "data:image/png;base64," in (tmp_path / "artifacts" / "curves").read_text()


OPTIONS = {
    "ingest_options": {},
    "train_options": {},
    "extract_options": {},
    "evaluate_options": {},
    "trainjob_options": {},
}


def _start_untracked(params: dict, **options: dict) -> str:
    """``start_run`` with tracking off: only its checks of the options run."""
    return start_run.python_func(
        mlflow_tracking_uri="",
        mlflow_experiment="e",
        mlflow_artifact_location="",
        job_id="j",
        run_name="",
        params={"dataset": "mars", **params},
        **{**OPTIONS, **options},
    )


def test_start_run_checks_every_steps_options_first(tmp_path) -> None:
    # Even with tracking off: a value typed into the KFP UI fails the run's first task.
    with pytest.raises(ConfigError, match=r"evaluate_options\.max_rank: must be >= 20, got 3"):
        _start_untracked({}, evaluate_options={"max_rank": 3.0})
    with pytest.raises(ConfigError, match="batch_size: 64 does not split evenly over 6 ranks"):
        _start_untracked({"nodes": 3.0, "gpus": 2.0})
    with pytest.raises(ConfigError, match=r"trainjob_options\."):
        _start_untracked({"nodes": 2.0}, trainjob_options={"no_such_option": 1})
    # Ingest options are checked against the pipeline's dataset: an index file is for tracklets only.
    with pytest.raises(ConfigError, match=r"ingest_options\.index: only for the tracklets dataset"):
        _start_untracked({}, ingest_options={"index": "s3://raw/index.csv"})
    assert _start_untracked({"dataset": "tracklets"}, ingest_options={"index": "s3://raw/index.csv"}) == ""
    with pytest.raises(ConfigError, match=r"ingest_options\.min_track_frames: must be at least 1"):
        _start_untracked({"dataset": "videos"}, ingest_options={"min_track_frames": 0.0})


def test_tracking_components_open_register_promote_and_close(tmp_path, monkeypatch) -> None:
    from mlflow.tracking import MlflowClient

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    artifacts = (tmp_path / "mlartifacts").as_uri()
    assert _start_untracked({}) == ""
    parent = start_run.python_func(
        mlflow_tracking_uri=uri,
        mlflow_experiment="e",
        mlflow_artifact_location=artifacts,
        job_id="job-7",
        run_name="",
        params={"gpus": 1.0, "dataset": "mars"},
        **{**OPTIONS, "train_options": {"steps": 5.0, "lr": 0.01}},
    )
    client = MlflowClient(uri)
    run = client.get_run(parent)
    params = run.data.params
    assert run.info.status == "RUNNING" and params["gpus"] == "1" and params["dataset"] == "mars"
    # Every option's effective value, the defaults included, as a param of the parent run.
    assert params["train.steps"] == "5" and params["train.lr"] == "0.01"
    assert params["train.optimizer"] == "auto" and params["evaluate.max_rank"] == "20"
    assert not [k for k in params if k.startswith("trainjob.")]  # one node: not used
    assert client.get_experiment_by_name("e").artifact_location == artifacts

    # Models to register: logged by child runs, as the train step does, one per split.
    import mlflow
    import torch

    mlflow.set_tracking_uri(uri)
    records = []
    for split in (1, 0):
        with mlflow.start_run(experiment_id=run.info.experiment_id, parent_run_id=parent) as child:
            logged = mlflow.pytorch.log_model(
                torch.nn.Linear(2, 2), name="model", serialization_format="pickle"
            )
        record = TrainedModel(
            split=split,
            model_uri=f"s3://b/runs/job-7/split-{split}/dal/model.pt",
            initial_model_uri="",
            mlflow_model_uri=str(logged.model_uri),
            mlflow_run_id=child.info.run_id,
            backbone="resnet50",
            objective="dal",
            weights="imagenet",
            steps=5,
        )
        records.append(record)
    registry = {
        "dataset": "mars",
        "source_uri": "s3://raw/MARS",
        "model_name": "",
        "mlflow_tracking_uri": uri,
    }
    # The supervised upper bound reads labels: it never competes for champion.
    supervised = dataclasses.replace(records[1], objective="supervised").to_json()
    assert register_candidate.python_func(trained=[supervised], metrics={}, job_id="j", **registry) == ""
    version = register_candidate.python_func(
        trained=[r.to_json() for r in records],
        metrics={"rank1": 0.5, "mAP": 0.25, "num_splits": 2.0},
        job_id="job-7",
        **registry,
    )
    (registered,) = client.search_model_versions("name='dal-mars'")  # one version per run
    assert str(registered.version) == version and registered.run_id == records[1].mlflow_run_id  # split 0
    assert registered.tags["split"] == "0" and registered.tags["pipeline_job_id"] == "job-7"
    assert float(registered.tags["metric.rank1"]) == 0.5
    assert str(client.get_model_version_by_alias("dal-mars", "candidate").version) == version
    promote_champion.python_func(version=version, **registry)  # the first: no champion yet
    assert str(client.get_model_version_by_alias("dal-mars", "champion").version) == version
    # Tracking off: nothing to register or promote.
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)  # mlflow.set_tracking_uri set it
    off = {**registry, "mlflow_tracking_uri": ""}
    assert register_candidate.python_func(trained=[records[0].to_json()], metrics={}, job_id="j", **off) == ""

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
