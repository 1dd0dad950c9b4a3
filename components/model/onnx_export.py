"""ONNX export of a DAL model: preprocessing, backbone and per-frame L2 normalisation in one graph.

The graph has one input, ``images``, with a dynamic batch dimension N, and one output,
``features``. (H, W) is the model's input size (``ModelInfo.image_height / image_width``);
mean / std are the model's (``ModelInfo.mean / std``, ImageNet statistics by default).

* ``uint8_nhwc`` (the default): ``images`` is uint8 (N, H, W, 3), RGB, already at (H, W). The
  graph computes ``x = float32(images) / 255``, transposes it to (N, 3, H, W) and standardises
  each channel c: ``(x[:, c] - mean[c]) / std[c]``.
* ``float_nchw``: ``images`` is float32 (N, 3, H, W), RGB in [0, 1], already at (H, W); the graph
  standardises it as above.

``features`` is float32 (N, D), D = ``feature_dim``: the backbone's feature of each frame divided
by ``max(||f||_2, 1e-12)`` (``torch.nn.functional.normalize``), i.e. what ``dal extract`` pools.

Outside the graph: decoding (JPEG/PNG -> RGB) and resizing to (H, W). ``dal extract`` resizes
the decoded uint8 image as ``components.common.images.resize`` does: float32 / 255, then
``torch.nn.functional.interpolate(mode="bilinear", align_corners=False, antialias=True)``,
clamped to [0, 1]. Frames already at (H, W) are not resized, and then ``uint8_nhwc`` gets
exactly extract's input; for other sizes, feed that resize's output through ``float_nchw`` to
match extract, or resize the uint8 image with any bilinear resize (a close, not equal, input).
Tracklet pooling stays outside too: a tracklet's feature is the element-wise max over its frames'
``features`` (``dal extract``'s default; or their mean), L2-normalised again (a tracklet without
frames has none).

The same contract is written into the file's ``metadata_props`` (keys ``dal.*``, see
``metadata``). The exporter is ``torch.onnx.export(dynamo=True)`` (torch.export + onnxscript);
every export is checked with onnxruntime (CPUExecutionProvider) against the PyTorch computation
that ``dal extract`` runs, at several batch sizes, before anything is returned.
"""

from __future__ import annotations

import dataclasses
import importlib.metadata
import io
import json
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from components.common.errors import DalError
from components.common.images import normalize, resize  # by name: ``images`` is the graph's input
from components.model.artifact import ModelInfo
from components.model.catalog import DEFAULT_POOLING
from components.model.embed import embed, parameter_dtype

ONNX_FORMAT = "dal-onnx/1"
UINT8_NHWC, FLOAT_NCHW = "uint8_nhwc", "float_nchw"
INPUT_FORMATS = (UINT8_NHWC, FLOAT_NCHW)
INPUT_NAME, OUTPUT_NAME = "images", "features"
# The check: ONNX Runtime against PyTorch on the same frames. Batch 1 and a batch > 1 (not the
# batch of 2 the graph was traced with) prove the dynamic batch dimension.
CHECK_BATCH_SIZES = (1, 3)
MAX_ABS_DIFF = 1e-4  # on the L2-normalised features (components are at most 1)
_TRACE_BATCH = 2  # torch.export specialises a traced size of 0 or 1: trace with 2


class OnnxCheckError(DalError):
    """The exported graph does not compute what the PyTorch model computes."""


@dataclasses.dataclass(frozen=True)
class ExportedOnnx:
    data: bytes  # the serialised ModelProto, metadata included
    input_format: str
    opset: int
    max_abs_diff: float  # the check's largest |ONNX - PyTorch| over CHECK_BATCH_SIZES
    metadata: dict[str, str]


class FrameEmbedding(nn.Module):
    """The exported computation: ``images`` in ``input_format`` -> L2-normalised frame features."""

    def __init__(self, backbone: nn.Module, info: ModelInfo, input_format: str) -> None:
        super().__init__()
        check_input_format(input_format)
        self.backbone = backbone
        self.mean = tuple(float(v) for v in info.mean)
        self.std = tuple(float(v) for v in info.std)
        self.input_format = input_format

    def forward(self, images: torch.Tensor) -> torch.Tensor:  # the argument names the ONNX input
        x = images
        if self.input_format == UINT8_NHWC:
            x = x.permute(0, 3, 1, 2).to(torch.float32) / 255.0  # images.resize's first step
        # The standardisation extraction runs (embed.model_input), traced into the graph.
        return F.normalize(self.backbone(normalize(x, self.mean, self.std)), dim=1)


def check_input_format(input_format: str) -> None:
    if input_format not in INPUT_FORMATS:
        raise DalError(f"input_format must be one of {', '.join(INPUT_FORMATS)}, got {input_format!r}")


def input_shape(info: ModelInfo, input_format: str, batch: int = -1) -> tuple[int, ...]:
    h, w = info.image_height, info.image_width
    return (batch, h, w, 3) if input_format == UINT8_NHWC else (batch, 3, h, w)


def input_dtype(input_format: str) -> np.dtype:
    return np.dtype(np.uint8) if input_format == UINT8_NHWC else np.dtype(np.float32)


def metadata(info: ModelInfo, input_format: str, extra: dict[str, str] | None = None) -> dict[str, str]:
    """The contract, as the file's ``metadata_props`` (strings; lists as JSON)."""
    h, w = info.image_height, info.image_width
    if input_format == UINT8_NHWC:
        given = f"uint8 (N, {h}, {w}, 3) RGB at the model's input size"
        steps = "x = float32(images) / 255; NHWC -> NCHW; (x - mean[c]) / std[c] per channel"
    else:
        given = f"float32 (N, 3, {h}, {w}) RGB in [0, 1] at the model's input size"
        steps = "(x - mean[c]) / std[c] per channel"
    return {
        "dal.format": ONNX_FORMAT,
        "dal.input_format": input_format,
        "dal.input": f"{INPUT_NAME}: {given}; N is dynamic",
        "dal.preprocessing": f"{steps}; then the backbone",
        "dal.output": f"{OUTPUT_NAME}: float32 (N, {info.feature_dim}), each row f / max(||f||_2, 1e-12)",
        "dal.resize": (
            "outside the graph: float32(uint8) / 255, bilinear, align_corners=False, antialias=True, "
            "clamped to [0, 1] (components.common.images.resize); frames at the input size are not resized"
        ),
        "dal.pooling": (
            f"outside the graph: tracklet = l2normalize(elementwise {DEFAULT_POOLING} over its frames' "
            "features) (dal extract's default; mean is the alternative)"
        ),
        "dal.backbone": info.backbone,
        "dal.feature_dim": str(info.feature_dim),
        "dal.image_height": str(h),
        "dal.image_width": str(w),
        "dal.mean": json.dumps(list(info.mean)),
        "dal.std": json.dumps(list(info.std)),
        "dal.exporter": f"torch.onnx.export(dynamo=True), torch {torch.__version__}",
        **(extra or {}),
    }


def to_onnx(module: nn.Module, info: ModelInfo, input_format: str) -> Any:
    """``module`` (a ``FrameEmbedding``) as an onnx ModelProto with a dynamic batch dimension."""
    example = torch.zeros(input_shape(info, input_format, _TRACE_BATCH), dtype=_torch_dtype(input_format))
    batch = torch.export.Dim("batch", min=1)
    try:
        program = torch.onnx.export(
            module.eval(),
            (example,),
            dynamo=True,
            dynamic_shapes={INPUT_NAME: {0: batch}},
            output_names=[OUTPUT_NAME],
            verbose=False,
        )
    except Exception as exc:  # torch.export / onnxscript raise many types for an unsupported op
        raise DalError(
            f"backbone {info.backbone!r}: ONNX export failed ({type(exc).__name__}: {exc})"
        ) from exc
    return program.model_proto


def _torch_dtype(input_format: str) -> torch.dtype:
    return torch.uint8 if input_format == UINT8_NHWC else torch.float32


def check_onnx(
    data: bytes,
    model: nn.Module,
    info: ModelInfo,
    input_format: str,
    batch_sizes: Sequence[int] = CHECK_BATCH_SIZES,
    *,
    seed: int = 0,
) -> float:
    """Run the ONNX graph (``data``) with onnxruntime on the CPU and ``model`` (on the CPU) as
    ``dal extract`` does on the same random frames, at each batch size; the largest absolute
    difference of the L2-normalised features. Raises OnnxCheckError above MAX_ABS_DIFF, or when
    a batch size does not run or gives the wrong shape."""
    import onnxruntime as ort

    session = ort.InferenceSession(data, providers=["CPUExecutionProvider"])
    generator = torch.Generator().manual_seed(seed)
    size = (info.image_height, info.image_width)
    worst = 0.0
    for batch in batch_sizes:
        pixels = torch.randint(0, 256, (batch, 3, *size), generator=generator, dtype=torch.uint8)
        frames = torch.stack([resize(p, size) for p in pixels])  # extract's [0, 1] input
        with torch.inference_mode():
            expected = F.normalize(embed(model, frames, info.mean, info.std, torch.device("cpu")), dim=1)
        given = pixels.permute(0, 2, 3, 1).numpy() if input_format == UINT8_NHWC else frames.numpy()
        try:
            (got,) = session.run([OUTPUT_NAME], {INPUT_NAME: np.ascontiguousarray(given)})
        except Exception as exc:  # onnxruntime raises its own exception types
            raise OnnxCheckError(f"ONNX graph fails on a batch of {batch}: {exc}") from exc
        if got.shape != (batch, info.feature_dim):
            raise OnnxCheckError(
                f"ONNX graph gives {OUTPUT_NAME} of shape {got.shape} for a batch of {batch}, "
                f"expected {(batch, info.feature_dim)}"
            )
        diff = float(np.abs(got.astype(np.float64) - expected.double().numpy()).max())
        worst = max(worst, diff)
        if not diff <= MAX_ABS_DIFF:  # NaN fails too
            raise OnnxCheckError(
                f"ONNX features differ from PyTorch's by up to {diff:.3g} (> {MAX_ABS_DIFF:g}) on a "
                f"batch of {batch} ({input_format}); the export is wrong"
            )
    return worst


def export_onnx(
    model: nn.Module,
    info: ModelInfo,
    input_format: str = UINT8_NHWC,
    *,
    extra_metadata: dict[str, str] | None = None,
) -> ExportedOnnx:
    """Export ``model`` (a float32 backbone on the CPU, as ``load_model(uri, "cpu")`` gives; put
    in eval mode) with ``info``'s preprocessing, check it (``check_onnx``) and return the file's
    bytes. ``extra_metadata``: more ``metadata_props`` (e.g. where the model came from)."""
    import onnx

    check_input_format(input_format)
    device = next(model.parameters()).device
    if parameter_dtype(model) != torch.float32 or device.type != "cpu":
        raise DalError(
            f"export: the model must be float32 on the CPU, got {parameter_dtype(model)} on {device}"
        )
    model.eval()
    proto = to_onnx(FrameEmbedding(model, info, input_format), info, input_format)
    props = metadata(info, input_format, extra_metadata)
    onnx.helper.set_model_props(proto, props)
    proto.doc_string = (
        f"DAL frame embedding ({info.backbone}): {props['dal.input']} -> {props['dal.output']}. "
        "Pool tracklets outside (dal.pooling)."
    )
    buffer = io.BytesIO()
    onnx.save_model(proto, buffer)
    data = buffer.getvalue()
    worst = check_onnx(data, model, info, input_format)
    opset = next(o.version for o in proto.opset_import if o.domain in ("", "ai.onnx"))
    return ExportedOnnx(data, input_format, int(opset), worst, props)


def signature(info: ModelInfo, input_format: str) -> Any:
    """The MLflow signature of the exported graph (named tensors, batch -1)."""
    from mlflow.models import ModelSignature
    from mlflow.types.schema import Schema, TensorSpec

    return ModelSignature(
        inputs=Schema([TensorSpec(input_dtype(input_format), input_shape(info, input_format), INPUT_NAME)]),
        outputs=Schema([TensorSpec(np.dtype(np.float32), (-1, info.feature_dim), OUTPUT_NAME)]),
    )


def example_input(info: ModelInfo, input_format: str, *, seed: int = 0) -> np.ndarray:
    """One frame of random pixels in the input format (the graph is checked on such frames)."""
    shape = (1, 3, info.image_height, info.image_width)
    pixels = torch.randint(0, 256, shape, generator=torch.Generator().manual_seed(seed), dtype=torch.uint8)
    if input_format == UINT8_NHWC:
        return pixels.permute(0, 2, 3, 1).contiguous().numpy()
    return pixels.float().div(255.0).numpy()


def log_model(exported: ExportedOnnx, info: ModelInfo, name: str = "onnx") -> str:
    """Log the exported graph with MLflow's onnx flavour in the active run (one self-contained
    file, signature and a one-frame input example); the ``models:/<model_id>`` URI."""
    import mlflow.onnx
    import onnx

    logged = mlflow.onnx.log_model(
        onnx.load_model_from_string(exported.data),
        name=name,
        signature=signature(info, exported.input_format),
        input_example={INPUT_NAME: example_input(info, exported.input_format)},
        save_as_external_data=False,
        pip_requirements=[f"{d}=={importlib.metadata.version(d)}" for d in ("onnx", "onnxruntime", "numpy")],
    )
    return str(logged.model_uri)
