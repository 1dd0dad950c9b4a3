"""extract -> evaluate (-> aggregate) end to end, with storage on the S3 test server and MLflow tracking."""

from __future__ import annotations

import pytest

from components.common import storage
from components.evaluate.aggregate import run as aggregate
from components.evaluate.config import AggregateConfig, EvaluateConfig
from components.evaluate.run import run as evaluate
from components.extract.config import ExtractConfig
from components.extract.run import run as extract
from tests.extract.helpers import write_dataset, write_model

pytestmark = pytest.mark.integration
METRICS = ("rank1", "rank5", "rank10", "rank20", "mAP", "mAP_trapezoid")


def trained_model(dataset_uri: str, run_uri: str) -> str:
    """The model artifact the end-to-end tests extract with.

    ``dal train`` is being written in parallel: until it lands this saves a randomly initialised
    backbone with ``model_io.save_model``. To test "after a short training run", replace the body by

        from components.train.config import TrainConfig
        from components.train.loop import run as train
        train(TrainConfig(dataset=dataset_uri, output=run_uri, backbone="timm:test_efficientnet",
                          image_height=32, image_width=16, batch_size=8, steps=4, device="cpu", workers=0))
        return storage.join(run_uri, "model.pt")

    (checked by hand against the in-progress train loop: train -> extract -> evaluate runs.)
    """
    uri = storage.join(run_uri, "model.pt")
    write_model(uri)
    return uri


def _mlflow_run(run_id: str):
    from mlflow.tracking import MlflowClient

    client = MlflowClient()
    return client, client.get_run(run_id)


def test_mars_layout_on_s3_with_mlflow(s3_bucket: str, mlflow_env) -> None:
    dataset = f"{s3_bucket}/datasets/mars"
    write_dataset(dataset, "mars")
    model = trained_model(dataset, f"{s3_bucket}/runs/r1")
    features = f"{s3_bucket}/runs/r1/features.parquet"
    extracted = extract(ExtractConfig(dataset=dataset, model=model, output=features, progress=False))
    assert extracted["mlflow_run_id"] and storage.exists(features)

    output = f"{s3_bucket}/runs/r1/eval"
    summary = evaluate(
        EvaluateConfig(dataset=dataset, features=features, output=output, num_ranklist_queries=4)
    )
    metrics = storage.read_json(storage.join(output, "metrics.json"))
    assert metrics["protocol"] == "mars" and metrics["num_queries"] == 5 and len(metrics["cmc"]) == 20
    for name in ("cmc.png", "ranklist.png"):
        assert storage.read_bytes(storage.join(output, name))[:4] == b"\x89PNG"

    client, run = _mlflow_run(summary["mlflow_run_id"])
    assert run.info.status == "FINISHED" and run.data.tags["dal.step"] == "evaluate"
    for key in METRICS:
        assert run.data.metrics[key] == pytest.approx(metrics[key])
    history = client.get_metric_history(run.info.run_id, "cmc")
    assert sorted(m.step for m in history) == list(range(1, 21))
    assert {a.path for a in client.list_artifacts(run.info.run_id)} >= {
        "metrics.json",
        "cmc.png",
        "ranklist.png",
    }
    assert run.data.params["features"] == features
    assert not any(key.startswith("mlflow_") for key in run.data.params)
    _, extract_run = _mlflow_run(extracted["mlflow_run_id"])
    assert extract_run.data.metrics["num_tracklets"] == extracted["num_tracklets"]


@pytest.mark.slow
def test_prid_layout_three_splits_and_aggregate(tmp_path, mlflow_env) -> None:
    dataset = str(tmp_path / "prid")
    write_dataset(dataset, "prid2011")
    outputs = []
    for split in range(3):
        run_dir = str(tmp_path / f"split{split}")
        model = trained_model(dataset, run_dir)
        features = storage.join(run_dir, "features.parquet")
        extract(ExtractConfig(dataset=dataset, model=model, output=features, split=split, progress=False))
        outputs.append(storage.join(run_dir, "eval"))
        summary = evaluate(EvaluateConfig(dataset=dataset, features=features, output=outputs[-1]))
        assert (summary["protocol"], summary["split"]) == ("splits", split)
    result = aggregate(AggregateConfig(inputs=tuple(outputs), output=str(tmp_path / "agg")))
    written = storage.read_json(str(tmp_path / "agg" / "metrics.json"))
    assert written["num_splits"] == 3 and [s["split"] for s in written["per_split"]] == [0, 1, 2]
    per_split = [storage.read_json(storage.join(o, "metrics.json")) for o in outputs]
    for key in METRICS:
        assert written[key] == pytest.approx(sum(m[key] for m in per_split) / 3)
    client, run = _mlflow_run(result["mlflow_run_id"])
    assert run.data.metrics["rank1"] == pytest.approx(written["rank1"])
    assert [m.step for m in client.get_metric_history(run.info.run_id, "split_rank1")] == [0, 1, 2]
