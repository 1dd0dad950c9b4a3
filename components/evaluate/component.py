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
    variant: str = "",
) -> str:
    """Evaluate one split; returns its metrics.json URI (collected by `aggregate`). ``variant``:
    as in `extract` (``initial``: the features of the weights training started from)."""
    from components.common import kfp_io, storage
    from components.evaluate.config import EvaluateConfig
    from components.evaluate.run import run

    split = int(split)  # ParallelFor items may arrive as floats
    output = storage.join(kfp_io.run_dir(storage_root, run_key, split, variant), "evaluation")
    summary = run(
        EvaluateConfig(
            dataset=kfp_io.pointed_uri(ingested),
            features=kfp_io.pointed_uri(features),
            output=output,
            split=split,
            mlflow_tracking_uri=mlflow_tracking_uri,
            mlflow_experiment=mlflow_experiment,
            mlflow_parent_run_id=mlflow_parent_run_id,
            mlflow_run_name=kfp_io.task_run_name("evaluate", split, variant),
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
    variant: str = "",
) -> dict:
    """Mean (and std) CMC / mAP over the splits; also logged on the pipeline's parent run, where
    a ``variant``'s metrics carry its name as prefix (``initial_rank1``)."""
    from components.common import kfp_io, storage
    from components.common.tracking import log_run_metrics
    from components.evaluate.aggregate import run
    from components.evaluate.config import AggregateConfig

    folder = storage.join(kfp_io.storage_root(storage_root), "runs", run_key)
    output = storage.join(storage.join(folder, variant) if variant else folder, "evaluation")
    summary = run(
        AggregateConfig(
            inputs=tuple(evaluations),
            output=output,
            mlflow_tracking_uri=mlflow_tracking_uri,
            mlflow_experiment=mlflow_experiment,
            mlflow_parent_run_id=mlflow_parent_run_id,
            mlflow_run_name=f"aggregate-{variant}" if variant else "aggregate",
        )
    )
    for key, value in summary["metrics"].items():
        metrics.log_metric(key, value)
    prefix = f"{variant}_" if variant else ""
    log_run_metrics(
        mlflow_tracking_uri, mlflow_parent_run_id, {prefix + k: v for k, v in summary["metrics"].items()}
    )
    return summary["metrics"]
