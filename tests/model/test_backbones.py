"""Backbones: the pooled feature before any classifier, local/URI weights, clear misfit errors."""

from __future__ import annotations

import io

import pytest
import torch

from components.common import storage
from components.common.errors import DalError
from components.model.backbones import build_backbone, is_known_backbone, load_weights


@pytest.mark.parametrize(
    ("name", "dim"), [("mobilenet_v1", 1024), ("resnet50", 2048), ("timm:test_resnet", 96)]
)
def test_feature_is_the_pooled_layer(name: str, dim: int) -> None:
    torch.manual_seed(0)
    model = build_backbone(name).eval()
    assert model.feature_dim == dim
    with torch.no_grad():
        out = model(torch.rand(2, 3, 64, 32))
    assert out.shape == (2, dim)  # pooled, no classifier logits


def test_random_init_differs_with_the_seed() -> None:
    torch.manual_seed(0)
    a = build_backbone("timm:test_efficientnet").state_dict()
    torch.manual_seed(1)
    b = build_backbone("timm:test_efficientnet").state_dict()
    assert any(not torch.equal(a[k], b[k]) for k in a if a[k].is_floating_point())


def test_unknown_backbones_are_clear_errors() -> None:
    assert is_known_backbone("timm:anything") and not is_known_backbone("timm:")
    with pytest.raises(DalError, match="unknown backbone 'vgg'"):
        build_backbone("vgg")
    with pytest.raises(DalError, match="unknown timm model 'no_such_net'"):
        build_backbone("timm:no_such_net")


def _save(uri: str, obj: object) -> None:
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    storage.write_bytes(uri, buffer.getvalue())


def test_weights_load_from_a_file_ignoring_heads_and_ddp_prefixes(tmp_path) -> None:
    torch.manual_seed(3)
    source = build_backbone("timm:test_efficientnet")
    state = {f"module.{k}": v for k, v in source.state_dict().items()}
    state["classifier.weight"] = torch.zeros(1000, source.feature_dim)  # an ImageNet head
    _save(str(tmp_path / "w.pt"), {"state_dict": state})
    torch.manual_seed(4)
    target = build_backbone("timm:test_efficientnet")
    load_weights(target, f"file://{tmp_path / 'w.pt'}", "timm:test_efficientnet")
    for key, value in source.state_dict().items():
        assert torch.equal(target.state_dict()[key], value), key


def test_weights_that_do_not_fit_name_the_file_and_backbone(tmp_path) -> None:
    other = build_backbone("timm:test_resnet")
    _save(str(tmp_path / "other.pt"), other.state_dict())
    target = build_backbone("timm:test_efficientnet")
    with pytest.raises(DalError, match=r"other\.pt: weights do not fit backbone 'timm:test_efficientnet'"):
        load_weights(target, str(tmp_path / "other.pt"), "timm:test_efficientnet")
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(DalError, match=r"junk\.pt: not a readable weights file"):
        load_weights(target, str(tmp_path / "junk.pt"), "timm:test_efficientnet")
    with pytest.raises(DalError, match=r"missing\.pt"):
        load_weights(target, str(tmp_path / "missing.pt"), "timm:test_efficientnet")


@pytest.mark.integration
def test_weights_load_from_s3(s3_bucket: str) -> None:
    torch.manual_seed(5)
    source = build_backbone("timm:test_efficientnet")
    _save(f"{s3_bucket}/weights/w.pt", source.state_dict())
    target = build_backbone("timm:test_efficientnet")
    load_weights(target, f"{s3_bucket}/weights/w.pt", "timm:test_efficientnet")
    assert all(torch.equal(target.state_dict()[k], v) for k, v in source.state_dict().items())
