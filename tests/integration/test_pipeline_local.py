"""Layer 2: the whole KFP pipeline run locally (SubprocessRunner), against real servers.

Storage root in the S3 test server, tracking in a real `mlflow server` (sqlite backend,
artifacts in S3); everything is read back through the servers' own APIs.
"""

from __future__ import annotations

import numpy as np
import pytest
from mlflow.tracking import MlflowClient

from components.common import storage
from components.common.dataset import Dataset
from components.common.features import read_features
from components.evaluate.metrics import METRIC_KEYS
from components.extract.config import ExtractConfig
from components.extract.run import run as extract
from pipelines.cli import run_local

pytestmark = [pytest.mark.integration, pytest.mark.slow]

SMALL = {
    "synthetic_identities": 8,
    # The pipeline's default backbone and weights: mobilenet_v2 from bundled ImageNet.
    "train_options": {"steps": 12, "batch_size": 16, "image_height": 64, "image_width": 32},
}


def test_pipeline_run_logs_parent_children_plots_and_registered_model(
    mlflow_env, s3_bucket, tmp_path
) -> None:
    root = f"{s3_bucket}/dal"
    summary = run_local(
        {
            "dataset": "mars",
            "storage_root": root,
            "mlflow_tracking_uri": mlflow_env.uri,
            "mlflow_experiment": "pipeline-test",
            "mlflow_artifact_location": "",  # the server proxies artifacts into S3
            **SMALL,
        },
        tmp_path,
    )
    assert summary["status"] == "FINISHED"
    assert summary["children"] == [
        "aggregate",
        "aggregate-initial",
        "evaluate-initial-split0",
        "evaluate-split0",
        "extract-initial-split0",
        "extract-split0",
        "ingest",
        "train-split0",
    ]
    assert 0.0 <= summary["metrics"]["rank1"] <= 1.0 and summary["metrics"]["num_splits"] == 1
    assert 0.0 <= summary["metrics"]["initial_rank1"] <= 1.0  # the ImageNet init, scored beside

    client = MlflowClient(mlflow_env.uri)
    experiment = client.get_experiment_by_name("pipeline-test")
    runs = {r.info.run_name: r for r in client.search_runs([experiment.experiment_id])}
    parent = client.get_run(summary["parent_run_id"])
    assert parent.data.params["dataset"] == "mars" and parent.data.params["train.steps"] == "12"
    for name in summary["children"]:
        assert runs[name].data.tags["mlflow.parentRunId"] == parent.info.run_id
        assert runs[name].info.status == "FINISHED"
    evaluation = runs["evaluate-split0"]
    assert set(METRIC_KEYS) <= set(evaluation.data.metrics)
    assert {a.path for a in client.list_artifacts(evaluation.info.run_id)} >= {
        "cmc.png",
        "ranklist.png",
        "metrics.json",
        "config.json",
    }
    train = runs["train-split0"]
    assert "loss" in train.data.metrics and train.data.params["backbone"] == "mobilenet_v2"
    assert train.data.params["weights"] == "imagenet"
    assert not [k for k in train.data.params if "secret" in k.lower() or k.startswith("mlflow_")]

    # One version per run, the candidate; the first run's also becomes the champion.
    (version,) = client.search_model_versions("name='dal-mars-synthetic'")  # generated data: its own model
    aggregate = runs["aggregate"]
    assert float(version.tags["metric.rank1"]) == pytest.approx(aggregate.data.metrics["rank1"], abs=1e-5)
    assert version.run_id == train.info.run_id
    assert set(client.get_registered_model("dal-mars-synthetic").aliases) == {"candidate", "champion"}
    assert version.tags["promotion"] == "promoted"

    # The data itself went to the S3 storage root.
    datasets = [u for u in storage.list_files(f"{root}/datasets") if u.endswith("manifest.json")]
    assert len(datasets) == 1
    assert Dataset.open(datasets[0].removesuffix("/manifest.json")).name == "mars"
    run_dir = f"{root}/runs/{summary['pipeline_job_id']}/split-0"
    assert storage.exists(f"{run_dir}/dal/model.pt")

    # The champion, by name: extraction from the registry gives the pipeline's own features.
    dataset_uri = datasets[0].removesuffix("/manifest.json")
    extract(
        ExtractConfig(
            dataset=dataset_uri,
            model="models:/dal-mars-synthetic@champion",
            output=str(tmp_path / "champion.parquet"),
            progress=False,
            mlflow_tracking_uri=mlflow_env.uri,
        )
    )
    ours, theirs = (
        read_features(str(tmp_path / "champion.parquet")),
        read_features(f"{run_dir}/features.parquet"),
    )
    assert np.array_equal(ours.tracklet_id, theirs.tracklet_id)
    assert np.array_equal(ours.feature, theirs.feature)


def test_failed_pipeline_marks_the_parent_run_failed(mlflow_env, tmp_path) -> None:
    with pytest.raises(RuntimeError, match="FAILURE"):
        run_local(
            {
                "dataset": "mars",
                "source_uri": str(tmp_path / "no-such-dataset"),
                "mlflow_tracking_uri": mlflow_env.uri,
                "mlflow_experiment": "pipeline-fail",
                "mlflow_artifact_location": "",
                **SMALL,
            },
            tmp_path / "work",
        )
    client = MlflowClient(mlflow_env.uri)
    experiment = client.get_experiment_by_name("pipeline-fail")
    (parent,) = client.search_runs([experiment.experiment_id], filter_string="tags.`dal.step` = 'pipeline'")
    assert parent.info.status == "FAILED"
    assert "ingest" in parent.data.tags["dal.pipeline_error"] or parent.data.tags["dal.pipeline_error"]
