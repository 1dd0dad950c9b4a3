"""Plots: valid PNGs; rank-list frames framed green for a match, red otherwise, blue for the query."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from components.evaluate import plots


def _png_size(data: bytes) -> tuple[int, int]:
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    with Image.open(io.BytesIO(data)) as image:
        image.load()
        return image.size


def test_cmc_png_single_and_with_band() -> None:
    width, height = _png_size(plots.cmc_png({"CMC": np.linspace(0.3, 1.0, 20)}, title="t"))
    assert width > 300 and height > 200
    band = plots.cmc_png({"mean": [0.5] * 30}, std={"mean": [0.1] * 30})
    assert _png_size(band)[0] > 300


def test_ranklist_mosaic_borders() -> None:
    size, border = (8, 4), 2
    grey = np.full((8, 4, 3), 128, dtype=np.uint8)
    rows = [
        plots.RankRow(grey, [grey, grey, None], [True, False, False], "q0"),
        plots.RankRow(None, [grey, grey, grey], [False, True, True], "q1"),
    ]
    mosaic = plots.ranklist_mosaic(rows, size, border, gap=6)
    cell_h, cell_w = size[0] + 2 * border, size[1] + 2 * border
    assert mosaic.shape == (2 * cell_h + border, 4 * (cell_w + border) + 6 - border, 3)

    def corner(row: int, column: int) -> tuple[int, ...]:
        top = row * (cell_h + border)
        left = 0 if column == 0 else column * (cell_w + border) + 6
        return tuple(int(v) for v in mosaic[top, left])

    def centre(row: int, column: int) -> tuple[int, ...]:
        top = row * (cell_h + border) + cell_h // 2
        left = (0 if column == 0 else column * (cell_w + border) + 6) + cell_w // 2
        return tuple(int(v) for v in mosaic[top, left])

    assert corner(0, 0) == plots.QUERY_RGB and centre(0, 0) == (128, 128, 128)
    assert [corner(0, c) for c in (1, 2, 3)] == [plots.MATCH_RGB, plots.MISMATCH_RGB, plots.EMPTY_RGB]
    assert [corner(1, c) for c in (1, 2, 3)] == [plots.MISMATCH_RGB, plots.MATCH_RGB, plots.MATCH_RGB]
    assert centre(1, 0) == plots.EMPTY_RGB  # a query frame that could not be read: blank cell


def test_ranklist_png() -> None:
    frame = np.random.default_rng(0).integers(0, 255, (32, 16, 3), dtype=np.uint8)
    rows = [plots.RankRow(frame, [frame] * 10, [i % 3 == 0 for i in range(10)], f"q{r}") for r in range(3)]
    width, height = _png_size(plots.ranklist_png(rows, (32, 16)))
    assert width > height > 100
    with pytest.raises(ValueError, match="at least one query"):
        plots.ranklist_png([])
