"""ONNX export (components.model.onnx_export): the graph computes the documented contract, at any
batch size, and the check against PyTorch really rejects a wrong graph.

Tolerance: the export's own bound, MAX_ABS_DIFF = 1e-4 on L2-normalised features (components at
most 1). ONNX Runtime and PyTorch run the same float32 operations, but fuse and sum them in
other orders (e.g. batch norm folded into the convolution), so each result differs by a few
units of float32 rounding (2**-24 ~ 6e-8) per layer; over a few dozen layers that stays below
~1e-5, a tenth of the bound. A wrong mean shifts the features by ~1e-2, 100 times the bound.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
import torch.nn.functional as F

from components.common.errors import DalError
from components.export.config import INPUT_FORMATS
from components.model import onnx_export
from components.model.artifact import IMAGENET_MEAN, IMAGENET_STD, ModelInfo
from components.model.backbones import build_backbone
from components.model.onnx_export import FLOAT_NCHW, MAX_ABS_DIFF, UINT8_NHWC, OnnxCheckError

BACKBONE = "timm:test_efficientnet"
H, W = 32, 16  # not square: a swapped height and width cannot pass


@pytest.fixture(scope="module")
def backbone() -> tuple[torch.nn.Module, ModelInfo]:
    torch.manual_seed(0)
    model = build_backbone(BACKBONE).eval()
    return model, ModelInfo(backbone=BACKBONE, feature_dim=model.feature_dim, image_height=H, image_width=W)


@pytest.fixture(scope="module", params=[UINT8_NHWC, FLOAT_NCHW])
def exported(request, backbone) -> onnx_export.ExportedOnnx:
    model, info = backbone
    return onnx_export.export_onnx(model, info, request.param, extra_metadata={"dal.source_model": "m.pt"})


def _reference(model: torch.nn.Module, pixels: torch.Tensor) -> np.ndarray:
    """The contract, written out: uint8 (N, 3, H, W) -> /255 -> ImageNet mean/std -> model -> L2."""
    mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    with torch.no_grad():
        return F.normalize(model((pixels.float() / 255 - mean) / std), dim=1).numpy()


def _feed(pixels: torch.Tensor, input_format: str) -> np.ndarray:
    if input_format == UINT8_NHWC:
        return pixels.permute(0, 2, 3, 1).contiguous().numpy()
    return (pixels.float() / 255).numpy()


def test_graph_matches_the_contract_at_any_batch_size(exported, backbone) -> None:
    model, info = backbone
    session = ort.InferenceSession(exported.data, providers=["CPUExecutionProvider"])
    generator = torch.Generator().manual_seed(7)
    for batch in (1, 2, 5, 16):
        pixels = torch.randint(0, 256, (batch, 3, H, W), generator=generator, dtype=torch.uint8)
        (got,) = session.run(["features"], {"images": _feed(pixels, exported.input_format)})
        assert got.shape == (batch, info.feature_dim) and got.dtype == np.float32
        np.testing.assert_allclose(got, _reference(model, pixels), atol=MAX_ABS_DIFF, rtol=0)
        np.testing.assert_allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-5)  # L2 inside the graph
    assert 0 <= exported.max_abs_diff <= MAX_ABS_DIFF


def test_graph_declares_a_dynamic_batch_and_the_contract(exported) -> None:
    proto = onnx.load_model_from_string(exported.data)
    onnx.checker.check_model(proto)
    (given,) = proto.graph.input
    (output,) = proto.graph.output
    dims = given.type.tensor_type.shape.dim
    assert given.name == "images" and output.name == "features"
    assert dims[0].dim_param and not dims[0].dim_value  # symbolic: the batch is dynamic
    expected = (H, W, 3) if exported.input_format == UINT8_NHWC else (3, H, W)
    assert tuple(d.dim_value for d in dims[1:]) == expected
    elem = onnx.TensorProto.UINT8 if exported.input_format == UINT8_NHWC else onnx.TensorProto.FLOAT
    assert given.type.tensor_type.elem_type == elem
    assert [d.dim_value for d in output.type.tensor_type.shape.dim][1:] == [256]
    props = {p.key: p.value for p in proto.metadata_props}
    assert props["dal.input_format"] == exported.input_format and props["dal.format"] == "dal-onnx/1"
    assert props["dal.mean"] == "[0.485, 0.456, 0.406]" and props["dal.std"] == "[0.229, 0.224, 0.225]"
    assert (props["dal.image_height"], props["dal.image_width"], props["dal.feature_dim"]) == (
        "32",
        "16",
        "256",
    )
    assert props["dal.source_model"] == "m.pt" and "dynamo=True" in props["dal.exporter"]
    assert "max" in props["dal.pooling"] and "antialias=True" in props["dal.resize"]
    assert exported.opset == next(o.version for o in proto.opset_import if o.domain == "") >= 17


@pytest.mark.parametrize("input_format", [UINT8_NHWC, FLOAT_NCHW])
def test_the_check_rejects_a_graph_with_a_wrong_mean(backbone, input_format: str) -> None:
    model, info = backbone
    wrong = dataclasses.replace(info, mean=(0.5, 0.5, 0.5))
    proto = onnx_export.to_onnx(onnx_export.FrameEmbedding(model, wrong, input_format), wrong, input_format)
    with pytest.raises(
        OnnxCheckError, match=r"differ from PyTorch's by up to .* \(> 0\.0001\) on a batch of 1"
    ):
        onnx_export.check_onnx(proto.SerializeToString(), model, info, input_format)


def test_the_check_rejects_a_graph_with_a_fixed_batch(backbone) -> None:
    model, info = backbone
    module = onnx_export.FrameEmbedding(model, info, UINT8_NHWC).eval()
    example = torch.zeros(2, H, W, 3, dtype=torch.uint8)
    program = torch.onnx.export(module, (example,), dynamo=True, output_names=["features"], verbose=False)
    data = program.model_proto.SerializeToString()
    assert onnx_export.check_onnx(data, model, info, UINT8_NHWC, batch_sizes=(2,)) <= MAX_ABS_DIFF
    with pytest.raises(OnnxCheckError, match="fails on a batch of 1"):
        onnx_export.check_onnx(data, model, info, UINT8_NHWC)


def test_bad_arguments(backbone) -> None:
    model, info = backbone
    with pytest.raises(DalError, match="input_format must be one of uint8_nhwc, float_nchw"):
        onnx_export.export_onnx(model, info, "nhwc")
    with pytest.raises(DalError, match=r"float32 on the CPU, got torch\.float64"):
        onnx_export.export_onnx(build_backbone(BACKBONE).double(), info)
    assert INPUT_FORMATS == onnx_export.INPUT_FORMATS  # the config's copy (it may not import torch)
