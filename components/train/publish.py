"""The trained model leaves training here: ``<output>/model.pt`` and the MLflow run.

``model.pt`` is the weights-only artifact (components.model.artifact) that extraction loads;
MLflow gets the same file as an artifact plus the EMA backbone in its pytorch flavour, whose URI
the pipeline registers in the model registry.
"""

from __future__ import annotations

import copy
import os
import tempfile

import torch
from torch import nn

from components.common import storage
from components.common.tracking import RunLogger, settings_without_tracking
from components.model.artifact import ModelInfo, save_model
from components.train.config import TrainConfig

MODEL_FILE = "model.pt"
# The weights training starts from (the init: ImageNet or random), in the same format, so that
# evaluating it beside model.pt shows what training added.
INITIAL_MODEL_FILE = "initial.pt"


def model_info(config: TrainConfig, feature_dim: int) -> ModelInfo:
    return ModelInfo(
        backbone=config.backbone,
        feature_dim=feature_dim,
        image_height=config.image_height,
        image_width=config.image_width,
        config=settings_without_tracking(config),
    )


def publish_model(config: TrainConfig, ema_model: nn.Module, logger: RunLogger) -> tuple[str, str]:
    """Write ``<output>/model.pt`` (the EMA weights) and log it to MLflow; both URIs ("" untracked)."""
    info = model_info(config, ema_model.feature_dim)
    uri = storage.join(config.output, MODEL_FILE)
    with tempfile.TemporaryDirectory() as tmp:
        local = os.path.join(tmp, MODEL_FILE)
        save_model(local, ema_model, info)
        storage.upload_file(local, uri)
        logger.log_artifact(local)
    return uri, log_mlflow_model(logger, ema_model, info)


def publish_initial_model(config: TrainConfig, model: nn.Module) -> str:
    """Write ``<output>/initial.pt`` unless a first run of this output already did; its URI.

    The init is a pure function of the config (seeded, or loaded weights), so a resumed run that
    finds no file rebuilds exactly the same one.
    """
    uri = storage.join(config.output, INITIAL_MODEL_FILE)
    if not storage.exists(uri):
        save_model(uri, model, model_info(config, model.feature_dim))
    return uri


def log_mlflow_model(logger: RunLogger, model: nn.Module, info: ModelInfo) -> str:
    """Log the EMA backbone with MLflow's pytorch flavour; the model URI (empty without tracking).

    Registration in the model registry is the pipeline's job, from this URI.
    """
    if not logger.active:
        return ""
    import mlflow.pytorch
    import numpy as np
    import timm
    import torchvision
    from mlflow.models import infer_signature

    signature = infer_signature(
        np.zeros((1, 3, info.image_height, info.image_width), np.float32),
        np.zeros((1, info.feature_dim), np.float32),
    )
    requirements = [f"torch=={torch.__version__.split('+')[0]}", f"timm=={timm.__version__}"]
    requirements.append(f"torchvision=={torchvision.__version__.split('+')[0]}")
    # "pickle": the "pt2" default traces one fixed input shape; model.pt stays the weights-only copy.
    logged = mlflow.pytorch.log_model(
        copy.deepcopy(model).cpu().float().eval(),
        name="model",
        signature=signature,
        pip_requirements=requirements,
        serialization_format="pickle",
    )
    return str(logged.model_uri)
