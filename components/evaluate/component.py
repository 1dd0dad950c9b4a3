"""KFP components of the evaluation step: one split's CMC/mAP, and the average over splits."""

from kfp import dsl
from kfp.dsl import HTML, Dataset, Input, Markdown, Metrics, Output

from components.common.kfp_io import DEFAULT_IMAGE


@dsl.component(base_image=DEFAULT_IMAGE, install_kfp_package=False)
def evaluate(
    ingested: Input[Dataset],
    features: Input[Dataset],
    split: int,
    evaluate_options: dict,
    storage_root: str,
    run_key: str,
    mlflow_tracking_uri: str,
    mlflow_experiment: str,
    mlflow_parent_run_id: str,
    metrics: Output[Metrics],
    report: Output[HTML],
    variant: str = "",
) -> str:
    """Evaluate one split; returns its metrics.json URI (collected by `aggregate`). ``report``:
    the split's metrics, CMC curve and rank list as one page in the KFP UI. ``variant``: as in
    `extract` (``initial``: the features of the weights training started from)."""
    from components.common import kfp_io, storage
    from components.evaluate.config import EVALUATE_OPTIONS
    from components.evaluate.report import write_split_report
    from components.evaluate.run import run

    split = int(split)  # ParallelFor items may arrive as floats
    output = storage.join(kfp_io.run_dir(storage_root, run_key, split, variant), "evaluation")
    summary = run(
        EVALUATE_OPTIONS.build(
            evaluate_options,
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
    for key, value in summary.get("metrics", {}).items():  # none when skipped (no labels)
        metrics.log_metric(key, value)
    write_split_report(output, report.path)
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
    from components.common import kfp_io
    from components.common.tracking import log_run_metrics
    from components.evaluate.aggregate import run
    from components.evaluate.config import AggregateConfig

    output = kfp_io.aggregate_dir(storage_root, run_key, variant)
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
    if summary.get("evaluated") is False:  # own footage without labels: the note travels instead
        print(f"not evaluated: {summary['note']}")
        return {"evaluation_note": summary["note"]}
    return summary["metrics"]


@dsl.component(base_image=DEFAULT_IMAGE, install_kfp_package=False)
def report(
    storage_root: str,
    run_key: str,
    table: Output[Markdown],
    curves: Output[HTML],
    initial_variant: str = "initial",
) -> None:
    """What the KFP UI shows of the run: the averaged metrics of the trained model beside the
    weights it started from (``table``), and both mean CMC curves (``curves``)."""
    from components.common import kfp_io
    from components.evaluate.report import write_aggregate_markdown, write_aggregate_report

    trained = kfp_io.aggregate_dir(storage_root, run_key)
    initial = kfp_io.aggregate_dir(storage_root, run_key, initial_variant)
    write_aggregate_markdown(trained, table.path, initial_dir_uri=initial)
    write_aggregate_report(trained, curves.path, initial_dir_uri=initial)
