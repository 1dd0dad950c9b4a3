"""The ``features.parquet`` format that ``dal extract`` writes and ``dal evaluate`` reads (no torch).

One row per tracklet: ``tracklet_id`` (int32), ``person_id`` (int32), ``camera_id`` (int16, 0-based),
``num_frames`` (int32, frames pooled) and ``feature`` (fixed-size list of float32, L2-normalised).
The Parquet schema metadata key ``dal`` holds JSON: format, dataset URI and name, model URI,
subset, split, pooling, feature_dim — what evaluation needs to check that features and dataset fit.
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from components.common import storage
from components.common.errors import DalError

FEATURES_FORMAT = "dal-features/1"
METADATA_KEY = b"dal"
ID_COLUMNS = (("tracklet_id", pa.int32()), ("person_id", pa.int32()), ("camera_id", pa.int16()))


class FeaturesError(DalError, ValueError):
    """A features file that is missing, malformed or does not fit; the message names the URI."""


@dataclasses.dataclass(frozen=True)
class Features:
    tracklet_id: np.ndarray  # (N,) int
    person_id: np.ndarray  # (N,) int
    camera_id: np.ndarray  # (N,) int, 0-based
    num_frames: np.ndarray  # (N,) int
    feature: np.ndarray  # (N, D) float32
    metadata: dict[str, Any]

    @property
    def feature_dim(self) -> int:
        return int(self.feature.shape[1])

    def __len__(self) -> int:
        return len(self.tracklet_id)


def features_schema(feature_dim: int, metadata: dict[str, Any] | None = None) -> pa.Schema:
    fields = [pa.field(name, kind, nullable=False) for name, kind in ID_COLUMNS]
    fields.append(pa.field("num_frames", pa.int32(), nullable=False))
    fields.append(pa.field("feature", pa.list_(pa.float32(), feature_dim), nullable=False))
    meta = {METADATA_KEY: json.dumps({"format": FEATURES_FORMAT, **(metadata or {})}).encode()}
    return pa.schema(fields, metadata=meta)


def write_features(uri: str, features: Features) -> None:
    """Write atomically (a reader sees the old file, no file, or the whole new one)."""
    matrix = np.ascontiguousarray(features.feature, dtype=np.float32)
    if matrix.ndim != 2 or len(matrix) != len(features.tracklet_id):
        raise FeaturesError(f"{uri}: feature matrix {matrix.shape} does not fit {len(features)} tracklets")
    schema = features_schema(matrix.shape[1], {**features.metadata, "feature_dim": matrix.shape[1]})
    columns = [
        pa.array(np.asarray(features.tracklet_id), pa.int32()),
        pa.array(np.asarray(features.person_id), pa.int32()),
        pa.array(np.asarray(features.camera_id), pa.int16()),
        pa.array(np.asarray(features.num_frames), pa.int32()),
        pa.FixedSizeListArray.from_arrays(pa.array(matrix.ravel(), pa.float32()), matrix.shape[1]),
    ]
    table = pa.Table.from_arrays(columns, schema=schema)
    with storage.open_output_atomic(uri) as handle:
        pq.write_table(table, handle)


def read_features(uri: str) -> Features:
    """Read and check a features file; anything malformed is a FeaturesError naming ``uri``."""
    if not storage.exists(uri):
        raise FeaturesError(f"{uri}: features file not found")
    try:
        with storage.open_input_file(uri) as handle:
            table = pq.read_table(handle)
    except (pa.ArrowException, OSError) as exc:
        raise FeaturesError(f"{uri}: not a readable Parquet file ({exc})") from exc
    raw_meta = (table.schema.metadata or {}).get(METADATA_KEY)
    try:
        metadata = json.loads(raw_meta) if raw_meta else {}
    except json.JSONDecodeError as exc:
        raise FeaturesError(f"{uri}: schema metadata 'dal' is not JSON ({exc})") from exc
    if metadata.get("format") != FEATURES_FORMAT:
        raise FeaturesError(
            f"{uri}: not a {FEATURES_FORMAT} file (metadata format {metadata.get('format')!r})"
        )
    missing = [
        n
        for n in ("tracklet_id", "person_id", "camera_id", "num_frames", "feature")
        if n not in table.column_names
    ]
    if missing:
        raise FeaturesError(f"{uri}: missing column(s) {', '.join(missing)}")
    feature_type = table.schema.field("feature").type
    if not pa.types.is_fixed_size_list(feature_type) or feature_type.value_type != pa.float32():
        raise FeaturesError(
            f"{uri}: column 'feature' must be a fixed-size list of float32, got {feature_type}"
        )
    if table.num_rows == 0:
        raise FeaturesError(f"{uri}: no tracklets")
    for name in ("tracklet_id", "person_id", "camera_id", "num_frames", "feature"):
        if table.column(name).null_count:
            raise FeaturesError(f"{uri}: column {name!r} has null values")
    dim = feature_type.list_size
    flat = table.column("feature").combine_chunks().flatten().to_numpy(zero_copy_only=False)
    matrix = np.asarray(flat, dtype=np.float32).reshape(table.num_rows, dim)
    ids = table.column("tracklet_id").to_numpy()
    if len(np.unique(ids)) != len(ids):
        raise FeaturesError(f"{uri}: duplicate tracklet_id values")
    bad = ~np.isfinite(matrix).all(axis=1)
    if bad.any():
        raise FeaturesError(
            f"{uri}: {int(bad.sum())} tracklet feature(s) contain NaN or inf (first: tracklet_id "
            f"{int(ids[np.argmax(bad)])})"
        )
    return Features(
        tracklet_id=ids.astype(np.int64),
        person_id=table.column("person_id").to_numpy().astype(np.int64),
        camera_id=table.column("camera_id").to_numpy().astype(np.int64),
        num_frames=table.column("num_frames").to_numpy().astype(np.int64),
        feature=matrix,
        metadata=metadata,
    )
