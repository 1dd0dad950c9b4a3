"""synth -> ingest -> train (short) -> extract -> evaluate (-> aggregate), on S3 and with MLflow."""

from __future__ import annotations

import pytest

from components.common import storage
from components.common.dataset import Dataset
from components.evaluate.aggregate import run as aggregate
from components.evaluate.config import AggregateConfig, EvaluateConfig
from components.evaluate.run import run as evaluate
from components.extract.config import ExtractConfig
from components.extract.run import run as extract
from components.ingest.config import IngestConfig
from components.ingest.run import run as ingest
from components.ingest.synthetic import run as synth
from components.ingest.synthetic_config import SynthConfig

pytestmark = pytest.mark.integration
METRICS = ("rank1", "rank5", "rank10", "rank20", "mAP", "mAP_trapezoid", "mINP")


def trained_model(dataset_uri: str, run_uri: str) -> str:
    """A short real training run (`dal train`) from the bundled ImageNet weights: the model the
    tests extract with."""
    from components.train.config import TrainConfig
    from components.train.run import run as train

    summary = train(
        TrainConfig(
            dataset=dataset_uri,
            output=run_uri,
            backbone="mobilenet_v2",
            weights="imagenet",
            image_height=32,
            image_width=16,
            batch_size=8,
            steps=4,
            device="cpu",
            workers=0,
        )
    )
    assert summary.steps == 4
    return summary.model_uri


def synthetic_dataset(layout: str, raw: str, output: str) -> None:
    """A small synthetic set in the real layout, through the real reader and ingest."""
    synth(
        SynthConfig(
            layout=layout,
            output=raw,
            num_identities=8,
            num_cameras=2 if layout == "mars" else 0,
            image_height=32,
            image_width=16,
            frames_per_tracklet=(22, 26),
            seed=5,
        )
    )
    ingest(IngestConfig(dataset=layout, source=raw, output=output, row_group_rows=64, progress=False))


def _mlflow_run(run_id: str):
    from mlflow.tracking import MlflowClient

    client = MlflowClient()
    return client, client.get_run(run_id)


def test_mars_layout_on_s3_with_mlflow(s3_bucket: str, mlflow_env, tmp_path) -> None:
    dataset = f"{s3_bucket}/datasets/mars"
    synthetic_dataset("mars", str(tmp_path / "raw"), dataset)
    queries = int(Dataset.open(dataset).tracklets()["is_query"].sum())
    model = trained_model(dataset, f"{s3_bucket}/runs/r1")
    features = f"{s3_bucket}/runs/r1/features.parquet"
    extracted = extract(ExtractConfig(dataset=dataset, model=model, output=features, progress=False))
    assert extracted["mlflow_run_id"] and storage.exists(features)

    output = f"{s3_bucket}/runs/r1/eval"
    summary = evaluate(
        EvaluateConfig(dataset=dataset, features=features, output=output, num_ranklist_queries=4)
    )
    metrics = storage.read_json(storage.join(output, "metrics.json"))
    assert (
        metrics["protocol"] == "mars" and metrics["num_queries"] == queries > 0 and len(metrics["cmc"]) == 20
    )
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
    synthetic_dataset("prid2011", str(tmp_path / "raw"), dataset)
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
