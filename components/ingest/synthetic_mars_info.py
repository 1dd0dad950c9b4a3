"""MARS's ``info/`` as the release has it, for the tracklets of a plan.

``{train,test}_name.txt`` (one file name a line, in table order), ``tracks_{train,test}_info.mat``
(rows: first and last line, 1-based and inclusive, into the name list; person; camera) and
``query_IDX.mat`` (1-based test rows).
"""

from __future__ import annotations

import io
import os

import numpy as np

from components.common import storage
from components.ingest.synthetic_names import frame_path
from components.ingest.synthetic_tracklets import SynthPlan


def write_mars_info(root: str, plan: SynthPlan) -> None:
    info = os.path.join(root, "info")
    for subset, name in (("bbox_train", "train"), ("bbox_test", "test")):
        lines: list[str] = []
        rows = []
        for tracklet in (t for t in plan.tracklets if t.subset == subset):
            first = len(lines) + 1
            lines.extend(os.path.basename(frame_path("mars", tracklet, n)) for n in tracklet.numbers)
            rows.append((first, len(lines), tracklet.person, tracklet.camera))
        storage.write_bytes(os.path.join(info, f"{name}_name.txt"), "".join(f"{x}\n" for x in lines).encode())
        table = np.asarray(rows, dtype=np.int32).reshape(-1, 4)
        storage.write_bytes(
            os.path.join(info, f"tracks_{name}_info.mat"), _mat_bytes(f"track_{name}_info", table)
        )
    queries = np.asarray(plan.query_rows, dtype=np.int64) + 1
    dtype = np.uint16 if queries.size == 0 or queries.max() <= np.iinfo(np.uint16).max else np.uint32
    storage.write_bytes(
        os.path.join(info, "query_IDX.mat"), _mat_bytes("query_IDX", queries.astype(dtype)[None, :])
    )


def _mat_bytes(name: str, array: np.ndarray) -> bytes:
    """A MATLAB 5 file; the header's creation time is fixed so that the same seed gives the same bytes."""
    import scipy.io

    buffer = io.BytesIO()
    scipy.io.savemat(buffer, {name: array}, format="5", do_compression=False, oned_as="row")
    data = bytearray(buffer.getvalue())
    data[:116] = b"MATLAB 5.0 MAT-file, written by dal synth".ljust(116, b" ")
    return bytes(data)
