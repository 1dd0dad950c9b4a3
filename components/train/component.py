"""KFP component of the training step: `dal train`, on `gpus` GPUs of one pod via torchrun.

Multi-node training runs as a PyTorchJob (k8s/base/train-pytorchjob.yaml) with the same entry.
"""

from kfp import dsl
from kfp.dsl import Dataset, Input, Model, Output

from components.common.kfp_io import DEFAULT_IMAGE


@dsl.component(base_image=DEFAULT_IMAGE, install_kfp_package=False)
def train(
    ingested: Input[Dataset],
    split: int,
    objective: str,
    backbone: str,
    weights: str,
    steps: int,
    batch_size: int,
    image_height: int,
    image_width: int,
    gpus: int,
    seed: int,
    storage_root: str,
    run_key: str,
    mlflow_tracking_uri: str,
    mlflow_experiment: str,
    mlflow_parent_run_id: str,
    model: Output[Model],
    initial_model: Output[Model],
) -> str:
    """Train one split; returns the MLflow model URI ("" without tracking) for registration.

    ``initial_model`` is the model training started from (ImageNet or random init), evaluated
    beside the trained one to show what training added.
    """
    import subprocess
    import sys

    from components.common import kfp_io, storage
    from components.common.config import to_argv
    from components.train.config import TrainConfig
    from components.train.run import run
    from components.train.summary import TrainSummary

    split = int(split)  # ParallelFor items may arrive as floats
    output = storage.join(kfp_io.run_dir(storage_root, run_key, split), objective)
    config = TrainConfig(
        dataset=kfp_io.pointed_uri(ingested),
        output=output,
        split=split,
        objective=objective,
        backbone=backbone,
        weights=weights,
        steps=steps,
        batch_size=batch_size,
        image_height=image_height,
        image_width=image_width,
        seed=seed,
        mlflow_tracking_uri=mlflow_tracking_uri,
        mlflow_experiment=mlflow_experiment,
        mlflow_parent_run_id=mlflow_parent_run_id,
        mlflow_run_name=f"train-split{split}",
    )
    if gpus > 1:
        # One process per GPU; rank 0 writes the summary that is read back below.
        command = [sys.executable, "-m", "torch.distributed.run", "--standalone"]
        command += [f"--nproc_per_node={gpus}", "-m", "components.train", *to_argv(config)]
        subprocess.run(command, check=True)
        summary = TrainSummary.read(output)
    else:
        summary = run(config)
    kfp_io.publish(
        model,
        summary.model_uri,
        split=split,
        backbone=backbone,
        objective=objective,
        steps=summary.steps,
        mlflow_model_uri=summary.mlflow_model_uri,
        mlflow_run_id=summary.mlflow_run_id,
    )
    kfp_io.publish(
        initial_model, summary.initial_model_uri, split=split, backbone=backbone, weights=weights, steps=0
    )
    return summary.mlflow_model_uri
