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
# Issue 6's targets: DAL rank-1 >= 90 % of the supervised upper bound's and >= untrained + 20 points.
RATIO_TARGET = 0.9
GAIN_TARGET = 0.20
RATIO_WANTED, GAIN_WANTED = f">= {100 * RATIO_TARGET:.0f} %", f">= +{100 * GAIN_TARGET:.0f} points"
assert set(TABLE_KEYS) <= set(METRIC_KEYS)


def _check(value: float, target: float) -> dict[str, Any]:
    return {"value": value, "target": target, "met": value >= target}


def targets(methods: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """The issue's targets on one dataset (only those whose methods ran)."""
    rank1 = {name: result["metrics"]["rank1"] for name, result in methods.items()}
    checks: dict[str, Any] = {}
    if "dal" not in rank1:
        return checks

    def ratio(reference: float) -> float:
        return rank1["dal"] / reference if reference > 0 else 0.0

    if "supervised" in rank1:
        checks["dal_vs_supervised"] = _check(ratio(rank1["supervised"]), RATIO_TARGET)
    supervised = [rank1[k] for k in ("supervised", "supervised_jitter") if k in rank1]
    if len(supervised) > 1:  # against the better of the two references
        checks["dal_vs_best_supervised"] = _check(ratio(max(supervised)), RATIO_TARGET)
    if "untrained" in rank1:
        checks["dal_minus_untrained"] = _check(rank1["dal"] - rank1["untrained"], GAIN_TARGET)
    handcrafted = [rank1[k] for k in ("colour_histogram", "raw_pixels") if k in rank1]
    if handcrafted:
        # Issue 6, point 5: hand-crafted matching must stay far below DAL (same margin as above).
        checks["dal_minus_handcrafted"] = _check(rank1["dal"] - max(handcrafted), GAIN_TARGET)
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


def _target_lines(results: dict[str, Any]) -> list[str]:
    lines = []
    names = {
        "dal_vs_supervised": ("DAL R1 / supervised R1", lambda v: f"{100 * v:.1f} %", RATIO_WANTED),
        "dal_vs_best_supervised": (
            "DAL R1 / best supervised R1 (either recipe)",
            lambda v: f"{100 * v:.1f} %",
            RATIO_WANTED,
        ),
        "dal_minus_untrained": ("DAL R1 - untrained R1", lambda v: f"{100 * v:+.1f} points", GAIN_WANTED),
        "dal_minus_handcrafted": (
            "DAL R1 - best hand-crafted R1",
            lambda v: f"{100 * v:+.1f} points",
            GAIN_WANTED,
        ),
    }
    for dataset, entry in results["datasets"].items():
        for key, check in entry.get("targets", {}).items():
            label, fmt, wanted = names[key]
            status = "met" if check["met"] else "NOT met"
            lines.append(f"{dataset}: {label} = {fmt(check['value'])} (target {wanted}): {status}")
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
