"""The trained model leaves training here: ``<output>/model.pt`` and the MLflow run.

``model.pt`` is the weights-only artifact (components.model.artifact) that extraction loads.
MLflow gets the same file as a run artifact and two logged models:

* ``model``: the serving pyfunc (components.model.serving): encoded frames of tracklets in, one
  pooled, L2-normalised embedding per tracklet out, exactly as ``dal extract`` computes it. Its
  URI is what ``publish_model`` returns and the pipeline registers. Input example: the first
  frames of the first train tracklets of the split, the stored JPEG/PNG bytes
  (``example_tracklets``); the signature is fixed (``serving.signature``).
* ``backbone``: the EMA backbone in MLflow's pytorch flavour, for raw tensors: normalised
  (N, 3, H, W) float32 in, unnormalised (N, D) frame features out. Its input example is a few
  real train frames prepared as the backbone takes them (``example_frames``), its signature
  that of its output on them.
"""

from __future__ import annotations

import copy
import os
import tempfile
from collections.abc import Sequence

import numpy as np
import pandas as pd
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
# Frames in the backbone's MLflow input example. MLflow writes it as JSON twice (input_example.json
# and an indented serving_input_example.json): ~3.8 MB a frame at 224x112, against ~9 MB of
# MobileNetV2 weights, so one frame; the signature's batch dimension is variable (-1) all the same.
EXAMPLE_FRAMES = 1
# The serving model's input example: encoded frames (a few KiB each, base64 in the JSON) of two
# tracklets, enough to show that rows of several tracklets give one row each.
EXAMPLE_TRACKLETS = 2
EXAMPLE_FRAMES_PER_TRACKLET = 3
SERVING_MODEL_NAME = "model"  # the logged model the pipeline registers
BACKBONE_MODEL_NAME = "backbone"


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


def example_tracklets(
    dataset: Dataset,
    train_ids: np.ndarray,
    tracklets: int = EXAMPLE_TRACKLETS,
    frames: int = EXAMPLE_FRAMES_PER_TRACKLET,
) -> pd.DataFrame:
    """The serving model's input example: the first ``frames`` frames (by frame index) of the
    first ``tracklets`` of ``train_ids`` (sorted train tracklet ids), as stored (encoded bytes);
    columns ``tracklet`` (the dataset's tracklet name) and ``image``."""
    from components.model import serving  # imports mlflow (seconds): only when tracking

    chosen = np.asarray(train_ids, np.int64)[:tracklets]
    if not len(chosen):
        raise DalError(f"{dataset.root}: no train tracklets for the MLflow input example")
    names = dataset.tracklets().set_index("tracklet_id")["name"]
    parts = []
    for ref in dataset.row_groups_holding(chosen):
        part = dataset.read_row_group(ref, ["tracklet_id", "frame_index", "image"]).to_pandas()
        parts.append(part[part["tracklet_id"].isin(chosen)])
    rows = pd.concat(parts).sort_values(["tracklet_id", "frame_index"]).groupby("tracklet_id").head(frames)
    return pd.DataFrame(
        {
            serving.TRACKLET: [str(names.loc[t]) for t in rows["tracklet_id"]],
            serving.IMAGE: [bytes(b) for b in rows["image"]],
        }
    )


def publish_model(
    config: TrainConfig, ema_model: nn.Module, logger: RunLogger, example: np.ndarray | None
) -> tuple[str, str]:
    """Write ``<output>/model.pt`` (the EMA weights) and log it to MLflow; returns its URI and the
    serving model's ``models:/<model_id>`` URI ("" untracked).

    ``example``: ``example_frames`` of the training data (the backbone's input example), needed
    only when ``logger`` is active; the serving example is read here (``example_tracklets`` of
    the split's train tracklets).
    """
    info = model_info(config, ema_model.feature_dim)
    uri = storage.join(config.output, MODEL_FILE)
    with tempfile.TemporaryDirectory() as tmp:
        local = os.path.join(tmp, MODEL_FILE)
        save_model(local, ema_model, info)
        storage.upload_file(local, uri)
        logger.log_artifact(local)
        if not logger.active:
            return uri, ""
        dataset = Dataset.open(config.dataset)
        train_ids = dataset.subset_tracklets("train", config.split)["tracklet_id"].sort_values().to_numpy()
        log_backbone_model(logger, ema_model, info, example)
        return uri, log_serving_model(logger, local, example_tracklets(dataset, train_ids))


def publish_initial_model(config: TrainConfig, model: nn.Module) -> str:
    """Write ``<output>/initial.pt`` unless a first run of this output already did; its URI.

    The init is a pure function of the config (seeded, or loaded weights), so a resumed run that
    finds no file rebuilds exactly the same one.
    """
    uri = storage.join(config.output, INITIAL_MODEL_FILE)
    if not storage.exists(uri):
        save_model(uri, model, model_info(config, model.feature_dim))
    return uri


def log_serving_model(logger: RunLogger, model_file: str, example: pd.DataFrame) -> str:
    """Log the serving pyfunc (``model``) of ``model_file`` (a local model.pt); its model URI
    (empty without tracking). Registration is the pipeline's job, from the returned URI."""
    if not logger.active:
        return ""
    from components.model import serving

    return serving.log_model(model_file, example, name=SERVING_MODEL_NAME)


def log_backbone_model(
    logger: RunLogger, model: nn.Module, info: ModelInfo, example: np.ndarray | None
) -> str:
    """Log the EMA backbone with MLflow's pytorch flavour (``backbone``); the model URI (empty
    without tracking).

    ``example`` (frames in [0, 1], (N, 3, H, W)) is normalised with the model's mean and std,
    which is what the backbone takes, and becomes the input example; the signature is inferred
    from the model's output on it.
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
        name=BACKBONE_MODEL_NAME,
        signature=signature,
        input_example=pixels.numpy(),
        pip_requirements=requirements,
        serialization_format="pickle",
    )
    return str(logged.model_uri)
