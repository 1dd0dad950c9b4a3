"""Own footage as videos: one video per camera plus a tracker's boxes (MOTChallenge text) -> tracklets.

Layout (local folder or ``s3://`` prefix)::

    <root>/<camera>/video.mp4    exactly one of video.mp4 / .avi / .mkv / .mov (anything FFmpeg reads)
    <root>/<camera>/tracks.txt   MOTChallenge boxes: ``frame,id,x,y,w,h[,conf[,...]]`` per line
    <root>/<camera>/labels.csv   optional: ``track_id,label`` rows (a ``track_id,label`` header is allowed)

Every sub-folder of the root is a camera (other files and folders inside a camera folder are
ignored); camera ids are 0-based in sorted folder-name order (the ``cameras`` map of the protocol).

tracks.txt: comma-separated, blank lines ignored. ``frame`` is 1-based and counts the frames as
the video decodes them; ``id`` is the track id, unique within the camera (tracks of different
cameras are unrelated); ``x, y`` is the box's top-left corner in 0-based pixels (as Python
trackers write it; MOTChallenge's own 1-based gt moves a crop by one pixel), ``w, h`` its size
(numbers may be floats: the crop is ``floor(x)..ceil(x + w)``). Extra columns (MOTChallenge gt's
class and visibility, det's world coordinates) are accepted and not read. Rules, each counted in
the protocol's ``counts`` (per camera in ``camera_counts``):

* ``id < 0`` (a detection file's untracked boxes): skipped (``untracked``);
* column 7 == 0: ignored (``ignored``). In MOTChallenge gt that column is the "consider" flag and
  0 marks boxes the benchmark ignores (non-pedestrians, static or reflected people); in tracker
  output it is a score, and a score of exactly 0 means no confidence either;
* a box partly outside the frame is clipped to it (``clipped``; the frame size is the stream's);
  wholly outside (``outside``) or, after clipping, narrower or lower than MIN_BOX_SIDE pixels
  (``too_small``, also zero-size boxes): skipped;
* ``frame_stride`` k: a track keeps its usable boxes 1, 1 + k, 1 + 2k, ... (``strided_out``),
  counted by box, not by frame number, so a gap in a track does not change the spacing;
* a track with fewer than ``min_track_frames`` kept boxes is dropped (``dropped_tracks``,
  ``dropped_boxes``); a longer one than ``max_track_frames`` is cut into ceil(n / max) consecutive
  parts of near-equal length (at least max / 2 each, so a part is shorter than min_track_frames only
  when min_track_frames > max_track_frames / 2: it is dropped then, ``dropped_parts``).

Errors (LayoutError, naming the file and line): a missing video or tracks.txt, a video FFmpeg
cannot open or decode (``skip_corrupt`` does not apply: a broken stream is no single bad frame), a
malformed line (fewer than 6 fields, a non-number, frame < 1, w or h < 0), the same (frame, id)
twice, a frame beyond the video's end (checked against the container's frame count before anything
is decoded when the container has one, and always against the frames decoded: a mismatch means
tracks.txt belongs to another video, so no box is silently lost), a decoded frame of another size
than the stream's, labels.csv naming a track that tracks.txt lacks (or one track twice), and too
few train tracklets (base.require_train_cameras: >= 2 per camera, >= 2 cameras).

Labels: the labels of all cameras, sorted as strings, are persons 1..P (the same label in two
cameras is the same person; the ``labels`` map of the protocol); every tracklet (every part) of a
labelled track carries it, the rest are UNLABELLED. Subset: base.default_subset (labelled -> test,
unlabelled -> train). No tracklet is marked ``is_query``: evaluation's ``labelled`` protocol
(components.evaluate.protocols) makes every labelled test tracklet whose person is labelled in
another camera a query, as for the ``tracklets`` dataset.

Tracklets are named ``<camera>/track<id>`` (``_part<k>``, k from 1, when cut) and written camera by
camera, within a camera in the order they end (last frame, then track id, then part). Frame
``source_path``: ``<camera>/video.mp4#frame=<n>``. Crops are JPEG (``jpeg_quality``, 0 -> 90).

Order of work: every camera's tracks.txt and labels.csv are read and its video's header opened
(frame size, frame count), the tracklets planned and the train cameras checked before any frame is
decoded, so a bad source fails before the output is touched. The stream then decodes each video
once, front to back, up to its last planned frame, crops and JPEG-encodes the boxes of a frame at
once and yields a tracklet as soon as its last frame has passed.

Memory: the boxes of tracks.txt as flat arrays (~80 bytes a box while planning, ~40 after), one
decoded frame, and the encoded crops of the open tracklets only -- at most max_track_frames per
tracklet, so the peak is (tracklets overlapping in time) x max_track_frames crops at most, flat in
the video's length. The protocol's ``streaming`` entry records the peak (``peak_open_crops``); the
dict is updated while streaming, and ingest writes it into the manifest after the stream finished.
"""

from __future__ import annotations

import array
import contextlib
import csv
import dataclasses
import io
import math
from collections.abc import Iterator
from typing import Any

import av
import numpy as np
import pyarrow as pa
import pyarrow.fs as pafs
from PIL import Image

from components.common import storage
from components.ingest.datasets.base import (
    UNLABELLED,
    LayoutError,
    RawSource,
    RawTracklet,
    SourceTree,
    default_subset,
    require_train_cameras,
)

NAME = "videos"
VIDEO_NAMES = ("video.mp4", "video.avi", "video.mkv", "video.mov")
TRACKS_FILE = "tracks.txt"
LABELS_FILE = "labels.csv"
MIN_BOX_SIDE = 8  # pixels: a narrower or lower crop holds nothing to re-identify
DEFAULT_JPEG_QUALITY = 90
MIN_FIELDS = 6  # frame, id, x, y, w, h
CONF_COLUMN = 6  # 0-based: MOTChallenge's 7th column
VIDEO_ERRORS = (av.FFmpegError, OSError, pa.ArrowException)
OK, CLIPPED, TOO_SMALL, OUTSIDE = 0, 1, 2, 3  # box status after clipping (usable: <= CLIPPED)
COUNT_KEYS = (
    "lines",
    "untracked",
    "ignored",
    "outside",
    "too_small",
    "clipped",
    "strided_out",
    "tracks",
    "dropped_tracks",
    "dropped_boxes",
    "dropped_parts",
    "tracklets",
    "frames",
)


@dataclasses.dataclass(frozen=True)
class Rules:
    min_track_frames: int
    max_track_frames: int
    frame_stride: int


@dataclasses.dataclass(frozen=True)
class VideoInfo:
    path: str  # relative to the source root
    uri: str
    width: int
    height: int
    frames: int  # the container's count; 0 when it has none


@dataclasses.dataclass(frozen=True)
class PlannedTracklet:
    name: str
    person_id: int
    last_frame: int


@dataclasses.dataclass
class CameraPlan:
    """One camera's tracklets (in write order) and their boxes sorted by (frame, tracklet)."""

    name: str
    camera_id: int
    video: VideoInfo
    tracks_uri: str
    tracklets: list[PlannedTracklet]
    frame: np.ndarray  # int64 per box
    tracklet: np.ndarray  # int32 per box: index into ``tracklets``
    box: np.ndarray  # int32 (boxes, 4): left, top, right, bottom, clipped to the frame
    line: np.ndarray  # int64 per box: its line in tracks.txt
    counts: dict[str, int]


def open_source(
    root: str,
    *,
    min_track_frames: int = 8,
    max_track_frames: int = 200,
    frame_stride: int = 1,
    jpeg_quality: int = 0,
) -> RawSource:
    """Check the layout, read the tracks and plan the tracklets (module doc); nothing is decoded yet."""
    if not 1 <= min_track_frames <= max_track_frames:
        raise LayoutError(
            f"need 1 <= min_track_frames <= max_track_frames, got {min_track_frames}, {max_track_frames}"
        )
    if frame_stride < 1 or not 0 <= jpeg_quality <= 100:
        raise LayoutError(
            f"need frame_stride >= 1 and jpeg_quality 0..100, got {frame_stride}, {jpeg_quality}"
        )
    quality = jpeg_quality or DEFAULT_JPEG_QUALITY
    tree = SourceTree(root)
    tree.require_root()
    cameras, _ = tree.list_dir()
    if not cameras:
        raise LayoutError(f"{root}: no camera folders (expected <camera>/video.mp4 + <camera>/tracks.txt)")
    labels_by_camera = {name: _read_labels(tree, name) for name in cameras}
    labels = sorted({label for found in labels_by_camera.values() for label, _ in found.values()})
    persons = {label: person for person, label in enumerate(labels, start=1)}
    rules = Rules(min_track_frames, max_track_frames, frame_stride)
    plans = [
        _open_camera(tree, name, camera_id, labels_by_camera[name], persons, rules)
        for camera_id, name in enumerate(cameras)
    ]
    require_train_cameras(
        {p.name: sum(default_subset(t.person_id) == "train" for t in p.tracklets) for p in plans}, root
    )
    totals = {key: sum(p.counts[key] for p in plans) for key in COUNT_KEYS}
    protocol: dict[str, Any] = {
        "layout": "<camera>/video.{mp4,avi,mkv,mov} + <camera>/tracks.txt (MOTChallenge) "
        "[+ <camera>/labels.csv]",
        "cameras": {p.name: p.camera_id for p in plans},
        "frames": "1-based in decode order; crops clipped to the frame, JPEG",
        "rules": {
            "min_track_frames": min_track_frames,
            "max_track_frames": max_track_frames,
            "frame_stride": frame_stride,
            "min_box_side": MIN_BOX_SIDE,
            "jpeg_quality": quality,
            "ignored": "column 7 == 0 (gt: not considered; tracker output: score 0)",
            "untracked": "id < 0",
        },
        "labels": persons,
        "subset": "labelled -> test, unlabelled -> train",
        "query": "chosen at evaluation (protocol labelled): each labelled test tracklet whose person is "
        "labelled in another camera; same person + same camera is junk",
        "counts": totals,
        "camera_counts": {p.name: p.counts for p in plans},
        "streaming": {},
    }

    def tracklets() -> Iterator[RawTracklet]:
        streaming: dict[str, Any] = {"peak_open_crops": 0, "peak_open_tracklets": 0, "decoded_frames": {}}
        protocol["streaming"] = streaming
        for plan in plans:
            yield from _stream_camera(tree, plan, quality, streaming)

    return RawSource(
        dataset=NAME, tree=tree, tracklets=tracklets, num_frames=totals["frames"], protocol=protocol
    )


def _open_camera(
    tree: SourceTree,
    name: str,
    camera_id: int,
    labels: dict[int, tuple[str, int]],
    persons: dict[str, int],
    rules: Rules,
) -> CameraPlan:
    video = _video_info(tree, name)
    tracks_uri = tree.uri(name, TRACKS_FILE)
    if not tree.is_file(name, TRACKS_FILE):
        raise LayoutError(f"{tracks_uri}: file not found (each camera folder needs {TRACKS_FILE})")
    rows = _parse_tracks(tree.read(name, TRACKS_FILE), tracks_uri)
    known = set(np.unique(rows["id"]).tolist())
    for track_id, (_, line) in sorted(labels.items()):
        if track_id not in known:
            raise LayoutError(
                f"{tree.uri(name, LABELS_FILE)}:{line}: track {track_id} is not in {tracks_uri}"
            )
    person_of = {track_id: persons[label] for track_id, (label, _) in labels.items()}
    return _plan_camera(name, camera_id, video, tracks_uri, rows, person_of, rules)


# ---------------------------------------------------------------------------------------------
# Reading the text files


def _decode_text(data: bytes, uri: str) -> str:
    try:
        return data.decode("utf-8-sig")  # a BOM from spreadsheet exports is no field
    except UnicodeDecodeError as exc:
        raise LayoutError(f"{uri}: not UTF-8 text ({exc})") from exc


def _number(text: str, what: str, where: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise LayoutError(f"{where}: {what} {text!r} is not a number") from None
    if not math.isfinite(value):
        raise LayoutError(f"{where}: {what} {text!r} is not a finite number")
    return value


def _integer(text: str, what: str, where: str) -> int:
    value = _number(text, what, where)  # trackers write "12" or "12.000000"
    if value != int(value):
        raise LayoutError(f"{where}: {what} {text!r} is not an integer")
    if abs(value) >= 2**53:
        raise LayoutError(f"{where}: {what} {text!r} is out of range")
    return int(value)


def _parse_tracks(data: bytes, uri: str) -> dict[str, np.ndarray]:
    """Every box line as flat columns (array.array while reading: ~8 bytes a value, not a Python int)."""
    ints = {key: array.array("q") for key in ("frame", "id", "line", "ignored")}
    floats = {key: array.array("d") for key in ("x", "y", "w", "h")}
    for number, raw in enumerate(_decode_text(data, uri).splitlines(), start=1):
        if not raw.strip():
            continue
        where = f"{uri}:{number}"
        fields = [f.strip() for f in raw.split(",")]
        if len(fields) < MIN_FIELDS:
            raise LayoutError(
                f"{where}: expected frame,id,x,y,w,h[,conf,...] (MOTChallenge), got {len(fields)} field(s)"
            )
        frame = _integer(fields[0], "frame", where)
        if frame < 1:
            raise LayoutError(f"{where}: frame {frame} (frames are 1-based)")
        x, y, w, h = (_number(fields[i], name, where) for i, name in zip(range(2, 6), "xywh", strict=True))
        if w < 0 or h < 0:
            raise LayoutError(f"{where}: negative box size w={fields[4]}, h={fields[5]}")
        conf = _number(fields[CONF_COLUMN], "conf", where) if len(fields) > CONF_COLUMN else 1.0
        ints["frame"].append(frame)
        ints["id"].append(_integer(fields[1], "id", where))
        ints["line"].append(number)
        ints["ignored"].append(conf == 0)
        for key, value in zip("xywh", (x, y, w, h), strict=True):
            floats[key].append(value)
    return {
        key: np.frombuffer(values, dtype=np.float64 if key in floats else np.int64).copy()
        for key, values in (*ints.items(), *floats.items())
    }


def _read_labels(tree: SourceTree, camera: str) -> dict[int, tuple[str, int]]:
    """labels.csv of a camera: track id -> (label, line); empty when the file is absent."""
    if not tree.is_file(camera, LABELS_FILE):
        return {}
    uri = tree.uri(camera, LABELS_FILE)
    labels: dict[int, tuple[str, int]] = {}
    rows = csv.reader(io.StringIO(_decode_text(tree.read(camera, LABELS_FILE), uri)))
    for row in rows:
        number = rows.line_num  # the line a row ends on (a quoted field may span lines)
        fields = [f.strip() for f in row]
        if not any(fields):
            continue
        where = f"{uri}:{number}"
        if not labels and number == 1 and [f.lower() for f in fields] == ["track_id", "label"]:
            continue
        if len(fields) != 2 or not fields[1]:
            raise LayoutError(f"{where}: expected track_id,label, got {row!r}")
        track_id = _integer(fields[0], "track_id", where)
        if track_id in labels:
            raise LayoutError(
                f"{where}: track {track_id} is labelled again (first on line {labels[track_id][1]})"
            )
        labels[track_id] = (fields[1], number)
    return labels


# ---------------------------------------------------------------------------------------------
# Videos


@contextlib.contextmanager
def _open_video(tree: SourceTree, relative: str) -> Iterator[av.container.InputContainer]:
    """Open a video by path locally; on S3 through a random-access pyarrow file (MP4s seek to their index)."""
    uri = tree.uri(relative)
    fs, path = storage.resolve(uri)
    with contextlib.ExitStack() as stack:
        try:
            if isinstance(fs, pafs.LocalFileSystem):
                container = av.open(path)
            else:
                container = av.open(stack.enter_context(fs.open_input_file(path)))
        except VIDEO_ERRORS as exc:
            raise LayoutError(f"{uri}: cannot open the video ({exc})") from exc
        stack.callback(container.close)
        if not container.streams.video:
            raise LayoutError(f"{uri}: no video stream")
        yield container


def _video_info(tree: SourceTree, camera: str) -> VideoInfo:
    _, files = tree.list_dir(camera)
    found = [name for name in VIDEO_NAMES if name in files]
    if len(found) != 1:
        what = "no video" if not found else f"{len(found)} videos ({', '.join(found)})"
        raise LayoutError(
            f"{tree.uri(camera)}: {what}; each camera folder needs exactly one of {', '.join(VIDEO_NAMES)}"
        )
    relative = f"{camera}/{found[0]}"
    with _open_video(tree, relative) as container:
        stream = container.streams.video[0]
        width, height = stream.codec_context.width, stream.codec_context.height
        frames = int(stream.frames or 0)
    if width <= 0 or height <= 0:
        raise LayoutError(f"{tree.uri(relative)}: the video stream has no frame size")
    return VideoInfo(relative, tree.uri(relative), width, height, frames)


# ---------------------------------------------------------------------------------------------
# Planning


def _plan_camera(
    name: str,
    camera_id: int,
    video: VideoInfo,
    tracks_uri: str,
    rows: dict[str, np.ndarray],
    person_of: dict[int, int],
    rules: Rules,
) -> CameraPlan:
    counts = dict.fromkeys(COUNT_KEYS, 0)
    counts["lines"] = len(rows["frame"])
    if video.frames and counts["lines"] and int(rows["frame"].max()) > video.frames:
        at = int(np.argmax(rows["frame"] > video.frames))
        raise LayoutError(
            f"{tracks_uri}:{rows['line'][at]}: frame {rows['frame'][at]} is beyond the end of "
            f"{video.uri} ({video.frames} frames)"
        )
    tracked = rows["id"] >= 0
    counts["untracked"] = int((~tracked).sum())
    rows = {key: values[tracked] for key, values in rows.items()}
    order = np.lexsort((rows["frame"], rows["id"]))
    rows = {key: values[order] for key, values in rows.items()}
    same = np.flatnonzero((np.diff(rows["id"]) == 0) & (np.diff(rows["frame"]) == 0))
    if len(same):
        first, second = sorted((int(rows["line"][same[0]]), int(rows["line"][same[0] + 1])))
        raise LayoutError(
            f"{tracks_uri}:{second}: track {rows['id'][same[0]]} has a second box in frame "
            f"{rows['frame'][same[0]]} (first on line {first})"
        )
    box, status = _clip(rows, video.width, video.height)
    ignored = rows["ignored"].astype(bool)
    counts["ignored"] = int(ignored.sum())
    counts["outside"] = int((~ignored & (status == OUTSIDE)).sum())
    counts["too_small"] = int((~ignored & (status == TOO_SMALL)).sum())
    usable = ~ignored & (status <= CLIPPED)
    counts["clipped"] = int((usable & (status == CLIPPED)).sum())

    starts = np.flatnonzero(np.r_[True, np.diff(rows["id"]) != 0]) if len(rows["id"]) else np.array([], int)
    ends = np.r_[starts[1:], len(rows["id"])]
    counts["tracks"] = len(starts)
    pieces: list[tuple[int, int, np.ndarray]] = []  # (track id, part, box indices)
    for start, end in zip(starts.tolist(), ends.tolist(), strict=True):
        track_id = int(rows["id"][start])
        boxes = start + np.flatnonzero(usable[start:end])
        kept = boxes[:: rules.frame_stride]
        counts["strided_out"] += len(boxes) - len(kept)
        if len(kept) < rules.min_track_frames:
            counts["dropped_tracks"] += 1
            counts["dropped_boxes"] += len(kept)
            continue
        parts = np.array_split(kept, math.ceil(len(kept) / rules.max_track_frames))
        for number, part in enumerate(parts, start=1):
            if len(part) < rules.min_track_frames:
                counts["dropped_parts"] += 1
                counts["dropped_boxes"] += len(part)
                continue
            pieces.append((track_id, number if len(parts) > 1 else 0, part))
    pieces.sort(key=lambda piece: (int(rows["frame"][piece[2][-1]]), piece[0], piece[1]))
    tracklets = [
        PlannedTracklet(
            name=f"{name}/track{track_id}" + (f"_part{part}" if part else ""),
            person_id=person_of.get(track_id, UNLABELLED),
            last_frame=int(rows["frame"][indices[-1]]),
        )
        for track_id, part, indices in pieces
    ]
    indices = np.concatenate([p[2] for p in pieces]) if pieces else np.array([], dtype=np.int64)
    owner = np.repeat(np.arange(len(pieces), dtype=np.int32), [len(p[2]) for p in pieces])
    order = np.lexsort((owner, rows["frame"][indices]))
    indices, owner = indices[order], owner[order]
    counts["tracklets"], counts["frames"] = len(tracklets), len(indices)
    return CameraPlan(
        name=name,
        camera_id=camera_id,
        video=video,
        tracks_uri=tracks_uri,
        tracklets=tracklets,
        frame=rows["frame"][indices],
        tracklet=owner,
        box=box[indices],
        line=rows["line"][indices],
        counts=counts,
    )


def _clip(rows: dict[str, np.ndarray], width: int, height: int) -> tuple[np.ndarray, np.ndarray]:
    """Integer boxes (left, top, right, bottom) clipped to the frame, and each box's status."""
    x, y, w, h = rows["x"], rows["y"], rows["w"], rows["h"]
    left, top = np.floor(x), np.floor(y)
    right, bottom = np.ceil(x + w), np.ceil(y + h)
    box = np.stack(
        [
            np.clip(left, 0, width),
            np.clip(top, 0, height),
            np.clip(right, 0, width),
            np.clip(bottom, 0, height),
        ],
        axis=1,
    ).astype(np.int32)
    status = np.full(len(x), OK, dtype=np.int8)
    status[(left < 0) | (top < 0) | (right > width) | (bottom > height)] = CLIPPED
    status[(box[:, 2] - box[:, 0] < MIN_BOX_SIDE) | (box[:, 3] - box[:, 1] < MIN_BOX_SIDE)] = TOO_SMALL
    status[(w > 0) & (h > 0) & ((x + w <= 0) | (x >= width) | (y + h <= 0) | (y >= height))] = OUTSIDE
    return box, status


# ---------------------------------------------------------------------------------------------
# Streaming


def _encode(crop: np.ndarray, quality: int) -> bytes:
    out = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(crop)).save(out, format="JPEG", quality=quality)
    return out.getvalue()


def _decoded(container: av.container.InputContainer, uri: str) -> Iterator[av.VideoFrame]:
    """The video stream's frames in decode order; an FFmpeg error names the video and the frame."""
    stream = container.streams.video[0]
    stream.thread_type = "AUTO"  # FFmpeg's own threads: the decode is the serial part of this reader
    frames = container.decode(stream)
    number = 0
    while True:
        try:
            frame = next(frames)
        except StopIteration:
            return
        except VIDEO_ERRORS as exc:
            raise LayoutError(f"{uri}: cannot decode frame {number + 1} ({exc})") from exc
        number += 1
        yield frame


def _stream_camera(
    tree: SourceTree, plan: CameraPlan, quality: int, streaming: dict[str, Any]
) -> Iterator[RawTracklet]:
    total = len(plan.frame)
    if not total:
        return
    ending: dict[int, list[int]] = {}
    for index, tracklet in enumerate(plan.tracklets):
        ending.setdefault(tracklet.last_frame, []).append(index)
    crops: dict[int, list[bytes]] = {}
    numbers: dict[int, list[int]] = {}
    held, position, decoded = 0, 0, 0
    last = int(plan.frame[-1])
    video_uri = tree.uri(plan.video.path)
    with _open_video(tree, plan.video.path) as container:
        for frame in _decoded(container, video_uri):
            decoded += 1
            if position < total and plan.frame[position] == decoded:
                if (frame.width, frame.height) != (plan.video.width, plan.video.height):
                    raise LayoutError(
                        f"{video_uri}: frame {decoded} is {frame.width}x{frame.height}, the stream "
                        f"{plan.video.width}x{plan.video.height} (boxes were clipped to that)"
                    )
                rgb = frame.to_ndarray(format="rgb24")
                while position < total and plan.frame[position] == decoded:
                    owner = int(plan.tracklet[position])
                    left, top, right, bottom = plan.box[position].tolist()
                    crops.setdefault(owner, []).append(_encode(rgb[top:bottom, left:right], quality))
                    numbers.setdefault(owner, []).append(decoded)
                    held += 1
                    position += 1
                del rgb
                streaming["peak_open_crops"] = max(streaming["peak_open_crops"], held)
                streaming["peak_open_tracklets"] = max(streaming["peak_open_tracklets"], len(crops))
                for owner in ending.get(decoded, ()):
                    tracklet, encoded = plan.tracklets[owner], crops.pop(owner)
                    held -= len(encoded)
                    yield RawTracklet(
                        name=tracklet.name,
                        person_id=tracklet.person_id,
                        camera_id=plan.camera_id,
                        subset=default_subset(tracklet.person_id),
                        is_query=False,  # the labelled protocol chooses queries (module doc)
                        frames=tuple(f"{plan.video.path}#frame={n}" for n in numbers.pop(owner)),
                        encoded=tuple(encoded),
                    )
            if decoded >= last:
                break
    streaming["decoded_frames"][plan.name] = decoded
    if position < total:
        raise LayoutError(
            f"{plan.tracks_uri}:{plan.line[position]}: frame {plan.frame[position]} is beyond the end of "
            f"{video_uri} ({decoded} frames decoded)"
        )
