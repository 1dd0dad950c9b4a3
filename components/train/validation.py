"""Periodic evaluation while training: rank-1 / mAP of the EMA model on the split's test tracklets.

The same evaluation as ``dal extract`` + ``dal evaluate``, reused rather than re-implemented: the
benchmark protocol (``components.evaluate.protocols``), the frame-feature pooling
(``components.extract.pooling``) and the CMC / mAP code (``components.evaluate.metrics``). Two
differences keep it cheap enough to run every few hundred steps: at most ``max_frames`` frames
per tracklet (evenly spaced over it; 0: all) and no files written. The encoded frames are read
once and kept in memory (their compressed size), and decoded again at each evaluation.

Only rank 0 evaluates; person ids are read here for scoring only, never by the objective.
"""

from __future__ import annotations

import dataclasses
import logging
import time

import numpy as np
import torch
from torch import nn

from components.common import images
from components.common.dataset import Dataset
from components.common.distributed import DistEnv, barrier
from components.common.tracking import RunLogger
from components.evaluate.metrics import METRIC_KEYS, evaluate_features
from components.evaluate.protocols import build_eval_set
from components.extract.config import ExtractConfig
from components.extract.pooling import TrackletPooler
from components.extract.run import embed, row_groups_for
from components.train.model_io import IMAGENET_MEAN, IMAGENET_STD

log = logging.getLogger(__name__)

# The pooling that `dal extract` applies by default, so that eval_rank1 tracks what it will report.
POOLING = next(f.default for f in dataclasses.fields(ExtractConfig) if f.name == "pooling")
BATCH_FRAMES = 256
PREFIX = "eval_"
_KEY = 1 << 32  # frame indices are int32


def spaced_positions(num_frames: int, max_frames: int) -> np.ndarray:
    """``max_frames`` frame indices spread evenly over ``0..num_frames - 1`` (all when 0 or more)."""
    if max_frames <= 0 or num_frames <= max_frames:
        return np.arange(num_frames)
    return np.unique(np.linspace(0, num_frames - 1, max_frames).round().astype(np.int64))


class Validator:
    """Holds the evaluation set of one split; ``__call__(model)`` returns the ``eval_*`` metrics."""

    def __init__(
        self,
        dataset: Dataset,
        split: int,
        image_size: tuple[int, int],
        max_frames: int,
        device: torch.device,
    ) -> None:
        tracklets = dataset.tracklets()
        self.eval_set = build_eval_set(dataset.name, tracklets, dataset.splits(), split=split)
        query, gallery = self.eval_set.query, self.eval_set.gallery
        ids = np.union1d(query["tracklet_id"].to_numpy(np.int64), gallery["tracklet_id"].to_numpy(np.int64))
        self.tracklet_ids = ids
        self.q_rows = np.searchsorted(ids, query["tracklet_id"].to_numpy(np.int64))
        self.g_rows = np.searchsorted(ids, gallery["tracklet_id"].to_numpy(np.int64))
        self.image_size = image_size
        self.device = device
        lengths = tracklets.set_index("tracklet_id").loc[ids, "num_frames"].to_numpy(np.int64)
        # One int64 key per wanted frame: (tracklet id, frame index), matched vectorised per row group.
        wanted = np.concatenate(
            [t * _KEY + spaced_positions(int(n), max_frames) for t, n in zip(ids, lengths, strict=True)]
        )
        self.encoded: list[bytes] = []
        rows: list[np.ndarray] = []
        for ref in row_groups_for(dataset, ids):
            table = dataset.read_row_group(ref, ["tracklet_id", "frame_index", "image"])
            tids = table.column("tracklet_id").to_numpy().astype(np.int64)
            keys = tids * _KEY + table.column("frame_index").to_numpy().astype(np.int64)
            keep = np.flatnonzero(np.isin(keys, wanted))
            column = table.column("image")
            self.encoded.extend(column[int(i)].as_py() for i in keep)
            rows.append(np.searchsorted(ids, tids[keep]))
        self.rows = torch.from_numpy(np.concatenate(rows) if rows else np.zeros(0, np.int64))
        log.info(
            "periodic evaluation: %d query / %d gallery tracklets of split %d, %d frames (<= %s each)",
            len(query), len(gallery), split, self.num_frames, max_frames or "all",
        )  # fmt: skip

    @property
    def num_frames(self) -> int:
        return len(self.encoded)

    def _embed(self, model: nn.Module, start: int, stop: int) -> torch.Tensor:
        batch = torch.stack(
            [
                images.resize(images.decode(data, "evaluation frame"), self.image_size)
                for data in self.encoded[start:stop]
            ]
        )
        return embed(model, batch, IMAGENET_MEAN, IMAGENET_STD, self.device)

    def __call__(self, model: nn.Module) -> dict[str, float]:
        """Evaluate ``model`` (a backbone returning features; left in the mode it was in)."""
        started = time.perf_counter()
        was_training = model.training
        model.eval()
        feature_dim = int(model.feature_dim)  # set by build_backbone
        pooler = TrackletPooler(len(self.tracklet_ids), feature_dim, POOLING, self.device)
        try:
            with torch.inference_mode():
                for start in range(0, self.num_frames, BATCH_FRAMES):
                    stop = min(start + BATCH_FRAMES, self.num_frames)
                    pooler.update(self.rows[start:stop], self._embed(model, start, stop))
        finally:
            model.train(was_training)
        features = pooler.result().cpu().numpy()
        query, gallery = self.eval_set.query, self.eval_set.gallery
        result = evaluate_features(
            features[self.q_rows],
            features[self.g_rows],
            query["person_id"].to_numpy(),
            gallery["person_id"].to_numpy(),
            query["camera_id"].to_numpy(),
            gallery["camera_id"].to_numpy(),
        )
        metrics = {PREFIX + key: float(result[key]) for key in METRIC_KEYS}
        metrics[PREFIX + "seconds"] = time.perf_counter() - started
        return metrics


class PeriodicEvaluation:
    """When to evaluate, and the history of results; every rank calls it, rank 0 alone evaluates.

    The others wait at a barrier meanwhile, so no rank runs ahead into the next collective.
    """

    def __init__(self, validator: Validator | None, every: int, env: DistEnv) -> None:
        self.validator = validator
        self.every = every
        self.env = env
        self.history: list[dict[str, float]] = []

    def due(self, step: int, last_step: int) -> bool:
        return self.every > 0 and (step % self.every == 0 or step == last_step)

    def __call__(
        self, step: int, model: nn.Module, logger: RunLogger, extra: dict[str, float] | None = None
    ) -> dict[str, float]:
        """Evaluate ``model`` at ``step``, log ``eval_*`` metrics and record them with ``extra``."""
        metrics: dict[str, float] = {}
        if self.validator is not None:
            metrics = self.validator(model)
            logger.log_metrics(metrics, step=step)
            self.history.append({"step": step, **metrics, **(extra or {})})
            log.info(
                "step %d: eval rank-1 %.2f %%, mAP %.2f %% (%.1f s)",
                step, 100 * metrics["eval_rank1"], 100 * metrics["eval_mAP"], metrics["eval_seconds"],
            )  # fmt: skip
        barrier(self.env)
        return metrics
