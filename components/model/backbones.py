"""Feature backbones: the global-pooled layer before any classifier is the re-ID feature.

The named backbones are in :mod:`components.model.catalog` (``mobilenet_v2`` with bundled
ImageNet weights, ``mobilenet_v1``, ``resnet50``); any timm model works as ``timm:<name>``.
Nothing is downloaded: weights come from the bundled ImageNet file, a local path or a storage
URI, or the init is random.
"""

from __future__ import annotations

import torch
from torch import nn

from components.common import torch_files
from components.common.errors import DalError
from components.model import bundled
from components.model.catalog import BACKBONES, IMAGENET, TIMM_PREFIX, check_backbone, check_weights

# Classifier heads that ImageNet checkpoints carry and a feature extractor does not have.
_HEAD_PREFIXES = ("fc.", "classifier.", "head.", "head_dist.", "last_linear.")


def build_backbone(name: str) -> nn.Module:
    """A randomly initialised feature extractor; ``module.feature_dim`` is its output size."""
    check_backbone(name)
    source = BACKBONES[name].source if name in BACKBONES else name
    library, model_name = source.split(":", 1)
    if library == "torchvision":
        import torchvision

        model = getattr(torchvision.models, model_name)(weights=None)
        feature_dim = model.fc.in_features
        model.fc = nn.Identity()
    else:
        import timm

        try:
            model = timm.create_model(model_name, pretrained=False, num_classes=0)
        except RuntimeError as exc:  # timm: "Unknown model (...)"
            raise DalError(f"backbone: unknown timm model {model_name!r} ({exc})") from exc
        feature_dim = model.num_features
    model.feature_dim = int(feature_dim)
    return model


def is_known_backbone(name: str) -> bool:
    return name in BACKBONES or (name.startswith(TIMM_PREFIX) and len(name) > len(TIMM_PREFIX))


def load_weights(model: nn.Module, weights: str, backbone: str) -> None:
    """Load initial weights into ``model``: ``imagenet`` (bundled) or a file (path or storage URI).

    Loading is strict: missing or unexpected tensors (classifier heads aside) and other shapes are
    an error naming the file and the backbone, never a silent partial load.
    """
    if weights == IMAGENET:
        check_weights(backbone, weights)
        imagenet = BACKBONES[backbone].imagenet
        assert imagenet is not None  # check_weights passed
        state = bundled.state_dict_in_order(bundled.load(imagenet), model.state_dict(), imagenet.path)
        model.load_state_dict(state, strict=True)
        return
    state = torch_files.load(weights, "weights file")  # a missing file raises StorageError naming it
    state = _unwrap_state_dict(state, weights)
    expected = model.state_dict()
    state = {k: v for k, v in state.items() if k in expected or not k.startswith(_HEAD_PREFIXES)}
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    wrong_shape = sorted(k for k in set(state) & set(expected) if state[k].shape != expected[k].shape)
    if missing or unexpected or wrong_shape:
        details = "; ".join(
            f"{label}: {', '.join(keys[:5])}{' ...' if len(keys) > 5 else ''}"
            for label, keys in (("missing", missing), ("unexpected", unexpected), ("shape", wrong_shape))
            if keys
        )
        raise DalError(f"{weights}: weights do not fit backbone {backbone!r} ({details})")
    model.load_state_dict(state, strict=True)


def _unwrap_state_dict(obj: object, uri: str) -> dict[str, torch.Tensor]:
    for key in ("state_dict", "model", "model_state_dict"):
        if isinstance(obj, dict) and isinstance(obj.get(key), dict):
            obj = obj[key]
            break
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise DalError(f"{uri}: not a state dict of tensors")
    return {k.removeprefix("module."): v for k, v in obj.items()}
