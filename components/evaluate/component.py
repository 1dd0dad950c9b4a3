"""KFP components of the evaluation step: one split's CMC/mAP, and the average over splits."""

from kfp import dsl
from kfp.dsl import Dataset, Input, Metrics, Output

from components.common.kfp_io import DEFAULT_IMAGE


@dsl.component(base_image=DEFAULT_IMAGE, install_kfp_package=False)
def evaluate(
    ingested: Input[Dataset],
    features: Input[Dataset],
    split: int,
    storage_root: str,
    run_key: str,
    mlflow_tracking_uri: str,
    mlflow_experiment: str,
    mlflow_parent_run_id: str,
    metrics: Output[Metrics],
) -> str:
    """Evaluate one split; returns its metrics.json URI (collected by `aggregate`)."""
    from components.common import kfp_io, storage
    from components.evaluate.config import EvaluateConfig
    from components.evaluate.run import run

    split = int(split)  # ParallelFor items may arrive as floats
    output = storage.join(kfp_io.run_dir(storage_root, run_key, split), "evaluation")
    summary = run(
        EvaluateConfig(
            dataset=kfp_io.pointed_uri(ingested),
            features=kfp_io.pointed_uri(features),
            output=output,
            split=split,
            mlflow_tracking_uri=mlflow_tracking_uri,
            mlflow_experiment=mlflow_experiment,
            mlflow_parent_run_id=mlflow_parent_run_id,
            mlflow_run_name=f"evaluate-split{split}",
        )
    )
    for key, value in summary["metrics"].items():
        metrics.log_metric(key, value)
    return summary["outputs"]["metrics"]


@dsl.component(base_image=DEFAULT_IMAGE, install_kfp_package=False)
def aggregate(
    evaluations: list,
    storage_root: str,
    run_key: str,
    mlflow_tracking_uri: str,
    mlflow_experiment: str,
    mlflow_parent_run_id: str,
    metrics: Output[Metrics],
) -> dict:
    """Mean (and std) CMC / mAP over the splits; also logged on the pipeline's parent run."""
    from components.common import kfp_io, storage
    from components.common.tracking import log_parent_metrics
    from components.evaluate.aggregate import run
    from components.evaluate.config import AggregateConfig

    output = storage.join(kfp_io.storage_root(storage_root), "runs", run_key, "evaluation")
    summary = run(
        AggregateConfig(
            inputs=tuple(evaluations),
            output=output,
            mlflow_tracking_uri=mlflow_tracking_uri,
            mlflow_experiment=mlflow_experiment,
            mlflow_parent_run_id=mlflow_parent_run_id,
            mlflow_run_name="aggregate",
        )
    )
    for key, value in summary["metrics"].items():
        metrics.log_metric(key, value)
    log_parent_metrics(mlflow_tracking_uri, mlflow_parent_run_id, summary["metrics"])
    return summary["metrics"]
