"""File names and folders of ``dal synth``'s output, exactly as the real releases name them.

The real readers are exercised because the files are named and laid out as the releases:

* MARS: ``bbox_train/0001/0001C1T0001F001.jpg`` and ``bbox_test/...`` (person 4 digits, camera,
  tracklet 4 digits within person and camera, frame 3 digits), distractors ``0000``, junk
  ``00-1/00-1C1T0001F001.jpg``; ``info/`` is written by ``synthetic_mars_info``.
* PRID2011 multi-shot: ``cam_a/person_0001/0001.png`` and ``cam_b/...``.
* iLIDS-VID: ``sequences/cam1/person001/cam1_person001_00001.png``.
"""

from __future__ import annotations

from components.ingest.synthetic_tracklets import JUNK, Tracklet


def mars_person(person: int) -> str:
    return "00-1" if person == JUNK else f"{person:04d}"


def frame_path(layout: str, tracklet: Tracklet, number: int) -> str:
    """Relative path of one frame, exactly as the real release names it."""
    if layout == "mars":
        person = mars_person(tracklet.person)
        name = f"{person}C{tracklet.camera}T{tracklet.number:04d}F{number:03d}.jpg"
        return f"{tracklet.subset}/{person}/{name}"
    if layout == "prid2011":
        return f"{tracklet.subset}/person_{tracklet.person:04d}/{number:04d}.png"
    camera, person = f"cam{tracklet.camera}", f"person{tracklet.person:03d}"
    return f"sequences/{camera}/{person}/{camera}_{person}_{number:05d}.png"


def camera_folder(layout: str, camera: int) -> str:
    """PRID2011's and iLIDS-VID's top folder of a camera (a Tracklet's ``subset``)."""
    return {"prid2011": ("cam_a", "cam_b")[camera - 1], "ilidsvid": f"cam{camera}"}[layout]
