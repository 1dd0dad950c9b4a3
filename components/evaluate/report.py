"""What the KFP UI shows of an evaluation: Markdown and self-contained HTML, built as strings.

KFP v2 renders an ``Output[Markdown]`` / ``Output[HTML]`` artifact from its file, so the
component wrappers only call ``write_*`` here. The pages read what the steps wrote:

* a ``dal evaluate`` output folder: ``metrics.json`` (flat metrics, ``cmc``, ``split`` ...),
  ``cmc.png``, ``roc.png`` and, when rank lists were asked for, ``ranklist.png``;
* a ``dal aggregate`` output folder: ``metrics.json`` (means under the metric names,
  ``<name>_std``, ``num_splits``, ``cmc``, ``cmc_std``) and ``cmc.png``.

Both pages show the same-person verification (TPR and the similarity threshold at each fixed FPR,
ROC AUC) where the metrics.json has it (evaluations from before it was added do not).

An evaluation that was skipped (own footage without labels: ``"evaluated": false``) gets a page
that says so, with its note, instead of tables and curves.

Pictures are embedded as base64 ``data:`` URIs and every text is escaped: a page needs no
other file and no network (the KFP UI shows HTML in a sandboxed frame).
"""

from __future__ import annotations

import base64
import dataclasses
import html
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from components.common import storage
from components.common.errors import DalError
from components.evaluate import plots
from components.evaluate.metrics import (
    METRIC_KEYS,
    VERIFICATION_FPRS,
    VERIFICATION_KEYS,
    threshold_key,
    tpr_key,
)
from components.evaluate.run import CMC_FILE, METRICS_FILE, RANKLIST_FILE, ROC_FILE, VARIANT_PREFIXES

LABELS = {
    "rank1": "rank-1",
    "rank5": "rank-5",
    "rank10": "rank-10",
    "rank20": "rank-20",
    "mAP": "mAP",
    "mAP_trapezoid": "mAP (trapezoid, MARS code)",
    "mINP": "mINP",
}
COUNT_LABELS = {
    "num_queries": "queries",
    "num_valid_queries": "queries with a match",
    "num_queries_without_match": "queries without a match",
    "num_gallery": "gallery tracklets",
    "num_genuine_pairs": "same-person pairs",
    "num_impostor_pairs": "different-person pairs",
}
VARIANT_LABELS = {"rerank_": "re-ranked", "aqe_": "AQE", "aqe_rerank_": "AQE + re-ranked"}
STYLE = (
    "body{font-family:sans-serif;margin:1em;color:#222}"
    "table{border-collapse:collapse;margin:0.5em 0}"
    "th,td{border:1px solid #ccc;padding:0.25em 0.7em;text-align:right}"
    "th:first-child,td:first-child{text-align:left}img{max-width:100%;display:block;margin:0.5em 0}"
)


class ReportError(DalError, ValueError):
    """An evaluation file the report cannot be built from; the message names it."""


@dataclasses.dataclass(frozen=True)
class SplitResult:
    """One split's ``metrics.json`` from ``dal evaluate`` (metrics as fractions in [0, 1])."""

    dataset: str
    protocol: str
    direction: str
    split: int
    metrics: dict[str, float]
    counts: dict[str, int]
    cmc: tuple[float, ...]
    verification: dict[str, float]  # VERIFICATION_KEYS; empty for older evaluations

    @classmethod
    def from_document(cls, document: Mapping[str, Any], where: str) -> SplitResult:
        _require(document, (*METRIC_KEYS, "cmc", "split", "dataset"), where, "a dal evaluate metrics.json")
        return cls(
            dataset=str(document["dataset"]),
            protocol=str(document.get("protocol", "")),
            direction=str(document.get("direction", "")),
            split=int(document["split"]),
            metrics={k: float(document[k]) for k in (*METRIC_KEYS, *_variant_keys(document))},
            counts={k: int(document[k]) for k in COUNT_LABELS if k in document},
            cmc=tuple(float(v) for v in document["cmc"]),
            verification=_verification(document),
        )


@dataclasses.dataclass(frozen=True)
class Aggregated:
    """``dal aggregate``'s ``metrics.json``: mean and population std over splits."""

    dataset: str
    protocol: str
    direction: str
    num_splits: int
    mean: dict[str, float]
    std: dict[str, float]
    cmc: tuple[float, ...]
    cmc_std: tuple[float, ...]
    verification: dict[str, float]  # means over splits; empty for older aggregates

    @classmethod
    def from_document(cls, document: Mapping[str, Any], where: str) -> Aggregated:
        keys = (*METRIC_KEYS, *(f"{k}_std" for k in METRIC_KEYS), "num_splits", "cmc", "cmc_std", "dataset")
        _require(document, keys, where, "a dal aggregate metrics.json")
        return cls(
            dataset=str(document["dataset"]),
            protocol=str(document.get("protocol", "")),
            direction=str(document.get("direction", "")),
            num_splits=int(document["num_splits"]),
            mean={k: float(document[k]) for k in (*METRIC_KEYS, *_variant_keys(document))},
            std={k: float(document[f"{k}_std"]) for k in (*METRIC_KEYS, *_variant_keys(document))},
            cmc=tuple(float(v) for v in document["cmc"]),
            cmc_std=tuple(float(v) for v in document["cmc_std"]),
            verification=_verification(document),
        )


def _variant_keys(document: Mapping[str, Any]) -> list[str]:
    """The re-ranked / query-expanded metrics present (``dal evaluate --rerank / --aqe``)."""
    return [
        p + k for p in VARIANT_PREFIXES if all(p + k in document for k in METRIC_KEYS) for k in METRIC_KEYS
    ]


def _variants(keys: Sequence[str]) -> list[str]:
    return [p for p in VARIANT_PREFIXES if p + METRIC_KEYS[0] in keys]


def _variants_html(cell: Callable[[str], str], keys: Sequence[str]) -> list[str]:
    """The plain metrics beside each variant's, when there are variants."""
    variants = _variants(keys)
    if not variants:
        return []
    header = ["metric", "plain", *(VARIANT_LABELS[p] for p in variants)]
    rows = [[LABELS[k], cell(k), *(cell(p + k) for p in variants)] for k in METRIC_KEYS]
    return ["<h2>Re-ranking and query expansion</h2>", _table_html(header, rows)]


def _verification(document: Mapping[str, Any]) -> dict[str, float]:
    """The verification scalars, all or none (a partial set is a broken file, shown as none)."""
    if not all(k in document for k in VERIFICATION_KEYS):
        return {}
    return {k: float(document[k]) for k in VERIFICATION_KEYS}


def _require(document: Mapping[str, Any], keys: Sequence[str], where: str, what: str) -> None:
    if not isinstance(document, Mapping):
        raise ReportError(f"{where}: not a JSON object ({what})")
    missing = [k for k in keys if k not in document]
    if missing:
        raise ReportError(f"{where}: missing {', '.join(missing)} (not {what})")


# -- formatting ---------------------------------------------------------------------------------
def percent(value: float, std: float | None = None) -> str:
    """A fraction as a percentage with two decimals, ``± std`` when given."""
    text = f"{100 * value:.2f}"
    return f"{text} ± {100 * std:.2f} %" if std is not None else f"{text} %"


def _md(text: str) -> str:
    """Text safe in a Markdown table cell: HTML escaped, pipes and Markdown marks backslashed."""
    escaped = html.escape(text, quote=False)
    for mark in ("\\", "|", "*", "_", "`", "[", "]", "#"):
        escaped = escaped.replace(mark, "\\" + mark)
    return escaped


def _aggregated_cell(result: Aggregated, key: str) -> str:
    # One split (MARS) has no spread to show.
    return percent(result.mean[key], result.std[key] if result.num_splits > 1 else None)


def _png_data_uri(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def _subtitle(dataset: str, protocol: str, direction: str) -> str:
    details = ", ".join(p for p in (f"protocol {protocol}" if protocol else "", direction) if p)
    return f"{dataset} ({details})" if details else dataset


def metrics_markdown(
    aggregated: Aggregated, initial: Aggregated | None = None, cmc_png: bytes | None = None
) -> str:
    """A Markdown table of the aggregated metrics in percent (mean ± std over splits), with a
    column for the initial (untrained) weights when given, and the CMC picture when given."""
    if initial is not None and initial.dataset != aggregated.dataset:
        raise ReportError(
            f"initial weights evaluated on {initial.dataset!r}, the model on {aggregated.dataset!r}"
        )
    header = ["metric", "trained"] + (["initial weights"] if initial else [])
    lines = [
        f"### {_md(_subtitle(aggregated.dataset, aggregated.protocol, aggregated.direction))}",
        "",
        "| " + " | ".join(header) + " |",
        "|" + "|".join([":---"] + ["---:"] * (len(header) - 1)) + "|",
    ]
    for key in METRIC_KEYS:
        cells = [LABELS[key], _aggregated_cell(aggregated, key)]
        if initial:
            cells.append(_aggregated_cell(initial, key))
        lines.append("| " + " | ".join(_md(c) for c in cells) + " |")
    counts = [str(aggregated.num_splits)] + ([str(initial.num_splits)] if initial else [])
    lines.append("| " + " | ".join(["splits", *counts]) + " |")
    lines += ["", "Mean ± population std over splits; fractions of queries, in percent."]
    variants = _variants(list(aggregated.mean))
    if variants:
        labels = [VARIANT_LABELS[p] for p in variants]
        lines += [
            "",
            "| metric | plain | " + " | ".join(labels) + " |",
            "|:---" + "|---:" * (1 + len(labels)) + "|",
        ]
        lines += [
            "| "
            + " | ".join(
                _md(c) for c in [LABELS[k], *(_aggregated_cell(aggregated, p + k) for p in ("", *variants))]
            )
            + " |"
            for k in METRIC_KEYS
        ]
    if aggregated.verification:
        v = aggregated.verification
        lines += [
            "",
            "| false positive rate | true positive rate | similarity threshold |",
            "|---:|---:|---:|",
        ]
        lines += [
            f"| {fpr:g} | {_md(percent(v[tpr_key(fpr)]))} | {v[threshold_key(fpr)]:.4f} |"
            for fpr in VERIFICATION_FPRS
        ]
        lines += ["", f"Same-person verification (means over splits), ROC AUC {v['roc_auc']:.4f}."]
    if cmc_png is not None:
        lines += ["", f"![mean CMC curve]({_png_data_uri(cmc_png)})"]
    return "\n".join(lines) + "\n"


def _table_html(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _image_html(png: bytes, alt: str) -> str:
    return f'<img alt="{html.escape(alt)}" src="{_png_data_uri(png)}">'


def _verification_html(verification: Mapping[str, float], roc_png: bytes | None) -> list[str]:
    """The operating points (same person when cosine similarity >= threshold) and the ROC."""
    if not verification:
        return []
    rows = [
        [f"{fpr:g}", percent(verification[tpr_key(fpr)]), f"{verification[threshold_key(fpr)]:.4f}"]
        for fpr in VERIFICATION_FPRS
    ]
    body = [
        "<h2>Same-person verification</h2>",
        _table_html(["false positive rate", "true positive rate", "similarity threshold"], rows),
        f"<p>ROC AUC {verification['roc_auc']:.4f}</p>",
    ]
    return body + ([_image_html(roc_png, "ROC curve")] if roc_png is not None else [])


def _page(title: str, body: Sequence[str]) -> str:
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>{html.escape(title)}</title><style>{STYLE}</style></head>"
        f"<body><h1>{html.escape(title)}</h1>{''.join(body)}</body></html>\n"
    )


def split_report_html(
    title: str,
    metrics: SplitResult,
    cmc_png: bytes,
    ranklist_png: bytes | None,
    roc_png: bytes | None = None,
) -> str:
    """One split's page: its metrics table, CMC curve, verification (table and ROC) and (when
    there is one) rank list."""
    rows = [[LABELS[k], percent(metrics.metrics[k])] for k in METRIC_KEYS]
    rows += [[COUNT_LABELS[k], str(v)] for k, v in metrics.counts.items()]
    body = [
        f"<p>{html.escape(_subtitle(metrics.dataset, metrics.protocol, metrics.direction))}, "
        f"split {metrics.split}</p>",
        _table_html(["metric", "value"], rows),
        *_variants_html(lambda k: percent(metrics.metrics[k]), list(metrics.metrics)),
        "<h2>CMC curve</h2>",
        _image_html(cmc_png, "CMC curve"),
        *_verification_html(metrics.verification, roc_png),
    ]
    if ranklist_png is not None:
        body += ["<h2>Rank list</h2>", _image_html(ranklist_png, "rank list")]
    return _page(title, body)


def aggregate_report_html(
    title: str, aggregated: Aggregated, cmc_png: bytes, initial: Aggregated | None = None
) -> str:
    """The pipeline-level page: the mean ± std table (beside the initial weights' when given)
    and the mean CMC curve."""
    if initial is not None and initial.dataset != aggregated.dataset:
        raise ReportError(
            f"initial weights evaluated on {initial.dataset!r}, the model on {aggregated.dataset!r}"
        )
    rows = []
    for key in METRIC_KEYS:
        row = [LABELS[key], _aggregated_cell(aggregated, key)]
        rows.append(row + ([_aggregated_cell(initial, key)] if initial else []))
    rows.append(["splits", str(aggregated.num_splits)] + ([str(initial.num_splits)] if initial else []))
    header = ["metric", "trained"] + (["initial weights"] if initial else [])
    body = [
        f"<p>{html.escape(_subtitle(aggregated.dataset, aggregated.protocol, aggregated.direction))}: "
        f"mean ± population std over {aggregated.num_splits} split(s)</p>",
        _table_html(header, rows),
        *_variants_html(lambda k: _aggregated_cell(aggregated, k), list(aggregated.mean)),
        "<h2>Mean CMC curve</h2>",
        _image_html(cmc_png, "mean CMC curve"),
        *_verification_html(aggregated.verification, None),
    ]
    return _page(title, body)


# -- from the files the steps wrote --------------------------------------------------------------
def _read_json(uri: str) -> Any:
    if not storage.exists(uri):
        raise ReportError(f"{uri}: no such file")
    return storage.read_json(uri)


def read_split(evaluation_dir_uri: str) -> SplitResult:
    uri = storage.join(evaluation_dir_uri, METRICS_FILE)
    return SplitResult.from_document(_read_json(uri), uri)


def read_aggregated(aggregate_dir_uri: str) -> Aggregated:
    uri = storage.join(aggregate_dir_uri, METRICS_FILE)
    return Aggregated.from_document(_read_json(uri), uri)


def _cmc_picture(aggregate_dir_uri: str, aggregated: Aggregated, initial: Aggregated | None) -> bytes:
    """aggregate's own cmc.png; beside the initial weights, one chart with both curves."""
    if initial is None:
        return storage.read_bytes(storage.join(aggregate_dir_uri, CMC_FILE))
    return plots.cmc_png(
        {"trained": aggregated.cmc, "initial weights": initial.cmc},
        std={"trained": aggregated.cmc_std, "initial weights": initial.cmc_std},
        title=f"{aggregated.dataset}: mean CMC over {aggregated.num_splits} split(s)",
    )


def skipped_note(folder_uri: str) -> str | None:
    """The note of a skipped evaluation (or aggregate of skipped ones) in ``folder_uri``; None if scored."""
    uri = storage.join(folder_uri, METRICS_FILE)
    document = _read_json(uri)
    if isinstance(document, Mapping) and document.get("evaluated") is False:
        return str(document.get("note", "")) or "no reason given"
    return None


def skipped_html(title: str, note: str) -> str:
    return _page(title, [f"<p>Not evaluated: {html.escape(note)}</p>"])


def skipped_markdown(title: str, note: str) -> str:
    return f"### {_md(title)}\n\nNot evaluated: {_md(note)}\n"


def write_split_report(evaluation_dir_uri: str, path: str) -> None:
    """The HTML page of one ``dal evaluate`` output folder, written to ``path``."""
    note = skipped_note(evaluation_dir_uri)
    if note is not None:
        storage.write_bytes(path, skipped_html("evaluation skipped", note).encode("utf-8"))
        return
    result = read_split(evaluation_dir_uri)
    ranklist, roc = (_optional_bytes(storage.join(evaluation_dir_uri, f)) for f in (RANKLIST_FILE, ROC_FILE))
    cmc = storage.read_bytes(storage.join(evaluation_dir_uri, CMC_FILE))
    title = f"{result.dataset}: split {result.split}"
    storage.write_bytes(path, split_report_html(title, result, cmc, ranklist, roc).encode("utf-8"))


def _optional_bytes(uri: str) -> bytes | None:
    return storage.read_bytes(uri) if storage.exists(uri) else None


def write_aggregate_report(aggregate_dir_uri: str, path: str, initial_dir_uri: str | None = None) -> None:
    """The HTML page of a ``dal aggregate`` output folder (and the initial weights' one)."""
    note = skipped_note(aggregate_dir_uri)
    if note is not None:
        storage.write_bytes(path, skipped_html("evaluation skipped", note).encode("utf-8"))
        return
    aggregated = read_aggregated(aggregate_dir_uri)
    initial = read_aggregated(initial_dir_uri) if initial_dir_uri else None
    picture = _cmc_picture(aggregate_dir_uri, aggregated, initial)
    title = f"{aggregated.dataset}: evaluation over {aggregated.num_splits} split(s)"
    storage.write_bytes(path, aggregate_report_html(title, aggregated, picture, initial).encode("utf-8"))


def write_aggregate_markdown(
    aggregate_dir_uri: str, path: str, initial_dir_uri: str | None = None, embed_cmc: bool = True
) -> None:
    """The Markdown table of a ``dal aggregate`` output folder, with its CMC picture embedded."""
    note = skipped_note(aggregate_dir_uri)
    if note is not None:
        storage.write_bytes(path, skipped_markdown("evaluation skipped", note).encode("utf-8"))
        return
    aggregated = read_aggregated(aggregate_dir_uri)
    initial = read_aggregated(initial_dir_uri) if initial_dir_uri else None
    picture = _cmc_picture(aggregate_dir_uri, aggregated, initial) if embed_cmc else None
    storage.write_bytes(path, metrics_markdown(aggregated, initial, picture).encode("utf-8"))
