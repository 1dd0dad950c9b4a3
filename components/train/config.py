"""``dal train`` options: one frozen dataclass, validated on construction (no torch import here).

Defaults follow the reference release (yanbeic/Deep-Association-Learning, scripts/train_*.sh):
MARS trains 100k steps with SGD + Nesterov (lr 0.01 -> 0.001 at half the steps) and starts
cross-camera association after 1 epoch; PRID2011 / iLIDS-VID train 20k steps with RMSProp
(lr 0.045 x 0.94 every 2 epochs) and a 2-epoch warm-up. An "epoch" is the number of training
frames divided by the global batch size, in steps. ``0`` / ``-1`` / ``auto`` fields resolve to
these per-dataset defaults with the ``resolve_*`` helpers once the dataset's name is known.
"""

from __future__ import annotations

import dataclasses
import re
from typing import Literal

from components.common.config import require
from components.common.options import StepOptions
from components.common.tracking import TrackingOptions
from components.model.catalog import IMAGENET, check_backbone, check_weights

Objective = Literal["dal", "supervised"]
OptimizerName = Literal["auto", "sgd", "rmsprop"]
Precision = Literal["auto", "fp32", "fp64"]
AnchorInit = Literal["features", "zero"]

SGD_LR = 0.01
RMSPROP_LR = 0.045
# Per-dataset defaults of the reference release, keyed by the normalised dataset name.
_SGD_DATASETS = ("mars",)
_STEPS = {"mars": 100_000}
_DEFAULT_STEPS = 20_000  # PRID2011 / iLIDS-VID (and anything else)
_WARMUP_EPOCHS = {"mars": 1.0}
_DEFAULT_WARMUP_EPOCHS = 2.0


def _help(text: str) -> dict[str, str]:
    return {"help": text}


@dataclasses.dataclass(frozen=True, kw_only=True)
class TrainConfig(TrackingOptions):
    dataset: str = dataclasses.field(metadata=_help("dataset root written by `dal ingest` (path or s3://)"))
    output: str = dataclasses.field(
        metadata=_help("run directory (path or s3://): checkpoints/ and model.pt are written there")
    )
    split: int = dataclasses.field(default=0, metadata=_help("0-based split of 10-split datasets"))
    objective: Objective = dataclasses.field(
        default="dal",
        metadata=_help(
            "dal: unsupervised association (tracklet + camera ids only); supervised: identity "
            "classification on person ids, an UPPER BOUND that reads labels"
        ),
    )
    backbone: str = dataclasses.field(
        default="mobilenet_v2",
        metadata=_help(
            "mobilenet_v2 (ImageNet weights bundled), mobilenet_v1 (the paper's), resnet50 "
            "or timm:<model name>"
        ),
    )
    weights: str = dataclasses.field(
        default=IMAGENET,
        metadata=_help(
            "initial weights: imagenet (bundled, for mobilenet_v2), a weights file (path or URI), "
            "or '' for random init"
        ),
    )
    image_height: int = dataclasses.field(default=224, metadata=_help("input height in pixels"))
    image_width: int = dataclasses.field(default=112, metadata=_help("input width in pixels"))
    batch_size: int = dataclasses.field(
        default=64, metadata=_help("global batch in frames (each of N ranks takes batch_size / N)")
    )
    steps: int = dataclasses.field(
        default=0, metadata=_help("training steps; 0: dataset default (MARS 100000, others 20000)")
    )
    optimizer: OptimizerName = dataclasses.field(
        default="auto", metadata=_help("auto: sgd for MARS, rmsprop otherwise (as the reference release)")
    )
    lr: float = dataclasses.field(
        default=0.0, metadata=_help(f"initial learning rate; 0: {SGD_LR} (sgd) / {RMSPROP_LR} (rmsprop)")
    )
    warmup_epochs: float = dataclasses.field(
        default=-1.0,
        metadata=_help("epochs before cross-camera association starts; -1: MARS 1, others 2"),
    )
    margin: float = dataclasses.field(default=0.5, metadata=_help("margin of the association ranking loss"))
    eta: float = dataclasses.field(
        default=0.5,
        metadata=_help(
            "anchor update rate: the moving-average rate of anchors started at features; from "
            "zero-started anchors (anchor_init=zero, the reference's way) the anchor directions, "
            "and so training, do not depend on it: see unit_anchor_start"
        ),
    )
    anchor_init: AnchorInit = dataclasses.field(
        default="features",
        metadata=_help(
            "where the anchors start: features: each train tracklet's feature under the initial "
            "model (frame features max-pooled, as dal extract pools; the reference release's "
            "--feature_dir option; what lets a short run bootstrap from ImageNet features on MARS); "
            "zero: the reference's default"
        ),
    )
    anchor_init_frames: int = dataclasses.field(
        default=8,
        metadata=_help("frames per train tracklet (evenly spaced) for anchor_init=features; 0: all"),
    )
    unit_anchor_start: bool = dataclasses.field(
        default=False,
        metadata=_help(
            "with anchor_init=zero: start each intra anchor at the mean feature of its tracklet's "
            "first frames (unit scale), not at eta times it, so eta is a moving-average rate (not "
            "in the reference; off: as it)"
        ),
    )
    weight_decay: float = dataclasses.field(
        default=4e-5, metadata=_help("L2 weight decay on conv/linear weights (not norms or biases)")
    )
    clip_value: float = dataclasses.field(
        default=2.0, metadata=_help("clip every gradient element to [-v, v]; 0: no clipping")
    )
    ema_decay: float = dataclasses.field(
        default=0.9999, metadata=_help("decay of the moving average of the weights that model.pt holds")
    )
    augment: bool = dataclasses.field(
        default=True, metadata=_help("random crop (after a 1/8 resize-up) and horizontal flip")
    )
    color_jitter: float = dataclasses.field(
        default=0.0,
        metadata=_help(
            "strength 0..1 of random brightness, contrast, saturation, hue and per-channel gain "
            "(with augment; 0: off, as the reference release)"
        ),
    )
    checkpoint_every: int = dataclasses.field(default=1000, metadata=_help("steps between checkpoints"))
    keep_checkpoints: int = dataclasses.field(default=3, metadata=_help("checkpoints kept (the latest K)"))
    seed: int = dataclasses.field(default=0, metadata=_help("seed of the init, data order and augmentation"))
    device: Literal["auto", "cpu", "cuda"] = dataclasses.field(
        default="auto", metadata=_help("auto: this rank's GPU if CUDA is available, else the CPU")
    )
    precision: Precision = dataclasses.field(
        default="auto",
        metadata=_help(
            "auto: bf16 autocast on CUDA, fp32 on the CPU; fp32: no autocast; fp64: float64 "
            "throughout (slow; for numerical checks, e.g. that N ranks equal one process)"
        ),
    )
    workers: int = dataclasses.field(
        default=4, metadata=_help("DataLoader worker processes per rank (0: load in the training process)")
    )
    sync_batchnorm: Literal["auto", "on", "off"] = dataclasses.field(
        default="auto", metadata=_help("SyncBatchNorm under DDP; auto: on for more than one GPU (CUDA only)")
    )
    shuffle_buffer_row_groups: int = dataclasses.field(
        default=4, metadata=_help("row groups whose frames are shuffled together (a buffer per worker)")
    )
    log_every: int = dataclasses.field(default=10, metadata=_help("steps between logged metrics"))
    eval_every: int = dataclasses.field(
        default=0,
        metadata=_help(
            "steps between evaluations of the EMA model on the split's test tracklets (rank 0; "
            "eval_rank1, eval_mAP, ... in MLflow and the summary's eval_history); 0: off"
        ),
    )
    eval_max_frames: int = dataclasses.field(
        default=8,
        metadata=_help("frames per test tracklet in those evaluations, evenly spaced (bounds cost); 0: all"),
    )

    def __post_init__(self) -> None:
        require(bool(self.dataset.strip()), "dataset", "is required")
        require(bool(self.output.strip()), "output", "is required")
        require(self.split >= 0, "split", f"must be >= 0, got {self.split}")
        check_backbone(self.backbone)
        check_weights(self.backbone, self.weights)
        for name in ("image_height", "image_width"):
            value = getattr(self, name)
            require(16 <= value <= 2048, name, f"must be between 16 and 2048 pixels, got {value}")
        require(self.batch_size >= 2, "batch_size", f"must be >= 2, got {self.batch_size}")
        require(self.steps >= 0, "steps", f"must be >= 0 (0: dataset default), got {self.steps}")
        require(self.lr >= 0, "lr", f"must be >= 0 (0: optimizer default), got {self.lr}")
        require(
            self.warmup_epochs == -1 or self.warmup_epochs >= 0,
            "warmup_epochs",
            f"must be >= 0 or -1 (dataset default), got {self.warmup_epochs}",
        )
        require(self.margin > 0, "margin", f"must be > 0, got {self.margin}")
        require(
            self.anchor_init_frames >= 0,
            "anchor_init_frames",
            f"must be >= 0 (0: all), got {self.anchor_init_frames}",
        )
        require(0 < self.eta <= 1, "eta", f"must be in (0, 1], got {self.eta}")
        require(self.weight_decay >= 0, "weight_decay", f"must be >= 0, got {self.weight_decay}")
        require(self.clip_value >= 0, "clip_value", f"must be >= 0, got {self.clip_value}")
        require(0 <= self.ema_decay < 1, "ema_decay", f"must be in [0, 1), got {self.ema_decay}")
        require(0 <= self.color_jitter <= 1, "color_jitter", f"must be in [0, 1], got {self.color_jitter}")
        require(self.checkpoint_every >= 1, "checkpoint_every", f"must be >= 1, got {self.checkpoint_every}")
        require(self.keep_checkpoints >= 1, "keep_checkpoints", f"must be >= 1, got {self.keep_checkpoints}")
        require(self.seed >= 0, "seed", f"must be >= 0, got {self.seed}")
        require(self.workers >= 0, "workers", f"must be >= 0, got {self.workers}")
        require(
            self.shuffle_buffer_row_groups >= 1,
            "shuffle_buffer_row_groups",
            f"must be >= 1, got {self.shuffle_buffer_row_groups}",
        )
        require(self.log_every >= 1, "log_every", f"must be >= 1, got {self.log_every}")
        require(self.eval_every >= 0, "eval_every", f"must be >= 0 (0: off), got {self.eval_every}")
        require(
            self.eval_max_frames >= 0, "eval_max_frames", f"must be >= 0 (0: all), got {self.eval_max_frames}"
        )

    def rank_batch_size(self, world_size: int) -> int:
        """Frames per rank and step; the global batch must split evenly over the ranks."""
        require(
            self.batch_size % world_size == 0,
            "batch_size",
            f"{self.batch_size} does not split evenly over {world_size} ranks",
        )
        return self.batch_size // world_size


# What the pipeline sets per task; every other field is a pipeline option (``train_options``).
TRAIN_OPTIONS = StepOptions("train_options", TrainConfig, frozenset({"dataset", "output", "split"}))


def dataset_key(name: str) -> str:
    """``MARS`` / ``PRID-2011`` / ``iLIDS_VID`` -> ``mars`` / ``prid2011`` / ``ilidsvid``."""
    return re.sub(r"[^a-z0-9]", "", name.lower())


def resolve_optimizer(config: TrainConfig, dataset_name: str) -> str:
    if config.optimizer != "auto":
        return config.optimizer
    return "sgd" if dataset_key(dataset_name) in _SGD_DATASETS else "rmsprop"


def resolve_lr(config: TrainConfig, optimizer: str) -> float:
    if config.lr > 0:
        return config.lr
    return SGD_LR if optimizer == "sgd" else RMSPROP_LR


def resolve_steps(config: TrainConfig, dataset_name: str) -> int:
    return config.steps or _STEPS.get(dataset_key(dataset_name), _DEFAULT_STEPS)


def resolve_warmup_epochs(config: TrainConfig, dataset_name: str) -> float:
    if config.warmup_epochs >= 0:
        return config.warmup_epochs
    return _WARMUP_EPOCHS.get(dataset_key(dataset_name), _DEFAULT_WARMUP_EPOCHS)
