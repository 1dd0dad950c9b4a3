"""What the KFP component wrappers share: the default image and artifact pointers.

Datasets, models and features are far too large for KFP's artifact copy, so the steps write
them to the storage root (S3 / MinIO on a cluster, a folder locally) and a KFP artifact is a
small pointer: its metadata holds the storage URI (visible in the KFP UI) and its file holds
the same as JSON. These functions run inside the step containers.
"""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Any

from components.common import storage
from components.common.errors import DalError

# The CUDA variant runs everywhere (CPU too); the pipeline's `image` parameter overrides it per
# run (task.set_container_image), so the compiled pipeline needs no rebuild for another registry.
DEFAULT_IMAGE = "ghcr.io/dal-reid/dal-reid:0.1.0-cuda"
STORE_ENV = "DAL_STORE"


def storage_root(root: str) -> str:
    """The pipeline's storage root: the parameter, else ``$DAL_STORE`` (the cluster's ConfigMap)."""
    resolved = root or os.environ.get(STORE_ENV, "")
    if not resolved:
        raise DalError(f"storage_root: empty, and ${STORE_ENV} is not set (e.g. s3://bucket/dal)")
    return resolved


def publish(artifact: Any, uri: str, **metadata: Any) -> None:
    """Make a KFP output artifact point at ``uri`` (plus metadata shown in the KFP UI)."""
    artifact.metadata.update({"uri": uri, **metadata})
    os.makedirs(os.path.dirname(artifact.path) or ".", exist_ok=True)
    with open(artifact.path, "w", encoding="utf-8") as handle:
        json.dump({"uri": uri, **metadata}, handle, indent=2, sort_keys=True)


def pointed_uri(artifact: Any) -> str:
    """The storage URI an input artifact points at."""
    uri = artifact.metadata.get("uri")
    if not uri and os.path.exists(artifact.path):
        with open(artifact.path, encoding="utf-8") as handle:
            uri = json.load(handle).get("uri")
    if not uri:
        raise DalError(f"{artifact.path}: input artifact carries no storage URI")
    return str(uri)


def run_dir(root: str, run_key: str, split: int, variant: str = "") -> str:
    """Where one pipeline run keeps one split's model, features and evaluation (``variant``: those
    of another model than the trained one, e.g. ``initial``, in a subfolder of that name)."""
    folder = storage.join(storage_root(root), "runs", run_key, f"split-{split}")
    return storage.join(folder, variant) if variant else folder


def aggregate_dir(root: str, run_key: str, variant: str = "") -> str:
    """Where one pipeline run keeps the average over its splits (of a ``variant``'s model)."""
    folder = storage.join(storage_root(root), "runs", run_key)
    return storage.join(storage.join(folder, variant) if variant else folder, "evaluation")


def task_run_name(step: str, split: int, variant: str = "") -> str:
    """The MLflow run name of one step of one split: ``evaluate-split0``, ``evaluate-initial-split0``."""
    return f"{step}-{variant}-split{split}" if variant else f"{step}-split{split}"


@dataclasses.dataclass(frozen=True, kw_only=True)
class TrainedModel:
    """What the train task of one split hands on (as JSON, a KFP string): where its models are.

    Registration runs once per pipeline run, outside the per-split loop, on the collected list.
    """

    split: int
    model_uri: str  # <run>/split-N/<objective>/model.pt
    initial_model_uri: str  # the weights training started from
    mlflow_model_uri: str  # the logged model ("" untracked)
    mlflow_run_id: str
    backbone: str
    objective: str
    weights: str
    steps: int

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> TrainedModel:
        data = json.loads(text)
        names = {f.name for f in dataclasses.fields(cls)}
        if not isinstance(data, dict) or set(data) != names:
            raise DalError(f"not a trained-model record (fields {sorted(names)}): {text[:200]!r}")
        return cls(**{**data, "split": int(data["split"]), "steps": int(data["steps"])})
