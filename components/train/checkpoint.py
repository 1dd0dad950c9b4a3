"""Training checkpoints in storage: ``<output>/checkpoints/step-000123.pt``, atomic, keep the last K.

A checkpoint is one ``torch.save`` dict of tensors and plain values (loadable with
``weights_only=True``): model, EMA, optimizer, schedule, objective state (the association's
anchors), step, RNG states and the data-order state. Only rank 0 writes; every rank loads.
A restarted run resumes from the newest checkpoint that loads.
"""

from __future__ import annotations

import io
import logging
import random
import re
import signal
import threading
from types import FrameType
from typing import Any

import numpy as np
import torch

from components.common import storage
from components.common.errors import DalError

log = logging.getLogger(__name__)

CHECKPOINT_FORMAT = "dal-train-checkpoint/1"
CHECKPOINTS_DIR = "checkpoints"
_NAME = re.compile(r"^step-(\d+)\.pt$")
PREEMPTED_EXIT_CODE = 143  # 128 + SIGTERM: what job controllers treat as retryable


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
    torch.save({"format": CHECKPOINT_FORMAT, "step": step, **payload}, buffer)
    uri = checkpoint_uri(output, step)
    storage.write_bytes(uri, buffer.getvalue())
    for _, old in list_checkpoints(output)[:-keep]:
        storage.delete(old)
    return uri


def load_checkpoint(uri: str) -> dict[str, Any]:
    data = storage.load_torch_bytes(uri)
    try:
        payload = torch.load(data, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises several types for a file that is not a checkpoint
        raise DalError(f"{uri}: not a readable checkpoint ({exc})") from exc
    if not isinstance(payload, dict) or payload.get("format") != CHECKPOINT_FORMAT:
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
