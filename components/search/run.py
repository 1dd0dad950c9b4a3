"""``dal search``: for each query tracklet, the ``top_k`` most similar gallery tracklets.

The gallery is a ``features.parquet``; the queries are tracklets of it, another features file,
or a folder of new frames (``components.search.queries``). Scores are cosine similarities of the
L2-normalised features, found by an exact search (``components.search.ranking``: every pair
scored, ties to the lower gallery row, bounded memory). A query never matches itself; gallery
tracklets in the query's camera are left out when ``exclude_same_camera`` is true (by default
when the queries are the gallery dataset's own tracklets: finding a person again in the same
camera is not re-identification). With a threshold (``components.search.threshold``) each
result also says ``same_person``: similarity >= threshold.

Written to ``output`` (atomically, local or s3://):

* ``ranked.parquet`` and ``ranked.csv``: one row per (query, rank): ``query_tracklet``,
  ``query_camera``, ``rank`` (1-based), ``gallery_tracklet``, ``gallery_camera``, ``score``;
  ``same_person`` with a threshold; ``query_name`` / ``gallery_name`` where known (the folder of
  a frame query; the dataset's tracklet names with ``--dataset``). Camera ids are 0-based, -1
  unknown. The Parquet schema metadata ``dal`` holds the settings (features, query, threshold
  and where it came from, ...). A query with fewer than ``top_k`` candidates has fewer rows;
* ``ranklist.png``: with ``--dataset``, up to ``num_ranklist_queries`` queries (evenly spaced)
  with the first frame of each top-k gallery tracklet and its score, framed green / red by the
  same-person decision (grey without a threshold); without a dataset, their scores by rank.

The summary (printed by the CLI) gives counts, the threshold and its source, and the timing.
"""

from __future__ import annotations

import datetime as dt
import io
import json
import logging
import os
import time
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from components.common import storage
from components.common.dataset import Dataset
from components.common.distributed import pick_device
from components.common.errors import DalError
from components.common.features import Features, read_features
from components.common.tracking import step_run
from components.evaluate import plots
from components.search.config import SearchConfig
from components.search.queries import Queries, QueryError, load_queries
from components.search.ranking import search
from components.search.threshold import Threshold, resolve_threshold

log = logging.getLogger(__name__)

RANKED_PARQUET = "ranked.parquet"
RANKED_CSV = "ranked.csv"
RANKLIST_FILE = "ranklist.png"
RANKLIST_CELL = (128, 64)  # (height, width) of one frame in ranklist.png
METADATA_KEY = b"dal"


def _exclude_same_camera(config: SearchConfig, queries: Queries) -> bool:
    if config.exclude_same_camera == "auto":
        return queries.same_tracklets
    if config.exclude_same_camera == "true" and queries.kind == "frames":
        raise QueryError("exclude_same_camera: frame queries have no camera; use auto or false")
    return config.exclude_same_camera == "true"


def _self_rows(queries: Queries, gallery: Features) -> np.ndarray:
    """Each query's own gallery row (-1: none), when query ids are the gallery's."""
    own = np.full(len(queries), -1, dtype=np.int64)
    if not queries.same_tracklets:
        return own
    order = np.argsort(gallery.tracklet_id, kind="stable")
    pos = np.searchsorted(gallery.tracklet_id, queries.tracklet_id, sorter=order).clip(max=len(order) - 1)
    found = gallery.tracklet_id[order[pos]] == queries.tracklet_id
    own[found] = order[pos][found]
    return own


def _dataset_names(config: SearchConfig, gallery: Features) -> tuple[Dataset | None, dict[int, str]]:
    """The gallery's dataset (``--dataset``) and its tracklet names; it must hold every gallery id."""
    if not config.dataset:
        return None, {}
    dataset = Dataset.open(config.dataset)
    name = gallery.metadata.get("dataset_name")
    if name is not None and name != dataset.name:
        raise DalError(f"dataset: {config.dataset} is {dataset.name!r}, the gallery features are of {name!r}")
    table = dataset.tracklets()
    known = set(table["tracklet_id"].astype(int))
    missing = [int(t) for t in gallery.tracklet_id if int(t) not in known]
    if missing:
        raise DalError(
            f"dataset: {len(missing)} gallery tracklet id(s) of {config.features} are not in "
            f"{config.dataset} (first: {missing[0]}); features and dataset do not match"
        )
    names = dict(zip(table["tracklet_id"].astype(int), table["name"].astype(str), strict=True))
    return dataset, names


def ranked_table(
    queries: Queries,
    gallery: Features,
    scores: np.ndarray,
    indices: np.ndarray,
    threshold: float | None,
    names: dict[int, str],
) -> pd.DataFrame:
    """One row per (query, rank) that has a gallery tracklet (module docstring)."""
    rows, ranks = np.nonzero(indices >= 0)
    picked = indices[rows, ranks]
    columns: dict[str, Any] = {
        "query_tracklet": queries.tracklet_id[rows],
        "query_camera": queries.camera_id[rows],
        "rank": (ranks + 1).astype(np.int32),
        "gallery_tracklet": gallery.tracklet_id[picked],
        "gallery_camera": gallery.camera_id[picked],
        "score": scores[rows, ranks].astype(np.float32),
    }
    if threshold is not None:
        columns["same_person"] = columns["score"] >= np.float32(threshold)
    table = pd.DataFrame(columns)
    if queries.names is not None:
        table.insert(1, "query_name", [queries.names[r] for r in rows])
    elif names and queries.same_tracklets:
        table.insert(1, "query_name", [names.get(int(t), "") for t in columns["query_tracklet"]])
    if names:
        table.insert(
            table.columns.get_loc("gallery_tracklet") + 1,
            "gallery_name",
            [names[int(t)] for t in columns["gallery_tracklet"]],
        )
    return table


def _chosen(count: int, wanted: int) -> np.ndarray:
    return np.unique(np.linspace(0, count - 1, min(wanted, count)).round().astype(int))


def _query_frame(queries: Queries, row: int, frames: dict[int, np.ndarray]) -> np.ndarray | None:
    if queries.frames is not None:
        from PIL import Image

        with Image.open(io.BytesIO(storage.read_bytes(queries.frames[row][0]))) as image:
            resized = image.convert("RGB").resize(
                (RANKLIST_CELL[1], RANKLIST_CELL[0]), Image.Resampling.BILINEAR
            )
            return np.asarray(resized)
    return frames.get(int(queries.tracklet_id[row])) if queries.same_tracklets else None


def ranklist_png(
    queries: Queries,
    gallery: Features,
    scores: np.ndarray,
    indices: np.ndarray,
    threshold: float | None,
    dataset: Dataset | None,
    names: dict[int, str],
    num_queries: int,
) -> bytes:
    chosen = _chosen(len(queries), num_queries)

    def label(row: int) -> str:
        name = (
            queries.names[row] if queries.names is not None else names.get(int(queries.tracklet_id[row]), "")
        )
        cam = int(queries.camera_id[row])
        return f"{name or 'tracklet ' + str(int(queries.tracklet_id[row]))}" + (
            f"\ncam {cam + 1}" if cam >= 0 else ""
        )

    if dataset is None:
        curves = {label(r).replace("\n", ", "): scores[r][indices[r] >= 0] for r in chosen}
        return plots.scores_png(curves, threshold=threshold, title=f"top-{scores.shape[1]} similarities")
    wanted = gallery.tracklet_id[indices[chosen][indices[chosen] >= 0]]
    if queries.same_tracklets:
        wanted = np.concatenate([wanted, queries.tracklet_id[chosen]])
    frames = plots.first_frames(dataset, np.unique(wanted), RANKLIST_CELL)
    rows = []
    for r in chosen:
        valid = indices[r] >= 0
        picked = gallery.tracklet_id[indices[r][valid]]
        decided = [None if threshold is None else bool(s >= np.float32(threshold)) for s in scores[r][valid]]
        rows.append(
            plots.RankRow(
                _query_frame(queries, r, frames),
                [frames.get(int(t)) for t in picked],
                decided,
                label(r),
                [f"{s:.3f}" for s in scores[r][valid]],
            )
        )
    title = (
        "rank list (green: same person by the threshold, red: not)"
        if threshold is not None
        else ("rank list (no threshold: no same-person decision)")
    )
    return plots.ranklist_png(rows, RANKLIST_CELL, title=title)


def _write_parquet(uri: str, table: pd.DataFrame, settings: dict[str, Any]) -> None:
    arrow = pa.Table.from_pandas(table, preserve_index=False)
    arrow = arrow.replace_schema_metadata({METADATA_KEY: json.dumps(settings, sort_keys=True).encode()})
    with storage.open_output_atomic(uri) as handle:
        pq.write_table(arrow, handle)


def _write_csv(uri: str, table: pd.DataFrame) -> None:
    with storage.open_output_atomic(uri) as handle:
        handle.write(table.to_csv(index=False).encode())


def run(config: SearchConfig) -> dict[str, Any]:
    with step_run("search", config) as logger:
        device = pick_device(config.device)
        threads = config.threads or len(os.sched_getaffinity(0))
        gallery = read_features(config.features)
        threshold: Threshold = resolve_threshold(config, str(gallery.metadata.get("model") or ""))
        queries = load_queries(
            config.query,
            gallery,
            config.features,
            model=config.model,
            device=device,
            batch_size=config.batch_size,
            tracking_uri=config.mlflow_tracking_uri,
        )
        dataset, names = _dataset_names(config, gallery)
        same_camera = _exclude_same_camera(config, queries)
        started = time.perf_counter()
        scores, indices = search(
            queries.feature,
            gallery.feature,
            config.top_k,
            exclude_index=_self_rows(queries, gallery),
            query_cameras=queries.camera_id if same_camera else None,
            gallery_cameras=gallery.camera_id if same_camera else None,
            device=device,
            threads=threads,
        )
        seconds = time.perf_counter() - started
        table = ranked_table(queries, gallery, scores, indices, threshold.value, names)
        settings = {
            "features": config.features,
            "query": config.query,
            "query_kind": queries.kind,
            "model": config.model or gallery.metadata.get("model"),
            "top_k": config.top_k,
            "threshold": threshold.value,
            "threshold_source": threshold.source,
            "exclude_same_camera": same_camera,
            "created_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        }
        storage.ensure_dir(config.output)
        outputs = {
            "ranked": storage.join(config.output, RANKED_PARQUET),
            "ranked_csv": storage.join(config.output, RANKED_CSV),
        }
        _write_parquet(outputs["ranked"], table, settings)
        _write_csv(outputs["ranked_csv"], table)
        png = None
        if config.num_ranklist_queries:
            png = ranklist_png(
                queries,
                gallery,
                scores,
                indices,
                threshold.value,
                dataset,
                names,
                config.num_ranklist_queries,
            )
            outputs["ranklist"] = storage.join(config.output, RANKLIST_FILE)
            storage.write_bytes(outputs["ranklist"], png)
        summary: dict[str, Any] = {
            "num_queries": len(queries),
            "num_gallery": len(gallery),
            "query_kind": queries.kind,
            "top_k": config.top_k,
            "exclude_same_camera": same_camera,
            "threshold": threshold.value,
            "threshold_source": threshold.source,
            "search_seconds": round(seconds, 3),
            "queries_per_s": round(len(queries) / max(seconds, 1e-9), 1),
            "device": str(device),
            "outputs": outputs,
        }
        if threshold.value is not None:
            summary["num_same_person"] = int(table["same_person"].sum())
        log.info(
            "searched %d queries x %d gallery tracklets in %.2f s%s",
            len(queries),
            len(gallery),
            seconds,
            f"; threshold {threshold.value:.4f} ({threshold.source})" if threshold.value is not None else "",
        )
        logger.set_tags({"dal.query_kind": queries.kind, "dal.threshold_source": threshold.source or "none"})
        logger.log_metrics(
            {k: float(summary[k]) for k in ("num_queries", "num_gallery", "search_seconds")}
            | ({"threshold": threshold.value} if threshold.value is not None else {})
        )
        logger.log_bytes(table.to_csv(index=False).encode(), RANKED_CSV)
        if png is not None:
            logger.log_bytes(png, RANKLIST_FILE)
        summary["mlflow_run_id"] = logger.run_id
        return summary
