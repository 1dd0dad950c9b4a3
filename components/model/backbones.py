"""Feature backbones: the global-pooled layer before any classifier is the re-ID feature.

``mobilenet_v1`` (1024-d; the paper's default, timm's ``mobilenetv1_100``), ``resnet50``
(2048-d, torchvision) and any timm model as ``timm:<name>``. Nothing is downloaded: weights
(e.g. ImageNet) load from a local path or storage URI, otherwise the init is random.
"""

from __future__ import annotations

import torch
from torch import nn

from components.common import storage
from components.common.errors import DalError

BACKBONES = ("mobilenet_v1", "resnet50")
TIMM_PREFIX = "timm:"
# Classifier heads that ImageNet checkpoints carry and a feature extractor does not have.
_HEAD_PREFIXES = ("fc.", "classifier.", "head.", "head_dist.", "last_linear.")


def is_known_backbone(name: str) -> bool:
    return name in BACKBONES or (name.startswith(TIMM_PREFIX) and len(name) > len(TIMM_PREFIX))


def build_backbone(name: str) -> nn.Module:
    """A randomly initialised feature extractor; ``module.feature_dim`` is its output size."""
    if name == "mobilenet_v1":
        import timm

        model = timm.create_model("mobilenetv1_100", pretrained=False, num_classes=0)
        feature_dim = model.num_features
    elif name == "resnet50":
        import torchvision

        model = torchvision.models.resnet50(weights=None)
        feature_dim = model.fc.in_features
        model.fc = nn.Identity()
    elif name.startswith(TIMM_PREFIX):
        import timm

        timm_name = name[len(TIMM_PREFIX) :]
        try:
            model = timm.create_model(timm_name, pretrained=False, num_classes=0)
        except RuntimeError as exc:  # timm: "Unknown model (...)"
            raise DalError(f"backbone: unknown timm model {timm_name!r} ({exc})") from exc
        feature_dim = model.num_features
    else:
        raise DalError(f"backbone: unknown backbone {name!r} (use {', '.join(BACKBONES)} or timm:<name>)")
    model.feature_dim = int(feature_dim)
    return model


def _unwrap_state_dict(obj: object, uri: str) -> dict[str, torch.Tensor]:
    for key in ("state_dict", "model", "model_state_dict"):
        if isinstance(obj, dict) and isinstance(obj.get(key), dict):
            obj = obj[key]
            break
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise DalError(f"{uri}: not a state dict of tensors")
    return {k.removeprefix("module."): v for k, v in obj.items()}


def load_weights(model: nn.Module, uri: str, backbone: str) -> None:
    """Load a weights file (local path or storage URI) into ``model``; classifier heads are ignored.

    Anything else that does not fit (missing or unexpected tensors, other shapes) is an error
    naming the file and the backbone, never a silent partial load.
    """
    data = storage.load_torch_bytes(uri)  # a missing file raises StorageError naming the URI
    try:
        state = torch.load(data, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises several types for a file that is not a checkpoint
        raise DalError(f"{uri}: cannot read weights ({exc})") from exc
    state = _unwrap_state_dict(state, uri)
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
        raise DalError(f"{uri}: weights do not fit backbone {backbone!r} ({details})")
    model.load_state_dict(state, strict=True)
