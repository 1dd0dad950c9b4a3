"""Frames in, features out: the device and precision rules of every forward pass, in one place.

Input batches are float (N, 3, H, W) in [0, 1] (``components.common.images`` decodes and
resizes); they are standardised with the model's mean / std, put in the model's dtype, and on
CUDA laid out channels_last and run under bf16 autocast (float32 models only). Training
(``components.train.run``), extraction, periodic evaluation and anchor initialisation all go
through here.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from components.common import images


def model_input(
    batch: torch.Tensor, device: torch.device, dtype: torch.dtype, mean: Sequence[float], std: Sequence[float]
) -> torch.Tensor:
    """``batch`` on ``device`` in ``dtype``, standardised; channels_last on CUDA."""
    x = images.normalize(batch.to(device, dtype, non_blocking=device.type == "cuda"), mean, std)
    return x.contiguous(memory_format=torch.channels_last) if device.type == "cuda" else x


@contextlib.contextmanager
def forward_precision(device: torch.device, dtype: torch.dtype, *, autocast: bool = True) -> Iterator[None]:
    """bf16 autocast around a forward pass on CUDA for a float32 model (unless ``autocast`` is off)."""
    enabled = autocast and device.type == "cuda" and dtype == torch.float32
    with torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=enabled):
        yield


def parameter_dtype(model: nn.Module) -> torch.dtype:
    return next(model.parameters()).dtype


def embed(
    model: nn.Module,
    batch: torch.Tensor,
    mean: Sequence[float],
    std: Sequence[float],
    device: torch.device,
    *,
    flip: bool = False,
) -> torch.Tensor:
    """Frame features of ``batch`` (N, 3, H, W) in [0, 1], in the model's precision (float32, or
    float64 for the EMA model of a ``precision=fp64`` run); not L2-normalised (pooling does it).

    ``flip`` (test-time augmentation): each frame's feature is the mean of the L2-normalised
    features of the frame and of its left-right mirror, both in one forward pass of 2N frames.
    Averaging unit vectors (not raw features, as fast-reid does) keeps either view from
    dominating by its norm; the result is a mirror-invariant direction, normalised by the pooling.
    """
    dtype = parameter_dtype(model)
    x = model_input(batch, device, dtype, mean, std)
    if flip:
        x = torch.cat([x, x.flip(-1)])
    with forward_precision(device, dtype):
        features = model(x).to(dtype)
    if not flip:
        return features
    plain, mirrored = F.normalize(features, dim=1).chunk(2)
    return (plain + mirrored) / 2
