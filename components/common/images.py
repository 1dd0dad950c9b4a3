"""Frame decoding and the deterministic part of preprocessing, shared by training and extraction."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torchvision.io import ImageReadMode, decode_image

from components.common.errors import DalError


def decode(data: bytes | bytearray | memoryview, source: str = "") -> torch.Tensor:
    """Encoded JPEG/PNG bytes -> uint8 RGB tensor (3, H, W)."""
    # bytearray: torch.frombuffer warns on the read-only buffers Parquet hands out.
    buffer = torch.frombuffer(bytearray(data), dtype=torch.uint8)
    try:
        return decode_image(buffer, mode=ImageReadMode.RGB)
    except RuntimeError as exc:
        raise DalError(f"{source or 'frame'}: cannot decode image ({exc})") from exc


def resize(image: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Bilinear resize of a uint8 (3, H, W) image to (height, width); returns float32 in [0, 1]."""
    x = image.unsqueeze(0).float().div_(255.0)
    if tuple(x.shape[-2:]) != tuple(size):
        x = F.interpolate(x, size=size, mode="bilinear", align_corners=False, antialias=True)
    return x.squeeze(0).clamp_(0.0, 1.0)


def normalize(batch: torch.Tensor, mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    """(N, 3, H, W) float in [0, 1] -> standardised per channel."""
    mean_t = torch.tensor(mean, dtype=batch.dtype, device=batch.device).view(1, 3, 1, 1)
    std_t = torch.tensor(std, dtype=batch.dtype, device=batch.device).view(1, 3, 1, 1)
    return (batch - mean_t) / std_t
