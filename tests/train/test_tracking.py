"""MLflow from ``dal train`` (rank 0): config params, per-step metrics, the model, with a real
tracking server (artifacts proxied to S3, data and run directory on S3 too) and with a local store."""

from __future__ import annotations

import pytest
import torch

from components.common import storage
from components.train.run import run
from components.train.summary import TrainSummary
from tests.train.test_support import Spec, one_thread, tiny_config, write_dataset

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures(one_thread.__name__)]

SPEC = Spec(persons=6, cameras=2, frames=4, row_group_rows=8, height=32, width=16)
PER_STEP = ("loss", "intra_loss", "cross_loss", "lr", "frames_per_s", "consistent_fraction")


def _check_run(tracking_uri: str, summary: TrainSummary) -> None:
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri)
    logged = client.get_run(summary.mlflow_run_id)
    params, metrics, tags = logged.data.params, logged.data.metrics, logged.data.tags
    assert params["backbone"] == "timm:test_efficientnet" and params["steps"] == "6"
    assert params["resolved_optimizer"] == "rmsprop" and params["warmup_steps"] == "6"
    assert not any(key.startswith("mlflow_") for key in params)
    for key in (*PER_STEP, "association_precision", "association_precision_chance"):
        assert key in metrics, key
    assert [m.step for m in client.get_metric_history(logged.info.run_id, "loss")] == [2, 4, 6]
    assert tags["dal.step"] == "train" and tags["dal.objective"] == "dal"
    assert logged.info.status == "FINISHED"
    assert "model.pt" in [a.path for a in client.list_artifacts(logged.info.run_id)]
    assert summary.mlflow_model_uri


def test_server_with_data_and_run_on_s3(mlflow_env, s3_bucket: str) -> None:
    import mlflow
    import mlflow.pytorch

    dataset, output = f"{s3_bucket}/ds", f"{s3_bucket}/runs/r1"
    write_dataset(dataset, SPEC)
    summary = run(tiny_config(dataset, output, steps=6, checkpoint_every=4))
    _check_run(mlflow_env.uri, summary)
    assert storage.exists(f"{output}/model.pt") and storage.exists(f"{output}/checkpoints/step-000006.pt")
    # The registered model is the serving pyfunc; the EMA backbone is logged beside it as "backbone".
    run_info = mlflow.MlflowClient(mlflow_env.uri).get_run(summary.mlflow_run_id).info
    mlflow.set_tracking_uri(mlflow_env.uri)
    (backbone,) = mlflow.search_logged_models(
        experiment_ids=[run_info.experiment_id],
        filter_string=f"source_run_id = '{run_info.run_id}' AND name = 'backbone'",
        output_format="list",
    )
    model = mlflow.pytorch.load_model(backbone.model_uri)
    with torch.no_grad():
        assert model.eval()(torch.rand(1, 3, 32, 16)).shape == (1, 256)


def test_local_store_without_a_server(tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)  # a local store keeps artifacts under ./mlruns
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    dataset = str(tmp_path / "ds")
    write_dataset(dataset, SPEC)
    tracking_uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    summary = run(tiny_config(dataset, str(tmp_path / "run"), mlflow_tracking_uri=tracking_uri))
    _check_run(tracking_uri, summary)


def test_no_tracking_at_all(tmp_path, monkeypatch) -> None:
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    dataset = str(tmp_path / "ds")
    write_dataset(dataset, SPEC)
    summary = run(tiny_config(dataset, str(tmp_path / "run"), steps=2))
    assert summary.mlflow_run_id == "" and summary.mlflow_model_uri == ""
    assert storage.exists(summary.model_uri)
