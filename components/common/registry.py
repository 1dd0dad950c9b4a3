"""The MLflow model registry: one candidate version per pipeline run, promoted by alias.

MLflow 3 aliases, not stages: ``candidate`` names the newest registered version and ``champion``
the best one so far; ``models:/<name>@champion`` is what serving and ``dal extract`` load.

Version tags (everything the registry page needs without opening runs):

* ``metric.<key>``: the pipeline run's aggregated metrics as given, e.g. ``metric.rank1``
  ``metric.rank5`` ``metric.rank10`` ``metric.rank20`` ``metric.mAP`` ``metric.mAP_trapezoid`` ``metric.mINP``
  (fractions in [0, 1], means over splits), ``metric.rank1_std`` ..., ``metric.num_splits``;
  written with ``repr`` so they read back exactly and a tie is a tie;
* the caller's tags, by convention ``dataset`` (required: promotion compares only within one
  dataset), ``pipeline_job_id``, ``split``, ``backbone``, ``storage_uri`` (of ``model.pt``);
* ``mlflow_model_uri``: the logged model it was registered from;
* after ``promote_champion``: ``promotion`` (``promoted`` | ``kept``), ``promotion.reason`` and
  ``promotion.champion_before`` (the champion's version then, or ``none``).

Every function takes the tracking URI explicitly and sets no global MLflow state.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import math
import os
import tempfile
from collections.abc import Iterator, Mapping
from typing import Any

from components.common.errors import DalError

log = logging.getLogger(__name__)

CANDIDATE_ALIAS = "candidate"
CHAMPION_ALIAS = "champion"
METRIC_TAG_PREFIX = "metric."
DATASET_TAG = "dataset"
STORAGE_URI_TAG = "storage_uri"
MLFLOW_MODEL_URI_TAG = "mlflow_model_uri"
PROMOTION_TAG = "promotion"
PROMOTION_REASON_TAG = "promotion.reason"
PROMOTION_CHAMPION_BEFORE_TAG = "promotion.champion_before"
PROMOTED, KEPT = "promoted", "kept"
# A candidate trained on own footage without labels has no metrics: this tag says why (never promoted).
EVALUATION_TAG = "evaluation"
# The metrics promotion compares (higher is better for both); see promote_champion.
PROMOTION_METRICS = ("rank1", "mAP")
# Training logs the weights-only artifact at the root of its run under this name
# (components.train.publish.MODEL_FILE; common cannot import train, a test checks they agree).
MODEL_ARTIFACT = "model.pt"
MODELS_SCHEME = "models:/"
MAX_TAG_VALUE_CHARS = 5000  # MLflow's limit for a model version tag value
DESCRIPTION = (
    "DAL (Deep Association Learning) person re-ID embedding model: a pyfunc that takes frames "
    "(tracklet id + JPEG/PNG bytes) and returns one L2-normalised embedding per tracklet; "
    "`mlflow models serve` serves it. Each version comes from one pipeline run; its tags hold the "
    "aggregated evaluation (metric.*, fractions in [0, 1]; or `evaluation` when it was skipped) and "
    f"the dataset. Aliases: '{CANDIDATE_ALIAS}' = the newest version, '{CHAMPION_ALIAS}' = the best "
    "so far on its dataset. The weights-only model.pt is an artifact of each version's source run."
)


class RegistryError(DalError):
    """A registry operation failed or was refused; the message names the model and version."""


@dataclasses.dataclass(frozen=True)
class RegisteredVersion:
    """One model version as the registry holds it."""

    name: str
    version: str
    run_id: str | None  # the source (training) run
    source: str
    metrics: dict[str, float]  # from the ``metric.*`` tags
    tags: dict[str, str]  # the other tags
    aliases: tuple[str, ...]

    @property
    def uri(self) -> str:
        return f"{MODELS_SCHEME}{self.name}/{self.version}"

    @property
    def dataset(self) -> str:
        return self.tags.get(DATASET_TAG, "")


@dataclasses.dataclass(frozen=True)
class PromotionDecision:
    """What ``promote_champion`` decided, and against which champion."""

    name: str
    promoted: bool
    reason: str
    candidate_version: str
    candidate_metrics: dict[str, float]
    champion_version: str | None  # the champion before the decision; None: there was none
    champion_metrics: dict[str, float] | None


@dataclasses.dataclass(frozen=True)
class RegisteredRef:
    """A parsed ``models:/<name>/<version>`` or ``models:/<name>@<alias>``: exactly one is set."""

    name: str
    version: str | None = None
    alias: str | None = None


def default_model_name(dataset: str, *, synthetic: bool = False) -> str:
    """``dal-<dataset>``; models of generated data compete only with each other
    (``dal-<dataset>-synthetic``), never with those of the real dataset."""
    return f"dal-{dataset}-synthetic" if synthetic else f"dal-{dataset}"


def is_registry_uri(uri: str) -> bool:
    return uri.startswith(MODELS_SCHEME)


def parse_registered_uri(uri: str) -> RegisteredRef:
    """Only versions and aliases: stages are deprecated, and ``models:/<model_id>`` is a logged
    model that no pipeline has vetted."""
    rest = uri.removeprefix(MODELS_SCHEME) if is_registry_uri(uri) else ""
    usage = "use models:/<name>@<alias> or models:/<name>/<version>"
    if "/" in rest:
        name, _, version = rest.partition("/")
        if name and version.isdigit():
            return RegisteredRef(name, version=version)
    elif "@" in rest:
        name, _, alias = rest.rpartition("@")
        if name and alias:
            return RegisteredRef(name, alias=alias)
    raise RegistryError(f"{uri}: not a registered model version URI ({usage})")


@contextlib.contextmanager
def _named(what: str) -> Iterator[None]:
    """MLflow's exceptions as a RegistryError naming what failed."""
    from mlflow.exceptions import MlflowException

    try:
        yield
    except MlflowException as exc:
        raise RegistryError(f"{what}: {exc.message}") from exc


def _client(tracking_uri: str) -> Any:
    from mlflow.tracking import MlflowClient

    if not tracking_uri:
        raise RegistryError("the model registry needs an MLflow tracking URI (none given)")
    # The registry lives with the tracking store (aliases included); never a global registry URI.
    return MlflowClient(tracking_uri, registry_uri=tracking_uri)


def _version_of(model_version: Any) -> RegisteredVersion:
    metrics, tags = {}, {}
    for key, value in model_version.tags.items():
        if key.startswith(METRIC_TAG_PREFIX):
            with contextlib.suppress(ValueError):  # a hand-written tag that is no number
                metrics[key.removeprefix(METRIC_TAG_PREFIX)] = float(value)
        else:
            tags[key] = value
    return RegisteredVersion(
        name=model_version.name,
        version=str(model_version.version),
        run_id=model_version.run_id or None,
        source=model_version.source or "",
        metrics=metrics,
        tags=tags,
        aliases=tuple(model_version.aliases or ()),
    )


def get_version(tracking_uri: str, uri: str) -> RegisteredVersion:
    """The version that ``models:/<name>/<version>`` or ``models:/<name>@<alias>`` names now."""
    ref = parse_registered_uri(uri)
    client = _client(tracking_uri)
    with _named(uri):
        if ref.alias is not None:
            return _version_of(client.get_model_version_by_alias(ref.name, ref.alias))
        return _version_of(client.get_model_version(ref.name, ref.version))


def _alias_version(client: Any, name: str, alias: str) -> RegisteredVersion | None:
    with _named(f"registered model {name!r}"):
        aliases = client.get_registered_model(name).aliases
    if alias not in aliases:
        return None
    with _named(f"{MODELS_SCHEME}{name}@{alias}"):
        return _version_of(client.get_model_version(name, str(aliases[alias])))


def _metric_tags(metrics: Mapping[str, float]) -> dict[str, str]:
    tags = {}
    for key, value in metrics.items():
        number = float(value)
        if not math.isfinite(number):
            raise RegistryError(f"metric {key!r} is {value}: only finite metrics are registered")
        tags[f"{METRIC_TAG_PREFIX}{key}"] = repr(number)  # exact round trip
    return tags


def _description(metrics: Mapping[str, float]) -> str:
    shown = [f"{k} {100 * metrics[k]:.2f} %" for k in ("rank1", "rank5", "mAP") if k in metrics]
    splits = f" (mean over {int(metrics['num_splits'])} splits)" if "num_splits" in metrics else ""
    return f"evaluation: {', '.join(shown) or 'no metrics'}{splits}"


def register_candidate(
    tracking_uri: str,
    model_name: str,
    mlflow_model_uri: str,
    metrics: Mapping[str, float],
    tags: Mapping[str, Any],
    *,
    unscored: str = "",
) -> RegisteredVersion:
    """Register one new version of ``model_name`` from a logged model and make it the candidate.

    ``unscored``: why there are no metrics (own footage without labels: evaluation was skipped);
    such a candidate is registered with an ``evaluation`` tag saying so, and never promoted.

    ``mlflow_model_uri`` is the ``models:/<model_id>`` URI of the serving pyfunc that training
    logs (``components.model.serving.log_model``; recorded as ``mlflow_model_uri``).
    ``metrics`` are the pipeline run's aggregated metrics (``metric.*`` tags); ``tags`` must
    include ``dataset``. The registered model is created, with its description, the first time.
    Each call creates at most one version (none when that logged model is registered already: a
    retried task), so the pipeline calls it once per run, not per split.
    """
    if DATASET_TAG not in tags or not str(tags[DATASET_TAG]):
        raise RegistryError(
            f"{model_name}: a candidate needs a {DATASET_TAG!r} tag (promotion compares within one)"
        )
    if unscored and metrics:
        raise RegistryError(f"{model_name}: a candidate is either scored (metrics) or not ({unscored!r})")
    for key in PROMOTION_METRICS if not unscored else ():
        if key not in metrics:
            raise RegistryError(f"{model_name}: a candidate needs metric {key!r} (got {sorted(metrics)})")
    model_id = mlflow_model_uri.removeprefix(MODELS_SCHEME)
    if not is_registry_uri(mlflow_model_uri) or not model_id or "/" in model_id or "@" in model_id:
        raise RegistryError(f"{mlflow_model_uri}: not a logged model URI (models:/<model_id>)")
    version_tags = {k: str(v) for k, v in tags.items()} | _metric_tags(metrics)
    version_tags[MLFLOW_MODEL_URI_TAG] = mlflow_model_uri
    if unscored:
        version_tags[EVALUATION_TAG] = f"skipped: {unscored}"[:MAX_TAG_VALUE_CHARS]
    for key, value in version_tags.items():
        if len(value) > MAX_TAG_VALUE_CHARS:
            raise RegistryError(f"{model_name}: tag {key!r} is longer than {MAX_TAG_VALUE_CHARS} characters")
    client = _client(tracking_uri)
    existing = _version_of_model(client, model_name, mlflow_model_uri)
    if existing is not None:
        # This logged model is registered already: a task retried after registering. The same
        # version again, so that a run never adds two.
        client.set_registered_model_alias(model_name, CANDIDATE_ALIAS, existing.version)
        log.info(
            "%s: already registered as %s; alias %s set again",
            mlflow_model_uri,
            existing.uri,
            CANDIDATE_ALIAS,
        )
        return _version_of(client.get_model_version(model_name, existing.version))
    with _named(mlflow_model_uri):
        logged = client.get_logged_model(model_id)
    from mlflow.exceptions import MlflowException
    from mlflow.protos.databricks_pb2 import RESOURCE_ALREADY_EXISTS, ErrorCode

    try:
        client.create_registered_model(model_name, description=DESCRIPTION)
    except MlflowException as exc:
        if exc.error_code != ErrorCode.Name(RESOURCE_ALREADY_EXISTS):
            raise RegistryError(f"registered model {model_name!r}: {exc.message}") from exc
    with _named(f"registered model {model_name!r}: new version from {mlflow_model_uri}"):
        # The logged model's artifact location as source, with its run and id given: the sqlite
        # store would otherwise resolve ``models:/<id>`` through the *global* tracking URI.
        created = client.create_model_version(
            model_name,
            source=logged.artifact_location,
            run_id=logged.source_run_id,
            tags=version_tags,
            description=_description(metrics) if not unscored else f"not evaluated: {unscored}",
            model_id=model_id,
        )
        client.set_registered_model_alias(model_name, CANDIDATE_ALIAS, str(created.version))
        registered = _version_of(client.get_model_version(model_name, str(created.version)))
    log.info("registered %s (alias %s): %s", registered.uri, CANDIDATE_ALIAS, _description(metrics))
    return registered


def _version_of_model(client: Any, model_name: str, mlflow_model_uri: str) -> RegisteredVersion | None:
    """The version of ``model_name`` registered from that logged model, if any (its tag)."""
    found = client.search_model_versions(
        f"name = '{model_name}' and tag.`{MLFLOW_MODEL_URI_TAG}` = '{mlflow_model_uri}'"
    )
    return _version_of(found[0]) if found else None


def beats(candidate: Mapping[str, float], champion: Mapping[str, float]) -> bool:
    """Pareto dominance on PROMOTION_METRICS: none lower and at least one strictly higher."""
    pairs = [(float(candidate[k]), float(champion[k])) for k in PROMOTION_METRICS]
    return all(c >= h for c, h in pairs) and any(c > h for c, h in pairs)


def _promotion_metrics(version: RegisteredVersion, role: str) -> dict[str, float]:
    missing = [k for k in PROMOTION_METRICS if k not in version.metrics]
    if missing:
        raise RegistryError(
            f"{version.uri} ({role}): no {', '.join(METRIC_TAG_PREFIX + k for k in missing)} tag"
        )
    return {k: version.metrics[k] for k in PROMOTION_METRICS}


def _compare_line(candidate: Mapping[str, float], champion: Mapping[str, float]) -> str:
    return ", ".join(
        f"{k} {100 * candidate[k]:.2f} % vs {100 * champion[k]:.2f} %" for k in PROMOTION_METRICS
    )


def _decide(candidate: RegisteredVersion, champion: RegisteredVersion | None) -> tuple[bool, str]:
    if EVALUATION_TAG in candidate.tags:  # own footage without labels: nothing to compare
        return False, (
            f"not evaluated ({candidate.tags[EVALUATION_TAG]}): a candidate without metrics is never "
            f"promoted; set alias {CHAMPION_ALIAS} by hand if you trust it"
        )
    ours = _promotion_metrics(candidate, "candidate")
    if champion is None:
        return True, f"no {CHAMPION_ALIAS} yet"
    if champion.version == candidate.version:
        return False, f"version {candidate.version} is already the {CHAMPION_ALIAS}"
    if champion.dataset != candidate.dataset:
        raise RegistryError(
            f"{candidate.uri}: dataset {candidate.dataset!r} but the {CHAMPION_ALIAS} {champion.uri} was "
            f"evaluated on {champion.dataset!r}; metrics of different datasets are not comparable "
            "(register each dataset under its own model name)"
        )
    theirs = _promotion_metrics(champion, CHAMPION_ALIAS)
    comparison = f"{_compare_line(ours, theirs)} ({CHAMPION_ALIAS} version {champion.version})"
    if beats(ours, theirs):
        return True, f"beats the {CHAMPION_ALIAS}: {comparison}"
    return False, f"does not beat the {CHAMPION_ALIAS}: {comparison}"


def promote_champion(tracking_uri: str, model_name: str, version: str) -> PromotionDecision:
    """Move the ``champion`` alias to ``version`` if it beats the current champion.

    "Beats" is Pareto dominance on (rank-1, mAP) as recorded in the ``metric.rank1`` and
    ``metric.mAP`` tags: neither is lower than the champion's and at least one is strictly
    higher (exact comparison of the registered values). A tie on both, or a trade-off (one
    higher, the other lower), keeps the champion. With no champion yet, the version is promoted.
    The champion must carry the same ``dataset`` tag, else RegistryError (nothing changes).
    The decision is recorded as ``promotion*`` tags on the version. Not atomic against another
    pipeline promoting the same model at the same moment (MLflow has no compare-and-set).
    """
    client = _client(tracking_uri)
    candidate = get_version(tracking_uri, f"{MODELS_SCHEME}{model_name}/{version}")
    if not candidate.dataset:
        raise RegistryError(
            f"{candidate.uri}: no {DATASET_TAG!r} tag; cannot tell which champion it competes with"
        )
    champion = _alias_version(client, model_name, CHAMPION_ALIAS)
    promoted, reason = _decide(candidate, champion)
    with _named(f"{candidate.uri}: recording the promotion decision"):
        if promoted:  # the alias first: it is the truth; the tags only explain it
            client.set_registered_model_alias(model_name, CHAMPION_ALIAS, candidate.version)
        decision_tags = {
            PROMOTION_TAG: PROMOTED if promoted else KEPT,
            PROMOTION_REASON_TAG: reason[:MAX_TAG_VALUE_CHARS],
            PROMOTION_CHAMPION_BEFORE_TAG: champion.version if champion else "none",
        }
        for key, value in decision_tags.items():
            client.set_model_version_tag(model_name, candidate.version, key, value)
    log.info("%s: %s (%s)", candidate.uri, decision_tags[PROMOTION_TAG], reason)
    return PromotionDecision(
        name=model_name,
        promoted=promoted,
        reason=reason,
        candidate_version=candidate.version,
        candidate_metrics=dict(candidate.metrics),
        champion_version=champion.version if champion else None,
        champion_metrics=dict(champion.metrics) if champion else None,
    )


def resolve_registered_model(tracking_uri: str, uri: str, dst_dir: str | None = None) -> str:
    """The ``model.pt`` of the version that ``uri`` (``models:/<name>@<alias>`` or
    ``models:/<name>/<version>``) names: a local path under ``dst_dir`` (a new temporary folder,
    the caller's to remove, when None).

    The copy logged in the version's source run comes first: it is immutable and lives with the
    registry (reachable through the tracking server alone, artifacts proxied), while the
    pipeline's storage may be cleaned or overwritten by a rerun into the same output. The
    ``storage_uri`` tag (returned as is) serves only a version whose run has no such artifact.
    """
    registered = get_version(tracking_uri, uri)
    client = _client(tracking_uri)
    if registered.run_id:
        with _named(f"{uri}: artifacts of run {registered.run_id}"):
            names = {a.path for a in client.list_artifacts(registered.run_id)}
        if MODEL_ARTIFACT in names:
            target = dst_dir or tempfile.mkdtemp(prefix="dal-registry-")
            os.makedirs(target, exist_ok=True)
            with _named(f"{uri}: downloading {MODEL_ARTIFACT} of run {registered.run_id}"):
                return str(client.download_artifacts(registered.run_id, MODEL_ARTIFACT, target))
    fallback = registered.tags.get(STORAGE_URI_TAG, "")
    if fallback:
        log.warning(
            "%s: run %s has no %s artifact; using %s", uri, registered.run_id, MODEL_ARTIFACT, fallback
        )
        return fallback
    raise RegistryError(
        f"{uri} (version {registered.version}): neither a {MODEL_ARTIFACT} artifact in run "
        f"{registered.run_id} nor a {STORAGE_URI_TAG!r} tag"
    )
