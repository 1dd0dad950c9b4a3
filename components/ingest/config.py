"""Options of ``dal ingest`` (no torch import here: the CLI builds its parser from this module)."""

from __future__ import annotations

import dataclasses
from dataclasses import field
from typing import Literal

from components.common.config import require
from components.common.options import StepOptions
from components.common.tracking import TrackingOptions

DATASETS = ("mars", "prid2011", "ilidsvid", "tracklets", "videos")
SPLIT_DATASETS = ("prid2011", "ilidsvid")


@dataclasses.dataclass(frozen=True, kw_only=True)
class IngestConfig(TrackingOptions):
    dataset: Literal["mars", "prid2011", "ilidsvid", "tracklets", "videos"] = field(
        metadata={
            "help": "raw layout of the source: mars, prid2011, ilidsvid (benchmarks); tracklets (your own "
            "<camera>/<tracklet>/<frames> folders or an --index file); videos (your own <camera>/video.* "
            "+ tracks.txt in MOTChallenge format)"
        }
    )
    source: str = field(metadata={"help": "root of the raw dataset: a local folder or an s3://bucket/prefix"})
    output: str = field(
        metadata={"help": "dataset root to write (local folder or s3://bucket/prefix); rebuilt if present"}
    )
    split_lists: str = field(
        default="",
        metadata={
            "help": "PRID2011/iLIDS-VID: a DAL datasplits/<DATASET> folder (split1..split10 with "
            "traindata.txt/testdata.txt); its persons define the dataset"
        },
    )
    allow_missing_persons: bool = field(
        default=False,
        metadata={
            "help": "with split_lists: keep the listed persons the source holds instead of failing on "
            "the others (e.g. a synthetic subset of the real structure)"
        },
    )
    split_mat: str = field(
        default="",
        metadata={
            "help": "iLIDS-VID: the train_test_splits_ilidsvid.mat to use; empty: the one in the source "
            "tree if present, else generated splits"
        },
    )
    num_splits: int = field(default=10, metadata={"help": "generated splits: how many"})
    split_seed: int = field(default=0, metadata={"help": "generated splits: random seed"})
    prid_min_frames: int = field(
        default=21,
        metadata={
            "help": "PRID2011 without split lists: keep persons with at least this many frames per camera"
        },
    )
    mars_info: str = field(
        default="auto",
        metadata={
            "help": "MARS: 'auto' (use <source>/info when present), 'none' (parse the names), or the info "
            "folder to use"
        },
    )
    query_seed: int = field(
        default=0, metadata={"help": "MARS without info/: seed of the query-selection rule"}
    )
    index: str = field(
        default="",
        metadata={
            "help": "tracklets: a CSV or Parquet index (columns path, camera, tracklet; optional frame, "
            "person, subset), paths relative to the source; empty: <source>/index.csv or index.parquet "
            "when present, else the folder layout (unlabelled); none: the folder layout"
        },
    )
    min_track_frames: int = field(
        default=8, metadata={"help": "videos: tracks with fewer usable boxes are dropped (counted)"}
    )
    max_track_frames: int = field(
        default=200,
        metadata={
            "help": "videos: a longer track becomes consecutive tracklets of at most this many frames "
            "(bounds memory: only open tracklets' crops are held)"
        },
    )
    frame_stride: int = field(default=1, metadata={"help": "videos: keep every k-th box of a track"})
    workers: int = field(default=4, metadata={"help": "threads reading and validating frames"})
    max_in_flight: int = field(
        default=64, metadata={"help": "frames being read or waiting to be written, at most (bounds memory)"}
    )
    shard_size_mb: float = field(
        default=100.0, metadata={"help": "target size of a frames/part-*.parquet shard"}
    )
    row_group_rows: int = field(default=4096, metadata={"help": "frames per Parquet row group"})
    skip_corrupt: bool = field(
        default=False,
        metadata={"help": "skip corrupt/truncated frames (counted in the manifest) instead of failing"},
    )
    jpeg_quality: int = field(
        default=0,
        metadata={
            "help": "0: store the original bytes (JPEG stays JPEG, PNG stays PNG); 1..100: re-encode to JPEG"
        },
    )
    progress: bool = field(default=True, metadata={"help": "show a progress bar"})

    def __post_init__(self) -> None:
        require(
            self.dataset in DATASETS, "dataset", f"unknown dataset {self.dataset!r} (choose from {DATASETS})"
        )
        require(bool(self.source.strip()), "source", "must not be empty")
        require(bool(self.output.strip()), "output", "must not be empty")
        require(self.output.rstrip("/") != self.source.rstrip("/"), "output", "must differ from source")
        split_dataset = self.dataset in SPLIT_DATASETS
        require(
            not self.split_lists or split_dataset, "split_lists", "only PRID2011 and iLIDS-VID have splits"
        )
        require(not self.split_mat or self.dataset == "ilidsvid", "split_mat", "only for iLIDS-VID")
        require(
            not self.allow_missing_persons or bool(self.split_lists),
            "allow_missing_persons",
            "only applies with split_lists",
        )
        require(
            not (self.split_lists and self.split_mat), "split_mat", "give split_lists or split_mat, not both"
        )
        require(not self.index or self.dataset == "tracklets", "index", "only for the tracklets dataset")
        require(self.min_track_frames >= 1, "min_track_frames", "must be at least 1")
        require(
            self.max_track_frames >= self.min_track_frames,
            "max_track_frames",
            "must be at least min_track_frames",
        )
        require(self.frame_stride >= 1, "frame_stride", "must be at least 1")
        require(self.num_splits >= 1, "num_splits", "must be at least 1")
        require(self.prid_min_frames >= 1, "prid_min_frames", "must be at least 1")
        require(bool(self.mars_info.strip()), "mars_info", "use auto, none or a folder")
        require(self.workers >= 1, "workers", "must be at least 1")
        require(self.max_in_flight >= self.workers, "max_in_flight", "must be at least workers")
        require(self.shard_size_mb > 0, "shard_size_mb", "must be positive")
        require(self.row_group_rows >= 1, "row_group_rows", "must be at least 1")
        require(0 <= self.jpeg_quality <= 100, "jpeg_quality", "must be 0 (keep) or 1..100")


# What the pipeline sets per run (its ``dataset``, ``split_lists`` and paths); the rest: ``ingest_options``.
INGEST_OPTIONS = StepOptions(
    "ingest_options", IngestConfig, frozenset({"dataset", "source", "output", "split_lists", "progress"})
)
# Stand-ins for the paths when options are checked before the run (they must differ).
CHECK_PATHS = {"source": "raw-source", "output": "dataset"}
