"""Evaluation plots as PNG bytes: the CMC curve and a rank-list mosaic.

Figures are built with matplotlib's object API on an Agg canvas (no pyplot, no global backend
state), so this works in containers without a display and in threads.
"""

from __future__ import annotations

import dataclasses
import io
from collections.abc import Sequence

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

MATCH_RGB = (0, 170, 0)
MISMATCH_RGB = (220, 0, 0)
QUERY_RGB = (40, 90, 220)
EMPTY_RGB = (200, 200, 200)
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

    query: np.ndarray  # (H, W, 3) uint8
    gallery: Sequence[np.ndarray | None]
    matches: Sequence[bool]
    label: str = ""


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
            rgb = EMPTY_RGB if image is None else (MATCH_RGB if match else MISMATCH_RGB)
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
    axes.tick_params(length=0)
    for spine in axes.spines.values():
        spine.set_visible(False)
    axes.set_title(title or "rank list (green: same person, red: different)", fontsize=9)
    return figure_png(figure)
