"""The stored dataset format that ``dal ingest`` writes and every later step reads.

Layout under a dataset root (local path or ``s3://bucket/prefix``)::

    frames/part-00000.parquet   one row per frame (FRAME_SCHEMA), row groups of a few thousand
    tracklets.parquet           one row per tracklet (TRACKLET_SCHEMA)
    splits.parquet              PRID2011 / iLIDS-VID only: person roles per split (SPLIT_SCHEMA)
    manifest.json               written last: the commit marker, with counts and checksums

A dataset without a valid manifest does not exist for readers: an interrupted ingest publishes
nothing. Ids: ``tracklet_id`` is 0..T-1 over the whole dataset; ``camera_id`` is 0-based (the
dataset's camera 1 is 0); ``person_id`` keeps the dataset's own numbering (MARS: 0 distractor,
-1 junk) and is read only by evaluation, monitoring and the supervised reference, never by DAL.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import json
from collections.abc import Iterable, Iterator
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from components.common import storage
from components.common.errors import DalError

SCHEMA_VERSION = 1
MANIFEST = "manifest.json"
FRAMES_DIR = "frames"
TRACKLETS_FILE = "tracklets.parquet"
SPLITS_FILE = "splits.parquet"

FRAME_SCHEMA = pa.schema(
    [
        ("tracklet_id", pa.int32()),
        ("frame_index", pa.int32()),
        ("person_id", pa.int32()),
        ("camera_id", pa.int16()),
        ("image", pa.binary()),
        ("source_path", pa.string()),
    ]
)
TRACKLET_SCHEMA = pa.schema(
    [
        ("tracklet_id", pa.int32()),
        ("person_id", pa.int32()),
        ("camera_id", pa.int16()),
        ("subset", pa.string()),  # "train" | "test"; for split datasets: the role in split 0
        ("is_query", pa.bool_()),
        ("num_frames", pa.int32()),
        ("name", pa.string()),  # the dataset's own name of the tracklet, e.g. 0001C1T0001
    ]
)
SPLIT_SCHEMA = pa.schema(
    [
        ("split", pa.int16()),  # 0-based split index
        ("person_id", pa.int32()),
        ("role", pa.string()),  # "train" | "test"
    ]
)
SUBSETS = ("train", "test")
# Users' own footage (``dal ingest --dataset tracklets | videos``): person ids are optional
# (-1: unlabelled); labelled tracklets are the test subset. Extraction for the pipeline then
# covers every tracklet (the gallery a search runs over), evaluation its labelled ones.
OWN_FOOTAGE = ("tracklets", "videos")


class DatasetError(DalError, ValueError):
    """A stored dataset is missing, unpublished or inconsistent; the message names the file."""


@dataclasses.dataclass(frozen=True)
class RowGroupRef:
    """One Parquet row group: the unit that ranks and DataLoader workers split between them."""

    shard_uri: str
    row_group: int
    num_rows: int
    tracklet_min: int
    tracklet_max: int


class _HashingWriter:
    """File wrapper that counts and hashes bytes as the Parquet writer streams them out."""

    def __init__(self, handle: Any) -> None:
        self._handle = handle
        self.sha256 = hashlib.sha256()
        self.bytes_written = 0
        self.closed = False

    def write(self, data: bytes) -> int:
        self.sha256.update(data)
        self.bytes_written += len(data)
        return self._handle.write(data)

    def tell(self) -> int:
        return self.bytes_written

    def flush(self) -> None:
        self._handle.flush()

    def close(self) -> None:  # the owner of the underlying handle closes it
        self.closed = True

    def writable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return False


def _table(schema: pa.Schema, frame: pd.DataFrame, what: str) -> pa.Table:
    missing = [name for name in schema.names if name not in frame.columns]
    if missing:
        raise DatasetError(f"{what}: missing column(s) {', '.join(missing)}")
    try:
        return pa.Table.from_pandas(frame[schema.names], schema=schema, preserve_index=False)
    except (pa.ArrowInvalid, pa.ArrowTypeError, TypeError, ValueError) as exc:
        raise DatasetError(f"{what}: {exc}") from exc


class DatasetWriter:
    """Streams frames into size-bounded Parquet shards and publishes the dataset on ``finish``.

    Memory holds at most one row group of encoded frames. Opening a writer unpublishes any
    dataset already at ``root`` (its manifest goes first), so a failed rerun leaves nothing
    that readers accept; ``finish`` writes the tables and then the manifest, last.
    """

    def __init__(
        self,
        root: str,
        dataset: str,
        *,
        shard_target_bytes: int = 100 << 20,
        row_group_rows: int = 4096,
    ) -> None:
        if row_group_rows < 1 or shard_target_bytes < 1:
            raise ValueError("row_group_rows and shard_target_bytes must be positive")
        self.root = root
        self.dataset = dataset
        self.shard_target_bytes = shard_target_bytes
        self.row_group_rows = row_group_rows
        self._pending: list[pa.RecordBatch] = []
        self._pending_rows = 0
        self._shards: list[dict[str, Any]] = []
        self._open: tuple[Any, Any, _HashingWriter, pq.ParquetWriter, dict[str, Any]] | None = None
        self._finished = False
        storage.delete(storage.join(root, MANIFEST))
        storage.delete(storage.join(root, FRAMES_DIR))
        storage.ensure_dir(root)

    # -- frames ---------------------------------------------------------------------------
    def add_frames(self, frames: pa.RecordBatch | pa.Table | dict[str, list[Any]]) -> None:
        """Append frames (columns of FRAME_SCHEMA); written out one full row group at a time."""
        if self._finished:
            raise RuntimeError("DatasetWriter.add_frames after finish")
        if isinstance(frames, dict):
            table = pa.Table.from_pydict(frames, schema=FRAME_SCHEMA)
        else:
            table = pa.Table.from_batches([frames]) if isinstance(frames, pa.RecordBatch) else frames
            table = table.select(FRAME_SCHEMA.names).cast(FRAME_SCHEMA)
        for batch in table.to_batches():
            self._pending.append(batch)
            self._pending_rows += batch.num_rows
        while self._pending_rows >= self.row_group_rows:
            self._flush_row_group(self.row_group_rows)

    def _flush_row_group(self, rows: int) -> None:
        table = pa.Table.from_batches(self._pending, schema=FRAME_SCHEMA)
        group, rest = table.slice(0, rows), table.slice(rows)
        self._pending = rest.to_batches()
        self._pending_rows = rest.num_rows
        if self._open is None:
            self._open_shard()
        assert self._open is not None
        _, _, hasher, writer, info = self._open
        writer.write_table(group, row_group_size=rows)
        ids = group.column("tracklet_id")
        info["row_groups"].append(
            {
                "rows": group.num_rows,
                "tracklet_min": int(pc.min(ids).as_py()),
                "tracklet_max": int(pc.max(ids).as_py()),
            }
        )
        info["rows"] += group.num_rows
        if hasher.bytes_written >= self.shard_target_bytes:
            self._close_shard()

    def _open_shard(self) -> None:
        name = f"{FRAMES_DIR}/part-{len(self._shards):05d}.parquet"
        context = storage.open_output_atomic(storage.join(self.root, name))
        handle = context.__enter__()
        hasher = _HashingWriter(handle)
        writer = pq.ParquetWriter(hasher, FRAME_SCHEMA, compression="none", write_statistics=True)
        self._open = (context, handle, hasher, writer, {"path": name, "rows": 0, "row_groups": []})

    def _close_shard(self) -> None:
        assert self._open is not None
        context, _, hasher, writer, info = self._open
        self._open = None
        writer.close()
        context.__exit__(None, None, None)
        info["bytes"] = hasher.bytes_written
        info["sha256"] = hasher.sha256.hexdigest()
        self._shards.append(info)

    def abort(self) -> None:
        """Drop the shard being written (no partial file is published); idempotent."""
        if self._open is not None:
            context, _, _, writer, _ = self._open
            self._open = None
            aborted = RuntimeError("dataset write aborted")
            try:
                writer.close()
            finally:
                # Exiting with an exception makes open_output_atomic discard the partial shard.
                context.__exit__(RuntimeError, aborted, None)

    # -- publish --------------------------------------------------------------------------
    def finish(
        self,
        tracklets: pd.DataFrame,
        splits: pd.DataFrame | None = None,
        extra: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        """Flush frames, write the tables, check consistency, and publish the manifest last."""
        if self._pending_rows:
            self._flush_row_group(self._pending_rows)
        if self._open is not None:
            self._close_shard()
        self._finished = True
        frame_rows = sum(s["rows"] for s in self._shards)
        if frame_rows == 0:
            raise DatasetError(f"{self.root}: no frames were written (empty dataset)")
        tracklet_table = _table(TRACKLET_SCHEMA, tracklets, TRACKLETS_FILE)
        _check_tracklets(tracklet_table, frame_rows, self.root)
        files = {"tracklets": self._write_table(TRACKLETS_FILE, tracklet_table)}
        if splits is not None:
            split_table = _table(SPLIT_SCHEMA, splits, SPLITS_FILE)
            files["splits"] = self._write_table(SPLITS_FILE, split_table)
        # Real identities only: MARS's junk (-1) and distractor (0) tracklets are not persons.
        person_ids = tracklet_table.column("person_id")
        persons = pc.unique(pc.filter(person_ids, pc.greater(person_ids, 0)))
        cameras = pc.unique(tracklet_table.column("camera_id"))
        subsets = tracklet_table.column("subset").to_pylist()
        manifest = {
            "schema_version": SCHEMA_VERSION,
            "dataset": self.dataset,
            "created_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
            "counts": {
                "frames": frame_rows,
                "tracklets": tracklet_table.num_rows,
                "persons": len(persons),
                "cameras": len(cameras),
                "train_tracklets": subsets.count("train"),
                "test_tracklets": subsets.count("test"),
                "query_tracklets": int(pc.sum(tracklet_table.column("is_query")).as_py() or 0),
                "splits": (len(pc.unique(split_table.column("split"))) if splits is not None else 0),
            },
            "num_cameras": int(pc.max(cameras).as_py()) + 1,
            "shards": self._shards,
            "files": files,
            **(extra or {}),
        }
        storage.write_json(storage.join(self.root, MANIFEST), manifest)
        return manifest

    def _write_table(self, name: str, table: pa.Table) -> dict[str, Any]:
        with storage.open_output_atomic(storage.join(self.root, name)) as handle:
            hasher = _HashingWriter(handle)
            pq.write_table(table, hasher)
        return {
            "path": name,
            "rows": table.num_rows,
            "bytes": hasher.bytes_written,
            "sha256": hasher.sha256.hexdigest(),
        }

    def __enter__(self) -> DatasetWriter:
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        if exc_type is not None:
            self.abort()
        elif not self._finished:
            self.abort()
            raise RuntimeError("DatasetWriter closed without finish(): nothing was published")


def _check_tracklets(table: pa.Table, frame_rows: int, root: str) -> None:
    ids = table.column("tracklet_id").to_numpy()
    if len(ids) == 0:
        raise DatasetError(f"{root}/{TRACKLETS_FILE}: no tracklets")
    if sorted(ids.tolist()) != list(range(len(ids))):
        raise DatasetError(f"{root}/{TRACKLETS_FILE}: tracklet_id must be 0..{len(ids) - 1}")
    num_frames = table.column("num_frames").to_numpy()
    empty = ids[num_frames <= 0]
    if len(empty):
        names = table.column("name").to_pylist()
        raise DatasetError(f"tracklet {names[int(empty[0])]!r} has no frames")
    if int(num_frames.sum()) != frame_rows:
        raise DatasetError(
            f"{root}: tracklets.parquet counts {int(num_frames.sum())} frames, shards hold {frame_rows}"
        )
    bad = set(table.column("subset").to_pylist()) - set(SUBSETS)
    if bad:
        raise DatasetError(f"{root}/{TRACKLETS_FILE}: subset must be train or test, got {sorted(bad)}")


def worker_start_method(root: str, workers: int) -> str | None:
    """How DataLoader workers that read the dataset at ``root`` start: pyarrow's S3 client is not
    fork-safe once used (the parent has read the manifest), so S3 datasets ``spawn`` workers
    (each builds its own client); local ones fork (torch's default, quicker to start)."""
    return "spawn" if workers > 0 and storage.is_s3(root) else None


class Dataset:
    """A published dataset. ``Dataset.open`` refuses a root without a valid manifest."""

    def __init__(self, root: str, manifest: dict[str, Any]) -> None:
        self.root = root
        self.manifest = manifest

    @classmethod
    def open(cls, root: str) -> Dataset:
        manifest_uri = storage.join(root, MANIFEST)
        if not storage.exists(manifest_uri):
            raise DatasetError(
                f"{manifest_uri}: no manifest (not an ingested dataset, or its ingest did not finish)"
            )
        try:
            manifest = storage.read_json(manifest_uri)
        except storage.StorageError as exc:
            raise DatasetError(f"{manifest_uri}: unreadable manifest ({exc})") from exc
        _validate_manifest(root, manifest)
        return cls(root, manifest)

    @property
    def name(self) -> str:
        return str(self.manifest["dataset"])

    @property
    def digest(self) -> str:
        """A short fingerprint of this published dataset (see ``manifest_digest``)."""
        return manifest_digest(self.manifest)

    @property
    def num_cameras(self) -> int:
        return int(self.manifest["num_cameras"])

    @property
    def num_splits(self) -> int:
        return int(self.manifest["counts"].get("splits", 0))

    @property
    def shard_uris(self) -> list[str]:
        return [storage.join(self.root, s["path"]) for s in self.manifest["shards"]]

    def row_groups(self) -> list[RowGroupRef]:
        """Every row group of every shard, in storage order, with its tracklet-id range."""
        refs = []
        for shard in self.manifest["shards"]:
            uri = storage.join(self.root, shard["path"])
            for index, group in enumerate(shard["row_groups"]):
                refs.append(
                    RowGroupRef(uri, index, group["rows"], group["tracklet_min"], group["tracklet_max"])
                )
        return refs

    def row_groups_holding(self, tracklet_ids: np.ndarray) -> list[RowGroupRef]:
        """Row groups whose [tracklet_min, tracklet_max] range holds one of the sorted ``tracklet_ids``."""
        refs = []
        for ref in self.row_groups():
            first = np.searchsorted(tracklet_ids, ref.tracklet_min)
            if first < len(tracklet_ids) and tracklet_ids[first] <= ref.tracklet_max:
                refs.append(ref)
        return refs

    def read_row_group(self, ref: RowGroupRef, columns: Iterable[str]) -> pa.Table:
        with storage.open_input_file(ref.shard_uri) as handle:
            return pq.ParquetFile(handle).read_row_group(ref.row_group, columns=list(columns))

    def iter_frames(
        self, columns: Iterable[str], refs: Iterable[RowGroupRef] | None = None
    ) -> Iterator[pa.Table]:
        """Stream row groups (all of them, or ``refs``) one at a time: bounded memory."""
        for ref in self.row_groups() if refs is None else refs:
            yield self.read_row_group(ref, columns)

    def tracklets(self) -> pd.DataFrame:
        return self._read_table("tracklets")

    def splits(self) -> pd.DataFrame | None:
        return self._read_table("splits") if "splits" in self.manifest["files"] else None

    def _read_table(self, key: str) -> pd.DataFrame:
        uri = storage.join(self.root, self.manifest["files"][key]["path"])
        with storage.open_input_file(uri) as handle:
            return pq.read_table(handle).to_pandas()

    def select_tracklets(self, subset: str, split: int) -> pd.DataFrame:
        """The tracklets of ``subset`` (train, test or all) in ``split``, sorted by tracklet_id:
        what a step reads features of (split roles apply to 10-split datasets); none is an error."""
        if subset == "all":
            self.subset_tracklets("test", split)  # validates the split
            chosen = self.tracklets()
        else:
            chosen = self.subset_tracklets(subset, split)
        if chosen.empty:
            raise DatasetError(f"{self.root}: no {subset} tracklets (split {split})")
        return chosen.sort_values("tracklet_id").reset_index(drop=True)

    def subset_tracklets(self, subset: str, split: int | None = None) -> pd.DataFrame:
        """Tracklets of ``subset`` ("train" / "test"); 10-split datasets take roles from ``split``."""
        if subset not in SUBSETS:
            raise DatasetError(f"subset must be one of {SUBSETS}, got {subset!r}")
        tracklets = self.tracklets()
        splits = self.splits()
        if splits is None:
            if split not in (None, 0):
                raise DatasetError(f"{self.root}: dataset {self.name!r} has no splits (asked for {split})")
            return tracklets[tracklets["subset"] == subset].reset_index(drop=True)
        split = 0 if split is None else split
        available = sorted(int(s) for s in splits["split"].unique())
        if split not in available:
            raise DatasetError(
                f"{self.root}: split {split} does not exist (available: {available[0]}..{available[-1]})"
            )
        persons = splits[(splits["split"] == split) & (splits["role"] == subset)]["person_id"]
        return tracklets[tracklets["person_id"].isin(persons)].reset_index(drop=True)

    def verify(self) -> None:
        """Re-hash every file against the manifest (reads the whole dataset once)."""
        for entry in [*self.manifest["shards"], *self.manifest["files"].values()]:
            uri = storage.join(self.root, entry["path"])
            if storage.sha256_of(uri) != entry["sha256"]:
                raise DatasetError(f"{uri}: checksum does not match the manifest")


def _validate_manifest(root: str, manifest: Any) -> None:
    where = storage.join(root, MANIFEST)
    if not isinstance(manifest, dict):
        raise DatasetError(f"{where}: manifest is not a JSON object")
    version = manifest.get("schema_version")
    if version != SCHEMA_VERSION:
        raise DatasetError(
            f"{where}: schema_version {version!r} is not supported (expected {SCHEMA_VERSION})"
        )
    for key in ("dataset", "counts", "num_cameras", "shards", "files"):
        if key not in manifest:
            raise DatasetError(f"{where}: missing field {key!r}")
    if "tracklets" not in manifest["files"]:
        raise DatasetError(f"{where}: files.tracklets is missing")
    if not manifest["shards"]:
        raise DatasetError(f"{where}: no frame shards")
    for entry in [*manifest["shards"], *manifest["files"].values()]:
        uri = storage.join(root, entry["path"])
        try:
            actual = storage.size(uri)
        except storage.StorageError as exc:
            raise DatasetError(f"{uri}: listed in the manifest but missing ({exc})") from exc
        if actual != entry["bytes"]:
            raise DatasetError(f"{uri}: {actual} bytes, the manifest says {entry['bytes']}")


DIGEST_CHARS = 8  # as long as MLflow's own dataset digests


def manifest_digest(manifest: dict[str, Any]) -> str:
    """sha256 of the manifest as canonical JSON, truncated: the manifest lists every file's sha256,
    so equal digests mean equal data (and the same ingest); key order does not matter."""
    canonical = json.dumps(manifest, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()[:DIGEST_CHARS]


def manifest_summary(manifest: dict[str, Any]) -> str:
    """One line for logs: dataset name and counts."""
    return f"{manifest['dataset']}: " + json.dumps(manifest["counts"], sort_keys=True)
