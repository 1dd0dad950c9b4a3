"""``dal aggregate``: average per-split evaluations (PRID2011 / iLIDS-VID: 10 splits) into one result.

Input: the ``metrics.json`` of each split's ``dal evaluate`` (or the directories holding them).
Output ``metrics.json``: the mean of every metric under its own name (``rank1``, ..., ``mAP``,
``mAP_trapezoid``, ``mINP``; fractions in [0, 1]) and its standard deviation over splits as ``<name>_std``
(population std, ddof = 0), the mean CMC curve ``cmc`` and ``cmc_std``, ``num_splits``, and the
per-split values kept in ``per_split``; plus ``cmc.png`` (mean curve with a +-1 std band).
Other numbers every split reports (the verification figures, ``tpr_at_fpr_*``, ``threshold_at_fpr_*``,
``roc_auc``) are averaged the same way; counts (``metrics.COUNT_KEYS``) become ``mean_<count>``.
Evaluations that were skipped (own footage without labels:
``"evaluated": false`` and a ``note``) aggregate to the same: ``evaluated`` false, the note, no
metrics and no plot; a mix of skipped and scored splits is an error.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import numpy as np

from components.common import storage
from components.common.errors import DalError
from components.common.tracking import step_run
from components.evaluate import plots
from components.evaluate.config import AggregateConfig
from components.evaluate.metrics import COUNT_KEYS, METRIC_KEYS

log = logging.getLogger(__name__)

SAME_KEYS = ("dataset", "protocol", "direction")


class AggregateError(DalError, ValueError):
    """Per-split results that cannot be averaged together; the message names the input."""


def metrics_uri(uri: str) -> str:
    """A metrics.json URI, or the directory (evaluate output) that holds one."""
    return uri if uri.endswith(".json") else storage.join(uri, "metrics.json")


def _skipped(per_split: Sequence[dict[str, Any]], names: Sequence[str]) -> dict[str, Any] | None:
    """The aggregate of skipped evaluations, None when every split was scored."""
    skipped = [name for name, r in zip(names, per_split, strict=True) if r.get("evaluated") is False]
    if not skipped:
        return None
    if len(skipped) != len(per_split):
        raise AggregateError(f"{skipped[0]} was not evaluated but other splits were: they cannot be averaged")
    first = per_split[0]
    return {"evaluated": False, "note": str(first.get("note", "")), "dataset": first.get("dataset"),
            "num_splits": len(per_split)}  # fmt: skip


def aggregate_metrics(
    per_split: Sequence[dict[str, Any]], names: Sequence[str] | None = None
) -> dict[str, Any]:
    """Mean and std over splits of each metric and of the CMC curve; per-split values kept."""
    names = list(names or [f"input {i}" for i in range(len(per_split))])
    if not per_split:
        raise AggregateError("nothing to aggregate")
    skipped = _skipped(per_split, names)
    if skipped is not None:
        return skipped
    for name, result in zip(names, per_split, strict=True):
        missing = [k for k in (*METRIC_KEYS, "cmc", "split") if k not in result]
        if missing:
            raise AggregateError(f"{name}: missing {', '.join(missing)} (not a dal evaluate metrics.json)")
    for key in SAME_KEYS:
        values = {str(r.get(key)) for r in per_split}
        if len(values) > 1:
            raise AggregateError(f"the inputs mix {key} values {sorted(values)}")
    splits = [int(r["split"]) for r in per_split]
    if len(set(splits)) != len(splits):
        raise AggregateError(f"a split appears twice among the inputs: {sorted(splits)}")
    lengths = {len(r["cmc"]) for r in per_split}
    if len(lengths) > 1:
        raise AggregateError(f"the CMC curves differ in length: {sorted(lengths)}")
    order = np.argsort(splits)
    per_split = [per_split[i] for i in order]
    result: dict[str, Any] = {key: per_split[0].get(key) for key in SAME_KEYS}
    result["num_splits"] = len(per_split)
    shared = [
        k for k in per_split[0] if k not in METRIC_KEYS and all(_is_number(r.get(k)) for r in per_split)
    ]
    extra = [k for k in shared if k not in COUNT_KEYS and k != "split"]
    for key in (*METRIC_KEYS, *extra):
        values = np.array([float(r[key]) for r in per_split])
        result[key] = float(values.mean())
        result[f"{key}_std"] = float(values.std())
    for key in COUNT_KEYS:
        if all(key in r for r in per_split):
            result[f"mean_{key}"] = float(np.mean([r[key] for r in per_split]))
    curves = np.array([r["cmc"] for r in per_split], dtype=float)
    result["cmc"] = curves.mean(axis=0).tolist()
    result["cmc_std"] = curves.std(axis=0).tolist()
    result["per_split"] = [
        {"split": int(r["split"]), **{k: float(r[k]) for k in METRIC_KEYS}} for r in per_split
    ]
    return result


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def run(config: AggregateConfig) -> dict[str, Any]:
    with step_run("aggregate", config) as logger:
        uris = [metrics_uri(u) for u in config.inputs]
        per_split = []
        for uri in uris:
            document = storage.read_json(uri)
            if not isinstance(document, dict):
                raise AggregateError(f"{uri}: not a JSON object")
            per_split.append(document)
        result = aggregate_metrics(per_split, uris)
        if result.get("evaluated") is False:
            return _record_skipped(config, result, logger)
        title = f"{result['dataset']}: mean CMC over {result['num_splits']} split(s)"
        png = plots.cmc_png({"mean": result["cmc"]}, std={"mean": result["cmc_std"]}, title=title)
        storage.ensure_dir(config.output)
        outputs = {
            "metrics": storage.join(config.output, "metrics.json"),
            "cmc": storage.join(config.output, "cmc.png"),
        }
        storage.write_json(outputs["metrics"], result)
        storage.write_bytes(outputs["cmc"], png)
        flat = {k: v for k, v in result.items() if isinstance(v, float | int) and not isinstance(v, bool)}
        log.info(
            "%s over %d splits: %s",
            result["dataset"],
            result["num_splits"],
            ", ".join(f"{k} {100 * result[k]:.2f} ± {100 * result[k + '_std']:.2f} %" for k in METRIC_KEYS),
        )
        logger.log_metrics(flat)
        for entry in result["per_split"]:  # per-split values as metric histories over step = split
            logger.log_metrics({f"split_{k}": entry[k] for k in METRIC_KEYS}, step=entry["split"])
        logger.log_dict(result, "metrics.json")
        logger.log_bytes(png, "cmc.png")
        return {
            "metrics": flat,
            "percent": {k: round(100 * result[k], 2) for k in METRIC_KEYS},
            "percent_std": {k: round(100 * result[f"{k}_std"], 2) for k in METRIC_KEYS},
            "num_splits": result["num_splits"],
            "outputs": outputs,
            "mlflow_run_id": logger.run_id,
        }


def _record_skipped(config: AggregateConfig, result: dict[str, Any], logger: Any) -> dict[str, Any]:
    """Write and log the aggregate of skipped evaluations: the note, no metrics."""
    uri = storage.join(config.output, "metrics.json")
    storage.ensure_dir(config.output)
    storage.write_json(uri, result)
    log.warning(
        "%s: not evaluated over %d split(s): %s", result["dataset"], result["num_splits"], result["note"]
    )
    logger.set_tags({"dal.evaluation": f"skipped: {result['note']}"[:5000]})
    logger.log_dict(result, "metrics.json")
    return {
        "metrics": {},
        "evaluated": False,
        "note": result["note"],
        "num_splits": result["num_splits"],
        "outputs": {"metrics": uri},
        "mlflow_run_id": logger.run_id,
    }
