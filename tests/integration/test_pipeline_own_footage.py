"""Layer 2 for users' own footage: the KFP pipeline locally on unlabelled tracklet folders.

``dataset=tracklets`` with ``ingest_options.index=none``: the generated tracklet folders are read
without their index, so no tracklet has a person id. DAL trains all the same; evaluation is
skipped with its note (KFP report, MLflow tag), and the model is registered as an unscored
candidate that is never promoted.
"""

from __future__ import annotations

import pytest
from mlflow.tracking import MlflowClient

from components.common import storage
from components.common.dataset import Dataset
from components.common.features import read_features
from pipelines.cli import run_local

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def test_unlabelled_tracklets_train_skip_evaluation_and_register_unscored(mlflow_env, tmp_path) -> None:
    root = str(tmp_path / "store")
    summary = run_local(
        {
            "dataset": "tracklets",
            "synthetic_identities": 6,
            "ingest_options": {"index": "none"},
            "train_options": {
                "backbone": "timm:test_resnet",
                "weights": "",
                "steps": 4,
                "batch_size": 8,
                "image_height": 32,
                "image_width": 16,
            },
            "storage_root": root,
            "mlflow_tracking_uri": mlflow_env.uri,
            "mlflow_experiment": "own-footage",
        },
        tmp_path,
    )
    assert summary["status"] == "FINISHED"
    assert not [k for k in summary["metrics"] if k.startswith(("rank", "mAP", "initial_rank"))]

    client = MlflowClient(mlflow_env.uri)
    experiment = client.get_experiment_by_name("own-footage")
    runs = {r.info.run_name: r for r in client.search_runs([experiment.experiment_id])}
    note = runs["evaluate-split0"].data.tags["dal.evaluation"]
    assert note.startswith("skipped: protocol labelled: no labelled test tracklets")
    assert runs["aggregate"].data.tags["dal.evaluation"] == note
    train = runs["train-split0"]
    # Label-free diagnostics only: nothing scored against person ids.
    assert {"consistent_tracklets", "anchor_nearest_similarity"} <= set(train.data.metrics)
    assert "association_precision" not in train.data.metrics

    (version,) = client.search_model_versions("name='dal-tracklets-synthetic'")
    assert version.tags["evaluation"] == note and not [k for k in version.tags if k.startswith("metric.")]
    assert version.tags["promotion"] == "kept"
    assert set(client.get_registered_model("dal-tracklets-synthetic").aliases) == {"candidate"}

    # Extraction covered every tracklet: the gallery a search runs over.
    (manifest,) = [u for u in storage.list_files(f"{root}/datasets") if u.endswith("manifest.json")]
    dataset = Dataset.open(manifest.removesuffix("/manifest.json"))
    assert dataset.name == "tracklets" and set(dataset.tracklets()["person_id"]) == {-1}
    features = read_features(f"{root}/runs/{summary['pipeline_job_id']}/split-0/features.parquet")
    assert sorted(features.tracklet_id.tolist()) == sorted(dataset.tracklets()["tracklet_id"].tolist())
