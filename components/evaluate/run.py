"""``dal evaluate``: CMC rank-k and mAP under the dataset's benchmark protocol, with plots.

Reads the tracklet features (``features.parquet``) and the dataset's tracklet tables, checks that
they fit (same tracklets, persons and cameras; no NaN; features of the evaluated split), builds
the query and gallery sets (``protocols``), ranks (``metrics``) and writes to ``output``:

* ``metrics.json``: flat scalars (``rank1`` ``rank5`` ``rank10`` ``rank20`` ``mAP``
  ``mAP_trapezoid`` ``mINP`` as fractions in [0, 1], query/gallery counts, ``split``, ``protocol``,
  ``direction``, ``dataset``, ``evaluated`` true) plus ``cmc``, the whole curve as a list; and the
  verification over the same query x gallery pairs (``metrics.verification_metrics``):
  ``tpr_at_fpr_0.001`` / ``0.01`` / ``0.1``, the cosine-similarity thresholds achieving them
  ``threshold_at_fpr_0.001`` / ``0.01`` / ``0.1`` (same person when similarity >= threshold),
  ``roc_auc``, ``num_genuine_pairs``, ``num_impostor_pairs``; with ``--rerank`` / ``--aqe``
  the ranking metrics once more per variant (``variant_metrics``): ``rerank_<metric>`` after
  k-reciprocal re-ranking, ``aqe_<metric>`` after average query expansion, ``aqe_rerank_<metric>``
  after both (``components.evaluate.rerank``);
* ``cmc.png``, ``roc.png`` and ``ranklist.png`` (one frame per tracklet: query, then its top
  gallery tracklets framed green when the person matches and red otherwise; junk is not shown).

All are logged to MLflow when tracking is on (the scalars as metrics, the curve as metric
``cmc`` over steps 1..max_rank; tag ``dal.evaluation`` = ``evaluated``). The printed summary
also gives the metrics in percent. Aggregated over splits, the thresholds become the registered
model version's ``metric.threshold_at_fpr_*`` tags, which ``dal search --threshold auto`` reads.

Own footage without labels (``protocols.NoLabelsError``: no labelled test tracklets, or no
person labelled in two cameras) is not an error: ``metrics.json`` is then ``{"evaluated": false,
"note": <why>, "dataset", "protocol", "split", "direction"}``, no plot is written, the tag
``dal.evaluation`` is ``skipped: <why>``, the note is printed and logged as a warning, and the
summary carries ``evaluated`` false, the note and no metrics.
"""

from __future__ import annotations

import logging
import os
import time
from typing import Any

import numpy as np
import pandas as pd

from components.common import storage
from components.common.dataset import Dataset
from components.common.features import Features, FeaturesError, read_features
from components.common.tracking import step_run
from components.evaluate import metrics as metrics_lib
from components.evaluate import plots
from components.evaluate.config import EvaluateConfig
from components.evaluate.metrics import METRIC_KEYS, VERIFICATION_FPRS, threshold_key, tpr_key
from components.evaluate.protocols import (
    EvalSet,
    NoLabelsError,
    ProtocolError,
    build_eval_set,
    protocol_for,
    rows_of,
)
from components.evaluate.rerank import average_query_expansion, k_reciprocal_distances

log = logging.getLogger(__name__)

METRICS_FILE = "metrics.json"
CMC_FILE = "cmc.png"
ROC_FILE = "roc.png"
EVALUATION_TAG = "dal.evaluation"
RANKLIST_FILE = "ranklist.png"
RANKLIST_CELL = (128, 64)  # (height, width) of one frame in ranklist.png


def check_features(features: Features, tracklets: pd.DataFrame, features_uri: str) -> None:
    """The features must describe tracklets of this dataset, with the same persons and cameras."""
    table_ids = tracklets["tracklet_id"].to_numpy(dtype=np.int64)
    order = np.argsort(table_ids)
    pos = np.searchsorted(table_ids, features.tracklet_id, sorter=order).clip(max=len(order) - 1)
    rows = order[pos]
    unknown = table_ids[rows] != features.tracklet_id
    if unknown.any():
        raise FeaturesError(
            f"{features_uri}: {int(unknown.sum())} tracklet_id(s) are not in the dataset's tracklets.parquet "
            f"(first: {int(features.tracklet_id[np.argmax(unknown)])}); features and dataset do not match"
        )
    for column, values in (("person_id", features.person_id), ("camera_id", features.camera_id)):
        expected = tracklets[column].to_numpy(dtype=np.int64)[rows]
        differs = expected != values
        if differs.any():
            first = int(np.argmax(differs))
            tracklet, got, want = (int(a[first]) for a in (features.tracklet_id, values, expected))
            raise FeaturesError(
                f"{features_uri}: {column} of tracklet {tracklet} is {got} but {want} in the dataset's "
                "tracklets.parquet; features and dataset do not match"
            )


def resolve_split(config: EvaluateConfig, features: Features, protocol: str) -> int:
    """The evaluated split; features extracted for another split (or the train subset) do not fit."""
    meta_split = features.metadata.get("split")
    subset = features.metadata.get("subset")
    if subset == "train":
        raise ProtocolError(
            f"{config.features}: features of the train subset cannot be evaluated (extract --subset test)"
        )
    if protocol == "mars":
        return 0 if config.split == -1 else config.split
    split = int(meta_split) if config.split == -1 and meta_split is not None else max(config.split, 0)
    if meta_split is not None and int(meta_split) != split:
        raise ProtocolError(
            f"{config.features}: features were extracted for split {meta_split}, evaluation asks for split "
            f"{split} (a model trained on one split must be evaluated on that split's test persons)"
        )
    return split


def _ranklist_png(
    dataset: Dataset,
    eval_set: EvalSet,
    q_feats: np.ndarray,
    g_feats: np.ndarray,
    result: dict[str, Any],
    num_queries: int,
    top_k: int,
) -> bytes:
    """Evenly spaced queries (among those with a match) and their top-k non-junk gallery tracklets."""
    valid = np.flatnonzero(result["per_query"]["first_rank"] > 0)
    chosen = valid[
        np.unique(np.linspace(0, len(valid) - 1, min(num_queries, len(valid))).round().astype(int))
    ]
    query, gallery = eval_set.query.iloc[chosen], eval_set.gallery
    distances = metrics_lib.pairwise_distances(q_feats[chosen], g_feats)
    top, matches = metrics_lib.ranked_gallery(
        distances,
        query["person_id"].to_numpy(),
        gallery["person_id"].to_numpy(),
        query["camera_id"].to_numpy(),
        gallery["camera_id"].to_numpy(),
        top_k,
    )
    g_ids = gallery["tracklet_id"].to_numpy()
    needed = np.concatenate([query["tracklet_id"].to_numpy(), g_ids[top[top >= 0]]])
    frames = plots.first_frames(dataset, needed, RANKLIST_CELL)
    rows = []
    for i, (_, q) in enumerate(query.iterrows()):
        shown = [frames.get(int(g_ids[j])) if j >= 0 else None for j in top[i]]
        ap = result["per_query"]["ap"][chosen[i]]
        label = f"tracklet {q['tracklet_id']}\nperson {q['person_id']}, cam {q['camera_id'] + 1}\nAP {ap:.2f}"
        rows.append(plots.RankRow(frames.get(int(q["tracklet_id"])), shown, matches[i].tolist(), label))
    return plots.ranklist_png(rows, RANKLIST_CELL)


VARIANT_PREFIXES = ("rerank_", "aqe_", "aqe_rerank_")


def percent_keys(flat: dict[str, float]) -> list[str]:
    """The ranking metrics of ``flat`` (plain, then each variant present), in report order."""
    return [p + k for p in ("", *VARIANT_PREFIXES) for k in METRIC_KEYS if p + k in flat]


def _percent_line(flat: dict[str, float]) -> str:
    ranking = ", ".join(f"{key} {100 * flat[key]:.2f} %" for key in percent_keys(flat))
    verification = ", ".join(
        f"TPR {100 * flat[tpr_key(f)]:.2f} % at FPR {f:g} (similarity >= {flat[threshold_key(f)]:.4f})"
        for f in VERIFICATION_FPRS
        if tpr_key(f) in flat
    )
    return f"{ranking}; {verification}" if verification else ranking


def variant_metrics(
    config: EvaluateConfig,
    q_feats: np.ndarray,
    g_feats: np.ndarray,
    ids: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray],
) -> dict[str, float]:
    """The ranking metrics after query expansion (``aqe_*``), re-ranking (``rerank_*``) and both
    (``aqe_rerank_*``: re-ranked expanded features, fast-reid's order), as configured."""
    rerank, aqe = config.rerank_settings, config.aqe_settings
    variants = [("", q_feats, g_feats)]
    if aqe is not None:
        started = time.perf_counter()
        expanded = average_query_expansion(q_feats, g_feats, aqe.k, aqe.alpha)
        log.info("query expansion (k %d, alpha %g): %.1f s", aqe.k, aqe.alpha, time.perf_counter() - started)
        variants.append(("aqe_", *expanded))
    workers = config.threads or len(os.sched_getaffinity(0))
    found: dict[str, float] = {}
    for prefix, query, gallery in variants:
        if prefix:
            result = metrics_lib.evaluate_features(
                query, gallery, *ids, config.max_rank, chunk_size=config.chunk_size, workers=workers
            )
            found |= {prefix + key: float(result[key]) for key in METRIC_KEYS}
        if rerank is not None:
            started = time.perf_counter()
            distances = k_reciprocal_distances(query, gallery, rerank.k1, rerank.k2, rerank.lambda_value)
            log.info(
                "re-ranking (k1 %d, k2 %d, lambda %g) of %d x %d: %.1f s", rerank.k1, rerank.k2,
                rerank.lambda_value, len(query), len(gallery), time.perf_counter() - started,
            )  # fmt: skip
            result = metrics_lib.evaluate_rank(
                distances, *ids, config.max_rank, chunk_size=config.chunk_size, workers=workers
            )
            found |= {f"{prefix}rerank_{key}": float(result[key]) for key in METRIC_KEYS}
    return found


def evaluate(
    config: EvaluateConfig, dataset: Dataset | None = None
) -> tuple[dict[str, Any], dict[str, bytes]]:
    """Compute metrics.json's content and the PNGs (no writing); ``dataset``: config.dataset, opened."""
    dataset = dataset or Dataset.open(config.dataset)
    tracklets = dataset.tracklets()
    features = read_features(config.features)
    check_features(features, tracklets, config.features)
    meta_name = features.metadata.get("dataset_name")
    if meta_name is not None and meta_name != dataset.name:
        raise FeaturesError(f"{config.features}: features of dataset {meta_name!r}, not of {dataset.name!r}")
    protocol = protocol_for(dataset.name, config.protocol)
    split = resolve_split(config, features, protocol)
    try:
        eval_set = build_eval_set(
            dataset.name,
            tracklets,
            dataset.splits(),
            protocol=protocol,
            split=split,
            direction=config.direction,
        )
    except NoLabelsError as exc:
        skipped = {"evaluated": False, "note": str(exc), "dataset": dataset.name, "protocol": protocol,
                   "split": split, "direction": config.direction}  # fmt: skip
        return skipped, {}
    q_rows = rows_of(features.tracklet_id, eval_set.query["tracklet_id"].to_numpy(), "query", config.features)
    g_rows = rows_of(
        features.tracklet_id, eval_set.gallery["tracklet_id"].to_numpy(), "gallery", config.features
    )
    q_feats, g_feats = features.feature[q_rows], features.feature[g_rows]
    result = metrics_lib.evaluate_features(
        q_feats,
        g_feats,
        eval_set.query["person_id"].to_numpy(),
        eval_set.gallery["person_id"].to_numpy(),
        eval_set.query["camera_id"].to_numpy(),
        eval_set.gallery["camera_id"].to_numpy(),
        config.max_rank,
        chunk_size=config.chunk_size,
        workers=config.threads or len(os.sched_getaffinity(0)),
        per_query=True,
    )
    ids = (
        eval_set.query["person_id"].to_numpy(),
        eval_set.gallery["person_id"].to_numpy(),
        eval_set.query["camera_id"].to_numpy(),
        eval_set.gallery["camera_id"].to_numpy(),
    )
    verification = metrics_lib.verification_features(q_feats, g_feats, *ids, chunk_size=config.chunk_size)
    flat = metrics_lib.flat_metrics(result) | metrics_lib.flat_metrics(verification)
    flat |= variant_metrics(config, q_feats, g_feats, ids)
    document: dict[str, Any] = {
        "evaluated": True,
        **flat,
        "dataset": dataset.name,
        "protocol": eval_set.protocol,
        "split": eval_set.split,
        "direction": eval_set.direction,
        "cmc": [float(v) for v in result["cmc"]],
    }
    title = f"{dataset.name} ({eval_set.protocol}, split {eval_set.split}, {eval_set.direction})"
    pictures = {
        CMC_FILE: plots.cmc_png({"CMC": result["cmc"]}, title=f"CMC — {title}"),
        ROC_FILE: plots.roc_png(
            verification["roc"]["fpr"],
            verification["roc"]["tpr"],
            {f: (verification[tpr_key(f)], verification[threshold_key(f)]) for f in VERIFICATION_FPRS},
            title=f"verification ROC — {title}",
        ),
    }
    if config.num_ranklist_queries:
        pictures[RANKLIST_FILE] = _ranklist_png(
            dataset, eval_set, q_feats, g_feats, result, config.num_ranklist_queries, config.ranklist_size
        )
    return document, pictures


def run(config: EvaluateConfig) -> dict[str, Any]:
    with step_run("evaluate", config) as logger:
        dataset = Dataset.open(config.dataset)
        logger.log_dataset(dataset.name, dataset.root, dataset.digest, "evaluation")
        document, pictures = evaluate(config, dataset)
        storage.ensure_dir(config.output)
        outputs = {"metrics": storage.join(config.output, METRICS_FILE)}
        if document["evaluated"] is False:
            return _skipped(document, outputs, logger)
        flat = metrics_lib.flat_metrics({k: v for k, v in document.items() if k != "split"})
        storage.write_json(outputs["metrics"], document)
        for name, png in pictures.items():
            outputs[name.removesuffix(".png")] = storage.join(config.output, name)
            storage.write_bytes(outputs[name.removesuffix(".png")], png)
        log.info("%s: %s", document["dataset"], _percent_line(flat))
        logger.set_tags({f"dal.{k}": document[k] for k in ("dataset", "protocol", "split", "direction")})
        logger.set_tags({EVALUATION_TAG: "evaluated"})
        logger.log_metrics(flat)
        for rank, value in enumerate(document["cmc"], start=1):
            logger.log_metrics({"cmc": value}, step=rank)
        logger.log_dict(document, METRICS_FILE)
        for name, png in pictures.items():
            logger.log_bytes(png, name)
        return {
            "metrics": flat,
            "percent": {k: round(100 * flat[k], 2) for k in percent_keys(flat)},
            "protocol": document["protocol"],
            "split": document["split"],
            "direction": document["direction"],
            "outputs": outputs,
            "evaluated": True,
            "mlflow_run_id": logger.run_id,
        }


def _skipped(document: dict[str, Any], outputs: dict[str, str], logger: Any) -> dict[str, Any]:
    """Own footage without labels: metrics.json with the note, no plots, the note logged."""
    storage.write_json(outputs["metrics"], document)
    note = document["note"]
    # A warning reaches stderr even where logging is not configured (Python's last-resort handler).
    log.warning("%s: NOT EVALUATED: %s", document["dataset"], note)
    logger.set_tags({f"dal.{k}": document[k] for k in ("dataset", "protocol", "split", "direction")})
    logger.set_tags({EVALUATION_TAG: f"skipped: {note}"[:5000]})  # MLflow's tag value limit
    logger.log_dict(document, METRICS_FILE)
    return {
        "evaluated": False,
        "note": note,
        "metrics": {},
        "protocol": document["protocol"],
        "split": document["split"],
        "direction": document["direction"],
        "outputs": outputs,
        "mlflow_run_id": logger.run_id,
    }
