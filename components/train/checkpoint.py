"""Training checkpoints in storage: ``<output>/checkpoints/step-000123.pt``, atomic, keep the last K.

A checkpoint is one ``torch.save`` dict of tensors and plain values (loadable with
``weights_only=True``): model, EMA, optimizer, schedule, objective state (the association's
anchors), step, RNG states and the data-order state. Only rank 0 writes; every rank loads.
A restarted run resumes from the newest checkpoint that loads.
"""

from __future__ import annotations

import dataclasses
import io
import logging
import random
import re
import signal
import threading
from types import FrameType
from typing import Any, Protocol

import numpy as np
import torch

from components.common import storage, torch_files
from components.common.distributed import DistEnv, barrier
from components.common.errors import DalError

log = logging.getLogger(__name__)

CHECKPOINT_FORMAT = "dal-train-checkpoint/1"
CHECKPOINTS_DIR = "checkpoints"
_NAME = re.compile(r"^step-(\d+)\.pt$")
PREEMPTED_EXIT_CODE = 143  # 128 + SIGTERM: what job controllers treat as retryable

# The keys of a checkpoint, in one place. Stateful objects (state_dict / load_state_dict) go under
# their own names (STATEFUL); the rest is written and read by CheckpointManager alone.
FORMAT, STEP, RNG, DATA, SETUP, CONFIG = "format", "step", "rng", "data", "meta", "config"
STATEFUL = ("model", "ema", "optimizer", "schedule", "objective")


class TrainingPreempted(DalError):
    """SIGTERM arrived: a checkpoint was saved and the run stopped early; rerun to resume."""

    exit_code = PREEMPTED_EXIT_CODE


def checkpoints_uri(output: str) -> str:
    return storage.join(output, CHECKPOINTS_DIR)


def checkpoint_uri(output: str, step: int) -> str:
    return storage.join(checkpoints_uri(output), f"step-{step:06d}.pt")


def list_checkpoints(output: str) -> list[tuple[int, str]]:
    """(step, uri) of the published checkpoints, oldest first (temp files are not listed)."""
    found = []
    for uri in storage.list_files(checkpoints_uri(output)):
        match = _NAME.match(uri.rstrip("/").rsplit("/", 1)[-1])
        if match:
            found.append((int(match.group(1)), uri))
    return sorted(found)


def remove_partial_writes(output: str) -> None:
    """Delete temp files that a killed writer left beside local checkpoints (S3 uploads leave none)."""
    if storage.is_s3(output):
        return
    for uri in storage.list_files(checkpoints_uri(output)):
        if uri.rstrip("/").rsplit("/", 1)[-1].startswith(".tmp-"):
            storage.delete(uri)


def save_checkpoint(output: str, step: int, payload: dict[str, Any], keep: int) -> str:
    """Write the checkpoint of ``step`` atomically, then delete all but the newest ``keep``."""
    buffer = io.BytesIO()
    torch.save({FORMAT: CHECKPOINT_FORMAT, STEP: step, **payload}, buffer)
    uri = checkpoint_uri(output, step)
    storage.write_bytes(uri, buffer.getvalue())
    for _, old in list_checkpoints(output)[:-keep]:
        storage.delete(old)
    return uri


def load_checkpoint(uri: str) -> dict[str, Any]:
    payload = torch_files.load(uri, "checkpoint")
    if not isinstance(payload, dict) or payload.get(FORMAT) != CHECKPOINT_FORMAT:
        raise DalError(f"{uri}: not a {CHECKPOINT_FORMAT} checkpoint")
    return payload


def load_latest(output: str) -> tuple[str, dict[str, Any]] | None:
    """The newest checkpoint that loads (older ones stand in for an unreadable newest one)."""
    for _, uri in reversed(list_checkpoints(output)):
        try:
            return uri, load_checkpoint(uri)
        except DalError as exc:
            log.warning("skipping checkpoint %s: %s", uri, exc)
    return None


# -- RNG state as tensors and plain values (what weights_only=True accepts) -------------------
def capture_rng() -> dict[str, Any]:
    name, keys, pos, has_gauss, cached = np.random.get_state()
    version, words, gauss = random.getstate()
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": {
            "name": name,
            "keys": torch.from_numpy(keys.astype(np.int64)),
            "pos": int(pos),
            "has_gauss": int(has_gauss),
            "cached_gaussian": float(cached),
        },
        "python": {"version": version, "words": torch.tensor(words, dtype=torch.int64), "gauss": gauss},
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    numpy_state = state["numpy"]
    np.random.set_state(
        (
            numpy_state["name"],
            numpy_state["keys"].numpy().astype(np.uint32),
            numpy_state["pos"],
            numpy_state["has_gauss"],
            numpy_state["cached_gaussian"],
        )
    )
    python_state = state["python"]
    random.setstate((python_state["version"], tuple(python_state["words"].tolist()), python_state["gauss"]))
    if "cuda" in state and torch.cuda.is_available() and len(state["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(state["cuda"])


class PreemptionGuard:
    """Turns SIGTERM into a flag that the loop checks after each step (it then saves and stops).

    Installed only from the main thread (Python's rule for signal handlers); the previous
    handler comes back on exit, so nothing is left behind in the process.
    """

    def __init__(self) -> None:
        self.requested = False
        self._previous: Any = None
        self._installed = False

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        self.requested = True
        log.warning("SIGTERM: saving a checkpoint after this step, then stopping")

    def __enter__(self) -> PreemptionGuard:
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGTERM, self._handle)
            self._installed = True
        return self

    def __exit__(self, *exc: object) -> None:
        if self._installed:
            signal.signal(signal.SIGTERM, self._previous)
            self._installed = False


class Stateful(Protocol):
    def state_dict(self) -> dict[str, Any]: ...

    def load_state_dict(self, state: dict[str, Any]) -> Any: ...


@dataclasses.dataclass(frozen=True)
class DataPosition:
    """How the data order was produced; the position in it is the checkpoint's step."""

    world_size: int
    workers: int


@dataclasses.dataclass(frozen=True)
class Resumed:
    uri: str
    step: int
    position: DataPosition


class CheckpointManager:
    """Owns what a training checkpoint holds and how it comes back.

    ``objects`` are the stateful parts by their key in STATEFUL; ``setup`` is what must match to
    continue (dataset structure, backbone, batch, ...); ``record`` is the config, kept for
    provenance only. Rank 0 writes; every rank loads; nobody runs ahead of a save.
    """

    def __init__(
        self,
        output: str,
        keep: int,
        objects: dict[str, Stateful],
        setup: dict[str, Any],
        record: dict[str, Any],
        env: DistEnv,
    ) -> None:
        if sorted(objects) != sorted(STATEFUL):
            raise ValueError(f"checkpoint objects must be {STATEFUL}, got {sorted(objects)}")
        self.output, self.keep, self.objects = output, keep, objects
        self.setup, self.record, self.env = setup, record, env

    def save(self, step: int, position: DataPosition) -> str:
        uri = checkpoint_uri(self.output, step)
        if self.env.is_main:
            payload = {key: obj.state_dict() for key, obj in self.objects.items()}
            payload |= {
                RNG: capture_rng(),
                DATA: dataclasses.asdict(position),
                SETUP: self.setup,
                CONFIG: self.record,
            }
            save_checkpoint(self.output, step, payload, self.keep)
            log.info("checkpoint %s", uri)
        barrier(self.env)  # no rank runs ahead of a checkpoint that may be resumed from
        return uri

    def restore_latest(self) -> Resumed | None:
        """Load the newest readable checkpoint into the objects (after checking it belongs to this
        setup) and restore the RNG states; None when there is none."""
        found = load_latest(self.output)
        if found is None:
            return None
        uri, payload = found
        self._check_setup(uri, payload[SETUP])
        try:
            for key, obj in self.objects.items():
                obj.load_state_dict(payload[key])
        except (RuntimeError, KeyError, ValueError) as exc:
            raise DalError(f"{uri}: checkpoint does not fit this model ({exc})") from exc
        restore_rng(payload[RNG])
        data = payload[DATA]  # (earlier checkpoints also repeat the step there)
        return Resumed(uri, int(payload[STEP]), DataPosition(int(data["world_size"]), int(data["workers"])))

    def _check_setup(self, uri: str, saved: dict[str, Any]) -> None:
        expected = self.setup
        cameras = "tracklets_per_camera"
        if list(saved[cameras]) != list(expected[cameras]):
            raise DalError(
                f"{uri}: trained on {len(saved[cameras])} cameras with train tracklets per camera "
                f"{list(saved[cameras])}, but dataset {self.record.get('dataset')} has "
                f"{len(expected[cameras])} cameras with {list(expected[cameras])}"
            )
        differing = [
            k for k in expected if k not in (cameras, "dataset_name") and saved.get(k) != expected[k]
        ]
        if differing:
            details = ", ".join(f"{k}: checkpoint {saved.get(k)!r} vs now {expected[k]!r}" for k in differing)
            raise DalError(f"{uri}: cannot resume with a different setup ({details}); use a new output")
