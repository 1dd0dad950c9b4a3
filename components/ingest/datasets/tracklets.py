"""Users' own tracklets (``--dataset tracklets``): person crops already cut into tracklets.

Two ways to describe them; paths are relative to the source root (a local folder or ``s3://``).

**Folder layout** (no ``--index``): ``<root>/<camera>/<tracklet>/<frame>.jpg`` -- one folder per
camera, one folder per tracklet inside it, the tracklet's frames as ``.jpg``/``.jpeg``/``.png``
files (any case). Frames are ordered by name in natural order (``2.jpg`` before ``10.jpg``,
``f9.png`` before ``f10.png``); cameras and tracklets too. Hidden files and folders (``.name``)
are skipped; files at the top level (a README) are ignored -- but ``dal ingest`` without
``--index`` takes ``<root>/index.csv`` or ``index.parquet`` as the index when there is one
(components.ingest.run.default_index). Anything else is an error naming it: a file directly in
a camera folder, a sub-folder or a non-image file in a tracklet folder, a camera folder without
tracklets, a tracklet folder without frames. Every tracklet is unlabelled (person id
``UNLABELLED`` = -1) and in the ``train`` subset: DAL needs no labels, and there is nothing to
evaluate on.

**Index file** (``--index``, a ``.csv`` / ``.csv.gz`` or ``.parquet`` file, local or ``s3://``): one
row per frame, columns

* ``path`` -- the frame file, relative to the source root (no leading ``/``, no ``..``);
* ``camera``, ``tracklet`` -- names (text or integers); a tracklet is the pair (camera, tracklet),
  so two cameras may both have a tracklet ``1``;
* ``frame`` (optional) -- integer order of the frame in its tracklet (need not start at 0 or be
  contiguous; unique within a tracklet); without it, the order of the rows in the file;
* ``person`` (optional) -- an identity label (text or integer); empty or ``NaN``: unlabelled;
* ``subset`` (optional) -- ``train`` or ``test`` (case-insensitive), overriding the default rule;
  empty: the default rule.

Other columns are ignored, and so are files under the root that the index does not list. All rows
of one tracklet must agree on ``person`` and ``subset``. Rows are numbered from 1, not counting the
header, in error messages.

Ids: cameras get 0-based ids in natural order of their names; person labels get ids 1..P in
natural order (``2`` before ``10``); unlabelled tracklets -1. Both mappings are in the manifest
(``ingest.protocol``). Tracklets are written camera by camera, in natural order of their names,
and named ``<camera>/<tracklet>``.

Subsets (``base.default_subset``): a labelled tracklet is held out as the evaluation set
(``test``), an unlabelled one trains DAL (``train``); a ``subset`` column overrides this. Every
camera needs at least 2 train tracklets, and there must be at least 2 cameras
(``base.require_train_cameras``). Evaluation (protocol ``labelled``): the labelled test tracklets
are the gallery; one is a query when its person has a labelled test tracklet in another camera;
the same person in the same camera is junk.

Checks before anything is written: the root exists; the whole folder tree is listed (one
recursive listing per camera: names only, a compact list per tracklet) or the index is read
(pyarrow; only the known columns) and checked column by column. Frame files listed in an index are
checked to exist up front on a local source (one stat each, batched); on S3 only the first row is
(a wrong root or path prefix shows at once), because a HEAD request per frame of a million-frame
index takes hours: a later missing object fails the ingest when it is read, with a StorageError
naming it, and nothing is published.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from components.common import storage
from components.common.dataset import SUBSETS
from components.ingest.datasets.base import (
    HIDDEN,
    UNLABELLED,
    LayoutError,
    RawSource,
    RawTracklet,
    SourceTree,
    default_subset,
    require_train_cameras,
)

NAME = "tracklets"
IMAGE_FILE = re.compile(r"\.(jpg|jpeg|png)$", re.IGNORECASE)
IMAGE_PATTERN = r"\.([jJ][pP][eE]?[gG]|[pP][nN][gG])$"  # IMAGE_FILE for pyarrow.compute
REQUIRED_COLUMNS = ("path", "camera", "tracklet")
OPTIONAL_COLUMNS = ("frame", "person", "subset")
EXISTS_BATCH = 4096  # paths stat-ed at a time (bounds memory)
DIGITS = re.compile(r"([0-9]+)")
QUERY_RULE = (
    "labelled: the test tracklets with person_id > 0 are the gallery; one is a query when its person "
    "has a labelled test tracklet in another camera; same person + same camera is junk"
)
DEFAULT_SUBSET_RULE = "default: labelled tracklets are test (held out for evaluation), unlabelled train"


def natural_key(name: str) -> tuple[tuple[Any, ...], str]:
    """Sort key of natural order: digit runs compare as numbers (``2`` < ``10``); ties by the name.

    ``re.split`` with a group alternates text and digits, starting with text, so the tuples of two
    names hold the same types at the same positions.
    """
    parts = DIGITS.split(name)
    return tuple(int(p) if i % 2 else p for i, p in enumerate(parts)), name


@dataclasses.dataclass(frozen=True)
class _Entry:
    """One checked tracklet: names, ids, and its frame paths (a slice of a compact Arrow array)."""

    camera: str
    tracklet: str
    person_id: int
    subset: str
    frames: pa.Array


def open_source(root: str, *, index: str = "") -> RawSource:
    """Check the layout (see module doc) and return the tracklet stream."""
    tree = SourceTree(root)
    tree.require_root()
    entries, protocol = _from_index(tree, index) if index else _from_folders(tree)
    cameras = sorted({e.camera for e in entries}, key=natural_key)
    camera_ids = {name: i for i, name in enumerate(cameras)}
    train = dict.fromkeys(cameras, 0)
    for entry in entries:
        train[entry.camera] += entry.subset == "train"
    require_train_cameras(train, index or tree.root)

    def tracklets() -> Iterator[RawTracklet]:
        for entry in entries:
            yield RawTracklet(
                name=f"{entry.camera}/{entry.tracklet}",
                person_id=entry.person_id,
                camera_id=camera_ids[entry.camera],
                subset=entry.subset,
                is_query=False,  # the evaluation protocol chooses queries (QUERY_RULE)
                frames=tuple(entry.frames.to_pylist()),
            )

    return RawSource(
        dataset=NAME,
        tree=tree,
        tracklets=tracklets,
        num_frames=sum(len(e.frames) for e in entries),
        protocol={**protocol, "cameras": camera_ids, "query": QUERY_RULE},
    )


# ---------------------------------------------------------------------------------------------
# Folder layout


def _from_folders(tree: SourceTree) -> tuple[list[_Entry], dict[str, Any]]:
    cameras, _ = tree.list_dir()  # top-level files (an index, a README) are no part of the layout
    if not cameras:
        raise LayoutError(
            f"{tree.root}: no camera folders (expected <camera>/<tracklet>/<frame>.jpg, or give --index)"
        )
    fs, base = storage.resolve(tree.root)
    entries: list[_Entry] = []
    for camera in sorted(cameras, key=natural_key):
        for tracklet, names in _list_camera(tree, fs, base, camera):
            folder = f"{camera}/{tracklet}"
            frames = pa.array([f"{folder}/{n}" for n in sorted(names, key=natural_key)], pa.string())
            entries.append(_Entry(camera, tracklet, UNLABELLED, "train", frames))
    protocol = {
        "layout": "folders <camera>/<tracklet>/<frame>, frames in natural order of their names",
        "persons": "none: the folder layout has no labels (person_id -1, all train); an --index adds them",
        "subset": "train (unlabelled)",
    }
    return entries, protocol


def _list_camera(
    tree: SourceTree, fs: pafs.FileSystem, base: str, camera: str
) -> list[tuple[str, list[str]]]:
    """(tracklet, frame names) of one camera folder, in natural order, from one recursive listing
    (on S3 about one request per 1,000 frames; per-tracklet listings would cost one per tracklet)."""
    prefix = f"{base}/{camera}"
    try:
        infos = fs.get_file_info(pafs.FileSelector(prefix, recursive=True))
    except (OSError, pa.ArrowException) as exc:
        raise storage.StorageError(f"{tree.uri(camera)}: {exc}") from exc
    infos.sort(key=lambda info: info.path)  # the first error in name order, on any file system
    tracklets: dict[str, list[str]] = {}
    for info in infos:
        rel = info.path[len(prefix) + 1 :]
        parts = rel.split("/")
        if any(HIDDEN.match(p) for p in parts):
            continue
        if info.type == pafs.FileType.Directory:
            if len(parts) > 1:
                raise LayoutError(
                    f"{tree.uri(camera, rel)}: unexpected folder in a tracklet folder (expected "
                    "<camera>/<tracklet>/<frame>.jpg; use --index for other layouts)"
                )
            tracklets.setdefault(parts[0], [])
        elif info.type == pafs.FileType.File:
            if len(parts) == 1:
                raise LayoutError(
                    f"{tree.uri(camera, rel)}: unexpected file in a camera folder (expected tracklet folders)"
                )
            if len(parts) > 2:
                raise LayoutError(
                    f"{tree.uri(camera, parts[0], parts[1])}: unexpected folder in a tracklet folder "
                    "(expected <camera>/<tracklet>/<frame>.jpg; use --index for other layouts)"
                )
            if not IMAGE_FILE.search(parts[1]):
                raise LayoutError(
                    f"{tree.uri(camera, rel)}: not an image file (frames are .jpg, .jpeg or .png; "
                    "hidden files are skipped)"
                )
            tracklets.setdefault(parts[0], []).append(parts[1])
    if not tracklets:
        raise LayoutError(f"{tree.uri(camera)}: camera folder has no tracklet folders")
    for tracklet, names in tracklets.items():
        if not names:
            raise LayoutError(f"{tree.uri(camera, tracklet)}: tracklet folder has no image files")
    return sorted(tracklets.items(), key=lambda item: natural_key(item[0]))


# ---------------------------------------------------------------------------------------------
# Index file


def _from_index(tree: SourceTree, uri: str) -> tuple[list[_Entry], dict[str, Any]]:
    table = _read_index(uri)
    rows = table.num_rows
    if rows == 0:
        raise LayoutError(f"{uri}: the index has no rows")
    path = _text(table, "path", uri)
    camera = _text(table, "camera", uri)
    tracklet = _text(table, "tracklet", uri)
    _check_paths(path, uri)
    has_frame = "frame" in table.column_names
    has_subset = "subset" in table.column_names
    order = _frame_numbers(table.column("frame"), uri) if has_frame else np.arange(rows, dtype=np.int64)
    labels, label_names = _labels(table, uri)
    subsets = _subset_codes(table, uri)
    _require_unique_paths(path, uri)

    def name_of(row: int) -> str:
        return f"{camera[row].as_py()}/{tracklet[row].as_py()}"

    rows_sorted, starts, ends = _group_rows(camera, tracklet, order)
    if has_frame:
        _require_unique_frames(rows_sorted, starts, ends, order, uri, name_of)
    _require_one_value(labels, rows_sorted, starts, ends, uri, name_of, "person", label_names)
    _require_one_value(subsets, rows_sorted, starts, ends, uri, name_of, "subset", SUBSETS)

    paths_sorted = path.take(pa.array(rows_sorted))
    entries = []
    for start, end in zip(starts.tolist(), ends.tolist(), strict=True):
        row = int(rows_sorted[start])
        person_id = int(labels[row]) + 1 if labels[row] >= 0 else UNLABELLED  # labels: natural ranks
        subset = SUBSETS[subsets[row]] if subsets[row] >= 0 else default_subset(person_id)
        entries.append(
            _Entry(camera[row].as_py(), tracklet[row].as_py(), person_id, subset, paths_sorted[start:end])
        )
    if not any(e.subset == "train" for e in entries):
        hint = (
            "the subset column marks every tracklet test"
            if has_subset
            else "every tracklet is labelled, and labelled tracklets are held out for evaluation by "
            "default; add a subset column (train/test) to choose the tracklets that train DAL"
        )
        raise LayoutError(f"{uri}: no train tracklets ({hint})")
    _require_frames_exist(tree, path, uri)
    protocol = {
        "layout": f"index {uri}",
        "frame_order": "the frame column" if has_frame else "the row order of the index",
        "subset": f"the subset column; empty cells: {DEFAULT_SUBSET_RULE}"
        if has_subset
        else DEFAULT_SUBSET_RULE,
        "persons": {label: i for i, label in enumerate(label_names, start=1)},
    }
    return entries, protocol


def _group_rows(
    camera: pa.Array, tracklet: pa.Array, order: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Rows sorted into tracklets -- natural (camera, tracklet) order, frames by ``order`` (lexsort
    is stable: equal orders keep the row order) -- and each tracklet's [start, end) in them."""
    camera_codes, camera_rank, _ = _natural_codes(camera)
    tracklet_codes, tracklet_rank, _ = _natural_codes(tracklet)
    key = camera_rank[camera_codes] * len(tracklet_rank) + tracklet_rank[tracklet_codes]
    rows_sorted = np.lexsort((order, key))
    key_sorted = key[rows_sorted]
    starts = np.flatnonzero(np.r_[True, key_sorted[1:] != key_sorted[:-1]])
    return rows_sorted, starts, np.r_[starts[1:], len(key)]


def _require_unique_frames(
    rows_sorted: np.ndarray,
    starts: np.ndarray,
    ends: np.ndarray,
    order: np.ndarray,
    uri: str,
    name_of: Callable[[int], str],
) -> None:
    order_sorted = order[rows_sorted]
    same = order_sorted[1:] == order_sorted[:-1]
    same[ends[:-1] - 1] = False  # the last frame of a tracklet and the first of the next
    if same.any():
        at = int(np.flatnonzero(same)[0])
        first, second = int(rows_sorted[at]), int(rows_sorted[at + 1])
        raise LayoutError(
            f"{uri}: rows {first + 1} and {second + 1}: frame {order[first]} appears twice in "
            f"tracklet {name_of(first)} (column frame)"
        )


def _require_one_value(
    values: np.ndarray,
    rows_sorted: np.ndarray,
    starts: np.ndarray,
    ends: np.ndarray,
    uri: str,
    name_of: Callable[[int], str],
    column: str,
    names: Sequence[str],
) -> None:
    """All rows of a tracklet hold the same code in ``values`` (-1: empty)."""
    sorted_values = values[rows_sorted]
    mixed = np.flatnonzero(
        np.minimum.reduceat(sorted_values, starts) != np.maximum.reduceat(sorted_values, starts)
    )
    if len(mixed):
        start, end = starts[mixed[0]], ends[mixed[0]]
        other = start + int(np.flatnonzero(sorted_values[start:end] != sorted_values[start])[0])
        first, second = sorted(int(rows_sorted[i]) for i in (start, other))

        def shown(code: int) -> str:
            return "empty" if code < 0 else repr(names[code])

        raise LayoutError(
            f"{uri}: rows {first + 1} and {second + 1} of tracklet {name_of(first)} disagree on "
            f"{column} ({shown(values[first])} vs {shown(values[second])}; one value per tracklet)"
        )


def _read_index(uri: str) -> pa.Table:
    """The index's known columns (CSV: all as text, so ``007`` stays ``007``); missing ones are an error."""
    if not storage.exists(uri):
        raise LayoutError(f"{uri}: index file not found")
    lower = uri.lower()
    fs, path = storage.resolve(uri)
    known = (*REQUIRED_COLUMNS, *OPTIONAL_COLUMNS)
    try:
        if lower.endswith((".csv", ".csv.gz")):
            with fs.open_input_stream(path) as stream, pacsv.open_csv(stream) as reader:
                names = reader.schema.names  # the header (the first block is read)
            wanted = [n for n in known if n in names]
            _require_columns(names, uri)
            options = pacsv.ConvertOptions(
                column_types=dict.fromkeys(wanted, pa.string()),
                include_columns=wanted,
                strings_can_be_null=False,
            )
            with fs.open_input_stream(path) as stream:
                return pacsv.read_csv(stream, convert_options=options)
        if lower.endswith((".parquet", ".pq")):
            with fs.open_input_file(path) as handle:
                parquet = pq.ParquetFile(handle)
                names = parquet.schema_arrow.names
                _require_columns(names, uri)
                return parquet.read(columns=[n for n in known if n in names])
    except (OSError, pa.ArrowException) as exc:
        raise LayoutError(f"{uri}: unreadable index ({exc})") from exc
    raise LayoutError(f"{uri}: unknown index format (use a .csv, .csv.gz or .parquet file)")


def _require_columns(names: Sequence[str], uri: str) -> None:
    missing = [n for n in REQUIRED_COLUMNS if n not in names]
    if missing:
        raise LayoutError(
            f"{uri}: missing column(s) {', '.join(missing)} (required: {', '.join(REQUIRED_COLUMNS)}; "
            f"optional: {', '.join(OPTIONAL_COLUMNS)}; found: {', '.join(names) or 'none'})"
        )


def _plain(column: pa.ChunkedArray) -> pa.Array:
    array = column.combine_chunks()
    return array.dictionary_decode() if pa.types.is_dictionary(array.type) else array


def _as_text(array: pa.Array, name: str, uri: str) -> pa.Array:
    """Text or integer values as text (nulls kept); other types are an error naming the column."""
    kind = array.type
    if pa.types.is_string(kind) or pa.types.is_large_string(kind) or pa.types.is_integer(kind):
        return pc.cast(array, pa.string())
    if pa.types.is_null(kind):
        return pa.nulls(len(array), pa.string())
    raise LayoutError(f"{uri}: column {name} has type {kind} (expected text or integers)")


def _first(mask: pa.Array) -> int:
    """Index of the first true entry of a boolean array (nulls are false), or -1."""
    return int(pc.index(pc.fill_null(mask, False), True).as_py())


def _text(table: pa.Table, name: str, uri: str) -> pa.Array:
    """A required name column: text, none empty."""
    values = _as_text(_plain(table.column(name)), name, uri)
    bad = _first(pc.or_kleene(pc.is_null(values), pc.equal(values, "")))
    if bad >= 0:
        raise LayoutError(f"{uri}: row {bad + 1}: empty {name}")
    return values


def _check_paths(path: pa.Array, uri: str) -> None:
    """Relative paths of image files: what the folder layout would hold, without escaping the root."""
    escapes = pc.or_(
        pc.or_(pc.starts_with(path, "/"), pc.match_substring(path, "://")),
        pc.match_substring_regex(path, r"(^|/)\.\.(/|$)"),
    )
    bad = _first(escapes)
    if bad >= 0:
        raise LayoutError(
            f"{uri}: row {bad + 1}: path {path[bad].as_py()!r} must be relative to the source root "
            "(no leading /, no .., no scheme)"
        )
    bad = _first(pc.invert(pc.match_substring_regex(path, IMAGE_PATTERN)))
    if bad >= 0:
        raise LayoutError(
            f"{uri}: row {bad + 1}: path {path[bad].as_py()!r} is not an image file (.jpg, .jpeg or .png)"
        )


def _frame_numbers(column: pa.ChunkedArray, uri: str) -> np.ndarray:
    """The ``frame`` column as int64; an empty or non-integer value is an error naming its row."""
    array = _plain(column)
    kind = array.type
    if pa.types.is_integer(kind):
        bad = _first(pc.is_null(array))
        if bad < 0:
            return array.to_numpy(zero_copy_only=False).astype(np.int64)
    elif pa.types.is_floating(kind):
        values = array.to_numpy(zero_copy_only=False)  # nulls become NaN
        whole = np.isfinite(values) & (np.abs(values) < 2**53)
        whole[whole] = values[whole] == np.round(values[whole])
        bad = int(np.argmin(whole)) if not whole.all() else -1
        if bad < 0:
            return values.astype(np.int64)
    elif pa.types.is_string(kind) or pa.types.is_large_string(kind):
        text = pc.utf8_trim_whitespace(array)
        bad = _first(pc.invert(pc.fill_null(pc.match_substring_regex(text, r"^[+-]?[0-9]{1,18}$"), False)))
        if bad < 0:
            return pc.cast(pc.utf8_ltrim(text, "+"), pa.int64()).to_numpy()
    else:
        raise LayoutError(f"{uri}: column frame has type {kind} (expected integers)")
    value = array[bad].as_py()
    shown = "empty" if value is None or value == "" else repr(value)
    raise LayoutError(f"{uri}: row {bad + 1}: frame is {shown}, not an integer (column frame)")


def _labels(table: pa.Table, uri: str) -> tuple[np.ndarray, list[str]]:
    """Per row, the code of its person label (-1: unlabelled), and the labels in natural order."""
    if "person" not in table.column_names:
        return np.full(table.num_rows, -1, dtype=np.int64), []
    array = _plain(table.column("person"))
    if pa.types.is_floating(array.type):  # pandas writes an integer column with gaps as floats
        values = array.to_numpy(zero_copy_only=False)
        known = np.isfinite(values)
        fractional = np.flatnonzero(known & (values != np.round(values)))
        if len(fractional):
            row = int(fractional[0])
            raise LayoutError(f"{uri}: row {row + 1}: person {values[row]!r} is not a whole number")
        array = pa.array(np.where(known, values, 0).astype(np.int64), mask=~known)
    text = pc.utf8_trim_whitespace(_as_text(array, "person", uri))
    empty = pc.or_kleene(pc.equal(text, ""), pc.equal(pc.utf8_lower(text), "nan"))
    text = pc.if_else(pc.fill_null(empty, True), pa.scalar(None, pa.string()), text)
    codes, rank, dictionary = _natural_codes(text)
    names = [""] * len(rank)
    for code, position in enumerate(rank.tolist()):
        names[position] = dictionary[code]
    return np.where(codes >= 0, rank[np.maximum(codes, 0)], -1), names


def _subset_codes(table: pa.Table, uri: str) -> np.ndarray:
    """Per row, the index of its subset in SUBSETS (-1: empty, the default rule)."""
    if "subset" not in table.column_names:
        return np.full(table.num_rows, -1, dtype=np.int64)
    text = pc.utf8_lower(pc.utf8_trim_whitespace(_as_text(_plain(table.column("subset")), "subset", uri)))
    given = pc.fill_null(pc.not_equal(text, ""), False)
    bad = _first(pc.and_(given, pc.invert(pc.is_in(text, pa.array(SUBSETS)))))
    if bad >= 0:
        raw = _plain(table.column("subset"))[bad].as_py()
        raise LayoutError(f"{uri}: row {bad + 1}: subset {raw!r} is not train or test (or empty)")
    codes = pc.index_in(text, pa.array(SUBSETS))
    return pc.fill_null(codes, -1).to_numpy().astype(np.int64)


def _natural_codes(values: pa.Array) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Per row the dictionary code of its value (-1 for null), each code's rank in natural order,
    and the dictionary (the distinct values: far fewer than rows)."""
    encoded = pc.dictionary_encode(values)
    names = encoded.dictionary.to_pylist()
    rank = np.empty(len(names), dtype=np.int64)
    rank[sorted(range(len(names)), key=lambda i: natural_key(names[i]))] = np.arange(len(names))
    codes = pc.fill_null(encoded.indices, -1).to_numpy().astype(np.int64)
    return codes, rank, names


def _require_unique_paths(path: pa.Array, uri: str) -> None:
    codes = pc.dictionary_encode(path).indices.to_numpy().astype(np.int64)
    counts = np.bincount(codes)
    if counts.max() > 1:
        first = int(np.flatnonzero(counts[codes] > 1)[0])
        second = int(np.flatnonzero(codes == codes[first])[1])
        raise LayoutError(
            f"{uri}: rows {first + 1} and {second + 1} list the same frame {path[first].as_py()!r} "
            "(each frame belongs to one tracklet, once)"
        )


def _require_frames_exist(tree: SourceTree, path: pa.Array, uri: str) -> None:
    """Local source: every listed frame is a file. S3: the first row only (see module doc)."""
    fs, base = storage.resolve(tree.root)
    last = len(path) if isinstance(fs, pafs.LocalFileSystem) else 1
    for start in range(0, last, EXISTS_BATCH):
        chunk = path[start : min(start + EXISTS_BATCH, last)].to_pylist()
        try:
            infos = fs.get_file_info([f"{base}/{p}" for p in chunk])
        except (OSError, pa.ArrowException) as exc:
            raise storage.StorageError(f"{tree.root}: {exc}") from exc
        for offset, info in enumerate(infos):
            if info.type != pafs.FileType.File:
                row = start + offset
                raise LayoutError(
                    f"{tree.uri(chunk[offset])}: frame file not found (row {row + 1} of {uri}; paths are "
                    "relative to the source root)"
                )
