"""Configs of ``dal evaluate`` and ``dal aggregate`` (no torch import: the CLI builds parsers from them).

Metric values everywhere (metrics.json, MLflow, KFP) are fractions in [0, 1]; the printed summary
adds percentages.
"""

from __future__ import annotations

import dataclasses
from typing import Literal

from components.common.config import ConfigError, require
from components.common.options import StepOptions
from components.common.tracking import TrackingOptions

MIN_MAX_RANK = 20  # rank-20 is always reported
# The papers' / fast-reid's settings, what "on" means: k-reciprocal re-ranking (Zhong et al.
# 2017) k1, k2, lambda; alpha-weighted average query expansion (fast-reid TEST.AQE) k, alpha.
RERANK_DEFAULTS = (20, 6, 0.3)
AQE_DEFAULTS = (5, 3.0)
OFF = ("", "off", "none")


@dataclasses.dataclass(frozen=True)
class RerankSettings:
    k1: int
    k2: int
    lambda_value: float


@dataclasses.dataclass(frozen=True)
class AqeSettings:
    k: int
    alpha: float


def _numbers(text: str, field: str, count: int) -> list[str]:
    parts = [p.strip() for p in text.split(",")]
    require(
        len(parts) == count and all(parts),
        field,
        f"must be on, off or {count} comma-separated numbers, got {text!r}",
    )
    return parts


def parse_rerank(text: str) -> RerankSettings | None:
    """``off`` / ``on`` (20,6,0.3) / ``k1,k2,lambda``; None when off. Raises ConfigError naming the field."""
    text = text.strip().lower()
    if text in OFF:
        return None
    if text == "on":
        return RerankSettings(*RERANK_DEFAULTS)
    k1, k2, lam = _numbers(text, "rerank", 3)
    try:
        settings = RerankSettings(int(k1), int(k2), float(lam))
    except ValueError:
        raise ConfigError(f"rerank: k1 and k2 must be integers and lambda a number, got {text!r}") from None
    require(settings.k1 >= 1, "rerank", f"k1 must be >= 1, got {settings.k1}")
    require(1 <= settings.k2 <= settings.k1 + 1, "rerank", f"k2 must be in 1..k1+1, got {settings.k2}")
    require(
        0.0 <= settings.lambda_value <= 1.0,
        "rerank",
        f"lambda must be in [0, 1], got {settings.lambda_value}",
    )
    return settings


def parse_aqe(text: str) -> AqeSettings | None:
    """``off`` / ``on`` (5,3.0) / ``k,alpha``; None when off. Raises ConfigError naming the field."""
    text = text.strip().lower()
    if text in OFF:
        return None
    if text == "on":
        return AqeSettings(*AQE_DEFAULTS)
    k, alpha = _numbers(text, "aqe", 2)
    try:
        settings = AqeSettings(int(k), float(alpha))
    except ValueError:
        raise ConfigError(f"aqe: k must be an integer and alpha a number, got {text!r}") from None
    require(settings.k >= 1, "aqe", f"k must be >= 1, got {settings.k}")
    require(settings.alpha >= 0.0, "aqe", f"alpha must be >= 0, got {settings.alpha}")
    return settings


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
    rerank: str = dataclasses.field(
        default="off",
        metadata={
            "help": "also score k-reciprocal re-ranking (Zhong et al. 2017): on (k1,k2,lambda = "
            "20,6,0.3, the paper's), k1,k2,lambda, or off; metrics rerank_* beside the plain ones"
        },
    )
    aqe: str = dataclasses.field(
        default="off",
        metadata={
            "help": "also score alpha-weighted average query expansion (fast-reid's AQE): on (k,alpha = "
            "5,3.0), k,alpha, or off; metrics aqe_* (and aqe_rerank_* with --rerank)"
        },
    )

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
        parse_rerank(self.rerank)
        parse_aqe(self.aqe)

    @property
    def rerank_settings(self) -> RerankSettings | None:
        return parse_rerank(self.rerank)

    @property
    def aqe_settings(self) -> AqeSettings | None:
        return parse_aqe(self.aqe)


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
