"""The trained-model artifact (``model.pt``) that training writes and extraction loads.

One ``torch.save`` dict, readable with ``weights_only=True``: the backbone name, feature size,
input size and normalisation, the EMA weights and the training config. No pickled classes, so
the file loads in any environment that has this package. ``load_model`` also takes a registered
version, ``models:/<name>@<alias>`` or ``models:/<name>/<version>`` (``components.common.registry``).
"""

from __future__ import annotations

import dataclasses
import io
import tempfile
from typing import Any

import torch
from torch import nn

from components.common import registry, storage, torch_files
from components.common.errors import DalError
from components.common.tracking import resolve_tracking_uri
from components.model.backbones import build_backbone

MODEL_FORMAT = "dal-model/1"
# ImageNet statistics: what ImageNet-initialised backbones expect, and harmless for random init.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclasses.dataclass(frozen=True)
class ModelInfo:
    backbone: str
    feature_dim: int
    image_height: int
    image_width: int
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    config: dict[str, Any] = dataclasses.field(default_factory=dict)


def save_model(uri: str, model: nn.Module, info: ModelInfo) -> None:
    """Write the artifact atomically to a local path or storage URI (floating tensors as float32,
    whatever precision trained them)."""
    state = {
        k: v.detach().to("cpu", torch.float32 if v.is_floating_point() else v.dtype).clone()
        for k, v in model.state_dict().items()
    }
    buffer = io.BytesIO()
    torch.save({"format": MODEL_FORMAT, **dataclasses.asdict(info), "state_dict": state}, buffer)
    storage.write_bytes(uri, buffer.getvalue())


def _registered_payload(uri: str, tracking_uri: str) -> Any:
    tracking = resolve_tracking_uri(tracking_uri)
    if not tracking:
        raise DalError(f"{uri}: a registered model needs an MLflow tracking URI ($MLFLOW_TRACKING_URI)")
    with tempfile.TemporaryDirectory(prefix="dal-model-") as tmp:  # the download lives only here
        path = registry.resolve_registered_model(tracking, uri, tmp)
        return torch_files.load_bytes(storage.read_bytes(path), f"{uri} ({path})", "model file")


def load_model(
    uri: str, device: torch.device | str = "cpu", *, tracking_uri: str = ""
) -> tuple[nn.Module, ModelInfo]:
    """Rebuild the backbone from the artifact, in eval mode on ``device``.

    ``uri``: a ``model.pt`` (local path or storage URI) or a registered version
    (``models:/<name>@<alias>``, ``models:/<name>/<version>``), looked up in ``tracking_uri``
    (empty: ``$MLFLOW_TRACKING_URI``).
    """
    if registry.is_registry_uri(uri):
        payload = _registered_payload(uri, tracking_uri)
    else:
        payload = torch_files.load(uri, "model file")
    if not isinstance(payload, dict) or payload.get("format") != MODEL_FORMAT:
        raise DalError(f"{uri}: not a {MODEL_FORMAT} model artifact")
    fields = {f.name for f in dataclasses.fields(ModelInfo)}
    info = ModelInfo(
        **{k: (tuple(v) if isinstance(v, list) else v) for k, v in payload.items() if k in fields}
    )
    model = build_backbone(info.backbone)
    try:
        model.load_state_dict(payload["state_dict"], strict=True)
    except RuntimeError as exc:
        raise DalError(f"{uri}: weights do not fit backbone {info.backbone!r} ({exc})") from exc
    return model.to(device).eval(), info
