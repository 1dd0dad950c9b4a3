"""The same-person threshold of ``dal search``: given, or measured by ``dal evaluate``.

``--threshold auto`` reads ``threshold_at_fpr_<rate>`` (``--threshold-fpr``, default 0.01): the
smallest cosine similarity at which at most that fraction of the evaluation's impostor pairs
(different persons) was accepted. In order:

1. ``--threshold-from``: a ``metrics.json`` of ``dal evaluate`` or ``dal aggregate`` (the mean
   over splits), or the output folder holding it;
2. the registered model version ``--model models:/<name>@<alias>`` (or, without ``--model``, the
   registered model the gallery was extracted with): its tag ``metric.threshold_at_fpr_<rate>``,
   which the pipeline writes from the aggregated evaluation. An alias names the version it points
   to *now*; the version used is logged and recorded.
"""

from __future__ import annotations

import dataclasses
import logging

from components.common import registry, storage
from components.common.errors import DalError
from components.common.tracking import resolve_tracking_uri
from components.evaluate.metrics import threshold_key
from components.search.config import AUTO, SearchConfig

log = logging.getLogger(__name__)

METRICS_FILE = "metrics.json"


class ThresholdError(DalError, ValueError):
    """``--threshold auto`` found no threshold; the message says where it looked."""


@dataclasses.dataclass(frozen=True)
class Threshold:
    value: float | None  # None: no same-person decision
    source: str  # "", "given", a metrics.json URI or "models:/<name>/<version> tag metric.<key>"


def resolve_threshold(config: SearchConfig, gallery_model: str) -> Threshold:
    """The threshold ``config`` asks for; ``gallery_model``: the model URI the gallery was extracted with."""
    if config.threshold is None:
        return Threshold(None, "")
    if config.threshold != AUTO:
        return Threshold(float(config.threshold), "given")
    key = threshold_key(config.threshold_fpr)
    if config.threshold_from:
        return _from_metrics(config.threshold_from, key)
    model = config.model or gallery_model
    if registry.is_registry_uri(model):
        return _from_registry(model, key, config.mlflow_tracking_uri)
    raise ThresholdError(
        f"threshold: auto needs --threshold-from (a dal evaluate or dal aggregate metrics.json) or a "
        f"registered model --model models:/<name>@<alias> whose version carries the tag metric.{key}; "
        f"the model here is {model or 'not known'!r}"
    )


def _from_metrics(uri: str, key: str) -> Threshold:
    path = uri if uri.endswith(".json") else storage.join(uri, METRICS_FILE)
    if not storage.exists(path):
        raise ThresholdError(f"threshold_from: {path} does not exist")
    document = storage.read_json(path)
    if not isinstance(document, dict):
        raise ThresholdError(f"threshold_from: {path} is not a JSON object")
    if document.get("evaluated") is False:
        raise ThresholdError(
            f"threshold_from: {path} holds no evaluation ({document.get('note', 'skipped')})"
        )
    if key not in document:
        raise ThresholdError(
            f"threshold_from: {path} has no {key!r} (not a dal evaluate / aggregate metrics.json, or one "
            "written before verification metrics existed: evaluate again)"
        )
    value = float(document[key])
    log.info("threshold %.6f: %s of %s", value, key, path)
    return Threshold(value, path)


def _from_registry(model: str, key: str, tracking_uri: str) -> Threshold:
    uri = resolve_tracking_uri(tracking_uri)
    if not uri:
        raise ThresholdError(
            f"threshold: auto reads {model} from the registry: no MLflow tracking URI is set"
        )
    version = registry.get_version(uri, model)
    if key not in version.metrics:
        raise ThresholdError(
            f"threshold: {model} (version {version.version}) has no tag {registry.METRIC_TAG_PREFIX}{key} "
            "(registered before verification metrics existed?); give --threshold-from or a number"
        )
    value = float(version.metrics[key])
    source = f"{version.uri} tag {registry.METRIC_TAG_PREFIX}{key}"
    log.info("threshold %.6f: %s", value, source)
    return Threshold(value, source)
