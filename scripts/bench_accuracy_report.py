"""The accuracy benchmark's outputs: the results table (text / Markdown), the targets, the curves PNG.

Pure functions of the results document that ``bench_accuracy.py`` assembles; no training here.
"""

from __future__ import annotations

from typing import Any

from matplotlib.figure import Figure

from components.evaluate.metrics import METRIC_KEYS
from components.evaluate.plots import figure_png

TABLE_KEYS = ("rank1", "rank5", "rank20", "mAP", "mAP_trapezoid")
HEADERS = {"rank1": "R1", "rank5": "R5", "rank20": "R20", "mAP": "mAP", "mAP_trapezoid": "mAP (trapezoid)"}
LABELS = {
    "colour_histogram": "colour histogram (8x8x8 RGB, tracklet mean)",
    "raw_pixels": "raw pixels (16x8, tracklet mean)",
    "untrained": "untrained backbone (random init)",
    "untrained_imagenet": "untrained backbone (ImageNet weights)",
    "dal": "DAL (unsupervised)",
    "supervised": "supervised reference (upper bound, uses labels)",
    "supervised_jitter": "supervised reference + colour jitter",
}
# Targets per dataset (issue 11): DAL rank-1 as a share of the supervised upper bound's, and its
# gain over the features training starts from (the untrained ImageNet backbone; the random one
# when the benchmark runs from random init). MARS's ratio is lower: many tracklets per person and
# camera contradict DAL's one-identity-per-tracklet-and-camera assumption (the paper's own real-
# data ratio is lower still). Hand-crafted matching must stay far below DAL.
RATIO_TARGETS = {"prid2011": 0.9, "mars": 0.7}
GAIN_TARGETS = {"prid2011": 0.30, "mars": 0.20}
HANDCRAFTED_GAIN = 0.20
assert set(TABLE_KEYS) <= set(METRIC_KEYS)


def _check(value: float, target: float) -> dict[str, Any]:
    return {"value": value, "target": target, "met": value >= target}


def targets(dataset: str, methods: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """The targets on one dataset (only those whose methods ran)."""
    rank1 = {name: result["metrics"]["rank1"] for name, result in methods.items()}
    checks: dict[str, Any] = {}
    if "dal" not in rank1:
        return checks

    def ratio(reference: float) -> float:
        return rank1["dal"] / reference if reference > 0 else 0.0

    if "supervised" in rank1:
        checks["dal_vs_supervised"] = _check(ratio(rank1["supervised"]), RATIO_TARGETS[dataset])
    supervised = [rank1[k] for k in ("supervised", "supervised_jitter") if k in rank1]
    if len(supervised) > 1:  # against the better of the two references
        checks["dal_vs_best_supervised"] = _check(ratio(max(supervised)), RATIO_TARGETS[dataset])
    start = next((k for k in ("untrained_imagenet", "untrained") if k in rank1), None)
    if start is not None:
        checks[f"dal_minus_{start}"] = _check(rank1["dal"] - rank1[start], GAIN_TARGETS[dataset])
    handcrafted = [rank1[k] for k in ("colour_histogram", "raw_pixels") if k in rank1]
    if handcrafted:
        checks["dal_minus_handcrafted"] = _check(rank1["dal"] - max(handcrafted), HANDCRAFTED_GAIN)
    return checks


def _pct(value: float) -> str:
    return f"{100 * value:.1f}"


def table_rows(results: dict[str, Any]) -> list[list[str]]:
    rows = []
    for dataset, entry in results["datasets"].items():
        for method, result in entry["methods"].items():
            metrics = result["metrics"]
            rows.append([dataset, LABELS.get(method, method), *(_pct(metrics[k]) for k in TABLE_KEYS)])
    return rows


TARGET_LABELS = {
    "dal_vs_supervised": "DAL R1 / supervised R1",
    "dal_vs_best_supervised": "DAL R1 / best supervised R1 (either recipe)",
    "dal_minus_untrained_imagenet": "DAL R1 - untrained ImageNet R1",
    "dal_minus_untrained": "DAL R1 - untrained (random init) R1",
    "dal_minus_handcrafted": "DAL R1 - best hand-crafted R1",
}


def _target_lines(results: dict[str, Any]) -> list[str]:
    lines = []
    for dataset, entry in results["datasets"].items():
        for key, check in entry.get("targets", {}).items():
            if key.startswith("dal_vs_"):
                value, wanted = f"{100 * check['value']:.1f} %", f">= {100 * check['target']:.0f} %"
            else:
                value, wanted = (
                    f"{100 * check['value']:+.1f} points",
                    f">= +{100 * check['target']:.0f} points",
                )
            status = "met" if check["met"] else "NOT met"
            lines.append(f"{dataset}: {TARGET_LABELS[key]} = {value} (target {wanted}): {status}")
    return lines


def text_table(results: dict[str, Any]) -> str:
    header = ["dataset", "method", *(HEADERS[k] for k in TABLE_KEYS)]
    rows = table_rows(results)
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]

    def fmt(row: list[str]) -> str:
        cells = zip(row, widths, strict=True)
        return "  ".join(c.ljust(w) if i < 2 else c.rjust(w) for i, (c, w) in enumerate(cells))

    lines = [fmt(header), "  ".join("-" * w for w in widths), *(fmt(r) for r in rows)]
    return "\n".join([*lines, "", *_target_lines(results)])


def markdown(results: dict[str, Any]) -> str:
    header = ["dataset", "method", *(HEADERS[k] for k in TABLE_KEYS)]
    lines = [
        "| " + " | ".join(header) + " |",
        "|" + "|".join(["---", "---", *["---:"] * len(TABLE_KEYS)]) + "|",
    ]
    lines += ["| " + " | ".join(row) + " |" for row in table_rows(results)]
    meta = results["run"]
    about = [
        f"Commit `{meta['commit']}`, {meta['date']}, {meta['machine']}, wall time "
        f"{meta['seconds'] / 60:.1f} min (load average {meta['load_start']} at the start, "
        f"{meta['load_end']} at the end).",
        "",
        f"Settings: {meta['settings_line']}",
    ]
    for dataset, entry in results["datasets"].items():
        about.append(f"- {dataset}: {entry['description']}; {entry['counts_line']}")
    targets_md = [f"- {line}" for line in _target_lines(results)]
    return "\n".join([*lines, "", *about, "", "Targets:", "", *targets_md, ""])


def _finish_axis(axis: Any, title: str, ylabel: str) -> None:
    axis.set_title(title)
    axis.set_xlabel("step")
    axis.set_ylabel(ylabel)
    axis.set_ylim(0, 100)
    axis.grid(alpha=0.3)
    axis.legend(fontsize=8)


def curves_png(curves: dict[str, dict[str, list[dict[str, float]]]], chance: dict[str, float]) -> bytes:
    """Rank-1 over steps (DAL, supervised) per dataset, and DAL's association quality below it."""
    datasets = list(curves)
    columns = max(len(datasets), 1)
    figure = Figure(figsize=(6 * columns, 8), dpi=100)
    axes = figure.subplots(2, columns, squeeze=False)
    for column, dataset in enumerate(datasets):
        top, bottom = axes[0][column], axes[1][column]
        for method, style in (("dal", "-o"), ("supervised", "--s"), ("supervised_jitter", ":^")):
            history = curves[dataset].get(method, [])
            if history:
                steps = [h["step"] for h in history]
                top.plot(steps, [100 * h["eval_rank1"] for h in history], style, ms=3, label=LABELS[method])
        _finish_axis(top, f"{dataset}: test rank-1 during training", "rank-1 (%)")
        history = [h for h in curves[dataset].get("dal", []) if "association_precision" in h]
        if history:
            steps = [h["step"] for h in history]
            bottom.plot(steps, [100 * h["association_precision"] for h in history], "-o", ms=3,
                        label="association precision (consistent matches of the right person)")  # fmt: skip
            bottom.plot(steps, [100 * h["consistent_tracklets"] for h in history], "-^", ms=3,
                        label="cyclically consistent tracklets")  # fmt: skip
            if dataset in chance:
                bottom.axhline(100 * chance[dataset], color="grey", ls=":", label="precision by chance")
        _finish_axis(bottom, f"{dataset}: DAL cross-camera association (train tracklets)", "%")
    figure.tight_layout()
    return figure_png(figure)
