"""What the association's speed rests on, checked without timing anything (issue 15).

The association keeps the normalised intra anchors between calls and refreshes only the rows a
call moves; that is exact because normalising is row by row. The per-camera buffers are views
of one (N, D) matrix per kind. And a call never runs an elementwise pass over all N anchors:
at MARS's 8298 tracklets those passes (cat, normalise, squared norms) were most of its time.
"""

from __future__ import annotations

import collections
import copy

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from components.train.association import AnchorAssociation, l2_normalize


def _calls(sizes: list[int], dim: int, batch: int, n: int, seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    for k in range(n):
        cameras = torch.randint(0, len(sizes), (batch,), generator=gen)
        limits = torch.tensor(sizes)[cameras]
        tracklets = (torch.rand(batch, generator=gen) * limits).long()
        yield torch.randn(batch, dim, generator=gen), tracklets, cameras, k % 2 == 1


def _assert_kept_norms_are_fresh(assoc: AnchorAssociation) -> None:
    intra_n, intra_sq = assoc._normalized_intra()
    fresh = l2_normalize(torch.cat(assoc.intra_anchors))
    assert torch.equal(intra_n, fresh)
    assert torch.equal(intra_sq, fresh.pow(2).sum(1))


@pytest.mark.parametrize("dim", [3, 96, 1024])
def test_normalising_some_rows_is_bit_identical_to_normalising_all(dim: int) -> None:
    x = torch.randn(300, dim, generator=torch.Generator().manual_seed(dim)) * 3
    x[7] = 0.0
    whole = l2_normalize(x)
    for rows in (torch.tensor([5]), torch.tensor([7, 0, 299]), torch.randperm(300)[:64], torch.arange(300)):
        part = l2_normalize(x[rows])
        assert torch.equal(part, whole[rows])
        assert torch.equal(part.pow(2).sum(1), whole.pow(2).sum(1)[rows])


def test_kept_normalised_anchors_follow_every_change() -> None:
    sizes, dim = [5, 7, 3], 8
    assoc = AnchorAssociation(sizes, dim)
    for features, tracklets, cameras, cross in _calls(sizes, dim, 6, 5):
        assoc(features, tracklets, cameras, cross)
        _assert_kept_norms_are_fresh(assoc)
    assoc.intra_anchors[1][2] = 4.0  # a write to a buffer
    _assert_kept_norms_are_fresh(assoc)
    state = {k: v * 2 for k, v in assoc.state_dict().items()}
    assoc.load_state_dict(state)
    _assert_kept_norms_are_fresh(assoc)
    assoc.init_anchors([torch.randn(n, dim) for n in sizes])
    _assert_kept_norms_are_fresh(assoc)
    assoc = assoc.double()
    assert assoc._normalized_intra()[0].dtype == torch.float64
    _assert_kept_norms_are_fresh(assoc)
    for features, tracklets, cameras, cross in _calls(sizes, dim, 4, 3, seed=1):
        assoc(features, tracklets, cameras, cross)
    _assert_kept_norms_are_fresh(assoc)


def test_camera_buffers_stay_views_of_one_matrix() -> None:
    sizes = [3, 2, 4]

    def check(assoc: AnchorAssociation) -> None:
        for kind in ("intra", "cross"):
            whole = getattr(assoc, f"_{kind}")
            for part, offset in zip(getattr(assoc, f"{kind}_anchors"), (0, 3, 5), strict=True):
                assert part.untyped_storage().data_ptr() == whole.untyped_storage().data_ptr()
                assert part.storage_offset() == whole.storage_offset() + offset * whole.shape[1]

    assoc = AnchorAssociation(sizes, 4)
    check(assoc)
    check(assoc.double())
    check(copy.deepcopy(assoc))
    assoc.load_state_dict({k: torch.ones_like(v) for k, v in assoc.state_dict().items()})
    check(assoc)
    assert float(assoc._intra.sum()) == 9 * 4 and float(assoc._cross.sum()) == 9 * 4
    assoc.load_state_dict({k: torch.full_like(v, 2.0) for k, v in assoc.state_dict().items()}, assign=True)
    check(assoc)
    assert float(assoc._intra.sum()) == 9 * 4 * 2 and float(assoc._cross.sum()) == 9 * 4 * 2


class _Ops(TorchDispatchMode):
    """The aten ops run, with the shapes of their tensor arguments."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[tuple[str, list[tuple[int, ...]]]] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        shapes = [tuple(a.shape) for a in args if isinstance(a, torch.Tensor)]
        self.calls.append((func.overloadpacket.__name__, shapes))
        return func(*args, **(kwargs or {}))


def test_a_call_makes_no_elementwise_pass_over_all_anchors() -> None:
    """Only the three ranking products read all N anchor rows (and the row gathers and writes
    touch B of them): no cat, normalisation or squared norms of the (N, D) matrices per call."""
    sizes, dim = [40, 30, 30], 16  # N = 100 anchors, a batch of 8
    assoc = AnchorAssociation(sizes, dim)
    calls = list(_calls(sizes, dim, 8, 3))
    assoc(*calls[0])  # the first call normalises everything once
    ops = _Ops()
    features, tracklets, cameras, cross = calls[1]
    x = features.requires_grad_()
    with ops:
        assoc(x, tracklets, cameras, True).backward()
    whole = [name for name, shapes in ops.calls if {(100, dim), (dim, 100)} & set(shapes)]
    allowed = {"mm", "index_select", "index_add_", "index_copy_", "t", "transpose", "permute", "detach"}
    assert set(whole) <= allowed, collections.Counter(whole)
    assert collections.Counter(whole)["mm"] == 3
    # A bound on the ops of one call (forward and backward, 121 + 49 at this writing; 184 + 58
    # before issue 15): each costs microseconds, the whole call is what a small setting pays.
    assert len(ops.calls) <= 190, collections.Counter(name for name, _ in ops.calls)


def _subnormals(t: torch.Tensor) -> int:
    return int(((t != 0) & (t.abs() < torch.finfo(t.dtype).tiny)).sum())


def test_a_dead_channel_never_makes_subnormal_anchors_or_gradients() -> None:
    """A feature dimension that is always 0 halves its anchor entries at every update: without the
    flush they, and the gradient entries they feed, turn subnormal (the CPU's slow path). With it
    the results equal a float64 run to float32 rounding."""
    sizes, dim, batch = [2, 2], 6, 8
    single, double = AnchorAssociation(sizes, dim), AnchorAssociation(sizes, dim).double()
    gen = torch.Generator().manual_seed(0)
    start = [torch.rand(n, dim, generator=gen) + 0.5 for n in sizes]
    single.init_anchors(start)
    double.init_anchors([s.double() for s in start])
    worst_gradient = 0.0
    for k in range(300):
        cameras = torch.arange(batch) % 2
        tracklets = torch.randint(0, 2, (batch,), generator=gen)
        features = torch.rand(batch, dim, generator=gen) + 0.5
        features[:, 0] = 0.0  # the dead channel
        x32, x64 = features.clone().requires_grad_(), features.double().requires_grad_()
        loss32, loss64 = (
            single(x32, tracklets, cameras, k % 2 == 0),
            double(x64, tracklets, cameras, k % 2 == 0),
        )
        loss32.backward()
        loss64.backward()
        assert _subnormals(x32.grad) == 0, k
        assert _subnormals(single._intra) == 0 and _subnormals(single._cross) == 0, k
        assert abs(loss32.item() - loss64.item()) <= 1e-5 * max(1.0, loss64.item())
        worst_gradient = max(worst_gradient, float((x32.grad.double() - x64.grad).abs().max()))
    for assoc in (single, double):  # every dead entry reached its dtype's eps**2 and became 0
        assert float(assoc._intra[:, 0].abs().max()) == 0.0 and float(assoc._cross[:, 0].abs().max()) == 0.0
    assert worst_gradient <= 1e-6
    torch.testing.assert_close(single._intra.double(), double._intra, atol=1e-6, rtol=0)
    torch.testing.assert_close(single._cross.double(), double._cross, atol=1e-6, rtol=0)
