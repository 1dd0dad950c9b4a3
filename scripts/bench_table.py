"""One table of the benchmark figures beside their anchors, from the JSON the bench scripts wrote.

    .venv/bin/python scripts/bench_table.py                  # work/bench/*.json
    .venv/bin/python scripts/bench_table.py --markdown       # the same, as the README's table

Each row is a figure measured in one run of its script together with its anchor (the reference
re-ranking, the per-query NumPy ranking loop, faiss, the training step without the association,
the training step's consumption rate), their ratio, the goal and whether it is met. A missing
JSON file is listed as "not run" (exit code 1), so `make bench` shows what is short.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]


@dataclasses.dataclass(frozen=True)
class Row:
    figure: str
    measured: str
    anchor: str
    ratio: str
    goal: str
    met: bool | None  # None: no goal

    @property
    def verdict(self) -> str:
        return "-" if self.met is None else ("yes" if self.met else "NO")


def _s(seconds: float) -> str:
    return f"{seconds:.2f} s" if seconds < 100 else f"{seconds:.0f} s"


def _rerank(r: dict[str, Any]) -> list[Row]:
    ref = r["reference"]
    size = f"{r['sizes']['num_queries']:,} x {r['sizes']['num_gallery']:,}" if "sizes" in r else ""
    ref_label = f"reference {_s(ref['full_size_seconds'])}" + (
        " (extrapolated)" if ref.get("full_size") == "extrapolated" else ""
    )
    gib, ref_gib = r["ours"]["peak_rss_bytes"] / 2**30, ref["full_size_peak_rss_bytes"] / 2**30
    return [
        Row(
            f"re-ranking {size}",
            _s(r["ours"]["seconds"]),
            ref_label,
            f"{r['speedup']:.1f}x faster",
            f">= {r['speedup_goal']:g}x",
            bool(r["speedup_pass"]),
        ),
        Row(
            "re-ranking peak memory",
            f"{gib:.2f} GiB",
            f"reference {ref_gib:.2f} GiB",
            "-",
            f"<= {r['memory_goal_bytes'] / 2**30:g} GiB",
            bool(r["memory_pass"]),
        ),
        Row(
            "re-ranking = reference",
            "agree" if r["agreement_pass"] else "DIFFER",
            "reference, " + ("full size" if ref.get("full_size") == "measured" else f"{ref['n']:,} rows"),
            "-",
            "equal",
            bool(r["agreement_pass"]),
        ),
    ]


def _evaluate(r: dict[str, Any]) -> list[Row]:
    seconds = r["seconds"]
    return [
        Row(
            f"ranking metrics {r['num_queries']:,} x {r['num_gallery']:,}",
            _s(seconds["rank_threads"]),
            f"per-query NumPy loop {_s(seconds['loop'])}",
            f"{r['speedup_over_loop']:.1f}x faster",
            "equal",
            bool(r["agree"]),
        ),
    ]


def _search(r: dict[str, Any]) -> list[Row]:
    best = r["best_seconds"]
    return [
        Row(
            f"exact top-{r['top_k']} search {r['num_queries']:,} x {r['num_gallery']:,}",
            f"{_s(best['ours'])} ({r['cpu_blas']}'s BLAS)",
            f"faiss IndexFlatIP {_s(best['faiss'])}",
            f"{r['ratio_ours_over_faiss']:.2f} of its time",
            "<= 1.0",
            bool(r["ratio_ours_over_faiss"] <= 1.0 and r["neighbours"]["equal_neighbours"]),
        ),
    ]


def _train(r: dict[str, Any]) -> list[Row]:
    settings, rates = r["settings"], r["frames_per_s"]
    setting = f"{settings['backbone']} {settings['height']}x{settings['width']} ({settings['weights']})"
    setting += f", batch {settings['batch_size']}"
    setting += f", {settings['anchors']:,} anchors"
    loader = max(v for k, v in rates.items() if k.startswith("loader_"))
    goals, met = r["goals"], r["pass"]
    return [
        # The checked figure is the association's own time over the fastest step without it;
        # whole steps (median of rounds) and their A/A noise are shown beside it for scale.
        Row(f"association overhead, {setting}", f"{r['association_ms_per_step']:.2f} ms per step",
            f"fastest step without it {r['fastest_step_ms_without_association']:.0f} ms (whole steps "
            f"{100 * r['association_overhead_from_steps']:+.1f} %, A/A {100 * r['noise_floor']:+.1f} %)",
            f"{100 * r['association_overhead']:.1f} %", f"<= {100 * goals['association_overhead_max']:g} %",
            bool(met["association_overhead"])),
        Row(f"loader, {setting}", f"{loader:.0f} frames/s", f"training step {rates['step_dal']:.0f} frames/s",
            f"{r['loader_step_ratio']:.2f}x", f">= {goals['loader_step_ratio_min']:g}x",
            bool(met["loader_step_ratio"])),
    ]  # fmt: skip


# file name (under --input) -> rows; in the table's order.
SOURCES: dict[str, Callable[[dict[str, Any]], list[Row]]] = {
    "rerank.json": _rerank,
    "evaluate.json": _evaluate,
    "search.json": _search,
    "train-laptop.json": _train,
    "train.json": _train,
    "train-anchors.json": _train,
}
HEADER = ("figure", "measured", "anchor", "ratio", "goal", "met")


def collect(folder: Path) -> tuple[list[Row], list[str]]:
    rows: list[Row] = []
    missing: list[str] = []
    for name, extract in SOURCES.items():
        path = folder / name
        if not path.is_file():
            missing.append(name)
            continue
        rows += extract(json.loads(path.read_text()))
    return rows, missing


def render(rows: list[Row], markdown: bool) -> str:
    cells = [HEADER, *[(r.figure, r.measured, r.anchor, r.ratio, r.goal, r.verdict) for r in rows]]
    if markdown:
        lines = ["| " + " | ".join(c) + " |" for c in cells]
        lines.insert(1, "|" + "|".join([":---"] * 3 + ["---:", "---:", ":---:"]) + "|")
        return "\n".join(lines)
    widths = [max(len(c[i]) for c in cells) for i in range(len(HEADER))]
    return "\n".join("  ".join(c[i].ljust(widths[i]) for i in range(len(HEADER))).rstrip() for c in cells)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--input", default=str(REPO / "work" / "bench"), help="folder of the JSON files")
    parser.add_argument("--markdown", action="store_true")
    args = parser.parse_args(argv)
    rows, missing = collect(Path(args.input))
    print(render(rows, args.markdown))
    for name in missing:
        print(f"not run: {name}")
    short = [r.figure for r in rows if r.met is False]
    if short:
        print("short of the goal: " + "; ".join(short))
    return 1 if missing else 0


if __name__ == "__main__":
    sys.exit(main())
