"""KFP components around MLflow: the pipeline's parent run, and model registration / promotion.

Every step logs a child run under the parent run whose id `start_run` returns. The exit
handler `finish_run` may not depend on other tasks, so it finds the parent run again by the
pipeline job id it was tagged with.
"""

from kfp import dsl
from kfp.dsl import PipelineTaskFinalStatus

from components.common.kfp_io import DEFAULT_IMAGE


@dsl.component(base_image=DEFAULT_IMAGE, install_kfp_package=False)
def start_run(
    mlflow_tracking_uri: str,
    mlflow_experiment: str,
    mlflow_artifact_location: str,
    job_id: str,
    run_name: str,
    params: dict,
    ingest_options: dict,
    train_options: dict,
    extract_options: dict,
    evaluate_options: dict,
    trainjob_options: dict,
) -> str:
    """Check every step's options, then open the parent run with them as params (``train.lr``,
    ...); returns its id ("" when tracking is off: no URI and no env).

    The first task of the run: an option typed into the KFP UI that the step's config refuses
    fails here, naming the field, before any data is ingested or any GPU is held.
    """
    from components.common.options import integral
    from components.common.tracking import resolve_tracking_uri, start_pipeline_run
    from components.evaluate.config import EVALUATE_OPTIONS
    from components.extract.config import EXTRACT_OPTIONS
    from components.ingest.config import CHECK_PATHS, INGEST_OPTIONS
    from components.train.config import TRAIN_OPTIONS
    from components.train.launch import check_world_size
    from components.train.trainjob import TRAINJOB_OPTIONS

    params = {key: integral(value) for key, value in params.items()}
    checked = {
        "ingest": INGEST_OPTIONS.validate(ingest_options, dataset=params["dataset"], **CHECK_PATHS),
        "train": TRAIN_OPTIONS.validate(train_options),
        "extract": EXTRACT_OPTIONS.validate(extract_options),
        "evaluate": EVALUATE_OPTIONS.validate(evaluate_options),
    }
    nodes, gpus = int(params.get("nodes", 1)), int(params.get("gpus", 1))
    check_world_size(TRAIN_OPTIONS.build(train_options, dataset="-", output="-"), nodes=nodes, gpus=gpus)
    if nodes > 1:  # the TrainJob's settings matter only then
        checked["trainjob"] = TRAINJOB_OPTIONS.validate(trainjob_options)
    uri = resolve_tracking_uri(mlflow_tracking_uri)
    if not uri:
        return ""
    params.update({f"{step}.{k}": v for step, options in checked.items() for k, v in options.items()})
    return start_pipeline_run(
        uri, mlflow_experiment, job_id, run_name or f"dal-{job_id}", params, mlflow_artifact_location
    )


@dsl.component(base_image=DEFAULT_IMAGE, install_kfp_package=False)
def finish_run(
    mlflow_tracking_uri: str, mlflow_experiment: str, job_id: str, status: PipelineTaskFinalStatus
) -> None:
    """Close the parent run FINISHED or FAILED, whatever happened inside the pipeline."""
    from components.common.tracking import finish_pipeline_run, resolve_tracking_uri

    uri = resolve_tracking_uri(mlflow_tracking_uri)
    if uri:
        succeeded = status.state == "SUCCEEDED"
        finish_pipeline_run(uri, mlflow_experiment, job_id, succeeded, status.error_message or "")


@dsl.component(base_image=DEFAULT_IMAGE, install_kfp_package=False)
def register_candidate(
    trained: list,
    metrics: dict,
    dataset: str,
    source_uri: str,
    model_name: str,
    mlflow_tracking_uri: str,
    job_id: str,
) -> str:
    """Register ONE model version per pipeline run, with alias ``candidate`` and the run's
    aggregated metrics (all splits) as tags; returns the version ("" when nothing is registered).
    Own footage without labels has no metrics (``metrics``: aggregate's ``evaluation_note``): the
    candidate is registered unscored, tagged with the note, and never promoted.

    The version is split 0's model: every split trains its own model on its own train half, and
    the first (the only one of MARS) stands for the run; the others stay logged in their runs.
    Only DAL models compete: a ``supervised`` run (the label-reading upper bound) registers none,
    and models of generated data (no ``source_uri``) go to ``dal-<dataset>-synthetic``.
    """
    from components.common import registry
    from components.common.kfp_io import TrainedModel
    from components.common.tracking import resolve_tracking_uri

    uri = resolve_tracking_uri(mlflow_tracking_uri)
    records = sorted((TrainedModel.from_json(text) for text in trained), key=lambda r: r.split)
    if not uri or not records or not records[0].mlflow_model_uri:
        return ""
    first = records[0]
    if first.objective != "dal":
        print(f"objective {first.objective}: a reference, not registered (its models stay in its runs)")
        return ""
    tags = {
        "source_uri": source_uri or "synthetic",
        "dataset": dataset,
        "pipeline_job_id": job_id,
        "split": first.split,
        "splits": len(records),
        "backbone": first.backbone,
        "objective": first.objective,
        "storage_uri": first.model_uri,
    }
    numeric = {k: float(v) for k, v in metrics.items() if isinstance(v, int | float)}
    unscored = str(metrics.get("evaluation_note", ""))  # own footage without labels (aggregate)
    name = model_name or registry.default_model_name(dataset, synthetic=not source_uri)
    registered = registry.register_candidate(
        uri, name, first.mlflow_model_uri, numeric, tags, unscored=unscored
    )
    return registered.version


@dsl.component(base_image=DEFAULT_IMAGE, install_kfp_package=False)
def promote_champion(
    version: str, dataset: str, source_uri: str, model_name: str, mlflow_tracking_uri: str
) -> str:
    """Move alias ``champion`` to the candidate ``version`` only if it beats the current champion
    of the same registered model (components/common/registry.py: ``beats``); returns the decision."""
    from components.common import registry
    from components.common.tracking import resolve_tracking_uri

    uri = resolve_tracking_uri(mlflow_tracking_uri)
    if not uri or not version:
        return "nothing registered (tracking off, or not a DAL model)"
    name = model_name or registry.default_model_name(dataset, synthetic=not source_uri)
    decision = registry.promote_champion(uri, name, version)
    print(decision.reason)
    return decision.reason
