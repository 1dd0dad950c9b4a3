"""Periodic evaluation while training: rank-1 / mAP of the EMA model on the split's test tracklets.

The same evaluation as ``dal extract`` + ``dal evaluate``, reused rather than re-implemented: the
benchmark protocol (``components.evaluate.protocols``), the tracklet features of the model layer
(``components.model.tracklet_features``: embedding and pooling) and the CMC / mAP code
(``components.evaluate.metrics``). Two differences keep it cheap enough to run every few hundred
steps: at most ``max_frames`` frames per tracklet (evenly spaced over it; 0: all) and no files
written. The encoded frames are read once and kept in memory, and decoded again at each evaluation.

Only rank 0 evaluates; person ids are read here for scoring only, never by the objective.
"""

from __future__ import annotations

import logging
import time

import numpy as np
import torch
from torch import nn

from components.common.dataset import Dataset
from components.common.distributed import DistEnv, barrier
from components.common.tracking import RunLogger
from components.evaluate.metrics import METRIC_KEYS, evaluate_features
from components.evaluate.protocols import EvalSet
from components.model.catalog import DEFAULT_POOLING
from components.model.tracklet_features import TrackletFrames

log = logging.getLogger(__name__)

PREFIX = "eval_"


class Validator:
    """Holds the evaluation set of one split (``protocols.build_eval_set``) and its frames;
    ``__call__(model)`` returns the ``eval_*`` metrics."""

    def __init__(
        self,
        dataset: Dataset,
        eval_set: EvalSet,
        image_size: tuple[int, int],
        max_frames: int,
        device: torch.device,
    ) -> None:
        self.eval_set = eval_set
        split = eval_set.split
        query, gallery = self.eval_set.query, self.eval_set.gallery
        ids = np.union1d(query["tracklet_id"].to_numpy(np.int64), gallery["tracklet_id"].to_numpy(np.int64))
        self.q_rows = np.searchsorted(ids, query["tracklet_id"].to_numpy(np.int64))
        self.g_rows = np.searchsorted(ids, gallery["tracklet_id"].to_numpy(np.int64))
        self.image_size = image_size
        self.device = device
        self.frames = TrackletFrames(dataset, ids, max_frames)
        log.info(
            "periodic evaluation: %d query / %d gallery tracklets of split %d, %d frames (<= %s each)",
            len(query), len(gallery), split, self.frames.num_frames, max_frames or "all",
        )  # fmt: skip

    def __call__(self, model: nn.Module) -> dict[str, float]:
        """Evaluate ``model`` (a backbone returning features; left in the mode it was in)."""
        started = time.perf_counter()
        features = self.frames.features(model, self.image_size, self.device, DEFAULT_POOLING).cpu().numpy()
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
