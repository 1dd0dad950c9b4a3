"""Reading torch files from storage: one rule for every file this project loads.

Always ``weights_only=True`` (no code from a file ever runs) onto the CPU; a file that torch
cannot read raises DalError naming it, whatever torch raised (it raises several types for a
file that is not a torch file).
"""

from __future__ import annotations

import io
from typing import Any

import torch

from components.common import storage
from components.common.errors import DalError


def load_bytes(data: bytes | io.BytesIO, where: str, what: str) -> Any:
    """Unpickle ``data`` (from ``where``, a ``what`` such as "checkpoint") with weights only."""
    buffer = io.BytesIO(data) if isinstance(data, bytes) else data
    try:
        return torch.load(buffer, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise DalError(f"{where}: not a readable {what} ({exc})") from exc


def load(uri: str, what: str) -> Any:
    """The torch file at ``uri`` (local or ``s3://``); a missing one raises StorageError."""
    return load_bytes(storage.load_torch_bytes(uri), uri, what)
