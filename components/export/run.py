"""``dal export``: a trained model -> an ONNX file (``components.model.onnx_export``).

The model is a ``model.pt`` (path or storage URI) or a registered version. An alias
(``models:/<name>@champion``) is resolved to its version once, first, and that version is what
gets loaded, recorded (``dal.source_model`` in the file's metadata and the run's tags) and
tagged, so a concurrent promotion cannot mix two versions up.

The graph is checked against PyTorch before anything is written (``onnx_export.check_onnx``);
a failed check raises and writes nothing. The file is written atomically
(``components.common.storage``), locally or to S3.

With tracking on, the export step's own MLflow run gets the params, the check's
``max_abs_diff``, and the graph as a logged model (MLflow's onnx flavour, name ``onnx``, with
signature and input example). A registered source version gets a tag
``onnx.<input_format>.model_uri`` pointing at that logged model; nothing is logged into the
version's source (training) run. That run is finished: its artifacts are what training
produced, with the training config that produced them, and adding outputs of later commands
(each export another copy, by whoever had write access) would blur that record; the export run
keeps its own provenance (the exporter, the check) and lineage (``dal.source_model``), and the
tag makes the ONNX reachable from the version in the registry.
"""

from __future__ import annotations

import hashlib
import logging
import time
from typing import Any

from components.common import registry, storage
from components.common.registry import RegisteredVersion, RegistryError
from components.common.tracking import step_run
from components.export.config import ExportConfig
from components.model import onnx_export
from components.model.artifact import load_model

log = logging.getLogger(__name__)
ONNX_MODEL_NAME = "onnx"  # the logged model in the export run
SOURCE_TAG = "dal.source_model"


def onnx_uri_tag(input_format: str) -> str:
    """The registered version's tag that names its ONNX export in ``input_format``."""
    return f"onnx.{input_format}.model_uri"


def _registered(config: ExportConfig) -> RegisteredVersion | None:
    if not registry.is_registry_uri(config.model):
        return None
    # Without a tracking URI load_model raises the step's usual error; get_version would too.
    tracking = config.resolved_tracking_uri()
    return registry.get_version(tracking, config.model) if tracking else None


def run(config: ExportConfig) -> dict[str, Any]:
    registered = _registered(config)
    source = registered.uri if registered else config.model  # models:/<name>/<version>, pinned
    with step_run("export", config, tags={SOURCE_TAG: source}) as logger:
        started = time.perf_counter()
        model, info = load_model(source, "cpu", tracking_uri=config.mlflow_tracking_uri)
        exported = onnx_export.export_onnx(
            model, info, config.input_format, extra_metadata={SOURCE_TAG: source}
        )
        storage.write_bytes(config.output, exported.data)
        seconds = time.perf_counter() - started
        log.info(
            "exported %s (%s, %s) to %s: opset %d, max |ONNX - PyTorch| %.2g",
            source, info.backbone, config.input_format, config.output, exported.opset, exported.max_abs_diff,
        )  # fmt: skip
        summary: dict[str, Any] = {
            "output": config.output,
            "format": config.format,
            "input_format": config.input_format,
            "model": config.model,
            "source_model": source,
            "backbone": info.backbone,
            "feature_dim": info.feature_dim,
            "image_size": [info.image_height, info.image_width],
            "opset": exported.opset,
            "exporter": exported.metadata["dal.exporter"],
            "max_abs_diff": exported.max_abs_diff,
            "check_batch_sizes": list(onnx_export.CHECK_BATCH_SIZES),
            "bytes": len(exported.data),
            "sha256": hashlib.sha256(exported.data).hexdigest(),
            "seconds": round(seconds, 3),
            "mlflow_model_uri": "",
        }
        logger.set_tags(
            {
                "dal.backbone": info.backbone,
                "dal.onnx_opset": exported.opset,
                "dal.onnx_sha256": summary["sha256"],
            }
        )
        logger.log_metrics({k: summary[k] for k in ("max_abs_diff", "bytes", "seconds")})
        if logger.active:
            summary["mlflow_model_uri"] = onnx_export.log_model(exported, info, name=ONNX_MODEL_NAME)
            if registered is not None:
                _tag_version(config, registered, summary["mlflow_model_uri"])
        summary["mlflow_run_id"] = logger.run_id or ""
    return summary


def _tag_version(config: ExportConfig, version: RegisteredVersion, onnx_model_uri: str) -> None:
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    tracking = config.resolved_tracking_uri()
    client = MlflowClient(tracking, registry_uri=tracking)  # as components.common.registry does
    key = onnx_uri_tag(config.input_format)
    try:
        client.set_model_version_tag(version.name, version.version, key, onnx_model_uri)
    except MlflowException as exc:
        raise RegistryError(f"{version.uri}: setting tag {key!r}: {exc.message}") from exc
