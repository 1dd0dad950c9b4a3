"""KFP components of the training step, one split each.

* ``train``: `dal train` in this pod, torchrun over its ``gpus`` GPUs when > 1;
* ``train_multinode``: a small launcher pod that runs the same training as a Kubeflow Trainer
  TrainJob over ``nodes`` nodes (trainjob.py: the manifest, the watch, the keep/delete policy);
* ``publish_models``: hands either one's models on as KFP Model artifacts, so everything
  downstream is the same whichever path trained.

The trainers return a ``TrainedModel`` record (JSON): KFP's ``dsl.OneOf`` joins the two branches
on a parameter (kfp.local joins no artifacts).
"""

from kfp import dsl
from kfp.dsl import Dataset, Input, Model, Output

from components.common.kfp_io import DEFAULT_IMAGE


@dsl.component(base_image=DEFAULT_IMAGE, install_kfp_package=False)
def train(
    ingested: Input[Dataset],
    split: int,
    train_options: dict,
    gpus: int,
    storage_root: str,
    run_key: str,
    mlflow_tracking_uri: str,
    mlflow_experiment: str,
    mlflow_parent_run_id: str,
) -> str:
    """Train one split in this pod; returns its TrainedModel record (JSON). A retried attempt
    resumes from the checkpoints the previous one left in the same run directory."""
    from components.common import kfp_io
    from components.train.launch import split_config, train_in_pod, trained_model

    config = split_config(
        dataset=kfp_io.pointed_uri(ingested),
        split=split,
        options=train_options,
        storage_root=storage_root,
        run_key=run_key,
        mlflow_tracking_uri=mlflow_tracking_uri,
        mlflow_experiment=mlflow_experiment,
        mlflow_parent_run_id=mlflow_parent_run_id,
    )
    return trained_model(config, train_in_pod(config, int(gpus))).to_json()


@dsl.component(base_image=DEFAULT_IMAGE, install_kfp_package=False)
def train_multinode(
    ingested: Input[Dataset],
    split: int,
    train_options: dict,
    nodes: int,
    gpus: int,
    trainjob_options: dict,
    image: str,
    storage_root: str,
    run_key: str,
    mlflow_tracking_uri: str,
    mlflow_experiment: str,
    mlflow_parent_run_id: str,
) -> str:
    """Train one split as a TrainJob of ``nodes`` x ``gpus`` GPUs in ``image``, and wait for it;
    returns its TrainedModel record (JSON). A retried attempt adopts the same TrainJob (or
    recreates a failed one, which resumes from the run directory's checkpoints)."""
    from components.common import kfp_io
    from components.train.launch import split_config, train_on_trainjob, trained_model

    config = split_config(
        dataset=kfp_io.pointed_uri(ingested),
        split=split,
        options=train_options,
        storage_root=storage_root,
        run_key=run_key,
        mlflow_tracking_uri=mlflow_tracking_uri,
        mlflow_experiment=mlflow_experiment,
        mlflow_parent_run_id=mlflow_parent_run_id,
    )
    summary = train_on_trainjob(
        config,
        nodes=int(nodes),
        gpus_per_node=int(gpus),
        image=image,
        options=trainjob_options,
        run_key=run_key,
    )
    return trained_model(config, summary).to_json()


@dsl.component(base_image=DEFAULT_IMAGE, install_kfp_package=False)
def publish_models(trained: str, model: Output[Model], initial_model: Output[Model]) -> str:
    """The trained model and the weights training started from (ImageNet or random init, scored
    beside it to show what training added) as Model artifacts; returns ``trained`` unchanged
    for the registration step that collects the splits."""
    from components.common import kfp_io

    record = kfp_io.TrainedModel.from_json(trained)
    kfp_io.publish(
        model,
        record.model_uri,
        split=record.split,
        backbone=record.backbone,
        objective=record.objective,
        steps=record.steps,
        mlflow_model_uri=record.mlflow_model_uri,
        mlflow_run_id=record.mlflow_run_id,
    )
    kfp_io.publish(
        initial_model,
        record.initial_model_uri,
        split=record.split,
        backbone=record.backbone,
        weights=record.weights,
        steps=0,
    )
    return trained
