"""``dal ingest``: a raw dataset layout -> a published dataset (components.common.dataset format).

Order of work, so that a failure publishes nothing:

1. the reader checks the source layout (and the split lists / info files) -- a bad source fails
   here, before the output is touched;
2. DatasetWriter unpublishes any dataset at the output (manifest first), then frames stream from
   a bounded pool of reader threads into Parquet shards, one tracklet after another;
3. tracklets.parquet, splits.parquet and, last, manifest.json are written.

An exception or a kill at any point leaves no manifest, so readers refuse the output; a rerun
rebuilds it from scratch (it never trusts a half-written earlier attempt). Tracklet ids are
0..T-1 in write order; frame_index is 0..n-1 within a tracklet over the frames kept.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Iterator
from typing import Any

import pandas as pd
from tqdm import tqdm

from components.common import storage, tracking
from components.common.dataset import FRAME_SCHEMA, TRACKLET_SCHEMA, DatasetWriter, manifest_summary
from components.common.errors import DalError
from components.ingest.config import IngestConfig
from components.ingest.datasets import ilidsvid, mars, prid2011
from components.ingest.datasets.base import RawSource, RawTracklet
from components.ingest.raw_frames import CheckedFrame, bounded_map, load_frame, validate

log = logging.getLogger(__name__)

MAX_LISTED_SKIPS = 100  # skipped paths listed in the manifest (the count is always exact)
WRITE_BATCH_ROWS = 256  # frames handed to the writer at a time
Job = tuple[int, RawTracklet, int, str]  # tracklet id, tracklet, position in it, relative frame path


class CorruptFrameError(DalError):
    """A frame does not decode; the message names it."""


def open_source(config: IngestConfig) -> RawSource:
    """The reader for ``config.dataset``, with the layout already checked."""
    root = config.source
    if config.dataset == "mars":
        return mars.open_source(root, info=config.mars_info, query_seed=config.query_seed)
    if config.dataset == "prid2011":
        return prid2011.open_source(
            root,
            split_lists=config.split_lists,
            num_splits=config.num_splits,
            split_seed=config.split_seed,
            min_frames=config.prid_min_frames,
            allow_missing_persons=config.allow_missing_persons,
        )
    if config.dataset == "ilidsvid":
        return ilidsvid.open_source(
            root,
            split_lists=config.split_lists,
            split_mat=config.split_mat,
            num_splits=config.num_splits,
            split_seed=config.split_seed,
            allow_missing_persons=config.allow_missing_persons,
        )
    if config.dataset == "tracklets":
        from components.ingest.datasets import tracklets

        index = "" if config.index == "none" else config.index or default_index(root)
        return tracklets.open_source(root, index=index)
    if config.dataset == "videos":
        from components.ingest.datasets import videos  # PyAV: imported only for videos

        return videos.open_source(
            root,
            min_track_frames=config.min_track_frames,
            max_track_frames=config.max_track_frames,
            frame_stride=config.frame_stride,
            jpeg_quality=config.jpeg_quality,
        )
    raise DalError(f"dataset: unknown dataset {config.dataset!r}")


DEFAULT_INDEX_FILES = ("index.csv", "index.parquet")


def default_index(root: str) -> str:
    """``<root>/index.csv`` or ``index.parquet`` when the tracklets source has one, else "" (folders):
    an index beside the frames is what a user (and ``dal synth --layout tracklets``) puts there."""
    for name in DEFAULT_INDEX_FILES:
        uri = storage.join(root, name)
        if storage.exists(uri):
            return uri
    return ""


class _Stats:
    def __init__(self) -> None:
        self.skipped: list[str] = []
        self.skipped_count = 0
        self.formats: dict[str, int] = {}


def _write_frames(raw: RawSource, writer: DatasetWriter, config: IngestConfig) -> tuple[pd.DataFrame, _Stats]:
    """Stream every frame through the pool into ``writer``; return the tracklet table."""
    stats = _Stats()
    rows: list[dict[str, Any]] = []
    columns: dict[str, list[Any]] = {name: [] for name in FRAME_SCHEMA.names}

    def jobs() -> Iterator[Job]:
        for tracklet_id, tracklet in enumerate(raw.tracklets()):
            for position, path in enumerate(tracklet.frames):
                yield tracklet_id, tracklet, position, path

    def load(job: Job) -> tuple[Job, CheckedFrame]:
        tracklet, position = job[1], job[2]
        if tracklet.encoded:  # crops the reader cut from a video, already JPEG at its quality
            return job, validate(tracklet.encoded[position])
        return job, load_frame(raw.tree, job[3], config.jpeg_quality)

    def close_tracklet(tracklet_id: int, tracklet: RawTracklet, kept: int) -> None:
        if kept == 0:
            raise CorruptFrameError(f"tracklet {tracklet.name!r}: every frame is corrupt, none left")
        rows.append(
            {
                "tracklet_id": tracklet_id,
                "person_id": tracklet.person_id,
                "camera_id": tracklet.camera_id,
                "subset": tracklet.subset,
                "is_query": tracklet.is_query,
                "num_frames": kept,
                "name": tracklet.name,
            }
        )

    def flush() -> None:
        if columns["tracklet_id"]:
            writer.add_frames(columns)
            for values in columns.values():
                values.clear()

    current: tuple[int, RawTracklet] | None = None
    kept = 0
    bar = tqdm(total=raw.num_frames, unit="frame", desc=f"ingest {raw.dataset}", disable=not config.progress)
    results = bounded_map(load, jobs(), workers=config.workers, max_in_flight=config.max_in_flight)
    # closing(): on an error the pool is shut down here, not whenever the traceback is freed.
    with bar, contextlib.closing(results):
        for (tracklet_id, tracklet, _, path), frame in results:
            bar.update(1)
            if current is None or current[0] != tracklet_id:
                if current is not None:
                    close_tracklet(*current, kept)
                current, kept = (tracklet_id, tracklet), 0
            if frame.data is None:
                uri = raw.frame_uri(path)
                if not config.skip_corrupt:
                    raise CorruptFrameError(
                        f"{uri}: corrupt image ({frame.error}); --skip-corrupt true skips such frames"
                    )
                stats.skipped_count += 1
                if len(stats.skipped) < MAX_LISTED_SKIPS:
                    stats.skipped.append(path)
                log.warning("skipping corrupt frame %s (%s)", uri, frame.error)
                continue
            columns["tracklet_id"].append(tracklet_id)
            columns["frame_index"].append(kept)
            columns["person_id"].append(tracklet.person_id)
            columns["camera_id"].append(tracklet.camera_id)
            columns["image"].append(frame.data)
            columns["source_path"].append(path)
            kept += 1
            stats.formats[frame.format] = stats.formats.get(frame.format, 0) + 1
            if len(columns["tracklet_id"]) >= WRITE_BATCH_ROWS:
                flush()
    if current is None:
        raise DalError(f"{raw.root}: no tracklets found (empty dataset)")
    close_tracklet(*current, kept)
    flush()
    return pd.DataFrame(rows, columns=TRACKLET_SCHEMA.names), stats


def ingest(raw: RawSource, config: IngestConfig) -> dict[str, Any]:
    """Write ``raw`` to ``config.output`` and publish it; returns the manifest."""
    with DatasetWriter(
        config.output,
        raw.dataset,
        shard_target_bytes=max(1, int(config.shard_size_mb * (1 << 20))),
        row_group_rows=config.row_group_rows,
    ) as writer:
        tracklets, stats = _write_frames(raw, writer, config)
        extra = {
            "ingest": {
                "source": raw.root,
                "config": tracking.settings_without_tracking(config),
                "protocol": raw.protocol,
                "image_encoding": {
                    "stored": _stored_encoding(raw, config),
                    "formats": stats.formats,
                },
                "skipped_corrupt": stats.skipped_count,
                "skipped_corrupt_paths": stats.skipped,
            }
        }
        return writer.finish(tracklets, raw.splits, extra)


def _stored_encoding(raw: RawSource, config: IngestConfig) -> str:
    cut = raw.protocol.get("rules", {}).get("jpeg_quality") if raw.dataset == "videos" else None
    if cut:  # crops cut from the videos, encoded by the reader
        return f"jpeg crops (quality {cut})"
    return f"jpeg (quality {config.jpeg_quality})" if config.jpeg_quality else "original bytes"


def run(config: IngestConfig) -> dict[str, Any]:
    started = time.monotonic()
    with tracking.step_run("ingest", config, tags={"dal.dataset": config.dataset}) as logger:
        raw = open_source(config)
        manifest = ingest(raw, config)
        seconds = time.monotonic() - started
        counts = manifest["counts"]
        skipped = manifest["ingest"]["skipped_corrupt"]
        logger.log_metrics(
            {
                **{f"dataset_{key}": value for key, value in counts.items()},
                "skipped_corrupt": skipped,
                "ingest_seconds": seconds,
                "ingest_frames_per_s": counts["frames"] / max(seconds, 1e-9),
            }
        )
        logger.log_dict(manifest, "ingest/manifest.json")
    log.info("published %s at %s", manifest_summary(manifest), config.output)
    return {
        "dataset": manifest["dataset"],
        "output": config.output,
        "counts": counts,
        "shards": len(manifest["shards"]),
        "skipped_corrupt": skipped,
        "seconds": round(seconds, 3),
        "frames_per_s": round(counts["frames"] / max(seconds, 1e-9), 1),
    }
