"""MLflow tracking for the steps: one child run per step under the pipeline's parent run.

The tracking URI is a step option (``--mlflow-tracking-uri``) or ``MLFLOW_TRACKING_URI`` from
the environment; an empty value with no environment turns tracking off. Credentials
(``MLFLOW_TRACKING_USERNAME`` / ``_PASSWORD`` / ``_TOKEN``, the S3 keys of the artifact store)
come only from the environment: they are never params, tags or log lines. Only rank 0 tracks;
other ranks get a logger that does nothing, so training code never branches on rank to log.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import tempfile
import time
import warnings
from collections.abc import Iterator
from typing import Any

from components.common.config import to_dict

MAX_PARAM_CHARS = 6000  # MLflow's limit for one param value
FLUSH_EVERY_S = 10.0
FLUSH_EVERY_METRICS = 500
TRACKING_URI_ENV = "MLFLOW_TRACKING_URI"
# The MLflow 3 UI opens an experiment without this tag in its GenAI view; this value (its
# ExperimentKind "custom_model_development", shown as "Machine learning") opens the training runs.
EXPERIMENT_KIND_TAG = "mlflow.experimentKind"
EXPERIMENT_KIND = "custom_model_development"


def resolve_tracking_uri(uri: str) -> str:
    """The tracking URI a step uses: its argument, else ``$MLFLOW_TRACKING_URI``; "" = no tracking."""
    return uri or os.environ.get(TRACKING_URI_ENV, "")


def settings_without_tracking(config: Any) -> dict[str, Any]:
    """A step config as a dict without its ``mlflow_*`` fields: those are plumbing (and a
    tracking URI may carry credentials), never params, tags or recorded settings."""
    return {k: v for k, v in to_dict(config).items() if not k.startswith("mlflow_")}


@dataclasses.dataclass(frozen=True, kw_only=True)
class TrackingOptions:
    """Fields every step config carries (as a base class) to join the pipeline's MLflow run."""

    mlflow_tracking_uri: str = dataclasses.field(
        default="", metadata={"help": "MLflow tracking URI; empty: $MLFLOW_TRACKING_URI, or no tracking"}
    )
    mlflow_experiment: str = dataclasses.field(default="dal", metadata={"help": "MLflow experiment name"})
    mlflow_parent_run_id: str = dataclasses.field(
        default="", metadata={"help": "parent (pipeline) run id; the step logs a child run under it"}
    )
    mlflow_run_name: str = dataclasses.field(default="", metadata={"help": "name of this step's run"})

    def resolved_tracking_uri(self) -> str:
        return resolve_tracking_uri(self.mlflow_tracking_uri)


class RunLogger:
    """Logs to one MLflow run; metrics are buffered and sent in batches (a call costs ~50 ms)."""

    def __init__(self, run_id: str | None) -> None:
        self.run_id = run_id
        self._buffer: list[Any] = []
        self._last_flush = time.monotonic()

    @property
    def active(self) -> bool:
        return self.run_id is not None

    def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None:
        if not self.active:
            return
        from mlflow.entities import Metric

        now_ms = int(time.time() * 1000)
        self._buffer.extend(Metric(key, float(value), now_ms, step or 0) for key, value in metrics.items())
        if len(self._buffer) >= FLUSH_EVERY_METRICS or time.monotonic() - self._last_flush > FLUSH_EVERY_S:
            self.flush()

    def flush(self) -> None:
        if not self.active or not self._buffer:
            return
        from mlflow.tracking import MlflowClient

        client = MlflowClient()
        for start in range(0, len(self._buffer), 1000):  # the server's batch limit
            client.log_batch(self.run_id, metrics=self._buffer[start : start + 1000])
        self._buffer.clear()
        self._last_flush = time.monotonic()

    def log_params(self, params: dict[str, Any]) -> None:
        if not self.active:
            return
        import mlflow

        mlflow.log_params({k: _param_value(v) for k, v in params.items()})

    def set_tags(self, tags: dict[str, Any]) -> None:
        if self.active:
            import mlflow

            mlflow.set_tags({k: str(v) for k, v in tags.items()})

    def log_artifact(self, local_path: str, artifact_path: str | None = None) -> None:
        if self.active:
            import mlflow

            mlflow.log_artifact(local_path, artifact_path)

    def log_dict(self, obj: dict[str, Any], artifact_file: str) -> None:
        if self.active:
            import mlflow

            mlflow.log_dict(obj, artifact_file)

    def log_figure(self, figure: Any, artifact_file: str) -> None:
        if self.active:
            import mlflow

            mlflow.log_figure(figure, artifact_file)

    def log_dataset(self, name: str, source_uri: str, digest: str, context: str) -> None:
        """Record the dataset this run read as a run input (the UI's Dataset column).

        Only metadata is logged (a MetaDataset): the dataset stays where it is, at ``source_uri``
        (a local path or ``s3://...``); ``digest`` tells its versions apart; ``context`` is the
        use, e.g. "training" or "evaluation".
        """
        if not self.active:
            return
        import mlflow
        from mlflow.data.dataset_source_registry import resolve_dataset_source
        from mlflow.data.meta_dataset import MetaDataset

        if "://" not in source_uri:  # a relative path means nothing outside this working directory
            source_uri = os.path.abspath(source_uri)
        with warnings.catch_warnings():  # MLflow registers two equal local sources ("" and file:)
            warnings.filterwarnings("ignore", "The specified dataset source can be interpreted")
            source = resolve_dataset_source(source_uri)  # a path -> "local", s3://... -> "s3"
        mlflow.log_input(MetaDataset(source, name=name, digest=digest), context=context)

    def log_bytes(self, data: bytes, artifact_file: str) -> None:
        """Log an in-memory file (e.g. a PNG rendered elsewhere) as an artifact."""
        if not self.active:
            return
        with tempfile.TemporaryDirectory() as tmp:
            path = os.path.join(tmp, os.path.basename(artifact_file))
            with open(path, "wb") as handle:
                handle.write(data)
            self.log_artifact(path, os.path.dirname(artifact_file) or None)


def _param_value(value: Any) -> str:
    text = json.dumps(value) if isinstance(value, list | dict | tuple) else str(value)
    return text[:MAX_PARAM_CHARS]


@contextlib.contextmanager
def step_run(
    step: str, config: Any, *, enabled: bool = True, tags: dict[str, Any] | None = None
) -> Iterator[RunLogger]:
    """Open this step's MLflow run (a child of ``config.mlflow_parent_run_id`` when set).

    ``config`` is the step's frozen config (a TrackingOptions subclass); its fields become the
    run's params. With tracking off, or ``enabled=False`` (ranks other than 0), the logger is
    inert. The run ends FAILED if the block raises, FINISHED otherwise.
    """
    uri = config.resolved_tracking_uri() if enabled else ""
    if not uri:
        yield RunLogger(None)
        return
    import mlflow

    mlflow.set_tracking_uri(uri)
    parent = config.mlflow_parent_run_id or None
    if parent:
        experiment = mlflow.get_experiment(mlflow.get_run(parent).info.experiment_id)
    else:
        experiment = mlflow.set_experiment(config.mlflow_experiment)
    mark_model_training(uri, experiment)
    experiment_id = experiment.experiment_id
    run = mlflow.start_run(
        experiment_id=experiment_id,
        run_name=config.mlflow_run_name or step,
        parent_run_id=parent,
        tags={"dal.step": step, **(tags or {})},
    )
    logger = RunLogger(run.info.run_id)
    status = "FAILED"
    try:
        settings = settings_without_tracking(config)
        logger.log_params(settings)
        logger.log_dict(settings, "config.json")  # the exact config, typed, to rerun the step
        yield logger
        status = "FINISHED"
    finally:
        try:
            logger.flush()
        finally:
            mlflow.end_run(status=status)


def mark_model_training(tracking_uri: str, experiment: Any) -> None:
    """Tag ``experiment`` (an mlflow Experiment) as model training unless it has a kind already:
    a kind someone chose in the UI is kept."""
    if EXPERIMENT_KIND_TAG not in experiment.tags:
        from mlflow.tracking import MlflowClient

        MlflowClient(tracking_uri).set_experiment_tag(
            experiment.experiment_id, EXPERIMENT_KIND_TAG, EXPERIMENT_KIND
        )


# -- pipeline-level runs: one parent run per pipeline run, children per step ------------------
PIPELINE_JOB_TAG = "dal.pipeline_job_id"


def start_pipeline_run(
    tracking_uri: str,
    experiment: str,
    job_id: str,
    run_name: str,
    params: dict[str, Any],
    artifact_location: str = "",
) -> str:
    """Create (RUNNING) the parent run of one pipeline run and return its id.

    ``artifact_location`` only matters when the experiment does not exist yet (e.g. a local
    sqlite store whose artifacts should sit beside it instead of in the working directory).
    The run is found again by its job-id tag, so the pipeline's exit handler, which may not
    depend on other tasks, can close it.
    """
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri)
    found = client.get_experiment_by_name(experiment)
    if found is None:
        experiment_id = client.create_experiment(
            experiment,
            artifact_location=artifact_location or None,
            tags={EXPERIMENT_KIND_TAG: EXPERIMENT_KIND},
        )
    else:
        mark_model_training(tracking_uri, found)
        experiment_id = found.experiment_id
    run = client.create_run(
        experiment_id, run_name=run_name, tags={PIPELINE_JOB_TAG: job_id, "dal.step": "pipeline"}
    )
    from mlflow.entities import Param

    client.log_batch(run.info.run_id, params=[Param(k, _param_value(v)) for k, v in sorted(params.items())])
    return run.info.run_id


def find_pipeline_run(tracking_uri: str, experiment: str, job_id: str) -> str | None:
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri)
    found = client.get_experiment_by_name(experiment)
    if found is None:
        return None
    runs = client.search_runs(
        [found.experiment_id], filter_string=f"tags.`{PIPELINE_JOB_TAG}` = '{job_id}'", max_results=1
    )
    return runs[0].info.run_id if runs else None


def finish_pipeline_run(
    tracking_uri: str, experiment: str, job_id: str, succeeded: bool, message: str = ""
) -> str | None:
    """Mark the parent run FINISHED or FAILED (with the pipeline's error message as a tag)."""
    from mlflow.tracking import MlflowClient

    run_id = find_pipeline_run(tracking_uri, experiment, job_id)
    if run_id is None:
        return None
    client = MlflowClient(tracking_uri)
    if message:
        client.set_tag(run_id, "dal.pipeline_error", message[:5000])
    client.set_terminated(run_id, status="FINISHED" if succeeded else "FAILED")
    return run_id


def log_run_metrics(tracking_uri: str, run_id: str, metrics: dict[str, float]) -> None:
    """Put metrics on an existing run by id, e.g. the pipeline's headline metrics on its parent
    run (no-op without tracking or without a run)."""
    uri = resolve_tracking_uri(tracking_uri)
    if not uri or not run_id:
        return
    from mlflow.entities import Metric
    from mlflow.tracking import MlflowClient

    now_ms = int(time.time() * 1000)
    MlflowClient(uri).log_batch(
        run_id, metrics=[Metric(k, float(v), now_ms, 0) for k, v in sorted(metrics.items())]
    )
