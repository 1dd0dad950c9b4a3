"""MARS reader (with or without the ``info/`` files of the MARS evaluation code).

Reference: Zheng et al., "MARS: A Video Benchmark for Large-Scale Person Re-identification",
ECCV 2016.

Statistics (checked against ``tracks_{train,test}_info.mat`` / ``query_IDX.mat``):
    - 6 cameras; 256x128 JPEG frames;
    - train: 625 persons, 8,298 tracklets, 509,914 frames;
    - test: 636 ids (634 persons plus the distractor id 0 and the junk id -1), 12,180 tracklets,
      681,089 frames; in all 1,261 ids, 20,478 tracklets, 1,191,003 frames;
    - tracklet lengths 2..920 frames;
    - queries: 1,980 test tracklets -- one per camera for each of the 626 test persons (id > 0)
      seen by at least two cameras; the gallery is the whole test set.

Layout: ``bbox_train/0001/0001C1T0001F001.jpg`` (person 4 digits, ``C`` camera 1..6, ``T``
tracklet 4 digits within person and camera, ``F`` frame 3 digits, 1-based), ``bbox_test/...``
with the distractor folder ``0000`` and the junk folder ``00-1`` (files ``00-1C1T0001F001.jpg``),
and optionally ``info/``: ``train_name.txt`` / ``test_name.txt`` (the frame names of each subset,
one a line) and the three tables (see components.ingest.datasets.reference).

With ``info/`` the tracklets and queries are exactly those of the MARS evaluation code: row ``i``
of ``tracks_<subset>_info.mat`` is the frames ``first..last`` (1-based, inclusive) of
``<subset>_name.txt`` and the rows listed in ``query_IDX.mat`` are the queries. Without it,
tracklets are the name groups ``PPPPCcTtttt`` (frames ordered by ``F``) in folder and name order,
which is the order of the info tables, and the queries follow the same structure chosen by a
seeded rule: for each test person with id > 0 seen by at least two cameras, one tracklet per
camera, drawn uniformly by ``numpy.random.default_rng([query_seed, person, camera])`` (so the
choice for a person never depends on the others). The real structure gives 1,980 queries that way.

Ids: person id as in the names (0 distractor, -1 junk kept); camera id = ``C`` - 1. Tracklets are
written train first, then test.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Iterator

import numpy as np

from components.common import storage
from components.ingest.datasets.base import LayoutError, RawSource, RawTracklet, SourceTree
from components.ingest.datasets.reference import MarsInfo, load_mars_info

NAME = "mars"
SUBSET_DIRS = {"train": "bbox_train", "test": "bbox_test"}
INFO_FILES = (
    "train_name.txt",
    "test_name.txt",
    "tracks_train_info.mat",
    "tracks_test_info.mat",
    "query_IDX.mat",
)
PERSON_DIR = re.compile(r"^(\d{4}|00-1)$")
FRAME_FILE = re.compile(r"^(\d{4}|00-1)C([1-6])T(\d{4})F(\d{3,})\.(jpg|jpeg|png)$")


@dataclasses.dataclass(frozen=True, order=True)
class MarsName:
    person: int  # -1 junk, 0 distractor
    camera: int  # 1-based, as in the name
    tracklet: int
    frame: int

    @property
    def tracklet_name(self) -> str:
        return f"{_person_text(self.person)}C{self.camera}T{self.tracklet:04d}"


def _person_text(person: int) -> str:
    return "00-1" if person == -1 else f"{person:04d}"


def _person_of(text: str) -> int:
    return -1 if text == "00-1" else int(text)


def parse_frame_name(name: str, where: str = "") -> MarsName:
    """Parse ``0001C1T0001F001.jpg``; anything else is an error naming ``where`` (or the name)."""
    match = FRAME_FILE.match(name)
    if not match:
        raise LayoutError(f"{where or name}: not a MARS frame name (PPPPCcTttttFfff.jpg, camera 1..6)")
    return MarsName(_person_of(match.group(1)), int(match.group(2)), int(match.group(3)), int(match.group(4)))


def person_id_of(folder: str, where: str) -> int:
    if not PERSON_DIR.match(folder):
        raise LayoutError(f"{where}: {folder!r} is not a MARS person folder (NNNN, or 00-1 for junk)")
    return _person_of(folder)


def choose_queries(tracklets_by_camera: dict[int, list[str]], person: int, seed: int) -> set[str]:
    """The seeded query rule (module doc): one tracklet name per camera, or none."""
    if person <= 0 or len(tracklets_by_camera) < 2:
        return set()
    return {
        names[int(np.random.default_rng([seed, person, camera]).integers(len(names)))]
        for camera, names in sorted(tracklets_by_camera.items())
    }


def open_source(root: str, *, info: str = "auto", query_seed: int = 0) -> RawSource:
    """Check the layout and return the tracklet stream.

    ``info``: "auto" uses ``<root>/info`` when that folder exists, "none" ignores it, anything
    else is the info folder to use (local path or URI).
    """
    tree = SourceTree(root)
    tree.require_root()
    tree.require_dirs(SUBSET_DIRS.values(), "MARS")
    info_dir = ""
    if info == "auto":
        info_dir = tree.uri("info") if tree.is_dir("info") else ""
    elif info != "none":
        info_dir = info
    if info_dir:
        return _with_info(tree, info_dir)
    return RawSource(
        dataset=NAME,
        tree=tree,
        tracklets=lambda: _from_names(tree, query_seed),
        protocol={
            "tracklets": "name groups PPPPCcTtttt of bbox_train/bbox_test (no info/ used)",
            "query": f"seeded rule: one tracklet per camera of each test person > 0 seen by >= 2 cameras "
            f"(rng [query_seed={query_seed}, person, camera])",
        },
    )


def _from_names(tree: SourceTree, query_seed: int) -> Iterator[RawTracklet]:
    for subset, subset_dir in SUBSET_DIRS.items():
        folders, files = tree.list_dir(subset_dir)
        if files:
            raise LayoutError(f"{tree.uri(subset_dir, files[0])}: unexpected file (expected person folders)")
        for folder in folders:
            person = person_id_of(folder, tree.uri(subset_dir, folder))
            groups: dict[tuple[int, int], list[tuple[int, str]]] = {}
            for parsed, name in tree.frame_files(f"{subset_dir}/{folder}", parse_frame_name):
                if parsed.person != person:
                    raise LayoutError(
                        f"{tree.uri(subset_dir, folder, name)}: person in the name is not {folder}"
                    )
                groups.setdefault((parsed.camera, parsed.tracklet), []).append((parsed.frame, name))
            if not groups:
                raise LayoutError(f"{tree.uri(subset_dir, folder)}: person folder has no frames")
            by_camera: dict[int, list[str]] = {}
            for camera, tracklet in sorted(groups):
                by_camera.setdefault(camera, []).append(f"{_person_text(person)}C{camera}T{tracklet:04d}")
            queries = choose_queries(by_camera, person, query_seed) if subset == "test" else set()
            for (camera, tracklet), frames in sorted(groups.items()):
                name = f"{_person_text(person)}C{camera}T{tracklet:04d}"
                yield RawTracklet(
                    name=name,
                    person_id=person,
                    camera_id=camera - 1,
                    subset=subset,
                    is_query=name in queries,
                    frames=tuple(f"{subset_dir}/{folder}/{n}" for _, n in sorted(frames)),
                )


def _read_names(uri: str) -> np.ndarray:
    """Frame names of one subset, as a compact fixed-width bytes array (~20 bytes a frame)."""
    if not storage.exists(uri):
        raise LayoutError(f"{uri}: file not found (MARS info/ needs {', '.join(INFO_FILES)})")
    names = np.array(storage.read_bytes(uri).split(), dtype=np.bytes_)
    if len(names) == 0:
        raise LayoutError(f"{uri}: no frame names")
    return names


def _check_rows(table: np.ndarray, names: np.ndarray, table_uri: str, names_uri: str) -> None:
    """Every row's frames exist in the name list and carry the row's person and camera."""
    if int(table[:, 0].min()) < 1 or int(table[:, 1].max()) > len(names):
        raise LayoutError(f"{table_uri}: frame rows outside 1..{len(names)} (the lines of {names_uri})")
    for row, (first, last, person, camera) in enumerate(table.tolist(), start=1):
        keys = set()
        for raw in names[first - 1 : last]:
            parsed = parse_frame_name(raw.decode(errors="replace"), f"{names_uri}: {raw!r}")
            keys.add((parsed.person, parsed.camera, parsed.tracklet))
        if len(keys) != 1 or next(iter(keys))[:2] != (person, camera):
            raise LayoutError(
                f"{table_uri}: row {row} (person {person}, camera {camera}) does not match its frames "
                f"{first}..{last} of {names_uri}"
            )


def _with_info(tree: SourceTree, info_dir: str) -> RawSource:
    for name in INFO_FILES:
        if not storage.exists(storage.join(info_dir, name)):
            raise LayoutError(
                f"{storage.join(info_dir, name)}: file not found (MARS info/ needs {', '.join(INFO_FILES)}; "
                "use --mars-info none to read the names instead)"
            )
    info: MarsInfo = load_mars_info(info_dir)
    tables = {"train": info.train, "test": info.test}
    names = {}
    for subset, table in tables.items():
        names_uri = storage.join(info_dir, f"{subset}_name.txt")
        names[subset] = _read_names(names_uri)
        table_uri = storage.join(info_dir, f"tracks_{subset}_info.mat")
        _check_rows(table, names[subset], table_uri, names_uri)
    queries = set(info.query_rows.tolist())

    def tracklets() -> Iterator[RawTracklet]:
        for subset, table in tables.items():
            subset_dir = SUBSET_DIRS[subset]
            for row, (first, last, person, camera) in enumerate(table.tolist()):
                frames = [n.decode() for n in names[subset][first - 1 : last]]
                yield RawTracklet(
                    name=parse_frame_name(frames[0]).tracklet_name,
                    person_id=person,
                    camera_id=camera - 1,
                    subset=subset,
                    is_query=subset == "test" and row in queries,
                    frames=tuple(f"{subset_dir}/{n[:4]}/{n}" for n in frames),
                )

    return RawSource(
        dataset=NAME,
        tree=tree,
        tracklets=tracklets,
        num_frames=int(sum((t[:, 1] - t[:, 0] + 1).sum() for t in tables.values())),
        protocol={
            "tracklets": f"tracks_train_info.mat / tracks_test_info.mat of {info_dir}",
            "query": f"query_IDX.mat of {info_dir}",
        },
    )
