"""Benchmark protocols: which tracklets are queries and which form the gallery.

* ``mars``: the dataset's query tracklets (MARS ``query_IDX``; ``is_query``) against the whole test
  set as gallery (the query itself is removed as junk by the metrics: same person, same camera).
* ``splits`` (PRID2011, iLIDS-VID): for one split, the test persons' camera-1 tracklets are the
  probes and their camera-2 tracklets the gallery (``reverse``: camera 2 -> camera 1). CMC is
  averaged over the splits afterwards (``components.evaluate.aggregate``).

* ``labelled`` (users' own footage: ``tracklets``, ``videos``): the labelled test tracklets
  (``person_id`` > 0; by default ingest holds every labelled tracklet out of training) form the
  gallery; each of them whose person also has a labelled test tracklet in another camera is a
  query. As in MARS, the query's own person in its own camera is junk (which drops the query
  itself), so a query is scored on finding its person in the other cameras. Unlabelled
  tracklets (``person_id`` -1) take no part. A dataset without such queries raises
  ``NoLabelsError``: ``dal evaluate`` then skips with that note.

The protocol follows the dataset's manifest name (``mars`` -> mars; ``prid2011`` / ``ilidsvid``
and synthetic versions of them -> splits; ``tracklets`` / ``videos`` -> labelled); any other name
needs an explicit protocol.
"""

from __future__ import annotations

import dataclasses
import re
from typing import Literal

import numpy as np
import pandas as pd

from components.common.dataset import OWN_FOOTAGE
from components.common.errors import DalError

Protocol = Literal["mars", "splits", "labelled"]
PROTOCOLS = ("mars", "splits", "labelled")
Direction = Literal["forward", "reverse"]
MARS_DATASETS = frozenset({"mars"})
SPLIT_DATASETS = frozenset({"prid2011", "ilidsvid"})
OWN_DATASETS = frozenset(OWN_FOOTAGE)
PROBE_CAMERA = 0  # 0-based camera ids: the dataset's camera 1 (PRID2011 cam_a, iLIDS-VID cam1)


class ProtocolError(DalError, ValueError):
    """The requested protocol does not fit the dataset (or the features); the message says why."""


class NoLabelsError(ProtocolError):
    """Own footage without (enough) identity labels: nothing to score; the message says what is missing."""


@dataclasses.dataclass(frozen=True)
class EvalSet:
    protocol: Protocol
    split: int
    direction: Direction
    query: pd.DataFrame  # tracklet rows: tracklet_id, person_id, camera_id (in tracklet_id order)
    gallery: pd.DataFrame


def _canonical(name: str) -> str:
    """``MARS``, ``synthetic-mars``, ``iLIDS-VID``, ``synthetic_ilidsvid`` -> mars / ilidsvid."""
    name = re.sub(r"[^a-z0-9]", "", name.lower())
    return name.removeprefix("synthetic").removesuffix("synthetic")


def protocol_for(dataset_name: str, requested: str = "auto") -> Protocol:
    """The protocol of a dataset: from its name, or the explicitly requested one."""
    if requested in PROTOCOLS:
        return requested  # type: ignore[return-value]
    if requested != "auto":
        raise ProtocolError(f"protocol must be auto, {', '.join(PROTOCOLS)}, got {requested!r}")
    canonical = _canonical(dataset_name)
    if canonical in MARS_DATASETS:
        return "mars"
    if canonical in SPLIT_DATASETS:
        return "splits"
    if canonical in OWN_DATASETS:
        return "labelled"
    raise ProtocolError(
        f"dataset {dataset_name!r} has no known evaluation protocol; choose one with "
        "--protocol mars|splits|labelled"
    )


def mars_protocol(tracklets: pd.DataFrame) -> EvalSet:
    test = tracklets[tracklets["subset"] == "test"].sort_values("tracklet_id")
    if test.empty:
        raise ProtocolError("protocol mars: the dataset has no test tracklets")
    query = test[test["is_query"].astype(bool)]
    if query.empty:
        raise ProtocolError("protocol mars: the dataset marks no query tracklets (is_query) in its test set")
    return EvalSet("mars", 0, "forward", query.reset_index(drop=True), test.reset_index(drop=True))


def labelled_protocol(tracklets: pd.DataFrame) -> EvalSet:
    test = tracklets[(tracklets["subset"] == "test") & (tracklets["person_id"] > 0)]
    test = test.sort_values("tracklet_id").reset_index(drop=True)
    if test.empty:
        raise NoLabelsError(
            "protocol labelled: no labelled test tracklets (person ids come from the index file's person "
            "column or a video's labels.csv); the model is trained, there is nothing to score it on"
        )
    cameras_of = test.groupby("person_id")["camera_id"].nunique()
    seen_twice = cameras_of.index[cameras_of >= 2]
    query = test[test["person_id"].isin(seen_twice)].reset_index(drop=True)
    if query.empty:
        raise NoLabelsError(
            f"protocol labelled: {len(test)} labelled test tracklets, but no person is labelled in two "
            "cameras: re-ID needs a match in another camera"
        )
    return EvalSet("labelled", 0, "forward", query, test)


def split_protocol(
    tracklets: pd.DataFrame, splits: pd.DataFrame | None, split: int, direction: Direction = "forward"
) -> EvalSet:
    if splits is None or splits.empty:
        raise ProtocolError("protocol splits: the dataset has no splits table (splits.parquet)")
    available = sorted(int(s) for s in splits["split"].unique())
    if split not in available:
        raise ProtocolError(f"protocol splits: split {split} does not exist (available: {available})")
    if direction not in ("forward", "reverse"):
        raise ProtocolError(f"direction must be forward or reverse, got {direction!r}")
    cameras = sorted(int(c) for c in tracklets["camera_id"].unique())
    if cameras != [0, 1]:
        raise ProtocolError(f"protocol splits needs exactly two cameras (0 and 1), the dataset has {cameras}")
    roles = splits[splits["split"] == split]
    persons = roles.loc[roles["role"] == "test", "person_id"].to_numpy()
    if len(persons) == 0:
        raise ProtocolError(f"protocol splits: split {split} has no test persons")
    test = tracklets[tracklets["person_id"].isin(persons)].sort_values("tracklet_id")
    probe = PROBE_CAMERA if direction == "forward" else 1 - PROBE_CAMERA
    query = test[test["camera_id"] == probe].reset_index(drop=True)
    gallery = test[test["camera_id"] != probe].reset_index(drop=True)
    if query.empty or gallery.empty:
        raise ProtocolError(f"protocol splits: split {split} has no probe or no gallery tracklets")
    return EvalSet("splits", split, direction, query, gallery)


def build_eval_set(
    dataset_name: str,
    tracklets: pd.DataFrame,
    splits: pd.DataFrame | None,
    *,
    protocol: str = "auto",
    split: int = 0,
    direction: Direction = "forward",
) -> EvalSet:
    chosen = protocol_for(dataset_name, protocol)
    if chosen in ("mars", "labelled"):
        if splits is not None and not splits.empty:
            raise ProtocolError(
                f"protocol {chosen} does not fit dataset {dataset_name!r}: it has train/test splits "
                "(use the splits protocol)"
            )
        if split != 0:
            raise ProtocolError(f"protocol {chosen} has a single split (0), got split {split}")
        if direction != "forward":
            raise ProtocolError("direction reverse applies to the splits protocol only")
        return mars_protocol(tracklets) if chosen == "mars" else labelled_protocol(tracklets)
    return split_protocol(tracklets, splits, split, direction)


def rows_of(tracklet_ids: np.ndarray, wanted: np.ndarray, what: str, source: str) -> np.ndarray:
    """Positions of ``wanted`` ids in ``tracklet_ids``; a ProtocolError if any is missing."""
    order = np.argsort(tracklet_ids, kind="stable")
    pos = np.searchsorted(tracklet_ids, wanted, sorter=order).clip(max=len(order) - 1)
    found = tracklet_ids[order[pos]] == wanted
    if not found.all():
        missing = wanted[~found]
        raise ProtocolError(
            f"{source}: {len(missing)} of the {len(wanted)} {what} tracklets are missing (first: "
            f"tracklet_id {int(missing[0])}); were the features extracted for this subset and split?"
        )
    return order[pos]
