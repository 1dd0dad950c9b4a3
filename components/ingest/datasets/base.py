"""What every dataset reader returns, and the listing helpers they share.

A reader checks the required folders of its layout at once (fail fast, before anything is
written), then streams ``RawTracklet`` records in write order. The raw source may be a local
directory or an ``s3://`` prefix; listings and reads go through components.common.storage.

Frame paths are stored relative to the source root (``bbox_train/0001/0001C1T0001F001.jpg``), so
the ``source_path`` column of a dataset does not depend on where the raw copy lived.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.fs as pafs

from components.common import storage
from components.common.errors import DalError

# Hidden files (.DS_Store, ._name from macOS archives) are not frames of any dataset.
HIDDEN = re.compile(r"^\.")
# Users' own footage (datasets "tracklets", "videos"): the person id of a tracklet without a label.
UNLABELLED = -1


class LayoutError(DalError, ValueError):
    """The raw tree does not have the dataset's layout; the message names the path at fault."""


@dataclasses.dataclass(frozen=True)
class RawTracklet:
    """One tracklet of a raw dataset, in the dataset's own terms (person ids kept as they are)."""

    name: str  # the dataset's own name, e.g. 0001C1T0001, cam_a/person_0001, cam1/person001
    person_id: int  # MARS keeps 0 (distractor) and -1 (junk)
    camera_id: int  # 0-based
    subset: str  # "train" | "test"; PRID2011 / iLIDS-VID: the role in split 0
    is_query: bool
    frames: tuple[str, ...]  # frame paths relative to the source root, in temporal order
    # Frames already in memory (crops cut from a video), one per entry of ``frames``, which are then
    # only descriptive source paths (``cam1/video.mp4#frame=123``); empty: read ``frames`` from the tree.
    encoded: tuple[bytes, ...] = ()

    def __post_init__(self) -> None:
        if not self.frames:
            raise LayoutError(f"tracklet {self.name!r} has no frames")
        if self.encoded and len(self.encoded) != len(self.frames):
            raise LayoutError(
                f"tracklet {self.name!r}: {len(self.encoded)} encoded frames for {len(self.frames)} paths"
            )


class SourceTree:
    """A raw source root with its filesystem resolved once; paths below it are relative.

    Creating an S3 client costs tens of milliseconds, so a reader or frame loader that made
    one per listing or per frame (``storage.read_bytes``) would spend most of its time there.
    Errors are StorageErrors naming the full URI.
    """

    def __init__(self, root: str) -> None:
        self.root = root.rstrip("/") or root
        self._fs, self._path = storage.resolve(self.root)

    def uri(self, *parts: str) -> str:
        rel = relative(*parts)
        return storage.join(self.root, rel) if rel else self.root

    def _info(self, rel: str) -> pafs.FileInfo:
        try:
            return self._fs.get_file_info(f"{self._path}/{rel}" if rel else self._path)
        except (OSError, pa.ArrowException) as exc:
            raise storage.StorageError(f"{self.uri(rel)}: {exc}") from exc

    def is_dir(self, *parts: str) -> bool:
        return self._info(relative(*parts)).type == pafs.FileType.Directory

    def is_file(self, *parts: str) -> bool:
        return self._info(relative(*parts)).type == pafs.FileType.File

    def list_dir(self, *parts: str) -> tuple[list[str], list[str]]:
        """Names of the sub-folders and files directly below (sorted; hidden ones left out).

        One level only, so a reader holds one person folder's names at a time, never the whole tree.
        """
        rel = relative(*parts)
        selector = pafs.FileSelector(f"{self._path}/{rel}" if rel else self._path, allow_not_found=True)
        try:
            infos = self._fs.get_file_info(selector)
        except (OSError, pa.ArrowException) as exc:
            raise storage.StorageError(f"{self.uri(rel)}: {exc}") from exc
        dirs, files = [], []
        for info in infos:
            if HIDDEN.match(info.base_name):
                continue
            if info.type == pafs.FileType.Directory:
                dirs.append(info.base_name)
            elif info.type == pafs.FileType.File:
                files.append(info.base_name)
        return sorted(dirs), sorted(files)

    def read(self, *parts: str) -> bytes:
        rel = relative(*parts)
        try:
            with self._fs.open_input_stream(f"{self._path}/{rel}") as stream:
                return stream.read()
        except (OSError, pa.ArrowException) as exc:
            raise storage.StorageError(f"{self.uri(rel)}: {exc}") from exc

    def require_root(self) -> None:
        """The source root must be an existing folder (or a non-empty S3 prefix)."""
        if not self.is_dir():
            raise LayoutError(f"{self.root}: source folder not found")

    def require_dirs(self, names: Iterable[str], layout: str) -> None:
        """Fail fast, naming the first required folder of ``layout`` that is missing."""
        for name in names:
            if not self.is_dir(name):
                raise LayoutError(
                    f"{self.uri(name)}: required folder not found (expected the {layout} layout)"
                )

    def find_subroot(self, candidates: Iterable[str], needed: Sequence[str]) -> str | None:
        """The first of ``candidates`` (relative; "" is the root) that holds all of ``needed``.

        The downloads nest their folders differently from copies users make (``prid_2011/multi_shot``
        vs. ``multi_shot`` vs. the camera folders at the top), so a reader accepts each of them.
        """
        for candidate in candidates:
            if all(self.is_dir(candidate, name) for name in needed):
                return candidate
        return None

    def frame_files(self, folder: str, parse: Callable[[str, str], Any]) -> list[tuple[Any, str]]:
        """``(parse(name, uri), name)`` for every file in ``folder``; a sub-folder there is an error."""
        dirs, files = self.list_dir(folder)
        if dirs:
            raise LayoutError(f"{self.uri(folder, dirs[0])}: unexpected folder (expected only image files)")
        return [(parse(name, self.uri(folder, name)), name) for name in files]


@dataclasses.dataclass(frozen=True)
class RawSource:
    """A checked raw dataset: where it is, how to stream its tracklets, and its splits."""

    dataset: str
    tree: SourceTree
    tracklets: Callable[[], Iterator[RawTracklet]]  # a fresh stream in write order per call
    splits: pd.DataFrame | None = None  # columns split, person_id, role (SPLIT_SCHEMA)
    num_frames: int | None = None  # when known up front (progress bar total)
    protocol: dict[str, Any] = dataclasses.field(default_factory=dict)  # rules used, for the manifest

    @property
    def root(self) -> str:
        return self.tree.root

    def frame_uri(self, relative: str) -> str:
        return self.tree.uri(relative)


def paired_source(
    dataset: str,
    tree: SourceTree,
    sequences: dict[tuple[int, int], tuple[str, ...]],
    names: Callable[[int, int], str],
    splits: pd.DataFrame,
    role: dict[int, str],
    protocol: dict[str, Any],
) -> RawSource:
    """PRID2011 / iLIDS-VID: one tracklet per (person, camera); camera 0's is the query.

    ``sequences`` maps (person, camera) to the frame paths, in write order; ``names`` gives a
    tracklet's name from (person, camera).
    """

    def tracklets() -> Iterator[RawTracklet]:
        for (person, camera), frames in sorted(sequences.items()):
            yield RawTracklet(
                name=names(person, camera),
                person_id=person,
                camera_id=camera,
                subset=role[person],
                is_query=camera == 0,
                frames=frames,
            )

    return RawSource(
        dataset=dataset,
        tree=tree,
        tracklets=tracklets,
        splits=splits,
        num_frames=sum(len(f) for f in sequences.values()),
        protocol=protocol,
    )


def default_subset(person_id: int) -> str:
    """Own footage: a labelled tracklet is held out as the evaluation set ("test"), the unlabelled
    rest trains DAL ("train"). DAL never reads labels, but scoring a model on the tracklets it was
    trained on would flatter it, so the labelled subset is kept out of training by default."""
    return "test" if person_id > 0 else "train"


def require_train_cameras(train_counts: Mapping[str, int], where: str) -> None:
    """DAL's association ranks a tracklet against the other anchors of its camera and against the
    other cameras: every camera needs >= 2 train tracklets, and there must be >= 2 cameras.
    ``train_counts``: train tracklets per camera name (cameras without any included)."""
    if len(train_counts) < 2:
        raise LayoutError(
            f"{where}: DAL needs tracklets from at least 2 cameras, found {len(train_counts)} "
            f"({', '.join(sorted(train_counts)) or 'none'})"
        )
    for camera, count in sorted(train_counts.items()):
        if count < 2:
            raise LayoutError(
                f"{where}: camera {camera!r} has {count} train tracklet(s); DAL needs at least 2 per "
                "camera (each is ranked against the others of its camera)"
            )


def list_dir(uri: str) -> tuple[list[str], list[str]]:
    """Sub-folders and files directly under ``uri`` (see SourceTree.list_dir)."""
    return SourceTree(uri).list_dir()


def relative(*parts: str) -> str:
    """A path relative to a source root, from the non-empty parts joined with ``/``."""
    return "/".join(p.strip("/") for p in parts if p)
