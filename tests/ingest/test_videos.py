"""``dal ingest --dataset videos``: videos + MOTChallenge tracks -> tracklets, and ``dal synth``'s
videos layout.

The synthetic layout (components.ingest.synthetic_videos) is checked round trip through
components.ingest.run.ingest; the other cases use tiny hand-made videos (a few dozen 96x64 frames)
whose tracks.txt each test writes.

Crop fidelity, with luma RMS errors bounded from the quantisers (no tolerance read off this machine):

* reader (dataset crop vs the same box of the test's own decode of the video): only the reader's
  JPEG encoding lies between them. A JPEG coefficient is rounded to the nearest multiple of its
  step Q_k (the file's own luma table), so it is off by at most Q_k / 2, and the orthonormal 8x8
  DCT keeps squared errors (Parseval): an 8x8 block's RMS error is at most sqrt(mean(Q_k^2) / 4).
  Rounding adds at most 2 levels (RGB->Y in the encoder 0.5, the integer IDCT 1, output 0.5).
* generator (the video's Y plane in the box vs the rendered crop's BT.601 Y'): the MPEG-4
  quantiser QP reconstructs each coefficient within 2.5 QP (synthetic_videos' docstring), so a
  block's RMS is at most 2.5 QP, plus 2 levels of rounding (RGB->Y' conversion, IDCT).

A box that covers blocks only partly gets the factor sqrt(64 * blocks touched / pixels): its
squared error is at most that of the whole blocks it touches. Both chains compose (Minkowski) into
"dataset crop vs rendered crop". That the bounds can fail is shown by the neighbour check: the crop
fits its own frame better than the frames before and after it.
"""

from __future__ import annotations

import io
import math
import struct
import tracemalloc
from collections import Counter
from pathlib import Path

import av
import numpy as np
import pandas as pd
import pytest
from PIL import Image

from components.common import storage
from components.common.dataset import Dataset
from components.ingest.config import IngestConfig
from components.ingest.datasets import videos
from components.ingest.datasets.base import UNLABELLED, LayoutError
from components.ingest.run import ingest, open_source
from components.ingest.synthetic_config import SynthConfig
from components.ingest.synthetic_plan import plan_dataset
from components.ingest.synthetic_render import RenderSettings, render_tracklet
from components.ingest.synthetic_videos import QP, camera_placements, label_of, write_videos_layout
from tests.ingest.test_readers import upload_tree

CROP_H, CROP_W = 64, 32  # multiples of 16: a JPEG crop is whole 8x8 luma blocks
ROUNDING = 2.0  # levels, see the module doc
SYNTH = SynthConfig(
    layout="videos",
    output="unused",
    num_identities=4,
    num_cameras=2,
    frames_per_tracklet=(10, 14),
    num_distractors=2,
    image_height=CROP_H,
    image_width=CROP_W,
)
FRAME_W, FRAME_H = 96, 64  # hand-made videos


# ---------------------------------------------------------------------------------------------
# Helpers


def _config(source, output, **kwargs) -> IngestConfig:
    return IngestConfig(dataset="videos", source=str(source), output=str(output), progress=False, **kwargs)


def _luma(rgb: np.ndarray) -> np.ndarray:
    rgb = rgb.astype(np.float64)
    return 0.299 * rgb[..., 0] + 0.587 * rgb[..., 1] + 0.114 * rgb[..., 2]


def _rms(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.sqrt(np.mean((a - b) ** 2)))


def _block_factor(x: int, y: int, width: int, height: int) -> float:
    """sqrt(64 * 8x8 blocks touched / pixels) for a box at (x, y) on the 8-pixel block grid."""
    blocks = math.ceil((x % 8 + width) / 8) * math.ceil((y % 8 + height) / 8)
    return math.sqrt(64 * blocks / (width * height))


def _jpeg_luma(data: bytes) -> tuple[np.ndarray, float]:
    """The stored JPEG's Y plane (decoded without colour conversion) and its quantisation bound."""
    image = Image.open(io.BytesIO(data))
    steps = np.asarray(image.quantization[0], dtype=np.float64)
    image.draft("YCbCr", image.size)
    assert image.mode == "YCbCr"
    return np.asarray(image)[..., 0].astype(np.float64), float(np.sqrt(np.mean(steps**2) / 4))


def _decode(path: Path) -> list[tuple[np.ndarray, np.ndarray]]:
    """Every frame of a video as (RGB, Y plane), the test's own reference decode."""
    frames = []
    with av.open(str(path)) as container:
        for frame in container.decode(video=0):
            plane = frame.planes[0]
            y = np.frombuffer(plane, np.uint8).reshape(-1, plane.line_size)[: frame.height, : frame.width]
            frames.append((frame.to_ndarray(format="rgb24"), y.astype(np.float64)))
    return frames


def _tracks(path: Path) -> pd.DataFrame:
    return pd.read_csv(path, header=None, usecols=range(6), names=["frame", "id", "x", "y", "w", "h"])


def write_video(path: Path, frames: int, *, width: int = FRAME_W, height: int = FRAME_H) -> None:
    """A small MPEG-4 video whose frames all differ (a pattern that moves with the frame number)."""
    ys, xs = np.mgrid[0:height, 0:width]
    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), "w") as container:
        stream = container.add_stream("mpeg4", rate=25)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        for n in range(frames):
            image = np.stack([(xs * 3 + n * 7) % 256, (ys * 4 + n * 5) % 256, (xs + ys + n * 11) % 256], -1)
            for packet in stream.encode(av.VideoFrame.from_ndarray(image.astype(np.uint8), format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


def track(
    track_id: int, first: int, count: int, x: float = 4, y: float = 4, w: float = 16, h: float = 24
) -> str:
    """MOTChallenge lines of one track standing still at (x, y) from frame ``first`` on."""
    return "".join(f"{first + i},{track_id},{x},{y},{w},{h},1,-1,-1,-1\n" for i in range(count))


TWO_TRACKS = track(1, 1, 10) + track(2, 5, 10, x=40)


def write_layout(
    root: Path,
    cameras: dict[str, str],
    *,
    frames: int = 30,
    ext: str = "mp4",
    labels: dict[str, str] | None = None,
) -> Path:
    """``<root>/<camera>/video.<ext>`` + tracks.txt (the given text) [+ labels.csv] per camera."""
    for name, text in cameras.items():
        write_video(root / name / f"video.{ext}", frames)
        (root / name / "tracks.txt").write_text(text)
        if labels and name in labels:
            (root / name / "labels.csv").write_text(labels[name])
    return root


def _stream(root: Path, **kwargs) -> list:
    return list(videos.open_source(str(root), **kwargs).tracklets())


# ---------------------------------------------------------------------------------------------
# The synthetic layout, round trip


@pytest.fixture(scope="module")
def synth(tmp_path_factory: pytest.TempPathFactory):
    root = tmp_path_factory.mktemp("videos")
    config = SYNTH.planned
    plan = plan_dataset(config)
    write_videos_layout(config, str(root), plan)
    output = tmp_path_factory.mktemp("out") / "dataset"
    ingest_config = _config(root, output)
    manifest = ingest(open_source(ingest_config), ingest_config)
    return root, plan, output, manifest


def test_synthetic_videos_round_trip(synth) -> None:
    root, plan, output, manifest = synth
    dataset = Dataset.open(str(output))
    dataset.verify()
    tracklets = dataset.tracklets()
    cameras = sorted(p.name for p in root.iterdir())
    assert cameras == [f"cam{c}" for c in sorted({t.camera for t in plan.tracklets})]
    expected_names, expected_paths = [], []
    for camera_id, camera in enumerate(cameras):
        tracks = _tracks(root / camera / "tracks.txt")
        # Every synthetic track is within 10..14 frames: none dropped, none cut.
        order = tracks.groupby("id").frame.max().reset_index().sort_values(["frame", "id"])
        expected_names += [f"{camera}/track{i}" for i in order.id]
        for track_id in order.id:
            frames = tracks[tracks.id == track_id].frame.sort_values()
            expected_paths += [f"{camera}/video.mp4#frame={f}" for f in frames]
        assert set(tracklets[tracklets.name.str.startswith(f"{camera}/")].camera_id) == {camera_id}
    assert tracklets.name.tolist() == expected_names
    assert manifest["counts"]["tracklets"] == len(plan.tracklets)
    assert manifest["counts"]["frames"] == sum(len(t.positions) for t in plan.tracklets)
    frames = pd.concat(t.to_pandas() for t in dataset.iter_frames(["tracklet_id", "source_path"]))
    assert frames.source_path.tolist() == expected_paths
    protocol = manifest["ingest"]["protocol"]
    assert protocol["cameras"] == {c: i for i, c in enumerate(cameras)}
    assert protocol["counts"]["frames"] == protocol["counts"]["lines"] == len(expected_paths)
    assert all(protocol["counts"][k] == 0 for k in ("dropped_tracks", "outside", "clipped", "too_small"))


def test_synthetic_labels_become_test_persons(synth) -> None:
    root, plan, output, manifest = synth
    tracklets = Dataset.open(str(output)).tracklets()
    labels = sorted({label_of(t) for t in plan.tracklets} - {""})
    person_of = {label: i for i, label in enumerate(labels, start=1)}
    assert manifest["ingest"]["protocol"]["labels"] == person_of
    for camera in sorted({t.camera for t in plan.tracklets}):
        for placement in camera_placements(plan, camera):
            row = tracklets[tracklets.name == f"cam{camera}/track{placement.track_id}"].iloc[0]
            label = label_of(placement.tracklet)
            assert row.person_id == (person_of[label] if label else UNLABELLED)
            assert row.subset == ("test" if label else "train")
    assert not tracklets.is_query.any()  # evaluation's labelled protocol picks the queries


def test_crops_match_the_video_and_the_rendered_tracklets(synth) -> None:
    root, plan, output, _ = synth
    dataset = Dataset.open(str(output))
    tracklets = dataset.tracklets().set_index("tracklet_id")
    images = pd.concat(t.to_pandas() for t in dataset.iter_frames(["tracklet_id", "image", "source_path"]))
    settings = RenderSettings.of(SYNTH.planned)
    checked = 0
    for camera in sorted({t.camera for t in plan.tracklets}):
        decoded = _decode(root / f"cam{camera}" / "video.mp4")
        placements = {p.track_id: p for p in camera_placements(plan, camera)}
        rendered = {
            i: np.concatenate(list(render_tracklet(settings, p.tracklet, {}))) for i, p in placements.items()
        }
        for row in images[images.source_path.str.startswith(f"cam{camera}/")].itertuples():
            name = tracklets.loc[row.tracklet_id, "name"]
            placement = placements[int(name.rsplit("track", 1)[1])]
            frame = int(row.source_path.rsplit("=", 1)[1])
            x, y = placement.box(frame, CROP_H, CROP_W)
            stored, jpeg_bound = _jpeg_luma(row.image)
            assert stored.shape == (CROP_H, CROP_W)
            # Reader: the stored crop is the box of that decoded frame, up to its JPEG encoding.
            own = _rms(stored, _luma(decoded[frame - 1][0][y : y + CROP_H, x : x + CROP_W]))
            assert own <= jpeg_bound + ROUNDING
            # ... and not the neighbouring frames' boxes (an off-by-one frame would fit those).
            for other in (frame - 1, frame + 1):
                if placement.start <= other <= placement.end:
                    ox, oy = placement.box(other, CROP_H, CROP_W)
                    assert own < _rms(
                        stored, _luma(decoded[other - 1][0][oy : oy + CROP_H, ox : ox + CROP_W])
                    )
            # Generator: the video holds the rendered crop there, up to the MPEG-4 quantiser.
            video_y = decoded[frame - 1][1][y : y + CROP_H, x : x + CROP_W]
            target = 16 + 219 / 255 * _luma(rendered[placement.track_id][frame - placement.start])
            assert _rms(video_y, target) <= 2.5 * QP * _block_factor(x, y, CROP_W, CROP_H) + ROUNDING
            checked += 1
    assert checked == len(images) > 0


def test_stream_holds_only_the_open_tracklets(synth) -> None:
    root, plan, _, manifest = synth
    planned_peak = 0
    for camera in sorted(p.name for p in root.iterdir()):
        tracks = _tracks(root / camera / "tracks.txt")
        spans = tracks.groupby("id").frame.agg(["min", "max"])
        for frame in range(1, int(tracks.frame.max()) + 1):
            # Crops of the tracklets open at this frame, read so far (before those ending here go).
            open_ids = spans[(spans["min"] <= frame) & (spans["max"] >= frame)].index
            planned_peak = max(planned_peak, int(((tracks.frame <= frame) & tracks.id.isin(open_ids)).sum()))
    streaming = manifest["ingest"]["protocol"]["streaming"]
    assert streaming["peak_open_crops"] == planned_peak
    assert planned_peak < manifest["counts"]["frames"] / 2  # tracks overlap, yet far from all held
    assert 2 <= streaming["peak_open_tracklets"] <= 4  # the generator's 4 lanes, several at once


def _traced_peak(root: Path) -> tuple[int, int, int]:
    """(peak traced bytes while streaming, crop bytes streamed, peak_open_crops) of one source."""
    source = videos.open_source(str(root))
    tracemalloc.start()
    try:
        encoded = 0
        for tracklet in source.tracklets():
            encoded += sum(len(b) for b in tracklet.encoded)
            del tracklet  # the consumer keeps nothing
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    return peak, encoded, source.protocol["streaming"]["peak_open_crops"]


def test_memory_is_flat_in_the_video_length(tmp_path: Path) -> None:
    """Back-to-back tracks, 20 vs 60 of them: the longer video streams 3x the crops in the same memory."""
    length = 10
    runs = []
    for count in (20, 20, 60):  # the first run only warms up (PIL's and PyAV's lazy imports, caches)
        lines = "".join(track(i + 1, 1 + i * length, length, x=4 + (i % 2) * 40) for i in range(count))
        back_to_back = track(1, 1, length) + track(2, 1 + length, length)
        root = write_layout(
            tmp_path / f"run{len(runs)}", {"a": lines, "b": back_to_back}, frames=count * length
        )
        runs.append(_traced_peak(root))
    (_, _, _), (short_peak, short_bytes, short_open), (long_peak, long_bytes, long_open) = runs
    assert short_open == long_open == length  # one tracklet open at a time
    # Holding the crops would add the 2x more crop bytes of the long video to its peak.
    assert long_bytes > 2.5 * short_bytes
    assert long_peak - short_peak < (long_bytes - short_bytes) / 5


# ---------------------------------------------------------------------------------------------
# Rules: dropping, cutting, striding, clipping, ignoring


def test_short_tracks_are_dropped_and_counted(tmp_path: Path) -> None:
    root = write_layout(tmp_path, {"a": TWO_TRACKS + track(3, 2, 5), "b": TWO_TRACKS})
    source = videos.open_source(str(root), min_track_frames=6)
    names = [t.name for t in source.tracklets()]
    assert names == ["a/track1", "a/track2", "b/track1", "b/track2"]
    counts = source.protocol["camera_counts"]["a"]
    assert (counts["tracks"], counts["dropped_tracks"], counts["dropped_boxes"]) == (3, 1, 5)
    assert source.protocol["counts"]["frames"] == source.num_frames == 40


def test_long_tracks_are_cut_and_strided(tmp_path: Path) -> None:
    root = write_layout(tmp_path, {"a": TWO_TRACKS + track(3, 1, 25), "b": TWO_TRACKS})
    cut = {t.name: t.frames for t in _stream(root, max_track_frames=10)}
    parts = [cut[f"a/track3_part{k}"] for k in (1, 2, 3)]
    assert [len(p) for p in parts] == [9, 8, 8]  # ceil(25 / 10) near-equal consecutive parts
    assert [f for p in parts for f in p] == [f"a/video.mp4#frame={n}" for n in range(1, 26)]
    strided = {t.name: t.frames for t in _stream(root, frame_stride=3, min_track_frames=4)}
    assert strided["a/track3"] == tuple(f"a/video.mp4#frame={n}" for n in range(1, 26, 3))
    assert strided["a/track1"] == tuple(f"a/video.mp4#frame={n}" for n in (1, 4, 7, 10))


def test_boxes_are_clipped_and_outside_or_tiny_ones_skipped(tmp_path: Path) -> None:
    track3 = (
        "1,3,-6,-4,20,30,1\n"  # partly outside (top-left): clipped to 0..14 x 0..26
        "2,3,86,50,20,30,1\n"  # partly outside (bottom-right): 86..96 x 50..64
        "3,3,200,10,20,30,1\n"  # wholly outside
        "4,3,10,-40,20,30,1\n"  # wholly outside (above)
        "5,3,30,10,5,30,1\n"  # 5 wide: too small
        "6,3,93,10,20,30,1\n"  # 3 wide after clipping: too small
        "7,3,10.5,10.2,20,30,1\n"  # floats: floor/ceil -> 10..31 x 10..41
        "8,3,10,10,0,30,1\n"  # zero width: too small
    )
    root = write_layout(tmp_path, {"a": TWO_TRACKS + track3, "b": TWO_TRACKS})
    source = videos.open_source(str(root), min_track_frames=2)
    tracklet = next(t for t in source.tracklets() if t.name == "a/track3")
    assert tracklet.frames == tuple(f"a/video.mp4#frame={n}" for n in (1, 2, 7))
    sizes = [Image.open(io.BytesIO(b)).size for b in tracklet.encoded]
    assert sizes == [(14, 26), (10, 14), (21, 31)]
    reference = _decode(root / "a" / "video.mp4")
    stored, bound = _jpeg_luma(tracklet.encoded[1])
    own = _rms(stored, _luma(reference[1][0][50:64, 86:96]))
    assert own <= bound * _block_factor(0, 0, 10, 14) + ROUNDING
    counts = source.protocol["camera_counts"]["a"]
    assert (counts["clipped"], counts["outside"], counts["too_small"]) == (2, 2, 3)


def test_untracked_and_ignored_lines_are_counted(tmp_path: Path) -> None:
    extra = "3,-1,4,4,16,24,0.9\n4,-1,4,4,16,24,0.8\n" + "".join(
        f"{n},1,4,4,16,24,0,1,1.0\n"
        for n in (11, 12)  # gt style: conf (consider) 0 -> ignored
    )
    root = write_layout(tmp_path, {"a": TWO_TRACKS + extra, "b": TWO_TRACKS})
    source = videos.open_source(str(root))
    assert [len(t.frames) for t in source.tracklets()][:2] == [10, 10]
    counts = source.protocol["camera_counts"]["a"]
    assert (counts["lines"], counts["untracked"], counts["ignored"], counts["frames"]) == (24, 2, 2, 20)


def test_labels_map_to_persons_over_all_cameras(tmp_path: Path) -> None:
    labels = {"a": "track_id,label\n2,bob\n", "b": "1,alice\n2,bob\n"}
    root = write_layout(
        tmp_path,
        {"a": TWO_TRACKS + track(3, 12, 9), "b": TWO_TRACKS + track(3, 1, 9) + track(4, 9, 9)},
        labels=labels,
    )
    source = videos.open_source(str(root))
    got = {t.name: (t.person_id, t.subset) for t in source.tracklets()}
    assert source.protocol["labels"] == {"alice": 1, "bob": 2}  # sorted labels, over all cameras
    assert got["a/track2"] == got["b/track2"] == (2, "test")
    assert got["b/track1"] == (1, "test")
    assert got["a/track1"] == got["a/track3"] == got["b/track3"] == (UNLABELLED, "train")


# ---------------------------------------------------------------------------------------------
# Errors


def test_unreadable_video_fails_before_the_output_is_touched(tmp_path: Path) -> None:
    root = write_layout(tmp_path / "raw", {"a": TWO_TRACKS, "b": TWO_TRACKS})
    (root / "b" / "video.mp4").write_bytes(b"not a video at all " * 200)
    output = tmp_path / "out"
    with pytest.raises(LayoutError, match=r"b/video\.mp4: cannot open the video"):
        ingest(open_source(_config(root, output)), _config(root, output))
    assert not output.exists()


def test_video_shorter_than_its_tracks(tmp_path: Path) -> None:
    # MP4 knows its frame count: refused before anything is decoded, naming the line.
    lines = TWO_TRACKS + track(3, 25, 10)  # frames 25..34 of a 30-frame video
    root = write_layout(tmp_path / "mp4", {"a": TWO_TRACKS, "b": lines})
    with pytest.raises(
        LayoutError, match=r"b/tracks\.txt:27: frame 31 is beyond the end of \S+/b/video\.mp4 \(30 frames\)"
    ):
        videos.open_source(str(root))
    # Matroska does not: found while streaming; the dataset published at the output before is gone.
    root = write_layout(tmp_path / "mkv", {"a": TWO_TRACKS, "b": lines}, ext="mkv")
    good = write_layout(tmp_path / "good", {"a": TWO_TRACKS, "b": TWO_TRACKS})
    output = tmp_path / "out"
    ingest(open_source(_config(good, output)), _config(good, output))
    assert (output / "manifest.json").exists()
    config = _config(root, output)
    with pytest.raises(
        LayoutError,
        match=r"b/tracks\.txt:27: frame 31 is beyond the end of \S+/b/video\.mkv \(30 frames decoded\)",
    ):
        ingest(open_source(config), config)
    assert not (output / "manifest.json").exists()


def test_corrupt_video_data_fails_naming_the_video(tmp_path: Path) -> None:
    root = write_layout(tmp_path, {"a": TWO_TRACKS, "b": TWO_TRACKS}, frames=30)
    video = root / "a" / "video.mp4"
    data = bytearray(video.read_bytes())
    at = 0  # scramble 500 bytes in the middle of the frames (the mdat box), keeping the index intact
    while data[at + 4 : at + 8] != b"mdat":
        at += struct.unpack(">I", data[at : at + 4])[0]
    middle = at + struct.unpack(">I", data[at : at + 4])[0] // 2
    data[middle : middle + 500] = bytes((b * 7 + 3) % 256 for b in data[middle : middle + 500])
    video.write_bytes(bytes(data))
    with pytest.raises(LayoutError, match=r"a/video\.mp4: cannot decode frame \d+ \(.*Invalid data"):
        _stream(root, min_track_frames=1)


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("3,1,4,4,16", r"tracks\.txt:11: expected frame,id,x,y,w,h"),
        ("3,1,abc,4,16,24,1", r"tracks\.txt:11: x 'abc' is not a number"),
        ("0,1,4,4,16,24,1", r"tracks\.txt:11: frame 0 \(frames are 1-based\)"),
        ("3.5,1,4,4,16,24,1", r"tracks\.txt:11: frame '3\.5' is not an integer"),
        ("3,1,4,4,-16,24,1", r"tracks\.txt:11: negative box size"),
        ("3,1,4,4,16,nan,1", r"tracks\.txt:11: h 'nan' is not a finite number"),
        ("3,1,9,9,16,24,1", r"tracks\.txt:11: track 1 has a second box in frame 3 \(first on line 3\)"),
    ],
)
def test_malformed_tracks_line_names_file_and_line(tmp_path: Path, line: str, message: str) -> None:
    text = track(1, 1, 10) + line + "\n" + track(2, 5, 10, x=40)
    root = write_layout(tmp_path, {"a": TWO_TRACKS, "b": text})
    with pytest.raises(LayoutError, match=message):
        videos.open_source(str(root))


def test_camera_with_one_track_is_refused(tmp_path: Path) -> None:
    root = write_layout(tmp_path, {"a": TWO_TRACKS, "b": track(1, 1, 10) + track(2, 1, 3)})
    with pytest.raises(LayoutError, match=r"camera 'b' has 1 train tracklet"):
        videos.open_source(str(root))


def test_missing_files_and_bad_labels(tmp_path: Path) -> None:
    root = write_layout(tmp_path / "raw", {"a": TWO_TRACKS, "b": TWO_TRACKS})
    (root / "b" / "labels.csv").write_text("track_id,label\n1,x\n7,y\n")
    with pytest.raises(LayoutError, match=r"b/labels\.csv:3: track 7 is not in .*b/tracks\.txt"):
        videos.open_source(str(root))
    (root / "b" / "labels.csv").write_text("1,x\n1,y\n")
    with pytest.raises(LayoutError, match=r"b/labels\.csv:2: track 1 is labelled again \(first on line 1\)"):
        videos.open_source(str(root))
    (root / "b" / "labels.csv").unlink()
    (root / "b" / "tracks.txt").unlink()
    with pytest.raises(LayoutError, match=r"b/tracks\.txt: file not found"):
        videos.open_source(str(root))
    (root / "a" / "video.mp4").rename(root / "a" / "clip.mp4")
    with pytest.raises(
        LayoutError, match=r"/a: no video; each camera folder needs exactly one of video\.mp4"
    ):
        videos.open_source(str(root))
    with pytest.raises(LayoutError, match="no camera folders"):
        videos.open_source(str((tmp_path / "empty").mkdir() or tmp_path / "empty"))


# ---------------------------------------------------------------------------------------------
# S3


@pytest.mark.integration
def test_s3_source_streams_the_same_tracklets(tmp_path: Path, s3_bucket: str, s3_env) -> None:
    root = write_layout(tmp_path / "raw", {"a": TWO_TRACKS + track(3, 12, 12), "b": TWO_TRACKS}, ext="mp4")
    uri = f"{s3_bucket}/raw"
    upload_tree(root, uri, s3_env)
    remote, local = videos.open_source(uri), videos.open_source(str(root))
    assert remote.root == uri
    got, expected = list(remote.tracklets()), list(local.tracklets())
    assert [(t.name, t.frames, t.encoded) for t in got] == [(t.name, t.frames, t.encoded) for t in expected]
    output = f"{s3_bucket}/dataset"
    config = _config(uri, output)
    manifest = ingest(open_source(config), config)
    assert manifest["counts"]["frames"] == sum(len(t.frames) for t in expected)
    assert storage.exists(storage.join(output, "manifest.json"))
    counts = Counter(Dataset.open(output).tracklets().camera_id)
    assert counts == {0: 3, 1: 2}
