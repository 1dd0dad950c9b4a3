"""The trained model leaves training here: ``<output>/model.pt`` and the MLflow run.

``model.pt`` is the weights-only artifact (components.model.artifact) that extraction loads;
MLflow gets the same file as an artifact plus the EMA backbone in its pytorch flavour, whose URI
the pipeline registers in the model registry. That MLflow model carries an input example, a few
real train frames prepared as the backbone takes them (``example_frames``), and the signature of
its output on them.
"""

from __future__ import annotations

import copy
import os
import tempfile
from collections.abc import Sequence

import numpy as np
import torch
from torch import nn

from components.common import images, storage
from components.common.dataset import Dataset, RowGroupRef
from components.common.errors import DalError
from components.common.tracking import RunLogger, settings_without_tracking
from components.model.artifact import ModelInfo, save_model
from components.train.config import TrainConfig

MODEL_FILE = "model.pt"
# The weights training starts from (the init: ImageNet or random), in the same format, so that
# evaluating it beside model.pt shows what training added.
INITIAL_MODEL_FILE = "initial.pt"
# Frames in the MLflow input example. MLflow writes it as JSON twice (input_example.json and an
# indented serving_input_example.json): ~3.8 MB a frame at 224x112, against ~9 MB of MobileNetV2
# weights, so one frame; the signature's batch dimension is variable (-1) all the same.
EXAMPLE_FRAMES = 1


def model_info(config: TrainConfig, feature_dim: int) -> ModelInfo:
    return ModelInfo(
        backbone=config.backbone,
        feature_dim=feature_dim,
        image_height=config.image_height,
        image_width=config.image_width,
        config=settings_without_tracking(config),
    )


def example_frames(
    dataset: Dataset,
    refs: Sequence[RowGroupRef],
    is_train: np.ndarray,
    size: tuple[int, int],
    count: int = EXAMPLE_FRAMES,
) -> np.ndarray:
    """The first frame of each of the first ``count`` train tracklets (``is_train[tracklet_id]``)
    in ``refs``, decoded and resized as extraction does: (count, 3, H, W) float32 in [0, 1]."""
    frames: dict[int, torch.Tensor] = {}
    for ref in refs:
        table = dataset.read_row_group(ref, ["tracklet_id", "image"])
        ids = table.column("tracklet_id").to_numpy()
        column = table.column("image")
        for row, tracklet in enumerate(ids.tolist()):
            if is_train[tracklet] and tracklet not in frames:
                where = f"{ref.shard_uri} row group {ref.row_group}, tracklet {tracklet}"
                frames[tracklet] = images.resize(images.decode(column[row].as_buffer(), where), size)
                if len(frames) == count:
                    return torch.stack(list(frames.values())).numpy()
    if not frames:
        raise DalError(f"{dataset.root}: no train frames for the MLflow input example")
    return torch.stack(list(frames.values())).numpy()  # fewer train tracklets than count


def publish_model(
    config: TrainConfig, ema_model: nn.Module, logger: RunLogger, example: np.ndarray | None
) -> tuple[str, str]:
    """Write ``<output>/model.pt`` (the EMA weights) and log it to MLflow; both URIs ("" untracked).

    ``example``: ``example_frames`` of the training data, needed only when ``logger`` is active.
    """
    info = model_info(config, ema_model.feature_dim)
    uri = storage.join(config.output, MODEL_FILE)
    with tempfile.TemporaryDirectory() as tmp:
        local = os.path.join(tmp, MODEL_FILE)
        save_model(local, ema_model, info)
        storage.upload_file(local, uri)
        logger.log_artifact(local)
    return uri, log_mlflow_model(logger, ema_model, info, example)


def publish_initial_model(config: TrainConfig, model: nn.Module) -> str:
    """Write ``<output>/initial.pt`` unless a first run of this output already did; its URI.

    The init is a pure function of the config (seeded, or loaded weights), so a resumed run that
    finds no file rebuilds exactly the same one.
    """
    uri = storage.join(config.output, INITIAL_MODEL_FILE)
    if not storage.exists(uri):
        save_model(uri, model, model_info(config, model.feature_dim))
    return uri


def log_mlflow_model(logger: RunLogger, model: nn.Module, info: ModelInfo, example: np.ndarray | None) -> str:
    """Log the EMA backbone with MLflow's pytorch flavour; the model URI (empty without tracking).

    ``example`` (frames in [0, 1], (N, 3, H, W)) is normalised with the model's mean and std,
    which is what the backbone takes, and becomes the input example; the signature is inferred
    from the model's output on it. Registration in the model registry is the pipeline's job,
    from the returned URI.
    """
    if not logger.active:
        return ""
    if example is None:
        raise DalError("publish: an MLflow model needs an input example (example_frames)")
    import mlflow.pytorch
    import timm
    import torchvision
    from mlflow.models import infer_signature

    cpu_model = copy.deepcopy(model).cpu().float().eval()
    pixels = images.normalize(torch.from_numpy(example).float(), info.mean, info.std)
    with torch.inference_mode():
        output = cpu_model(pixels)
    signature = infer_signature(pixels.numpy(), output.numpy())
    requirements = [f"torch=={torch.__version__.split('+')[0]}", f"timm=={timm.__version__}"]
    requirements.append(f"torchvision=={torchvision.__version__.split('+')[0]}")
    # "pickle": the "pt2" default traces one fixed input shape; model.pt stays the weights-only copy.
    logged = mlflow.pytorch.log_model(
        cpu_model,
        name="model",
        signature=signature,
        input_example=pixels.numpy(),
        pip_requirements=requirements,
        serialization_format="pickle",
    )
    return str(logged.model_uri)
