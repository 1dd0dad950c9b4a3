"""Readers for the benchmark structure files of the DAL code release and the datasets.

* MARS ``info/``: ``tracks_{train,test}_info.mat`` (one row per tracklet: first frame, last
  frame (1-based, inclusive, into the subset's frame list), person id (-1 junk, 0 distractor),
  camera 1..6) and ``query_IDX.mat`` (1-based rows of the test table used as queries).
* DAL split lists, ``splitK/{traindata,testdata}.txt``: one frame per line,
  ``<relative image path> <person> <camera> <tracklet>``; persons and tracklets are renumbered
  per file, so the person is identified by the path's ``person...`` folder.

Both the dataset readers and the synthetic generator (which reproduces this structure) use them.
Paths may be local paths or storage URIs (``s3://...``): everything is read through
components.common.storage.
"""

from __future__ import annotations

import dataclasses
import io
import os

import numpy as np

from components.common import storage
from components.common.errors import DalError


@dataclasses.dataclass(frozen=True)
class MarsInfo:
    train: np.ndarray  # (8298, 4) int: first, last, person, camera
    test: np.ndarray  # (12180, 4)
    query_rows: np.ndarray  # 0-based rows of ``test`` that are queries


def load_mat(uri: str | os.PathLike, key: str) -> np.ndarray:
    """One variable of a MATLAB .mat file (local path or storage URI); errors name the file."""
    import scipy.io

    uri = os.fspath(uri)
    if not storage.exists(uri):
        raise DalError(f"{uri}: file not found")
    try:
        content = scipy.io.loadmat(io.BytesIO(storage.read_bytes(uri)))
    except (ValueError, OSError, TypeError) as exc:
        raise DalError(f"{uri}: not a readable .mat file ({exc})") from exc
    if key not in content:
        raise DalError(
            f"{uri}: variable {key!r} not found (has {sorted(k for k in content if not k.startswith('__'))})"
        )
    return np.asarray(content[key])


def load_mars_info(info_dir: str | os.PathLike) -> MarsInfo:
    """Load and check MARS's ``info/`` tables (statistics in ``components.ingest.datasets.mars``)."""
    info_dir = os.fspath(info_dir)
    train = load_mat(storage.join(info_dir, "tracks_train_info.mat"), "track_train_info").astype(np.int64)
    test = load_mat(storage.join(info_dir, "tracks_test_info.mat"), "track_test_info").astype(np.int64)
    query = load_mat(storage.join(info_dir, "query_IDX.mat"), "query_IDX").astype(np.int64).ravel() - 1
    for name, table in (("tracks_train_info.mat", train), ("tracks_test_info.mat", test)):
        if table.ndim != 2 or table.shape[1] != 4:
            raise DalError(
                f"{storage.join(info_dir, name)}: expected an (N, 4) table, got shape {table.shape}"
            )
        if (table[:, 1] < table[:, 0]).any():
            row = int(np.argmax(table[:, 1] < table[:, 0]))
            raise DalError(f"{storage.join(info_dir, name)}: row {row + 1} ends before it starts")
    if len(query) == 0 or query.min() < 0 or query.max() >= len(test):
        raise DalError(f"{storage.join(info_dir, 'query_IDX.mat')}: query rows outside 1..{len(test)}")
    return MarsInfo(train=train, test=test, query_rows=query)


@dataclasses.dataclass(frozen=True)
class SplitFrame:
    path: str  # relative image path as written in the list, e.g. cam1/person_0147/0001.png
    person: int  # the list's own (renumbered) person id
    camera: int  # 1-based
    tracklet: int  # the list's own tracklet id


def read_split_list(path: str | os.PathLike) -> list[SplitFrame]:
    """Parse one DAL split list; a malformed line is an error naming the file and line."""
    path = os.fspath(path)
    if not storage.exists(path):
        raise DalError(f"{path}: split list not found")
    return parse_split_list(storage.read_bytes(path).decode("utf-8", errors="replace"), path)


def parse_split_list(text: str, where: str) -> list[SplitFrame]:
    """Parse the text of a DAL split list; ``where`` names it in errors."""
    frames = []
    for number, line in enumerate(text.splitlines(), start=1):
        parts = line.split()
        if not parts:
            continue
        if len(parts) != 4:
            raise DalError(
                f"{where}:{number}: expected '<path> <person> <camera> <tracklet>', got {line.strip()!r}"
            )
        try:
            frames.append(SplitFrame(parts[0], int(parts[1]), int(parts[2]), int(parts[3])))
        except ValueError as exc:
            raise DalError(f"{where}:{number}: person, camera and tracklet must be integers") from exc
    if not frames:
        raise DalError(f"{where}: empty split list")
    return frames


def split_list_tracklets(frames: list[SplitFrame]) -> dict[tuple[str, int], list[str]]:
    """Group a split list's frames by (person folder, camera): the tracklet's frame paths in order."""
    tracklets: dict[tuple[str, int], list[str]] = {}
    for frame in frames:
        parts = frame.path.split("/")
        if len(parts) < 3:
            raise DalError(f"split list path {frame.path!r}: expected <camera>/<person>/<file>")
        tracklets.setdefault((parts[-2], frame.camera), []).append(frame.path)
    return tracklets
