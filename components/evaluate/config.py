"""Configs of ``dal evaluate`` and ``dal aggregate`` (no torch import: the CLI builds parsers from them).

Metric values everywhere (metrics.json, MLflow, KFP) are fractions in [0, 1]; the printed summary
adds percentages.
"""

from __future__ import annotations

import dataclasses
from typing import Literal

from components.common.config import require
from components.common.options import StepOptions
from components.common.tracking import TrackingOptions

MIN_MAX_RANK = 20  # rank-20 is always reported


@dataclasses.dataclass(frozen=True, kw_only=True)
class EvaluateConfig(TrackingOptions):
    dataset: str = dataclasses.field(
        metadata={"help": "dataset URI: tracklet tables, splits and frames for the rank-list plot"}
    )
    features: str = dataclasses.field(metadata={"help": "features.parquet URI (what `dal extract` wrote)"})
    output: str = dataclasses.field(
        metadata={"help": "output directory URI: metrics.json, cmc.png, ranklist.png"}
    )
    protocol: Literal["auto", "mars", "splits", "labelled"] = dataclasses.field(
        default="auto",
        metadata={
            "help": "auto: from the dataset (mars -> mars; prid2011 / ilidsvid -> splits; own footage, "
            "tracklets / videos -> labelled: its labelled test tracklets)"
        },
    )
    split: int = dataclasses.field(
        default=-1,
        metadata={"help": "0-based split to evaluate (splits protocol); -1: the features' split"},
    )
    direction: Literal["forward", "reverse"] = dataclasses.field(
        default="forward",
        metadata={
            "help": "splits protocol: forward = probe camera 1, gallery camera 2; reverse = the opposite"
        },
    )
    max_rank: int = dataclasses.field(default=20, metadata={"help": "length of the CMC curve (>= 20)"})
    num_ranklist_queries: int = dataclasses.field(
        default=8, metadata={"help": "queries shown in ranklist.png (0: no rank-list plot)"}
    )
    ranklist_size: int = dataclasses.field(
        default=10, metadata={"help": "gallery tracklets per rank-list row"}
    )
    chunk_size: int = dataclasses.field(
        default=256, metadata={"help": "queries ranked at a time (bounds memory: chunk x gallery floats)"}
    )
    threads: int = dataclasses.field(default=0, metadata={"help": "ranking threads (0: all available CPUs)"})

    def __post_init__(self) -> None:
        for name in ("dataset", "features", "output"):
            require(bool(getattr(self, name).strip()), name, "must not be empty")
        require(
            self.protocol in ("auto", "mars", "splits", "labelled"),
            "protocol",
            f"must be auto, mars, splits or labelled, got {self.protocol!r}",
        )
        require(self.split >= -1, "split", f"must be >= 0 (or -1: from the features), got {self.split}")
        require(
            self.direction in ("forward", "reverse"),
            "direction",
            f"must be forward or reverse, got {self.direction!r}",
        )
        require(self.max_rank >= MIN_MAX_RANK, "max_rank", f"must be >= {MIN_MAX_RANK}, got {self.max_rank}")
        require(self.num_ranklist_queries >= 0, "num_ranklist_queries", "must be >= 0")
        require(1 <= self.ranklist_size <= 50, "ranklist_size", f"must be 1..50, got {self.ranklist_size}")
        require(self.chunk_size >= 1, "chunk_size", f"must be >= 1, got {self.chunk_size}")
        require(self.threads >= 0, "threads", f"must be >= 0, got {self.threads}")


# What the pipeline sets per task; the rest: the pipeline's ``evaluate_options``.
EVALUATE_OPTIONS = StepOptions(
    "evaluate_options", EvaluateConfig, frozenset({"dataset", "features", "output", "split"})
)


@dataclasses.dataclass(frozen=True, kw_only=True)
class AggregateConfig(TrackingOptions):
    inputs: tuple[str, ...] = dataclasses.field(
        metadata={
            "help": "metrics.json URIs (or the evaluate output directories holding them), one per split"
        }
    )
    output: str = dataclasses.field(metadata={"help": "output directory URI: metrics.json and cmc.png"})

    def __post_init__(self) -> None:
        require(len(self.inputs) >= 1, "inputs", "needs at least one metrics.json")
        require(all(i.strip() for i in self.inputs), "inputs", "must not contain empty URIs")
        require(len(set(self.inputs)) == len(self.inputs), "inputs", "lists a URI twice")
        require(bool(self.output.strip()), "output", "must not be empty")
