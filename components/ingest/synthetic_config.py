"""Config of ``dal synth``: a synthetic multi-camera dataset written in a real raw layout.

Two modes. Without ``reference_dir`` a small set is drawn from the seed (``num_identities``,
``num_cameras``, ``frames_per_tracklet``, ...). With ``reference_dir`` (the DAL release's
``info/`` and ``datasplits/``) the real tracklet structure is reproduced: the same person ids,
cameras and tracklet lengths (the small-set fields are then ignored); ``frame_step`` and
``max_identities`` shrink it. The ``max_identities`` subset is fixed: the N lowest person ids
of the training set plus the N lowest of the test set (MARS: of ``tracks_{train,test}_info``,
plus the first rows of the junk ``-1`` and distractor ``0`` tracklets, the same fraction of them
as of the test persons, rounded up; PRID2011 / iLIDS-VID: of the ``reference_split`` lists, by
person folder name). Frames keep their original numbers, so a subsample has gaps in them.

This module must not import torch: the CLI builds its parser from it.
"""

from __future__ import annotations

import dataclasses
from dataclasses import field
from typing import Literal

from components.common.config import require

Layout = Literal["mars", "prid2011", "ilidsvid", "tracklets", "videos"]
LAYOUTS: tuple[str, ...] = ("mars", "prid2011", "ilidsvid", "tracklets", "videos")
# Users' own footage: a MARS-like set of cameras and tracklets (planned as MARS), written as tracklet
# folders + index.csv, or as one video + MOTChallenge tracks per camera. The MARS test persons are
# the labelled subset (index.csv's / labels.csv's person column); everything else is unlabelled.
OWN_LAYOUTS: tuple[str, ...] = ("tracklets", "videos")

# Widest numbers the real file names can hold: person id digits, frame number digits.
MAX_PERSON_ID = {"mars": 9999, "prid2011": 9999, "ilidsvid": 999, "tracklets": 9999, "videos": 9999}
MAX_FRAME_NUMBER = {"mars": 999, "prid2011": 9999, "ilidsvid": 99999, "tracklets": 999, "videos": 999}
MAX_MARS_CAMERAS = 6


@dataclasses.dataclass(frozen=True, kw_only=True)
class SynthConfig:
    layout: Layout = field(
        metadata={
            "help": "raw layout and file naming to write: mars (JPEG), prid2011 or ilidsvid (PNG); "
            "tracklets (<camera>/<tracklet>/<n>.jpg + index.csv) or videos (<camera>/video.mp4 + "
            "tracks.txt + labels.csv): own-footage layouts of a MARS-like set"
        }
    )
    output: str = field(
        metadata={
            "help": "local directory to create; an existing one is replaced only if empty or an "
            "earlier dal synth output (it holds synth.json)"
        }
    )
    seed: int = field(default=0, metadata={"help": "random seed; the same seed gives the same bytes"})
    num_identities: int = field(
        default=12,
        metadata={
            "help": "persons seen by several cameras (MARS: odd ids train, even ids test); "
            "ignored with --reference-dir"
        },
    )
    num_cameras: int = field(
        default=0,
        metadata={"help": "cameras: MARS 2..6, PRID2011/iLIDS-VID 2; 0: the dataset's own (6 or 2)"},
    )
    frames_per_tracklet: tuple[int, int] = field(
        default=(24, 40),
        metadata={
            "help": "min and max frames of a tracklet (PRID2011's protocol keeps persons with >= 21 "
            "frames in both cameras); ignored with --reference-dir"
        },
    )
    tracklets_per_camera: tuple[int, int] = field(
        default=(1, 2),
        metadata={"help": "MARS: min and max tracklets of a person in each camera that sees it"},
    )
    num_distractors: int = field(
        default=4,
        metadata={
            "help": "MARS: tracklets of distractor person 0000 and of junk 00-1 (each) in bbox_test; "
            "PRID2011: persons seen only by cam_a (and twice as many only by cam_b); iLIDS-VID: unused"
        },
    )
    image_height: int = field(
        default=128, metadata={"help": "frame height in pixels (real: MARS 256, others 128)"}
    )
    image_width: int = field(
        default=64, metadata={"help": "frame width in pixels (real: MARS 128, others 64)"}
    )
    reference_dir: str = field(
        default="",
        metadata={
            "help": "dal-reference directory (info/, datasplits/): reproduce the real tracklet structure"
        },
    )
    reference_split: int = field(
        default=1,
        metadata={
            "help": "PRID2011/iLIDS-VID split list (1..10) whose train/test persons --max-identities picks"
        },
    )
    frame_step: int = field(
        default=1,
        metadata={
            "help": "with --reference-dir: keep every k-th frame of each tracklet (original numbers kept)"
        },
    )
    max_identities: int = field(
        default=0,
        metadata={
            "help": "with --reference-dir: keep only the N lowest person ids of train and of test "
            "(MARS also a proportional share of junk/distractor tracklets); 0 keeps all"
        },
    )
    with_info: bool = field(
        default=True,
        metadata={
            "help": "MARS: also write info/ (train_name.txt, test_name.txt, tracks_*_info.mat, "
            "query_IDX.mat) as the real release; ignored by the other layouts"
        },
    )
    color_cast: float = field(
        default=0.6,
        metadata={"help": "difficulty 0..1: strength of each camera's colour cast, gain and gamma"},
    )
    occlusion_prob: float = field(
        default=0.25,
        metadata={
            "help": "difficulty 0..1: probability that an object passes in front of a tracklet's person"
        },
    )
    clutter: float = field(
        default=0.6,
        metadata={"help": "difficulty 0..1: amount of palette-coloured structure in the camera backgrounds"},
    )
    back_view_prob: float = field(
        default=0.3,
        metadata={"help": "difficulty 0..1: probability that a camera sees people from behind"},
    )
    workers: int = field(default=1, metadata={"help": "rendering processes (output does not depend on it)"})

    def __post_init__(self) -> None:
        require(self.layout in LAYOUTS, "layout", f"must be one of {', '.join(LAYOUTS)}, got {self.layout!r}")
        require(bool(self.output.strip()), "output", "must name a local directory")
        require(
            "://" not in self.output or self.output.startswith("file://"),
            "output",
            f"raw layouts are local files: use a local path or file://, got {self.output!r}",
        )
        require(0 <= self.seed < 2**63, "seed", f"must be in 0..2**63-1, got {self.seed}")
        max_person = MAX_PERSON_ID[self.layout]
        require(
            2 <= self.num_identities <= max_person,
            "num_identities",
            f"must be in 2..{max_person} for {self.layout}, got {self.num_identities}",
        )
        require(
            not (self.reference_dir and self.layout in OWN_LAYOUTS),
            "reference_dir",
            f"reproduces a benchmark's structure; the {self.layout} layout has none",
        )
        if self.layout in ("mars", *OWN_LAYOUTS):
            require(
                self.num_cameras == 0 or 2 <= self.num_cameras <= MAX_MARS_CAMERAS,
                "num_cameras",
                f"MARS has 2..{MAX_MARS_CAMERAS} cameras (0: 6), got {self.num_cameras}",
            )
        else:
            require(
                self.num_cameras in (0, 2),
                "num_cameras",
                f"{self.layout} has exactly 2 cameras (0 or 2), got {self.num_cameras}",
            )
        max_frame = MAX_FRAME_NUMBER[self.layout]
        self._require_range("frames_per_tracklet", self.frames_per_tracklet, 1, max_frame)
        self._require_range("tracklets_per_camera", self.tracklets_per_camera, 1, 99)
        require(self.num_distractors >= 0, "num_distractors", f"must be >= 0, got {self.num_distractors}")
        if self.layout == "prid2011":
            # The release's persons 1..200 are those both cameras saw; single-camera ones follow.
            require(
                self.num_identities <= 200,
                "num_identities",
                f"PRID2011 shares at most 200 persons between its cameras, got {self.num_identities}",
            )
            require(
                200 + 2 * self.num_distractors <= max_person,
                "num_distractors",
                f"single-camera persons are numbered 201..; they must fit in {max_person} ids",
            )
        require(
            16 <= self.image_height <= 1024, "image_height", f"must be in 16..1024, got {self.image_height}"
        )
        require(8 <= self.image_width <= 1024, "image_width", f"must be in 8..1024, got {self.image_width}")
        require(
            1 <= self.reference_split <= 10,
            "reference_split",
            f"must be in 1..10, got {self.reference_split}",
        )
        require(self.frame_step >= 1, "frame_step", f"must be >= 1, got {self.frame_step}")
        require(
            self.max_identities >= 0, "max_identities", f"must be >= 0 (0: all), got {self.max_identities}"
        )
        for name in ("color_cast", "occlusion_prob", "clutter", "back_view_prob"):
            value = getattr(self, name)
            require(0.0 <= value <= 1.0, name, f"must be in 0..1, got {value}")
        require(1 <= self.workers <= 64, "workers", f"must be in 1..64, got {self.workers}")

    @staticmethod
    def _require_range(name: str, value: tuple[int, ...], low: int, high: int) -> None:
        require(len(value) == 2, name, f"needs two values (min max), got {value!r}")
        require(
            low <= value[0] <= value[1] <= high,
            name,
            f"needs {low} <= min <= max <= {high}, got {tuple(value)}",
        )

    @property
    def cameras(self) -> int:
        """The number of cameras after resolving 0 to the dataset's own."""
        if self.num_cameras:
            return self.num_cameras
        return MAX_MARS_CAMERAS if self.layout in ("mars", *OWN_LAYOUTS) else 2

    @property
    def planned(self) -> SynthConfig:
        """The config the planner and renderer see: own-footage layouts are planned as MARS."""
        return dataclasses.replace(self, layout="mars") if self.layout in OWN_LAYOUTS else self
