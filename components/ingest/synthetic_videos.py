"""``dal synth --layout videos``: a MARS-planned set as one video per camera plus its tracker output.

Writes, per camera of the plan, ``cam<c>/video.mp4``, ``cam<c>/tracks.txt`` (MOTChallenge:
``frame,id,x,y,w,h,1,-1,-1,-1``) and ``cam<c>/labels.csv`` (``track_id,label`` for the plan's
bbox_test persons > 0, labelled ``person<NNNN>``), the layout components.ingest.datasets.videos reads.

A camera's tracklets (rendered by synthetic_render, as the MARS layout would store them) walk
through a still canvas of the camera's scene, LANES lanes side by side (canvas 2 x the crop height,
LANES x (1.25 x the crop width) wide). The tracklets, in plan order, take the lane that frees
first, GAP frames after its previous track, and lanes start STAGGER frames apart, so tracks overlap
in time without overlapping in space: every pixel of a box is its tracklet's rendered crop, moving
down by one crop height and right by a quarter crop width over the track. Track ids are 1.. per
camera in that order.

Codec: MPEG-4 part 2 (FFmpeg's own encoder, in every PyAV build) at the constant quantiser QP
(qmin = qmax, a bit rate that never binds), yuv420p. Its quantiser bounds the luma error: a DCT
coefficient is reconstructed within 2.5 QP (H.263 quantisation: the inter dead zone is 2.5 QP, a
non-zero level is within 1.5 QP) and the orthonormal 8x8 DCT keeps squared errors (Parseval), so a
block's luma RMS error is at most 2.5 QP levels (tests/ingest/test_videos.py checks it).
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Iterable

import av
import numpy as np

from components.ingest.synthetic_camera import camera_view
from components.ingest.synthetic_config import SynthConfig
from components.ingest.synthetic_render import RenderSettings, render_tracklet
from components.ingest.synthetic_tracklets import SynthPlan, Tracklet

LANES = 4
GAP = 2  # frames between two tracks on one lane
STAGGER = 3  # lane i's first track starts at frame 1 + i * STAGGER
TAIL = 2  # background-only frames after the last box (the reader stops before them)
FPS = 25
CODEC = "mpeg4"
QP = 2  # constant MPEG-4 quantiser: 2 is the finest the encoder allows by default (qmin)
BIT_RATE = 200_000_000  # high enough that rate control never raises the quantiser above qmax
VIDEO_FILE, TRACKS_FILE, LABELS_FILE = "video.mp4", "tracks.txt", "labels.csv"


@dataclasses.dataclass(frozen=True)
class Placement:
    """Where and when one tracklet walks through its camera's video."""

    tracklet: Tracklet
    track_id: int  # 1.. within the camera
    lane: int
    start: int  # first frame, 1-based

    @property
    def length(self) -> int:
        return len(self.tracklet.positions)

    @property
    def end(self) -> int:
        return self.start + self.length - 1

    def box(self, frame: int, height: int, width: int) -> tuple[int, int]:
        """Top-left corner (x, y) of the box in ``frame`` (start <= frame <= end)."""
        step = (frame - self.start) / max(self.length - 1, 1)
        return self.lane * lane_pitch(width) + round(step * (width // 4)), round(step * height)


def lane_pitch(width: int) -> int:
    return width + width // 4


def canvas_size(height: int, width: int) -> tuple[int, int]:
    """(height, width) of a camera's video: even, as yuv420p needs."""
    canvas_w = LANES * lane_pitch(width)
    return 2 * height, canvas_w + canvas_w % 2


def camera_placements(plan: SynthPlan, camera: int) -> list[Placement]:
    """The schedule of one camera (1-based): plan order, each on the lane that frees first."""
    free = [1 + lane * STAGGER for lane in range(LANES)]
    placements = []
    for tracklet in (t for t in plan.tracklets if t.camera == camera):
        lane = min(range(LANES), key=lambda i: (free[i], i))
        placement = Placement(tracklet, len(placements) + 1, lane, free[lane])
        placements.append(placement)
        free[lane] = placement.end + 1 + GAP
    return placements


def label_of(tracklet: Tracklet) -> str:
    """The labels.csv label of a tracklet; empty when it is unlabelled (train, junk, distractor)."""
    return f"person{tracklet.person:04d}" if tracklet.subset == "bbox_test" and tracklet.person > 0 else ""


def write_videos_layout(config: SynthConfig, root: str, plan: SynthPlan) -> None:
    """Every camera of ``plan`` (MARS-planned) under ``root`` as the videos layout (module doc)."""
    settings = RenderSettings.of(config)
    for camera in sorted({t.camera for t in plan.tracklets}):
        folder = os.path.join(root, f"cam{camera}")
        os.makedirs(folder, exist_ok=True)
        write_camera(settings, folder, camera, camera_placements(plan, camera))


def _background(settings: RenderSettings, camera: int) -> np.ndarray:
    """The camera's scene (the one its crops are rendered on) stretched to the canvas, uint8."""
    view = camera_view(
        settings.seed,
        camera,
        settings.height,
        settings.width,
        settings.color_cast,
        settings.clutter,
        settings.back_view_prob,
    )
    canvas_h, canvas_w = canvas_size(settings.height, settings.width)
    scene = view.scene.reshape(*view.scene_shape, 3)
    rows = np.arange(canvas_h) * scene.shape[0] // canvas_h
    cols = np.arange(canvas_w) % scene.shape[1]
    return (scene[rows][:, cols] * 255.0 + 0.5).astype(np.uint8)


def write_camera(settings: RenderSettings, folder: str, camera: int, placements: list[Placement]) -> None:
    """One camera's video, tracks.txt and labels.csv; memory holds the open tracklets' frames only."""
    height, width = settings.height, settings.width
    canvas_h, canvas_w = canvas_size(height, width)
    background = _background(settings, camera)
    last = max(p.end for p in placements)
    starting: dict[int, list[Placement]] = {}
    for placement in placements:
        starting.setdefault(placement.start, []).append(placement)
    active: dict[int, tuple[Placement, np.ndarray]] = {}
    cache: dict = {}
    lines = []
    with av.open(os.path.join(folder, VIDEO_FILE), "w") as container:
        stream = container.add_stream(CODEC, rate=FPS)
        stream.width, stream.height, stream.pix_fmt = canvas_w, canvas_h, "yuv420p"
        stream.codec_context.qmin = stream.codec_context.qmax = QP
        stream.codec_context.bit_rate = BIT_RATE
        for frame in range(1, last + TAIL + 1):
            for placement in starting.get(frame, ()):
                rendered = np.concatenate(list(render_tracklet(settings, placement.tracklet, cache)))
                active[placement.track_id] = (placement, rendered)
            image = background.copy()
            for track_id in sorted(active):
                placement, rendered = active[track_id]
                x, y = placement.box(frame, height, width)
                image[y : y + height, x : x + width] = rendered[frame - placement.start]
                lines.append(f"{frame},{track_id},{x},{y},{width},{height},1,-1,-1,-1\n")
                if frame == placement.end:
                    del active[track_id]
            _mux(container, stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")))
        _mux(container, stream.encode())
    with open(os.path.join(folder, TRACKS_FILE), "w") as handle:
        handle.writelines(lines)
    labelled = [(p.track_id, label_of(p.tracklet)) for p in placements if label_of(p.tracklet)]
    if labelled:
        with open(os.path.join(folder, LABELS_FILE), "w") as handle:
            handle.write("track_id,label\n")
            handle.writelines(f"{track_id},{label}\n" for track_id, label in labelled)


def _mux(container: av.container.OutputContainer, packets: Iterable[av.Packet]) -> None:
    for packet in packets:
        container.mux(packet)
