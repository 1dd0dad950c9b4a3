"""Tracklet pooling of streamed frames: equals pooling all frames at once, in any batch order."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from components.model.pooling import TrackletPooler


def _frames(seed: int = 0):
    generator = torch.Generator().manual_seed(seed)
    counts = [3, 1, 5, 2]
    index = torch.cat([torch.full((n,), t) for t, n in enumerate(counts)])
    features = torch.randn(len(index), 6, generator=generator) * 3
    return index, features, counts


def _expected(index: torch.Tensor, features: torch.Tensor, mode: str) -> torch.Tensor:
    normed = F.normalize(features, dim=1)  # frames first, as the DAL release
    rows = []
    for t in range(int(index.max()) + 1):
        part = normed[index == t]
        rows.append(part.max(dim=0).values if mode == "max" else part.mean(dim=0))
    return F.normalize(torch.stack(rows), dim=1)


@pytest.mark.parametrize("mode", ["max", "mean"])
def test_streamed_batches_in_any_order_equal_pooling_at_once(mode: str) -> None:
    index, features, counts = _frames()
    order = torch.randperm(len(index), generator=torch.Generator().manual_seed(1))
    pooler = TrackletPooler(len(counts), 6, mode, "cpu")
    for start in range(0, len(order), 4):  # batches mix tracklets; a tracklet spans batches
        chosen = order[start : start + 4]
        pooler.update(index[chosen], features[chosen])
    pooled = pooler.result()
    torch.testing.assert_close(pooled, _expected(index, features, mode))
    torch.testing.assert_close(pooled.norm(dim=1), torch.ones(len(counts)))
    assert pooler.counts.tolist() == counts


def test_max_and_mean_differ_and_unseen_tracklets_stay_zero() -> None:
    index, features, counts = _frames(2)
    poolers = {mode: TrackletPooler(len(counts) + 1, 6, mode, "cpu") for mode in ("max", "mean")}
    for pooler in poolers.values():
        pooler.update(index, features)
    assert not torch.allclose(poolers["max"].result()[:4], poolers["mean"].result()[:4])
    for pooler in poolers.values():
        assert pooler.counts[-1] == 0 and torch.equal(pooler.result()[-1], torch.zeros(6))


def test_max_pooling_handles_negative_features() -> None:
    # The accumulator starts at -inf, not 0: an all-negative feature dimension keeps its max.
    pooler = TrackletPooler(1, 2, "max", "cpu")
    pooler.update(torch.tensor([0, 0]), torch.tensor([[-1.0, -3.0], [-2.0, -1.0]]))
    expected = F.normalize(torch.tensor([[-1.0 / 10**0.5, -1.0 / 5**0.5]]), dim=1)
    torch.testing.assert_close(pooler.result(), expected)


def test_unknown_mode() -> None:
    with pytest.raises(ValueError, match="max or mean"):
        TrackletPooler(1, 2, "median", "cpu")  # type: ignore[arg-type]
