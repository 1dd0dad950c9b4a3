"""KFP components around MLflow: the pipeline's parent run, and model registration.

Every step logs a child run under the parent run whose id `start_run` returns. The exit
handler `finish_run` may not depend on other tasks, so it finds the parent run again by the
pipeline job id it was tagged with.
"""

from kfp import dsl
from kfp.dsl import Input, Model, PipelineTaskFinalStatus

from components.common.kfp_io import DEFAULT_IMAGE


@dsl.component(base_image=DEFAULT_IMAGE, install_kfp_package=False)
def start_run(
    mlflow_tracking_uri: str,
    mlflow_experiment: str,
    mlflow_artifact_location: str,
    job_id: str,
    run_name: str,
    params: dict,
) -> str:
    """Open the parent run; returns its id ("" when tracking is off: no URI and no env)."""
    from components.common.tracking import resolve_tracking_uri, start_pipeline_run

    uri = resolve_tracking_uri(mlflow_tracking_uri)
    if not uri:
        return ""

    # A dict parameter travels as a protobuf Struct: its numbers become doubles, and pipeline
    # parameters inside it arrive as their text ("200.0"). Show integers as integers again.
    def integral(value: object) -> object:
        text = str(value)
        if isinstance(value, float | str) and text.endswith(".0") and text[:-2].lstrip("-").isdigit():
            return int(text[:-2])
        return value

    params = {key: integral(value) for key, value in params.items()}
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
def register_model(
    model: Input[Model],
    mlflow_model_uri: str,
    evaluation_uri: str,
    dataset: str,
    model_name: str,
    mlflow_tracking_uri: str,
) -> str:
    """Register the trained model with its evaluation metrics; returns the version ("" if off)."""
    from components.common import storage
    from components.common.tracking import register_model as register
    from components.common.tracking import resolve_tracking_uri
    from components.evaluate.metrics import METRIC_KEYS

    uri = resolve_tracking_uri(mlflow_tracking_uri)
    if not uri or not mlflow_model_uri:
        return ""
    evaluation = storage.read_json(evaluation_uri)
    metrics = {key: float(evaluation[key]) for key in METRIC_KEYS if key in evaluation}
    tags = {
        "dataset": dataset,
        "split": int(model.metadata.get("split", 0)),  # KFP metadata numbers are floats
        "backbone": model.metadata.get("backbone", ""),
        "objective": model.metadata.get("objective", ""),
        "storage_uri": model.metadata.get("uri", ""),
    }
    return register(uri, mlflow_model_uri, model_name or f"dal-{dataset}", metrics, tags)
