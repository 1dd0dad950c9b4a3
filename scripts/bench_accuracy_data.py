"""The benchmark's datasets: synthetic PRID2011 / MARS in the real structure, made once and cached.

Both are made by the product's own steps (``dal synth`` then ``dal ingest``, in-process) from the
real structure files of the DAL release (``../shared/data/dal-reference``):

* ``prid2011``: the persons and tracklet lengths of reference split 1 (``datasplits/PRID2011/
  split1``: 89 train + 89 test persons, two cameras), ingested with the same split lists, so the
  ingested dataset's split 0 is the reference's split 1 (``check_prid_split`` verifies it);
* ``mars``: the MARS tracklet structure (``info/``) cut to a fixed subset: the N lowest person
  ids of the train set and the N lowest of the test set, plus the first rows of the junk (-1)
  and distractor (0) tracklets in the same proportion as the test persons kept (SynthConfig's
  ``max_identities`` rule); queries are MARS's own ``query_IDX`` rows of the kept tracklets.

``frame_step`` keeps every k-th frame of each tracklet. A dataset is cached under
``<work>/data/<name>-<key>`` where the key hashes every setting that shapes its bytes; a
finished ingest (its manifest) marks it complete.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import time
from pathlib import Path
from typing import Any

from components.common import storage
from components.common.config import to_dict
from components.common.dataset import Dataset
from components.common.errors import DalError
from components.ingest.config import IngestConfig
from components.ingest.datasets.reference import read_split_list, split_list_tracklets
from components.ingest.run import run as ingest_run
from components.ingest.synthetic import run as synth_run
from components.ingest.synthetic_config import SynthConfig

log = logging.getLogger(__name__)

SPLIT_DIRS = {"prid2011": "PRID2011"}
REFERENCE_SPLIT = 1  # the reference's split1 -> the ingested dataset's split 0


@dataclasses.dataclass(frozen=True, kw_only=True)
class DataSettings:
    name: str  # "prid2011" | "mars"
    frame_step: int
    max_identities: int  # 0: all persons of the structure
    image_height: int  # rendered frame size
    image_width: int
    seed: int = 0
    # Difficulty knobs of the generator; None keeps SynthConfig's defaults.
    difficulty: tuple[tuple[str, float], ...] = ()

    def describe(self) -> str:
        n = self.max_identities
        if self.name == "prid2011":
            who = "all its 89 train + 89 test persons" if not n else f"its {n} lowest train + test person ids"
            base = f"PRID2011 structure of reference split {REFERENCE_SPLIT} ({who})"
        else:
            base = f"MARS structure, its {n} lowest train + test person ids (+ junk/distractor tracklets)"
        knobs = "".join(f", {k}={v}" for k, v in self.difficulty)
        return f"{base}, every {self.frame_step}th frame, {self.image_height}x{self.image_width}{knobs}"


@dataclasses.dataclass(frozen=True)
class PreparedData:
    settings: DataSettings
    root: str  # the ingested dataset
    dataset: Dataset  # opened (and checked) once, for everything the benchmark reads itself
    seconds: float  # 0 when taken from the cache

    @property
    def counts(self) -> dict[str, Any]:
        return dict(self.dataset.manifest["counts"])


def synth_config(settings: DataSettings, reference_dir: str, output: str) -> SynthConfig:
    return SynthConfig(
        layout=settings.name,
        output=output,
        seed=settings.seed,
        reference_dir=reference_dir,
        reference_split=REFERENCE_SPLIT,
        frame_step=settings.frame_step,
        max_identities=settings.max_identities,
        image_height=settings.image_height,
        image_width=settings.image_width,
        with_info=True,
        **dict(settings.difficulty),
    )


def ingest_config(settings: DataSettings, reference_dir: str, source: str, output: str) -> IngestConfig:
    extra: dict[str, Any] = {}
    if settings.name in SPLIT_DIRS:
        extra["split_lists"] = str(Path(reference_dir) / "datasplits" / SPLIT_DIRS[settings.name])
        extra["allow_missing_persons"] = settings.max_identities > 0
    return IngestConfig(
        dataset=settings.name,
        source=source,
        output=output,
        progress=False,
        workers=2,
        mlflow_tracking_uri="",  # a cached input, not part of the benchmark's runs
        **extra,
    )


def cache_key(settings: DataSettings, reference_dir: str) -> str:
    """Hash of everything that shapes the dataset's content (not where it is written)."""
    synth = to_dict(synth_config(settings, reference_dir, "-"))
    ingest = to_dict(ingest_config(settings, reference_dir, "-", "+"))
    for volatile in ("output", "reference_dir", "workers", "source", "split_lists", "progress"):
        synth.pop(volatile, None)
        ingest.pop(volatile, None)
    text = json.dumps({"synth": synth, "ingest": ingest}, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def prepare(settings: DataSettings, reference_dir: str, work: Path) -> PreparedData:
    """The ingested dataset for ``settings``: from the cache, or made now (synth, then ingest)."""
    folder = work / "data" / f"{settings.name}-{cache_key(settings, reference_dir)}"
    raw, root = folder / "raw", folder / "dataset"
    started = time.perf_counter()
    cached = storage.exists(str(root / "manifest.json"))
    if not cached:
        log.info("making %s: %s", settings.name, settings.describe())
        synth_run(synth_config(settings, reference_dir, str(raw)))
        ingest_run(ingest_config(settings, reference_dir, str(raw), str(root)))
    dataset = Dataset.open(str(root))
    if settings.name == "prid2011":
        check_prid_split(dataset, reference_dir)
    seconds = 0.0 if cached else time.perf_counter() - started
    return PreparedData(settings, str(root), dataset, round(seconds, 1))


def check_prid_split(dataset: Dataset, reference_dir: str) -> None:
    """The ingested split 0 must hold exactly the persons of the reference's split-1 lists."""
    splits = dataset.splits()
    if splits is None:
        raise DalError(f"{dataset.root}: no splits table")
    persons = set(dataset.tracklets()["person_id"].tolist())
    folder = Path(reference_dir) / "datasplits" / SPLIT_DIRS["prid2011"] / f"split{REFERENCE_SPLIT}"
    for role, name in (("train", "traindata.txt"), ("test", "testdata.txt")):
        grouped = split_list_tracklets(read_split_list(folder / name))  # (folder, camera) -> frames
        listed = {int(person.removeprefix("person_")) for person, _camera in grouped}
        ingested = set(splits[(splits["split"] == 0) & (splits["role"] == role)]["person_id"].tolist())
        # A subset (max_identities) keeps only some listed persons; none may change role.
        if not ingested or not ingested <= listed or (listed & persons) - ingested:
            raise DalError(
                f"{dataset.root}: split 0 {role} persons do not match {folder / name} "
                f"({len(ingested)} ingested, {len(listed)} listed)"
            )
