"""What a synthetic dataset consists of: its tracklets, in dataset order, and their counts."""

from __future__ import annotations

import dataclasses

JUNK, DISTRACTOR = -1, 0  # MARS's person ids of bad detections


@dataclasses.dataclass(frozen=True)
class Tracklet:
    """One tracklet to write: who, where, and which of its original frames to keep."""

    subset: str  # MARS: bbox_train | bbox_test; others: the camera folder
    person: int  # the dataset's person id (MARS: -1 junk, 0 distractor)
    camera: int  # 1-based
    number: int  # MARS tracklet number within (person, camera); 1 elsewhere
    appearance: tuple[int, ...]  # key of the identity generator; () renders an empty detection
    length: int  # original length: motion is drawn for all of it, so subsampling keeps the bytes
    positions: tuple[int, ...]  # kept frames, 0-based into the original ones
    numbers: tuple[int, ...]  # their frame numbers in the file names
    zoom: float = 1.0  # bad detections (MARS junk/distractors) see part of a person
    offset: float = 0.0

    @property
    def kind(self) -> str:
        return {JUNK: "junk", DISTRACTOR: "distractor"}.get(self.person, "person")


@dataclasses.dataclass(frozen=True)
class SynthPlan:
    """Every tracklet ``dal synth`` writes, and which are MARS queries."""

    tracklets: list[Tracklet]
    query_rows: list[int]  # MARS: 0-based rows of the bbox_test tracklets that are queries


def plan_counts(plan: SynthPlan) -> dict[str, int]:
    """What ``synth.json`` and the run's summary report about the dataset."""
    tracklets = plan.tracklets
    persons = {t.appearance for t in tracklets if t.person > 0}
    counts = {
        "persons": len(persons),
        "cameras": len({t.camera for t in tracklets}),
        "tracklets": len(tracklets),
        "frames": sum(len(t.positions) for t in tracklets),
    }
    if any(t.subset.startswith("bbox_") for t in tracklets):
        for subset in ("bbox_train", "bbox_test"):
            counts[f"{subset}_tracklets"] = sum(1 for t in tracklets if t.subset == subset)
        counts["junk_tracklets"] = sum(1 for t in tracklets if t.person == JUNK)
        counts["distractor_tracklets"] = sum(1 for t in tracklets if t.person == DISTRACTOR)
        counts["queries"] = len(plan.query_rows)
    return counts
