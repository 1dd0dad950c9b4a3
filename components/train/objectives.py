"""What the loop minimises: the DAL association (unsupervised) or the supervised reference.

``Network`` is the backbone plus, for the supervised reference only, an identity classifier;
DDP wraps it. An objective maps ``(features, logits, batch, cross_camera)`` to the loss of the
local batch and detached metric tensors; for DAL those are over the global batch already.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from components.common.errors import DalError
from components.train.association import AnchorAssociation
from components.train.data import TrainIndex

# The reference release's classification loss used label smoothing 0.1.
LABEL_SMOOTHING = 0.1


class Network(nn.Module):
    """Backbone -> pooled feature (the re-ID feature); optional classifier -> logits."""

    def __init__(self, backbone: nn.Module, num_classes: int = 0) -> None:
        super().__init__()
        self.backbone = backbone
        self.classifier = nn.Linear(backbone.feature_dim, num_classes) if num_classes else None

    def forward(self, images: Tensor) -> tuple[Tensor, Tensor | None]:
        features = self.backbone(images)
        return features, (self.classifier(features) if self.classifier is not None else None)


class DalObjective(nn.Module):
    """Unsupervised DAL: sees tracklet and camera ids only, never person ids."""

    uses_labels = False

    def __init__(
        self,
        index: TrainIndex,
        feature_dim: int,
        margin: float,
        eta: float,
        where: str,
        *,
        unit_start: bool = False,
    ) -> None:
        super().__init__()
        sizes = list(index.tracklets_per_camera)
        empty = [c for c, n in enumerate(sizes) if n == 0]
        if len(sizes) < 2 or empty:
            raise DalError(
                f"{where}: DAL needs train tracklets in at least 2 cameras and in every camera; "
                f"train tracklets per camera: {sizes}"
            )
        self.association = AnchorAssociation(
            sizes, feature_dim, margin=margin, eta=eta, unit_start=unit_start
        )

    def forward(
        self, features: Tensor, logits: Tensor | None, batch: dict[str, Tensor], cross_camera: bool
    ) -> tuple[Tensor, dict[str, Tensor]]:
        loss = self.association(features, batch["tracklet"], batch["camera"], cross_camera)
        stats = self.association.last_stats
        assert stats is not None
        return loss, {
            "loss": stats.loss,
            "intra_loss": stats.intra_loss,
            "cross_loss": stats.cross_loss,
            "consistent_fraction": stats.consistent_fraction,
            "nearest_own_fraction": stats.nearest_own_fraction,
        }


class SupervisedObjective(nn.Module):
    """UPPER BOUND that READS PERSON LABELS: identity classification on the train persons.

    Not unsupervised re-ID: it exists only to show how close DAL gets to using the labels.
    """

    uses_labels = True

    def __init__(self, num_classes: int) -> None:
        super().__init__()
        self.num_classes = num_classes

    def forward(
        self, features: Tensor, logits: Tensor | None, batch: dict[str, Tensor], cross_camera: bool
    ) -> tuple[Tensor, dict[str, Tensor]]:
        assert logits is not None, "the supervised objective needs the classifier's logits"
        labels = batch["label"]
        loss = F.cross_entropy(logits.float(), labels, label_smoothing=LABEL_SMOOTHING)
        with torch.no_grad():
            accuracy = (logits.argmax(1) == labels).float().mean()
        return loss, {"loss": loss.detach(), "train_accuracy": accuracy}


def build_objective(
    objective: str,
    index: TrainIndex,
    feature_dim: int,
    margin: float,
    eta: float,
    where: str,
    *,
    unit_start: bool = False,
) -> tuple[nn.Module, int]:
    """The objective and the classifier size the Network needs (0: none)."""
    if objective == "dal":
        return DalObjective(index, feature_dim, margin, eta, where, unit_start=unit_start), 0
    if objective == "supervised":
        if index.num_classes < 2:
            raise DalError(f"{where}: the supervised reference needs >= 2 train persons")
        return SupervisedObjective(index.num_classes), index.num_classes
    raise DalError(f"objective: must be dal or supervised, got {objective!r}")
