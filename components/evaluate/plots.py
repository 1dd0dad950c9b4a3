"""Evaluation and search plots as PNG bytes: CMC and ROC curves, rank-list mosaics, score charts.

Figures are built with matplotlib's object API on an Agg canvas (no pyplot, no global backend
state), so this works in containers without a display and in threads. ``first_frames`` reads
the one frame per tracklet that a rank list shows (``dal evaluate`` and ``dal search`` share it).
"""

from __future__ import annotations

import dataclasses
import io
import logging
from collections.abc import Mapping, Sequence

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from components.common.dataset import Dataset

log = logging.getLogger(__name__)

MATCH_RGB = (0, 170, 0)
MISMATCH_RGB = (220, 0, 0)
QUERY_RGB = (40, 90, 220)
EMPTY_RGB = (200, 200, 200)
UNDECIDED_RGB = (120, 120, 120)  # a gallery frame with no same-person decision (no threshold)
MARKED_RANKS = (1, 5, 10, 20)


def figure_png(figure: Figure) -> bytes:
    """A figure of the object API rendered on an Agg canvas, as PNG bytes."""
    FigureCanvasAgg(figure)
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    return buffer.getvalue()


def cmc_png(
    curves: dict[str, Sequence[float]],
    *,
    std: dict[str, Sequence[float]] | None = None,
    title: str = "CMC",
) -> bytes:
    """CMC curves (fractions, rank 1..R) in percent; ``std`` draws a +-1 std band per curve."""
    figure = Figure(figsize=(6, 4.2), dpi=100, layout="constrained")
    axes = figure.add_subplot()
    for label, values in curves.items():
        y = 100 * np.asarray(values, dtype=float)
        ranks = np.arange(1, len(y) + 1)
        (line,) = axes.plot(ranks, y, marker=".", label=label)
        if std and label in std:
            spread = 100 * np.asarray(std[label], dtype=float)
            axes.fill_between(ranks, y - spread, y + spread, color=line.get_color(), alpha=0.2)
        for rank in MARKED_RANKS:
            if rank <= len(y):
                axes.annotate(f"{y[rank - 1]:.1f}", (rank, y[rank - 1]), textcoords="offset points",
                              xytext=(0, 6), ha="center", fontsize=8)  # fmt: skip
    axes.set_xlabel("rank")
    axes.set_ylabel("matching rate (%)")
    axes.set_ylim(0, 108)  # room for the labels above 100 %
    axes.xaxis.set_major_locator(MaxNLocator(integer=True))
    axes.set_xlim(0.5, max(len(v) for v in curves.values()) + 0.5)
    axes.grid(alpha=0.3)
    axes.set_title(title)
    if len(curves) > 1 or std:
        axes.legend(loc="lower right")
    return figure_png(figure)


@dataclasses.dataclass(frozen=True)
class RankRow:
    """One query of a rank list: its frame and its top gallery frames (None where missing)."""

    query: np.ndarray | None  # (H, W, 3) uint8
    gallery: Sequence[np.ndarray | None]
    matches: Sequence[bool | None]  # None: undecided (grey frame)
    label: str = ""
    captions: Sequence[str] = ()  # optional text under each gallery frame, e.g. its score


def bordered(
    image: np.ndarray | None, rgb: tuple[int, int, int], size: tuple[int, int], border: int
) -> np.ndarray:
    """Resize-free framing: the image (or a blank cell) centred in a (H, W) cell with a coloured border."""
    height, width = size
    cell = np.empty((height + 2 * border, width + 2 * border, 3), dtype=np.uint8)
    cell[:] = rgb
    inner = np.full((height, width, 3), EMPTY_RGB, dtype=np.uint8)
    if image is not None:
        h, w = min(height, image.shape[0]), min(width, image.shape[1])
        top, left = (height - h) // 2, (width - w) // 2
        inner[top : top + h, left : left + w] = image[:h, :w, :3]
    cell[border : border + height, border : border + width] = inner
    return cell


def ranklist_mosaic(
    rows: Sequence[RankRow], size: tuple[int, int], border: int = 3, gap: int = 6
) -> np.ndarray:
    """One image: per row the query (blue frame), a gap, then gallery frames (green match / red not)."""
    columns = max(len(row.gallery) for row in rows)
    cell_h, cell_w = size[0] + 2 * border, size[1] + 2 * border
    height = len(rows) * (cell_h + border) - border
    width = (columns + 1) * (cell_w + border) + gap - border
    mosaic = np.full((height, width, 3), 255, dtype=np.uint8)
    for r, row in enumerate(rows):
        top = r * (cell_h + border)
        mosaic[top : top + cell_h, :cell_w] = bordered(row.query, QUERY_RGB, size, border)
        for c, (image, match) in enumerate(zip(row.gallery, row.matches, strict=True)):
            left = (c + 1) * (cell_w + border) + gap
            if image is None:
                rgb = EMPTY_RGB
            else:
                rgb = UNDECIDED_RGB if match is None else (MATCH_RGB if match else MISMATCH_RGB)
            mosaic[top : top + cell_h, left : left + cell_w] = bordered(image, rgb, size, border)
    return mosaic


def ranklist_png(rows: Sequence[RankRow], size: tuple[int, int] = (128, 64), title: str = "") -> bytes:
    """The rank-list mosaic with row labels and rank numbers."""
    if not rows:
        raise ValueError("a rank list needs at least one query")
    border = 3
    mosaic = ranklist_mosaic(rows, size, border, gap=6)
    inches = (max(4.0, mosaic.shape[1] / 80 + 1.8), max(2.0, mosaic.shape[0] / 80 + 0.8))
    figure = Figure(figsize=inches, dpi=100, layout="constrained")
    axes = figure.add_subplot()
    axes.imshow(mosaic, interpolation="nearest")
    cell_h, cell_w = size[0] + 2 * border, size[1] + 2 * border  # as laid out by ranklist_mosaic
    gap = 6
    axes.set_yticks(
        [r * (cell_h + border) + cell_h / 2 for r in range(len(rows))],
        [row.label for row in rows],
        fontsize=7,
    )
    columns = max(len(row.gallery) for row in rows)
    axes.set_xticks(
        [cell_w / 2] + [(c + 1) * (cell_w + border) + gap + cell_w / 2 for c in range(columns)],
        ["query"] + [str(c + 1) for c in range(columns)],
        fontsize=7,
    )
    for r, row in enumerate(rows):
        for c, caption in enumerate(row.captions):
            left = (c + 1) * (cell_w + border) + gap + cell_w / 2
            axes.text(left, r * (cell_h + border) + cell_h - 2, caption, ha="center", va="bottom",
                      fontsize=6, color="white", bbox={"facecolor": "black", "alpha": 0.6, "pad": 1,
                                                       "linewidth": 0})  # fmt: skip
    axes.tick_params(length=0)
    for spine in axes.spines.values():
        spine.set_visible(False)
    axes.set_title(title or "rank list (green: same person, red: different)", fontsize=9)
    return figure_png(figure)


def roc_png(
    fpr: Sequence[float],
    tpr: Sequence[float],
    operating_points: Mapping[float, tuple[float, float]] | None = None,
    *,
    title: str = "ROC",
) -> bytes:
    """A verification ROC curve (TPR against FPR on a log axis), both in percent; each
    ``operating_points`` entry ``fpr -> (tpr, threshold)`` is marked and labelled."""
    x, y = 100 * np.asarray(fpr, dtype=float), 100 * np.asarray(tpr, dtype=float)
    # From the smallest measured FPR, and at least from 0.1 % (the lowest reported rate) on; a log
    # axis has no 0, so the points at FPR 0 are drawn at its left edge.
    left = min([0.1, *x[x > 0]])
    figure = Figure(figsize=(6, 4.2), dpi=100, layout="constrained")
    axes = figure.add_subplot()
    axes.step(np.maximum(x, left), y, where="post", label="ROC")
    for rate, (rate_tpr, threshold) in (operating_points or {}).items():
        axes.plot([100 * rate], [100 * rate_tpr], marker="o", color="black", markersize=4)
        axes.annotate(f"{100 * rate_tpr:.1f} % at t = {threshold:.3f}", (100 * rate, 100 * rate_tpr),
                      textcoords="offset points", xytext=(4, -12), fontsize=8)  # fmt: skip
    axes.set_xscale("log")
    axes.set_xlim(left, 100)
    axes.set_ylim(0, 102)
    axes.set_xlabel("false positive rate (%, impostor pairs accepted)")
    axes.set_ylabel("true positive rate (%, genuine pairs accepted)")
    axes.grid(alpha=0.3, which="both")
    axes.set_title(title)
    return figure_png(figure)


def scores_png(
    curves: Mapping[str, Sequence[float]], *, threshold: float | None = None, title: str = "scores"
) -> bytes:
    """Similarity against rank, one line per query; the same-person threshold dashed when given."""
    figure = Figure(figsize=(6, 4.2), dpi=100, layout="constrained")
    axes = figure.add_subplot()
    for label, values in curves.items():
        y = np.asarray(values, dtype=float)
        axes.plot(np.arange(1, len(y) + 1), y, marker=".", label=label)
    if threshold is not None:
        axes.axhline(
            threshold, color="black", linestyle="--", linewidth=1, label=f"threshold {threshold:.3f}"
        )
    axes.xaxis.set_major_locator(MaxNLocator(integer=True))
    axes.set_xlabel("rank")
    axes.set_ylabel("cosine similarity")
    axes.grid(alpha=0.3)
    axes.set_title(title)
    if curves or threshold is not None:
        axes.legend(loc="upper right", fontsize=7)
    return figure_png(figure)


def first_frames(dataset: Dataset, tracklet_ids: np.ndarray, size: tuple[int, int]) -> dict[int, np.ndarray]:
    """One decoded frame (the first stored) per tracklet, resized to ``size`` (H, W), as uint8
    RGB arrays; streams only the row groups that hold a wanted tracklet. A frame that cannot be
    decoded is left out (the rank list shows a blank cell)."""
    from PIL import Image, UnidentifiedImageError

    wanted = set(int(t) for t in tracklet_ids)
    frames: dict[int, np.ndarray] = {}
    for ref in dataset.row_groups():
        todo = {t for t in wanted - frames.keys() if ref.tracklet_min <= t <= ref.tracklet_max}
        if not todo:
            continue
        table = dataset.read_row_group(ref, ["tracklet_id", "image"])
        ids = table.column("tracklet_id").to_numpy()
        column = table.column("image")
        for tracklet in todo:
            hits = np.flatnonzero(ids == tracklet)
            if len(hits) == 0:
                continue
            try:
                with Image.open(io.BytesIO(column[int(hits[0])].as_py())) as image:
                    resized = image.convert("RGB").resize((size[1], size[0]), Image.Resampling.BILINEAR)
                    frames[tracklet] = np.asarray(resized)
            except (UnidentifiedImageError, OSError) as exc:  # only a picture: show a blank cell
                log.warning("rank list: cannot decode a frame of tracklet %d (%s)", tracklet, exc)
        if len(frames) == len(wanted):
            break
    return frames
