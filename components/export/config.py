"""Config of ``dal export`` (no torch import: the CLI builds its parser from this)."""

from __future__ import annotations

import dataclasses
from typing import Literal

from components.common.config import require
from components.common.tracking import TrackingOptions

FORMATS = ("onnx",)
# components.model.onnx_export.INPUT_FORMATS (that module imports torch; a test checks they agree).
INPUT_FORMATS = ("uint8_nhwc", "float_nchw")


@dataclasses.dataclass(frozen=True, kw_only=True)
class ExportConfig(TrackingOptions):
    model: str = dataclasses.field(
        metadata={
            "help": "model.pt (path or s3://) or a registered version: models:/<name>@<alias> or "
            "models:/<name>/<version>"
        }
    )
    output: str = dataclasses.field(metadata={"help": "file to write (path or s3://), e.g. model.onnx"})
    format: Literal["onnx"] = dataclasses.field(default="onnx", metadata={"help": "export format"})
    input_format: Literal["uint8_nhwc", "float_nchw"] = dataclasses.field(
        default="uint8_nhwc",
        metadata={
            "help": "graph input: uint8_nhwc = uint8 (N, H, W, 3) RGB; float_nchw = float32 (N, 3, H, W) "
            "RGB in [0, 1]; both at the model's input size, mean/std inside the graph"
        },
    )

    def __post_init__(self) -> None:
        require(bool(self.model.strip()), "model", "must not be empty")
        require(bool(self.output.strip()), "output", "must not be empty")
        require(not self.output.endswith("/"), "output", f"must name a file, got {self.output!r}")
        require(self.format in FORMATS, "format", f"must be one of {', '.join(FORMATS)}, got {self.format!r}")
        require(
            self.input_format in INPUT_FORMATS,
            "input_format",
            f"must be one of {', '.join(INPUT_FORMATS)}, got {self.input_format!r}",
        )
