"""How a pipeline task trains one split: in its own pod (torchrun over its GPUs), or as a Kubeflow
Trainer TrainJob over several nodes (trainjob.py). Both write the same run directory, so a
retried task resumes from its checkpoints, and both hand on the same TrainSummary.
"""

from __future__ import annotations

import dataclasses
import signal
import subprocess
import sys
import urllib.parse
from collections.abc import Mapping
from typing import Any

from components.common import kfp_io, storage
from components.common.config import require, to_argv
from components.common.errors import DalError
from components.train.config import TRAIN_OPTIONS, TrainConfig
from components.train.summary import TrainSummary


def split_config(
    *,
    dataset: str,
    split: int,
    options: Mapping[str, Any],
    storage_root: str,
    run_key: str,
    mlflow_tracking_uri: str,
    mlflow_experiment: str,
    mlflow_parent_run_id: str,
) -> TrainConfig:
    """The TrainConfig of one split of one pipeline run: the user's ``train_options`` plus the
    pipeline's fields. The run directory depends only on the run, split and objective, so every
    attempt of a retried task finds the checkpoints of the previous one."""
    split = int(split)  # ParallelFor items may arrive as floats
    draft = TRAIN_OPTIONS.build(
        options,
        dataset=dataset,
        output="-",
        split=split,
        mlflow_tracking_uri=mlflow_tracking_uri,
        mlflow_experiment=mlflow_experiment,
        mlflow_parent_run_id=mlflow_parent_run_id,
        mlflow_run_name=kfp_io.task_run_name("train", split),
    )
    output = storage.join(kfp_io.run_dir(storage_root, run_key, split), draft.objective)
    return dataclasses.replace(draft, output=output)


def train_in_pod(config: TrainConfig, gpus: int) -> TrainSummary:
    """Train here: in this process, or with torchrun over ``gpus`` local GPUs when > 1."""
    if gpus <= 1:
        from components.train.run import run

        return run(config)
    # One process per GPU; rank 0 writes the summary that is read back.
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone"]
    command += [f"--nproc_per_node={gpus}", "-m", "components.train", *to_argv(config)]
    launcher = subprocess.Popen(command)
    # A preempted pod gets SIGTERM: pass it on, so that the ranks checkpoint before stopping
    # (torchrun forwards it to them) and the retried task resumes from that step.
    previous = signal.signal(signal.SIGTERM, lambda signum, frame: launcher.send_signal(signum))
    try:
        code = launcher.wait()
    finally:
        signal.signal(signal.SIGTERM, previous)
    if code != 0:
        raise DalError(f"torchrun over {gpus} GPUs exited with {code} (143: preempted, checkpoint saved)")
    return TrainSummary.read(config.output)


def check_world_size(config: TrainConfig, *, nodes: int, gpus: int) -> None:
    """The global batch must split evenly over ``nodes`` x ``gpus`` ranks: checked when the run
    starts, not once the nodes are scheduled."""
    require(nodes >= 1, "nodes", f"must be >= 1, got {nodes}")
    require(gpus >= 0, "gpus", f"must be >= 0 (0: CPU), got {gpus}")
    config.rank_batch_size(nodes * max(1, gpus))


def _without_credentials(uri: str) -> None:
    """A TrainJob's arguments are readable by anyone who may get TrainJobs: no secrets there."""
    parsed = urllib.parse.urlsplit(uri)
    require(
        not (parsed.username or parsed.password),
        "mlflow_tracking_uri",
        "carries credentials; pass them as MLFLOW_TRACKING_USERNAME / _PASSWORD (Secret dal-mlflow-auth)",
    )


def trained_model(config: TrainConfig, summary: TrainSummary) -> kfp_io.TrainedModel:
    return kfp_io.TrainedModel(
        split=config.split,
        model_uri=summary.model_uri,
        initial_model_uri=summary.initial_model_uri,
        mlflow_model_uri=summary.mlflow_model_uri,
        mlflow_run_id=summary.mlflow_run_id,
        backbone=config.backbone,
        objective=config.objective,
        weights=config.weights,
        steps=summary.steps,
    )


def train_on_trainjob(
    config: TrainConfig,
    *,
    nodes: int,
    gpus_per_node: int,
    image: str,
    options: Mapping[str, Any],
    run_key: str,
) -> TrainSummary:
    """Train as a Kubeflow Trainer TrainJob (``options``: the pipeline's ``trainjob_options``) and
    wait for it; rank 0 of the job writes the summary read back here."""
    from components.train.trainjob import TRAINJOB_OPTIONS, run_trainjob, trainjob_name

    _without_credentials(config.mlflow_tracking_uri)
    job = TRAINJOB_OPTIONS.build(options, nodes=nodes, gpus_per_node=gpus_per_node, image=image)
    name = trainjob_name(run_key, config.split)
    run_trainjob(name, to_argv(config), job, run_key=run_key, split=config.split)
    return TrainSummary.read(config.output)
