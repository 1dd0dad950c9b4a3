"""The registered MLflow model: a pyfunc that turns encoded frames into tracklet embeddings.

``TrackletEmbedder`` computes what ``dal extract`` computes, with the same functions: each frame
is decoded (``images.decode``: JPEG/PNG -> RGB), resized to the model's input size
(``images.resize``: antialiased bilinear, [0, 1]), standardised with the model's mean / std and
embedded (``embed.embed``; bf16 autocast and channels_last on CUDA, float32 on the CPU), and the
frame features are L2-normalised and pooled per tracklet (``pooling.TrackletPooler``: max or
mean, then L2-normalised again). Frames are batched in row order; a batch may mix tracklets.

Input: a DataFrame with one row per frame, columns ``tracklet`` (string id; the rows of one
tracklet need not be adjacent) and ``image`` (the encoded JPEG / PNG bytes). Over HTTP
(``mlflow models serve``) the image column is base64 text, which the scoring server decodes
because the signature types it ``binary``::

    POST /invocations  Content-Type: application/json
    {"dataframe_split": {"columns": ["tracklet", "image"],
                         "data": [["t1", "<base64 JPEG>"], ["t1", "<base64>"], ["t2", "<base64>"]]},
     "params": {"pooling": "max"}}

Output: one row per tracklet, in the order of first appearance: ``tracklet``, ``num_frames`` and
``feature`` (the pooled, L2-normalised embedding, a list of ``feature_dim`` float32 values);
over HTTP ``{"predictions": [{"tracklet": "t1", "num_frames": 2, "feature": [...]}, ...]}``.
Param ``pooling``: ``max`` (the default, ``catalog.DEFAULT_POOLING``, as ``dal extract``) or
``mean``. Bad input (a missing column, undecodable bytes, an unknown pooling) is an
MlflowException with INVALID_PARAMETER_VALUE: HTTP 400 with the message.

The logged model carries ``model.pt`` (the weights-only artifact) and its own copy of the code
it runs (``components.common`` and ``components.model``), so that serving needs only the pinned
third-party requirements, and a version keeps the preprocessing it was validated with.
"""

from __future__ import annotations

import dataclasses
import importlib.metadata
import os
import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import mlflow.pyfunc
import numpy as np
import pandas as pd
import torch
from mlflow.exceptions import MlflowException
from mlflow.models import ModelSignature
from mlflow.protos.databricks_pb2 import INVALID_PARAMETER_VALUE
from mlflow.types.schema import Array, ColSpec, ParamSchema, ParamSpec, Schema

from components.common import images
from components.common.distributed import pick_device
from components.common.errors import DalError
from components.model.artifact import ModelInfo, load_model
from components.model.catalog import DEFAULT_POOLING
from components.model.embed import embed
from components.model.pooling import TrackletPooler
from components.model.tracklet_features import BATCH_FRAMES

TRACKLET, IMAGE = "tracklet", "image"
NUM_FRAMES, FEATURE = "num_frames", "feature"
POOLINGS = ("max", "mean")
MODEL_ARTIFACT_KEY = "model"  # the pyfunc artifact holding model.pt
# The packages whose code the logged model carries (everything serving imports from this project).
_CODE_PACKAGES = ("common", "model")
# Third-party distributions serving imports, pinned to the versions that logged the model.
_REQUIREMENTS = ("torch", "torchvision", "timm", "numpy", "pandas", "pyarrow")
# MLflow's "models from code": the logged model holds this script, not a pickled object; loading
# runs it (with the model's code folder on sys.path) to get the PythonModel.
_ENTRY_FILE = "tracklet_embedder.py"
_ENTRY_CODE = """\
\"\"\"MLflow models-from-code entry of a DAL model (components/model/serving.py).\"\"\"
import mlflow.models

from components.model.serving import TrackletEmbedder

mlflow.models.set_model(TrackletEmbedder())
"""


@dataclasses.dataclass(frozen=True)
class TrackletEmbeddings:
    tracklets: list[str]  # in the order of first appearance
    num_frames: np.ndarray  # (T,) int64
    features: np.ndarray  # (T, D) float32, pooled and L2-normalised


def embed_tracklets(
    model: torch.nn.Module,
    info: ModelInfo,
    tracklets: Sequence[Any],
    frames: Sequence[bytes],
    *,
    pooling: str = DEFAULT_POOLING,
    device: torch.device | str = "cpu",
    batch_size: int = BATCH_FRAMES,
) -> TrackletEmbeddings:
    """Pooled, L2-normalised features of the tracklets that ``frames`` (encoded, row by row, with
    their ``tracklets`` ids) belong to; ``model`` in eval mode on ``device``."""
    if len(tracklets) != len(frames):
        raise DalError(f"{len(tracklets)} tracklet ids for {len(frames)} frames")
    if pooling not in POOLINGS:
        raise DalError(f"pooling must be one of {', '.join(POOLINGS)}, got {pooling!r}")
    missing = [i for i, t in enumerate(tracklets) if t is None or (isinstance(t, float) and np.isnan(t))]
    if missing:
        raise DalError(f"{TRACKLET}: row {missing[0]} has no tracklet id")
    codes, uniques = pd.factorize(pd.Series([str(t) for t in tracklets], dtype=object), sort=False)
    device = torch.device(device)
    pooler = TrackletPooler(len(uniques), info.feature_dim, pooling, device)  # type: ignore[arg-type]
    size = (info.image_height, info.image_width)
    with torch.inference_mode():
        for start in range(0, len(frames), batch_size):
            rows = range(start, min(start + batch_size, len(frames)))
            batch = torch.stack([images.resize(_decode(frames[i], i, uniques[codes[i]]), size) for i in rows])
            index = torch.from_numpy(codes[rows.start : rows.stop].astype(np.int64))
            pooler.update(index, embed(model, batch, info.mean, info.std, device))
    return TrackletEmbeddings(
        tracklets=[str(t) for t in uniques],
        num_frames=pooler.counts.cpu().numpy(),
        features=pooler.result().cpu().numpy(),
    )


def _decode(data: Any, row: int, tracklet: str) -> torch.Tensor:
    where = f"{IMAGE}: row {row} (tracklet {tracklet!r})"
    if not isinstance(data, bytes | bytearray | memoryview):
        raise DalError(
            f"{where}: expected encoded image bytes (base64 text in JSON), got {type(data).__name__}"
        )
    return images.decode(data, where)


def as_frame(result: TrackletEmbeddings) -> pd.DataFrame:
    """The pyfunc's output: one row per tracklet."""
    return pd.DataFrame(
        {
            TRACKLET: pd.Series(result.tracklets, dtype=object),
            NUM_FRAMES: result.num_frames.astype(np.int64),
            FEATURE: pd.Series(list(result.features), dtype=object),
        }
    )


class TrackletEmbedder(mlflow.pyfunc.PythonModel):
    """Frames (``tracklet``, ``image`` bytes) -> one pooled embedding per tracklet (module docstring)."""

    def load_context(self, context: Any) -> None:
        self.device = pick_device("auto")  # as `dal extract --device auto`
        model, self.info = load_model(context.artifacts[MODEL_ARTIFACT_KEY], self.device)
        if self.device.type == "cuda":  # what extraction does on CUDA
            model = model.to(memory_format=torch.channels_last)
        self.model = model

    def predict(self, context: Any, model_input: pd.DataFrame, params: dict[str, Any] | None = None) -> Any:
        pooling = (params or {}).get("pooling") or DEFAULT_POOLING
        try:
            frame = _input_frame(model_input)
            result = embed_tracklets(
                self.model,
                self.info,
                frame[TRACKLET].tolist(),
                frame[IMAGE].tolist(),
                pooling=pooling,
                device=self.device,
            )
        except DalError as exc:  # the caller's input: HTTP 400 with the message, not a 500
            raise MlflowException(str(exc), error_code=INVALID_PARAMETER_VALUE) from exc
        return as_frame(result)


def _input_frame(model_input: Any) -> pd.DataFrame:
    if not isinstance(model_input, pd.DataFrame):
        raise DalError(
            f"expected a DataFrame with columns {TRACKLET!r} and {IMAGE!r}, got {type(model_input)}"
        )
    missing = [c for c in (TRACKLET, IMAGE) if c not in model_input.columns]
    if missing:
        raise DalError(f"input: missing column(s) {', '.join(missing)} (got {list(model_input.columns)})")
    return model_input


def signature() -> ModelSignature:
    return ModelSignature(
        inputs=Schema([ColSpec("string", TRACKLET), ColSpec("binary", IMAGE)]),
        outputs=Schema(
            [ColSpec("string", TRACKLET), ColSpec("long", NUM_FRAMES), ColSpec(Array("float"), FEATURE)]
        ),
        params=ParamSchema([ParamSpec("pooling", "string", DEFAULT_POOLING)]),
    )


def requirements() -> list[str]:
    """``name==version`` of what serving imports, local build tags (``+cu130``) dropped."""
    return [f"{name}=={importlib.metadata.version(name).split('+')[0]}" for name in _REQUIREMENTS]


def _copy_code(destination: Path) -> Path:
    """``components/`` holding only the packages serving imports; returns that folder."""
    source = Path(__file__).resolve().parents[1]
    package = destination / source.name
    package.mkdir(parents=True)
    shutil.copy2(source / "__init__.py", package / "__init__.py")
    for name in _CODE_PACKAGES:
        shutil.copytree(source / name, package / name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    return package


def log_model(model_file: str, example: pd.DataFrame, name: str = "model") -> str:
    """Log the pyfunc in the active MLflow run: ``model_file`` (a local ``model.pt``) as its
    artifact, ``example`` (frames of a few tracklets: ``tracklet``, ``image`` bytes) as its input
    example; returns the logged model's ``models:/<model_id>`` URI."""
    with tempfile.TemporaryDirectory(prefix="dal-serving-") as tmp:
        entry = Path(tmp) / _ENTRY_FILE
        entry.write_text(_ENTRY_CODE)
        logged = mlflow.pyfunc.log_model(
            name=name,
            python_model=str(entry),
            artifacts={MODEL_ARTIFACT_KEY: os.path.abspath(model_file)},
            code_paths=[str(_copy_code(Path(tmp)))],
            signature=signature(),
            input_example=example[[TRACKLET, IMAGE]],
            pip_requirements=requirements(),
        )
    return str(logged.model_uri)
