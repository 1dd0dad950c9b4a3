"""The DAL pipeline: ingest -> (per split) train -> extract -> evaluate -> average -> register
a candidate -> promote it to champion if it beats the current one; the initial weights (what
training started from) are extracted, evaluated and averaged beside.

Wiring only: every step's logic lives in components/<step>/. Each step's options are one dict
parameter generated from its config dataclass (``train_options`` = TrainConfig's fields but the
ones the pipeline sets), checked by the dataclass at submit time, in the first task and in the
pod. ``nodes`` > 1 trains each split as a Kubeflow Trainer TrainJob. Secrets and cluster
settings reach the pods from Kubernetes (Secret ``dal-s3``: AWS keys and endpoint; optional
Secret ``dal-mlflow-auth``: MLflow credentials; ConfigMap ``dal-config``: ``DAL_STORE``,
``MLFLOW_TRACKING_URI``), never as parameters.
"""

# No "from __future__ import annotations": KFP reads the parameter annotations as types.

import dataclasses
from typing import Any

from kfp import dsl, kubernetes

from components.common.kfp_io import DEFAULT_IMAGE
from components.evaluate.component import aggregate, evaluate, report
from components.evaluate.config import EVALUATE_OPTIONS
from components.extract.component import extract
from components.extract.config import EXTRACT_OPTIONS
from components.ingest.component import ingest, plan_splits, prepare_source
from components.ingest.config import INGEST_OPTIONS
from components.ingest.synthetic_config import SynthConfig
from components.tracking.component import finish_run, promote_champion, register_candidate, start_run
from components.train.component import publish_models, train, train_multinode
from components.train.config import TRAIN_OPTIONS
from components.train.trainjob import TRAINJOB_OPTIONS

PIPELINE_NAME = "dal-reid"
S3_SECRET = "dal-s3"
MLFLOW_SECRET = "dal-mlflow-auth"
CONFIG_MAP = "dal-config"
# Pod resources per step (requests = limits for CPU-heavy steps; the train step adds GPUs).
RESOURCES = {
    "prepare-source": ("1", "2", "2Gi", "4Gi"),
    "ingest": ("4", "4", "8Gi", "8Gi"),
    "train": ("8", "8", "32Gi", "32Gi"),
    "extract": ("4", "4", "16Gi", "16Gi"),
    "evaluate": ("2", "2", "8Gi", "8Gi"),
}
SMALL = ("500m", "1", "512Mi", "1Gi")
# Steps that may be preempted or hit a flaky node retry with backoff: training resumes from the
# checkpoints of the same run directory, extraction and evaluation rewrite their outputs whole.
RETRY = {"num_retries": 3, "backoff_duration": "30s", "backoff_factor": 2.0, "backoff_max_duration": "600s"}
INITIAL = "initial"  # the variant of extract / evaluate / aggregate that scores the initial weights


def _default(config_cls: type, name: str) -> Any:
    return next(f.default for f in dataclasses.fields(config_cls) if f.name == name)


def _score(
    ingested: Any,
    model: Any,
    split: Any,
    *,
    options: dict,
    where: dict,
    tracking: dict,
    image: str,
    variant: str = "",
) -> dsl.PipelineTask:
    """Extract and evaluate one model of a split: the trained one, or a ``variant`` (the initial
    weights) in its own folders and with its own display names; returns the evaluate task."""
    extra = {"variant": variant} if variant else {}  # the trained model's tasks take the default
    features = extract(
        ingested=ingested,
        model=model,
        split=split,
        extract_options=options["extract"],
        **extra,
        **where,
        **tracking,
    )
    evaluated = evaluate(
        ingested=ingested,
        features=features.outputs["features"],
        split=split,
        evaluate_options=options["evaluate"],
        **extra,
        **where,
        **tracking,
    )
    for task, step in ((features, "extract"), (evaluated, "evaluate")):
        _on_cluster(task, image, RESOURCES[step])
        task.set_caching_options(False)
        task.set_retry(**RETRY)
        if variant:
            task.set_display_name(f"{step} ({variant} weights)")
    return evaluated


def _on_cluster(task: dsl.PipelineTask, image: str, resources: tuple[str, str, str, str] = SMALL) -> None:
    """Image, resources and the Kubernetes-provided environment of one task."""
    cpu_request, cpu_limit, memory_request, memory_limit = resources
    task.set_container_image(image)
    task.set_cpu_request(cpu_request).set_cpu_limit(cpu_limit)
    task.set_memory_request(memory_request).set_memory_limit(memory_limit)
    kubernetes.use_config_map_as_env(
        task,
        CONFIG_MAP,
        {
            "DAL_STORE": "DAL_STORE",
            "MLFLOW_TRACKING_URI": "MLFLOW_TRACKING_URI",
            "AWS_MAX_ATTEMPTS": "AWS_MAX_ATTEMPTS",
        },
    )
    kubernetes.use_secret_as_env(
        task,
        S3_SECRET,
        {
            "AWS_ACCESS_KEY_ID": "AWS_ACCESS_KEY_ID",
            "AWS_SECRET_ACCESS_KEY": "AWS_SECRET_ACCESS_KEY",
            "AWS_REGION": "AWS_REGION",
        },
    )
    # AWS S3 itself needs no endpoint: the key is only there for MinIO, Ceph, ...
    kubernetes.use_secret_as_env(task, S3_SECRET, {"AWS_ENDPOINT_URL": "AWS_ENDPOINT_URL"}, optional=True)
    kubernetes.use_secret_as_env(
        task,
        MLFLOW_SECRET,
        {
            "MLFLOW_TRACKING_USERNAME": "MLFLOW_TRACKING_USERNAME",
            "MLFLOW_TRACKING_PASSWORD": "MLFLOW_TRACKING_PASSWORD",
        },
        optional=True,
    )
    kubernetes.set_security_context(task, run_as_user=10001, run_as_group=10001, run_as_non_root=True)


@dsl.pipeline(name=PIPELINE_NAME, description="Deep Association Learning: unsupervised video person re-ID")
def dal_pipeline(
    dataset: str = "mars",
    source_uri: str = "",
    split_lists: str = "",
    ingest_options: dict = INGEST_OPTIONS.defaults(),  # noqa: B008 (a compile-time constant)
    train_options: dict = TRAIN_OPTIONS.defaults(),  # noqa: B008
    extract_options: dict = EXTRACT_OPTIONS.defaults(),  # noqa: B008
    evaluate_options: dict = EVALUATE_OPTIONS.defaults(),  # noqa: B008
    gpus: int = 1,
    nodes: int = 1,
    trainjob_options: dict = TRAINJOB_OPTIONS.defaults(),  # noqa: B008
    synthetic_identities: int = _default(SynthConfig, "num_identities"),
    synthetic_seed: int = _default(SynthConfig, "seed"),
    storage_root: str = "",
    mlflow_tracking_uri: str = "",
    mlflow_experiment: str = "dal",
    mlflow_artifact_location: str = "",
    model_name: str = "",
    image: str = DEFAULT_IMAGE,
) -> None:
    """Ingest a dataset (``source_uri``; empty: a synthetic one in the dataset's real layout),
    then train, extract and evaluate each split (10 for PRID2011 / iLIDS-VID, 1 for MARS),
    average the splits, register split 0's model as the run's ``candidate`` and promote it to
    ``champion`` if it beats the current one. Own footage (``dataset`` ``tracklets``: tracklet
    folders or an index file; ``videos``: videos + MOTChallenge tracks) trains on its unlabelled
    tracklets and is scored on its labelled ones; without labels evaluation is skipped with a note
    and the candidate is registered unscored (never promoted).

    ``*_options``: the steps' config fields (``dal pipeline run --help`` lists them; missing keys
    take the dataclass defaults). ``gpus``: GPUs per node; ``nodes`` > 1 trains as a TrainJob of
    that many nodes (``trainjob_options``: runtime, timeout, keep policy, node size).
    ``storage_root`` / ``mlflow_tracking_uri`` default to ``$DAL_STORE`` / ``$MLFLOW_TRACKING_URI``
    of the cluster's ConfigMap.
    """
    tracking = {"mlflow_tracking_uri": mlflow_tracking_uri, "mlflow_experiment": mlflow_experiment}
    parent = start_run(
        **tracking,
        mlflow_artifact_location=mlflow_artifact_location,
        job_id=dsl.PIPELINE_JOB_ID_PLACEHOLDER,
        run_name=dsl.PIPELINE_JOB_NAME_PLACEHOLDER,
        params={"dataset": dataset, "source_uri": source_uri, "gpus": gpus, "nodes": nodes},
        ingest_options=ingest_options,
        train_options=train_options,
        extract_options=extract_options,
        evaluate_options=evaluate_options,
        trainjob_options=trainjob_options,
    ).set_display_name("check options, mlflow: start run")
    _on_cluster(parent, image)
    parent.set_caching_options(False)
    finish = finish_run(**tracking, job_id=dsl.PIPELINE_JOB_ID_PLACEHOLDER).set_display_name(
        "mlflow: finish run"
    )
    _on_cluster(finish, image)
    finish.set_caching_options(False)

    with dsl.ExitHandler(finish, name="dal"):
        step_tracking = {**tracking, "mlflow_parent_run_id": parent.output}
        where = {"storage_root": storage_root, "run_key": dsl.PIPELINE_JOB_ID_PLACEHOLDER}

        source = prepare_source(
            dataset=dataset,
            source_uri=source_uri,
            storage_root=storage_root,
            synthetic_identities=synthetic_identities,
            seed=synthetic_seed,
        ).set_display_name("source")
        _on_cluster(source, image, RESOURCES["prepare-source"])
        source.set_caching_options(True)

        ingested = ingest(
            dataset=dataset,
            source=source.output,
            split_lists=split_lists,
            ingest_options=ingest_options,
            storage_root=storage_root,
            **step_tracking,
        )
        _on_cluster(ingested, image, RESOURCES["ingest"])
        ingested.set_caching_options(True)

        splits = plan_splits(ingested=ingested.outputs["ingested"])
        _on_cluster(splits, image)
        splits.set_caching_options(False)

        with dsl.ParallelFor(splits.output, name="split", parallelism=2) as split:
            trainer = {
                "ingested": ingested.outputs["ingested"],
                "split": split,
                "train_options": train_options,
                **where,
                **step_tracking,
            }
            with dsl.If(nodes > 1, name="multi-node"):
                launched = train_multinode(
                    **trainer, nodes=nodes, gpus=gpus, trainjob_options=trainjob_options, image=image
                ).set_display_name("train (TrainJob)")
                _on_cluster(launched, image)  # it only creates and watches the TrainJob
            with dsl.Else(name="one-pod"):
                in_pod = train(**trainer, gpus=gpus)
                _on_cluster(in_pod, image, RESOURCES["train"])
                in_pod.set_accelerator_type("nvidia.com/gpu").set_accelerator_limit(gpus)
                kubernetes.empty_dir_mount(in_pod, volume_name="dshm", mount_path="/dev/shm", medium="Memory")
            for task in (launched, in_pod):
                task.set_caching_options(False)
            # A retried attempt resumes from the run's checkpoints. The TrainJob path restarts at
            # the JobSet's level instead (failurePolicy.maxRestarts of the dal-torch runtime): a
            # KFP retry of its launcher would relaunch every node of a job that failed for good.
            in_pod.set_retry(**RETRY)

            trained = publish_models(trained=dsl.OneOf(launched.output, in_pod.output))
            trained.set_display_name("models")
            _on_cluster(trained, image)
            trained.set_caching_options(False)

            scored = {
                "options": {"extract": extract_options, "evaluate": evaluate_options},
                "where": where,
                "tracking": step_tracking,
                "image": image,
            }
            evaluated = _score(ingested.outputs["ingested"], trained.outputs["model"], split, **scored)
            # The weights training started from, through the same steps: what training added.
            initial_evaluated = _score(
                ingested.outputs["ingested"],
                trained.outputs["initial_model"],
                split,
                **scored,
                variant=INITIAL,
            )

        averaged = aggregate(evaluations=dsl.Collected(evaluated.outputs["Output"]), **where, **step_tracking)
        _on_cluster(averaged, image, RESOURCES["evaluate"])
        averaged.set_caching_options(False)

        initial_averaged = aggregate(
            evaluations=dsl.Collected(initial_evaluated.outputs["Output"]),
            variant=INITIAL,
            **where,
            **step_tracking,
        ).set_display_name("aggregate (initial weights)")
        _on_cluster(initial_averaged, image, RESOURCES["evaluate"])
        initial_averaged.set_caching_options(False)

        shown = report(**where).after(averaged, initial_averaged).set_display_name("report")
        _on_cluster(shown, image)
        shown.set_caching_options(False)

        registry = {
            "dataset": dataset,
            "source_uri": source_uri,
            "model_name": model_name,
            "mlflow_tracking_uri": mlflow_tracking_uri,
        }
        candidate = register_candidate(
            trained=dsl.Collected(trained.outputs["Output"]),
            metrics=averaged.outputs["Output"],
            job_id=dsl.PIPELINE_JOB_ID_PLACEHOLDER,
            **registry,
        ).set_display_name("mlflow: register candidate")
        champion = promote_champion(version=candidate.output, **registry).set_display_name(
            "mlflow: promote champion"
        )
        for task in (candidate, champion):
            _on_cluster(task, image)
            task.set_caching_options(False)
