"""The queries of ``dal search``: what ``--query`` names, as features beside the gallery's.

``--query`` is read as, in this order:

* comma-separated tracklet ids (``12,40``): tracklets of the gallery features themselves. Each is
  left out of its own result, and by default so are the gallery tracklets of its camera;
* a file: another ``features.parquet``. When it was extracted from the same dataset as the
  gallery (same ``dataset`` in both files' metadata) its tracklet ids are the gallery's: a query
  is left out of its own result and same-camera exclusion is on by default; otherwise ids and
  cameras are unrelated to the gallery's and it is off;
* a folder of frames, ``<query>/<tracklet>/<frame>.jpg`` (.jpeg, .png, .webp; hidden files are
  skipped): each subfolder is one query tracklet, named by the folder, with no camera (-1). Its
  frames are embedded exactly as ``dal extract`` does (the model's input size, mean and std, the
  gallery's pooling, L2-normalised frame features pooled and normalised again) by the model
  given, by default the one the gallery was extracted with; it must be the gallery's backbone.
"""

from __future__ import annotations

import dataclasses
import logging
import re
from typing import Any

import numpy as np
import pyarrow.fs as pafs
import torch

from components.common import images, storage
from components.common.errors import DalError
from components.common.features import Features, read_features
from components.model.artifact import load_model
from components.model.catalog import DEFAULT_POOLING
from components.model.embed import embed
from components.model.pooling import TrackletPooler

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp")
_IDS = re.compile(r"\s*-?\d+(\s*,\s*-?\d+)*\s*,?\s*")


class QueryError(DalError, ValueError):
    """A ``--query`` that cannot be read or does not fit the gallery; the message names it."""


@dataclasses.dataclass(frozen=True)
class Queries:
    kind: str  # "ids", "features" or "frames"
    tracklet_id: np.ndarray  # (Q,) int: gallery ids (ids), the file's ids (features), 0..Q-1 (frames)
    camera_id: np.ndarray  # (Q,) int, -1: unknown
    feature: np.ndarray  # (Q, D) float32, L2-normalised
    same_tracklets: bool  # ids are the gallery's tracklets (same dataset): exclude self, cameras comparable
    names: list[str] | None = None  # folder names of frame queries
    frames: dict[int, list[str]] | None = None  # frame URIs per query position (frame queries)

    def __len__(self) -> int:
        return len(self.tracklet_id)


def _kind_of(uri: str) -> str:
    fs, path = storage.resolve(uri)
    try:
        info = fs.get_file_info(path)
    except (OSError, ValueError) as exc:
        raise QueryError(f"query {uri}: {exc}") from exc
    if info.type == pafs.FileType.File:
        return "features"
    if info.type == pafs.FileType.Directory:
        return "frames"
    raise QueryError(
        f"query {uri!r}: neither comma-separated tracklet ids, nor a features.parquet, nor a folder of "
        "frames <query>/<tracklet>/<frame>.jpg (nothing is there)"
    )


def load_queries(query: str, gallery: Features, gallery_uri: str, **embedding: Any) -> Queries:
    """The queries ``query`` names (module docstring); ``embedding``: ``embed_frames``'s options."""
    if _IDS.fullmatch(query):
        return _from_ids(query, gallery, gallery_uri)
    if _kind_of(query) == "features":
        return _from_features(query, gallery, gallery_uri)
    return _from_frames(query, gallery, gallery_uri, **embedding)


def _from_ids(query: str, gallery: Features, gallery_uri: str) -> Queries:
    wanted = np.array([int(t) for t in query.replace(" ", "").strip(",").split(",")], dtype=np.int64)
    order = np.argsort(gallery.tracklet_id, kind="stable")
    pos = np.searchsorted(gallery.tracklet_id, wanted, sorter=order).clip(max=len(order) - 1)
    rows = order[pos]
    missing = wanted[gallery.tracklet_id[rows] != wanted]
    if len(missing):
        raise QueryError(
            f"query: tracklet id(s) {', '.join(str(int(t)) for t in missing[:10])} are not in the gallery "
            f"{gallery_uri}"
        )
    return Queries("ids", wanted, gallery.camera_id[rows], gallery.feature[rows], same_tracklets=True)


def _from_features(query: str, gallery: Features, gallery_uri: str) -> Queries:
    features = read_features(query)
    if features.feature_dim != gallery.feature_dim:
        raise QueryError(
            f"query {query}: {features.feature_dim}-d features, the gallery {gallery_uri} has "
            f"{gallery.feature_dim}-d ones (different models)"
        )
    _check_same_model(features.metadata.get("backbone"), gallery, gallery_uri, f"query {query}")
    dataset = features.metadata.get("dataset")
    same = bool(dataset) and dataset == gallery.metadata.get("dataset")
    return Queries(
        "features", features.tracklet_id, features.camera_id, features.feature, same_tracklets=same
    )


def _check_same_model(backbone: str | None, gallery: Features, gallery_uri: str, what: str) -> None:
    theirs = gallery.metadata.get("backbone")
    if backbone and theirs and backbone != theirs:
        raise QueryError(
            f"{what}: features of backbone {backbone!r}, the gallery {gallery_uri} was extracted with "
            f"{theirs!r}: queries and gallery must come from one model"
        )


def frame_folders(uri: str) -> dict[str, list[str]]:
    """Tracklet folder name -> its frame URIs (sorted by name), for ``<uri>/<tracklet>/<frame>``."""
    folders: dict[str, list[str]] = {}
    prefix = uri.rstrip("/") + "/"
    for file_uri in storage.list_files(uri):
        relative = file_uri[len(prefix) :] if file_uri.startswith(prefix) else file_uri
        parts = re.split(r"[\\/]", relative)
        if any(part.startswith(".") for part in parts):
            continue
        if len(parts) != 2:
            raise QueryError(
                f"query {uri}: {relative!r} is not <tracklet>/<frame>: put each query tracklet's frames "
                "in a folder of its own"
            )
        if not parts[1].lower().endswith(IMAGE_SUFFIXES):
            raise QueryError(f"query {uri}: {relative!r} is not a frame ({', '.join(IMAGE_SUFFIXES)})")
        folders.setdefault(parts[0], []).append(file_uri)
    if not folders:
        raise QueryError(f"query {uri}: no frames found (expected <query>/<tracklet>/<frame>.jpg)")
    return {name: sorted(frames) for name, frames in sorted(folders.items())}


def _from_frames(
    query: str,
    gallery: Features,
    gallery_uri: str,
    *,
    model: str,
    device: torch.device,
    batch_size: int,
    tracking_uri: str,
) -> Queries:
    model = model or str(gallery.metadata.get("model") or "")
    if not model:
        raise QueryError(
            f"query {query}: frames need a model to embed them (--model), and the gallery {gallery_uri} "
            "does not name the one it was extracted with"
        )
    folders = frame_folders(query)
    pooling = str(gallery.metadata.get("pooling") or DEFAULT_POOLING)
    feature = embed_frames(
        list(folders.values()), model, device, batch_size, pooling, tracking_uri, gallery, gallery_uri
    )
    count = len(folders)
    return Queries(
        "frames",
        np.arange(count, dtype=np.int64),
        np.full(count, -1, dtype=np.int64),
        feature,
        same_tracklets=False,
        names=list(folders),
        frames=dict(enumerate(folders.values())),
    )


def embed_frames(
    tracklets: list[list[str]],
    model_uri: str,
    device: torch.device,
    batch_size: int,
    pooling: str,
    tracking_uri: str,
    gallery: Features,
    gallery_uri: str,
) -> np.ndarray:
    """(T, D) pooled features of the frame files of each tracklet, as ``dal extract`` computes them."""
    model, info = load_model(model_uri, device, tracking_uri=tracking_uri)
    if info.feature_dim != gallery.feature_dim:
        raise QueryError(
            f"model {model_uri}: {info.feature_dim}-d features, the gallery {gallery_uri} has "
            f"{gallery.feature_dim}-d ones: use the model the gallery was extracted with"
        )
    _check_same_model(info.backbone, gallery, gallery_uri, f"model {model_uri}")
    if device.type == "cuda":
        model = model.to(memory_format=torch.channels_last)
    pooler = TrackletPooler(len(tracklets), info.feature_dim, pooling, device)  # type: ignore[arg-type]
    frames = [(row, uri) for row, uris in enumerate(tracklets) for uri in uris]
    size = (info.image_height, info.image_width)
    log.info(
        "embedding %d query frames of %d tracklets with %s (%s pooling) on %s",
        len(frames),
        len(tracklets),
        info.backbone,
        pooling,
        device,
    )
    with torch.inference_mode():
        for start in range(0, len(frames), batch_size):
            part = frames[start : start + batch_size]
            batch = torch.stack(
                [images.resize(images.decode(storage.read_bytes(uri), uri), size) for _, uri in part]
            )
            rows = torch.tensor([row for row, _ in part], dtype=torch.int64)
            pooler.update(rows, embed(model, batch, info.mean, info.std, device))
    return pooler.result().cpu().numpy()
