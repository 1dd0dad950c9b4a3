"""Config of ``dal search`` (no torch import: the CLI builds its parser from this).

``threshold``: none (rank only), a cosine similarity in [-1, 1], or ``auto``: the
``threshold_at_fpr_<threshold_fpr>`` that ``dal evaluate`` measured, read from ``threshold_from``
(a metrics.json of ``dal evaluate`` / ``dal aggregate``, or their output folder) or else from the
``metric.threshold_at_fpr_<rate>`` tag of the registered model version (``--model models:/...``,
or the registered model the gallery was extracted with).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Literal

from components.common.config import require
from components.common.tracking import TrackingOptions
from components.evaluate.metrics import VERIFICATION_FPRS

AUTO = "auto"


@dataclasses.dataclass(frozen=True, kw_only=True)
class SearchConfig(TrackingOptions):
    features: str = dataclasses.field(
        metadata={"help": "the gallery: a features.parquet URI (what `dal extract` wrote)"}
    )
    query: str = dataclasses.field(
        metadata={
            "help": "comma-separated tracklet ids of the gallery (e.g. 12,40), or another features.parquet, "
            "or a folder of frames <query>/<tracklet>/<frame>.jpg (embedded with --model)"
        }
    )
    output: str = dataclasses.field(
        metadata={"help": "output directory URI: ranked.parquet, ranked.csv, ranklist.png"}
    )
    top_k: int = dataclasses.field(default=10, metadata={"help": "gallery tracklets listed per query"})
    threshold: str | None = dataclasses.field(
        default=None,
        metadata={
            "help": "same-person cosine similarity threshold (adds column same_person): a number in [-1, 1], "
            "or auto (from --threshold-from, else the registered model version's metric tag); "
            "none: no decision"
        },
    )
    threshold_fpr: float = dataclasses.field(
        default=0.01,
        metadata={
            "help": "with --threshold auto: the false positive rate whose threshold is used "
            f"({', '.join(f'{f:g}' for f in VERIFICATION_FPRS)})"
        },
    )
    threshold_from: str = dataclasses.field(
        default="",
        metadata={"help": "with --threshold auto: a dal evaluate / aggregate metrics.json (or its folder)"},
    )
    model: str = dataclasses.field(
        default="",
        metadata={
            "help": "model.pt or models:/<name>@<alias>: embeds query frames and, with --threshold auto, "
            "holds the threshold tag; empty: the model the gallery features were extracted with"
        },
    )
    dataset: str = dataclasses.field(
        default="",
        metadata={"help": "the gallery's dataset URI: tracklet names and frames for ranklist.png (optional)"},
    )
    exclude_same_camera: Literal["auto", "true", "false"] = dataclasses.field(
        default="auto",
        metadata={
            "help": "leave out gallery tracklets in the query's camera; auto: true when the queries are "
            "tracklets of the gallery's dataset (re-ID across cameras), false otherwise"
        },
    )
    num_ranklist_queries: int = dataclasses.field(
        default=8, metadata={"help": "queries shown in ranklist.png (0: no picture)"}
    )
    batch_size: int = dataclasses.field(default=64, metadata={"help": "query frames per forward pass"})
    device: Literal["auto", "cpu", "cuda"] = dataclasses.field(
        default="auto", metadata={"help": "auto: the GPU when CUDA is available, else the CPU"}
    )
    threads: int = dataclasses.field(default=0, metadata={"help": "CPU threads (0: all available CPUs)"})

    def __post_init__(self) -> None:
        for name in ("features", "query", "output"):
            require(bool(getattr(self, name).strip()), name, "must not be empty")
        require(self.top_k >= 1, "top_k", f"must be >= 1, got {self.top_k}")
        if self.threshold is not None and self.threshold != AUTO:
            try:
                value = float(self.threshold)
            except ValueError:
                value = math.nan
            require(
                -1.0 <= value <= 1.0,
                "threshold",
                f"must be a cosine similarity in [-1, 1], auto or none, got {self.threshold!r}",
            )
        require(
            self.threshold_fpr in VERIFICATION_FPRS,
            "threshold_fpr",
            f"must be one of {', '.join(f'{f:g}' for f in VERIFICATION_FPRS)} (the rates dal evaluate "
            f"reports), got {self.threshold_fpr}",
        )
        require(
            not self.threshold_from or self.threshold == AUTO,
            "threshold_from",
            "applies only with --threshold auto",
        )
        require(
            self.exclude_same_camera in ("auto", "true", "false"),
            "exclude_same_camera",
            f"must be auto, true or false, got {self.exclude_same_camera!r}",
        )
        require(self.num_ranklist_queries >= 0, "num_ranklist_queries", "must be >= 0")
        require(self.batch_size >= 1, "batch_size", f"must be >= 1, got {self.batch_size}")
        require(
            self.device in ("auto", "cpu", "cuda"),
            "device",
            f"must be auto, cpu or cuda, got {self.device!r}",
        )
        require(self.threads >= 0, "threads", f"must be >= 0, got {self.threads}")
