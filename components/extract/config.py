"""Config of ``dal extract`` (no torch import: the CLI builds its parser from this)."""

from __future__ import annotations

import dataclasses
from typing import Literal

from components.common.config import require
from components.common.options import StepOptions
from components.common.tracking import TrackingOptions
from components.model.catalog import DEFAULT_POOLING


@dataclasses.dataclass(frozen=True, kw_only=True)
class ExtractConfig(TrackingOptions):
    dataset: str = dataclasses.field(metadata={"help": "dataset URI (what `dal ingest` wrote)"})
    model: str = dataclasses.field(metadata={"help": "trained model artifact URI (model.pt, EMA weights)"})
    output: str = dataclasses.field(metadata={"help": "URI of the features.parquet to write"})
    subset: Literal["test", "train", "all"] = dataclasses.field(
        default="test", metadata={"help": "which tracklets: the evaluation (test) set, train, or all"}
    )
    split: int = dataclasses.field(
        default=0,
        metadata={
            "help": "0-based split whose train/test roles apply (PRID2011 / iLIDS-VID; MARS has 0 only)"
        },
    )
    pooling: Literal["max", "mean"] = dataclasses.field(
        default=DEFAULT_POOLING, metadata={"help": "tracklet pooling of the L2-normalised frame features"}
    )
    flip: bool = dataclasses.field(
        default=False,
        metadata={
            "help": "test-time augmentation: average each frame's L2-normalised feature with its "
            "left-right mirror's before pooling (twice the compute)"
        },
    )
    batch_size: int = dataclasses.field(default=128, metadata={"help": "frames per forward pass"})
    device: Literal["auto", "cpu", "cuda"] = dataclasses.field(
        default="auto", metadata={"help": "auto: this rank's GPU when CUDA is available, else the CPU"}
    )
    workers: int = dataclasses.field(
        default=0, metadata={"help": "frame-decoding worker processes (0: decode in the main process)"}
    )
    progress: bool = dataclasses.field(default=True, metadata={"help": "show a progress bar"})

    def __post_init__(self) -> None:
        require(bool(self.dataset.strip()), "dataset", "must not be empty")
        require(bool(self.model.strip()), "model", "must not be empty")
        require(bool(self.output.strip()), "output", "must not be empty")
        require(not self.output.endswith("/"), "output", f"must name a file, got {self.output!r}")
        require(
            self.subset in ("test", "train", "all"),
            "subset",
            f"must be test, train or all, got {self.subset!r}",
        )
        require(self.split >= 0, "split", f"must be >= 0, got {self.split}")
        require(self.pooling in ("max", "mean"), "pooling", f"must be max or mean, got {self.pooling!r}")
        require(self.batch_size >= 1, "batch_size", f"must be >= 1, got {self.batch_size}")
        require(
            self.device in ("auto", "cpu", "cuda"),
            "device",
            f"must be auto, cpu or cuda, got {self.device!r}",
        )
        require(self.workers >= 0, "workers", f"must be >= 0, got {self.workers}")


# What the pipeline sets per task (the test tracklets of its split); the rest: ``extract_options``.
EXTRACT_OPTIONS = StepOptions(
    "extract_options",
    ExtractConfig,
    frozenset({"dataset", "model", "output", "subset", "split", "progress"}),
)
