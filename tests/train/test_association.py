"""The DAL association math: a hand-computed case, a slow per-frame reference, gradients, DDP."""

from __future__ import annotations

import dataclasses
from datetime import timedelta
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from components.common.errors import DalError
from components.train.association import AnchorAssociation, l2_normalize

# ---------------------------------------------------------------------------------------------
# Hand-computed case: 2 cameras (3 and 2 tracklets), D = 2, margin = eta = 0.5.
# Normalised anchors: intra cam0 t0 (1,0), t1 (0,1), t2 (-1,-1)/sqrt2; cam1 t0 zero, t1 (1,0).
# Frames (camera, tracklet, normalised feature): A (0,0,(1,0)), D (1,1,(.8,-.6)), B (0,1,(.6,.8)),
# E (1,0,(-1,0)), C (0,1,(.8,.6)).
# Nearest intra anchor in the own camera: A t0 (own, 0), B t1 (own, .4), C t0 (not own, .4),
# D t1 (own, .4), E t0 = the zero anchor (own, 1). Camera means: cam0 .8/3 = 4/15, cam1 .7.
# d_neg: A, B 4/15 (own), C .4 (not own), D, E .7 (own).
# intra hinge (d_intra - d_neg + .5): A 0-4/15+.5 = 7/30, B .4-4/15+.5 = 19/30, C .8-.4+.5 = 27/30,
#   D .4-.7+.5 = 6/30, E 1-.7+.5 = 24/30  -> mean 83/150.
# d_cross (cross: cam0 t0 zero, t1 (0,1); cam1 t0 (0,1), t1 (0,-1)): A 1, B .4, C .8, D .8, E 2
#   -> hinges 37/30, 19/30, 27/30, 18/30, 54/30 -> mean 155/150.
# ---------------------------------------------------------------------------------------------
HAND_INTRA = ([[2.0, 0.0], [0.0, 1.0], [-1.0, -1.0]], [[0.0, 0.0], [3.0, 0.0]])
HAND_CROSS = ([[0.0, 0.0], [0.0, 5.0], [1.0, 1.0]], [[0.0, 2.0], [0.0, -1.0]])
HAND_FEATURES = [[3.0, 0.0], [1.6, -1.2], [0.6, 0.8], [-1.0, 0.0], [0.8, 0.6]]  # A D B E C, unnormalised
HAND_TRACKLETS = [0, 1, 1, 0, 1]
HAND_CAMERAS = [0, 1, 0, 1, 0]
HAND_LOSS = 83 / 150 + 155 / 150
# Intra update a - .5 (a_n - f): cam0 t0 (2,0) (a_n == f), t1 (0,1) - .5((-.6,.2) + (-.8,.4)) = (.7,.7)
# (two frames add up), t2 untouched; cam1 t0 zero -> .5 f = (-.5,0), t1 (3,0) - .5((.2,.6)) = (2.9,-.3).
HAND_INTRA_AFTER = ([[2.0, 0.0], [0.7, 0.7], [-1.0, -1.0]], [[-0.5, 0.0], [2.9, -0.3]])
# Cyclic ranking on the updated normalised anchors (cam1 t1 -> m = (.994692, -.102899)):
# cam0 t0 (1,0) -> cam1 t1 (dist .0106) -> back cam0 t0: consistent, cross = ((1,0) + m) / 2;
# cam0 t1 (.7071,.7071) -> cam1 t1 (.739 < 3.414) -> back cam0 t0: not consistent, cross = own;
# cam1 t0 (-1,0) -> cam0 t2 (.586) -> back cam1 t0 (.586 < 3.26): consistent, cross = mean with t2;
# cam1 t1 m -> cam0 t0 -> back cam1 t1: consistent, cross = (m + (1,0)) / 2.
_M = [2.9 / 8.5**0.5, -0.3 / 8.5**0.5]
_S = 0.5**0.5
HAND_CROSS_AFTER_ON = (
    [[(1 + _M[0]) / 2, _M[1] / 2], [_S, _S], [1.0, 1.0]],
    [[(-1 - _S) / 2, -_S / 2], [(1 + _M[0]) / 2, _M[1] / 2]],
)
HAND_CROSS_AFTER_OFF = ([[1.0, 0.0], [_S, _S], [1.0, 1.0]], [[-1.0, 0.0], _M])


def hand_module(**kwargs) -> AnchorAssociation:
    assoc = AnchorAssociation([3, 2], 2, **kwargs)
    for c in range(2):
        assoc.intra_anchors[c].copy_(torch.tensor(HAND_INTRA[c]))
        assoc.cross_anchors[c].copy_(torch.tensor(HAND_CROSS[c]))
    return assoc


def hand_batch() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    return torch.tensor(HAND_FEATURES), torch.tensor(HAND_TRACKLETS), torch.tensor(HAND_CAMERAS)


def assert_anchors(actual: list[torch.Tensor], expected) -> None:
    for c, rows in enumerate(expected):
        torch.testing.assert_close(actual[c], torch.tensor(rows), atol=1e-6, rtol=1e-6)


@pytest.mark.parametrize("cross_camera", [True, False])
def test_hand_computed_loss_and_updates(cross_camera: bool) -> None:
    assoc = hand_module()
    features, tracklets, cameras = hand_batch()
    loss = assoc(features, tracklets, cameras, cross_camera)

    assert loss.item() == pytest.approx(HAND_LOSS, abs=1e-6)
    stats = assoc.last_stats
    assert stats.intra_loss.item() == pytest.approx(83 / 150, abs=1e-6)
    assert stats.cross_loss.item() == pytest.approx(155 / 150, abs=1e-6)
    assert stats.nearest_own_fraction.item() == pytest.approx(4 / 5)  # all but C
    assert_anchors(assoc.intra_anchors, HAND_INTRA_AFTER)
    assert_anchors(assoc.cross_anchors, HAND_CROSS_AFTER_ON if cross_camera else HAND_CROSS_AFTER_OFF)

    # Per frame (A D B E C): cyclic matches and consistency, reported whether or not merged.
    frames = stats.frames
    assert frames.camera_ids.tolist() == HAND_CAMERAS and frames.tracklet_ids.tolist() == HAND_TRACKLETS
    assert frames.matched_camera_ids.tolist() == [1, 0, 1, 0, 1]
    assert frames.matched_tracklet_ids.tolist() == [1, 0, 1, 2, 1]
    assert frames.consistent.tolist() == [True, True, False, True, False]
    assert stats.consistent_fraction.item() == pytest.approx(3 / 5)


def test_cyclic_matches_of_all_tracklets() -> None:
    assoc = hand_module()
    assoc(*hand_batch(), True)
    match = assoc.cyclic_matches()
    assert match.camera_ids.tolist() == [0, 0, 0, 1, 1]
    assert match.tracklet_ids.tolist() == [0, 1, 2, 0, 1]
    # cam0 t2 (-.7071,-.7071) -> cam1 t0 (-1,0) -> back to cam0 t2: consistent.
    assert match.matched_camera_ids.tolist() == [1, 1, 1, 0, 0]
    assert match.matched_tracklet_ids.tolist() == [1, 1, 0, 2, 0]
    assert match.consistent.tolist() == [True, False, True, True, True]


def test_gradient_reaches_features_and_never_anchors() -> None:
    assoc = hand_module()
    features = torch.tensor(HAND_FEATURES, requires_grad=True)
    loss = assoc(features, torch.tensor(HAND_TRACKLETS), torch.tensor(HAND_CAMERAS), True)
    loss.backward()  # after the in-place anchor update: nothing saved for backward was modified
    assert features.grad is not None and features.grad.abs().sum() > 0
    # E = (-1,0): only d_cross = |f - (0,1)|^2 has a tangential part, -2 in y, over 5 frames.
    torch.testing.assert_close(features.grad[3], torch.tensor([0.0, -0.4]), atol=1e-6, rtol=0)
    assert not any(b.requires_grad for b in assoc.buffers())
    assert list(assoc.parameters()) == []


def test_gradient_matches_finite_differences() -> None:
    torch.manual_seed(3)
    assoc = AnchorAssociation([3, 2], 3, init_features=[torch.randn(3, 3), torch.randn(2, 3)])
    state = {k: v.clone() for k, v in assoc.state_dict().items()}
    features = torch.randn(5, 3)
    tracklets, cameras = torch.tensor([0, 2, 2, 1, 0]), torch.tensor([0, 0, 0, 1, 1])

    def loss_at(x: torch.Tensor) -> torch.Tensor:
        assoc.load_state_dict(state)  # every call moves the anchors: restart from the same ones
        return assoc(x, tracklets, cameras, True)

    x = features.clone().requires_grad_()
    loss_at(x).backward()
    eps = 1e-3
    numeric = torch.zeros_like(features)
    for index in range(features.numel()):
        step = torch.zeros(features.numel())
        step[index] = eps
        step = step.view_as(features)
        numeric.view(-1)[index] = (loss_at(features + step) - loss_at(features - step)) / (2 * eps)
    torch.testing.assert_close(x.grad, numeric, atol=2e-3, rtol=1e-2)
    assert x.grad.abs().max() > 0.01


# ---------------------------------------------------------------------------------------------
# Independent reference: one frame at a time, in float64, straight from the description.
# ---------------------------------------------------------------------------------------------
def _norm(v: torch.Tensor) -> torch.Tensor:
    return v / torch.sqrt(torch.clamp((v * v).sum(), min=1e-10))


def _dist(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return ((a - b) ** 2).sum()


def _first_min(values: list[float]) -> int:
    best = 0
    for k, value in enumerate(values):
        if value < values[best]:
            best = k
    return best


def reference_call(intra, cross, features, tracklets, cameras, cross_camera, margin=0.5, eta=0.5):
    """Returns loss (differentiable in features), new intra, new cross, per-frame (matched, consistent)."""
    n = len(tracklets)
    f = [_norm(features[i]) for i in range(n)]
    intra_n = [[_norm(a) for a in cam] for cam in intra]
    cross_n = [[_norm(a) for a in cam] for cam in cross]
    nearest = []
    for i in range(n):
        dists = [_dist(f[i], a) for a in intra_n[cameras[i]]]
        k = _first_min([d.item() for d in dists])
        nearest.append((k, dists[k]))
    intra_sum, cross_sum = 0.0, 0.0
    for i in range(n):
        c, t = cameras[i], tracklets[i]
        if nearest[i][0] == t:
            same = [nearest[j][1] for j in range(n) if cameras[j] == c]
            d_neg = sum(same) / len(same)
        else:
            d_neg = nearest[i][1]
        intra_sum = intra_sum + torch.relu(_dist(f[i], intra_n[c][t]) - d_neg + margin)
        cross_sum = cross_sum + torch.relu(_dist(f[i], cross_n[c][t]) - d_neg + margin)
    loss = intra_sum / n + cross_sum / n

    new_intra = [cam.detach().clone() for cam in intra]
    for i in range(n):
        c, t = cameras[i], tracklets[i]
        new_intra[c][t] -= eta * (intra_n[c][t].detach() - f[i].detach())
    upd = [[_norm(a) for a in cam] for cam in new_intra]
    new_cross = [cam.detach().clone() for cam in cross]
    frames = []
    for i in range(n):
        c, t = cameras[i], tracklets[i]
        others = [(c2, t2) for c2 in range(len(upd)) if c2 != c for t2 in range(len(upd[c2]))]
        m = others[_first_min([_dist(upd[c][t], upd[c2][t2]).item() for c2, t2 in others])]
        back = _first_min([_dist(upd[m[0]][m[1]], a).item() for a in upd[c]])
        consistent = back == t
        merged = (upd[c][t] + upd[m[0]][m[1]]) / 2 if consistent and cross_camera else upd[c][t]
        new_cross[c][t] = merged
        frames.append((m, consistent))
    return loss, new_intra, new_cross, frames


def random_calls(seed: int, sizes: list[int], dim: int, batch: int, calls: int):
    """Frames drawn near a few shared 'person' directions, so that cyclic matches do happen."""
    gen = torch.Generator().manual_seed(seed)
    people = torch.randn(4, dim, generator=gen)
    out = []
    for k in range(calls):
        cameras = torch.randint(0, len(sizes), (batch,), generator=gen)
        tracklets = torch.stack(
            [torch.randint(0, sizes[c], (1,), generator=gen)[0] for c in cameras.tolist()]
        )
        tracklets[1], cameras[1] = tracklets[0], cameras[0]  # a tracklet twice in the batch
        person = (tracklets + cameras) % len(people)
        features = people[person] + 0.6 * torch.randn(batch, dim, generator=gen)
        out.append((features, tracklets, cameras, k >= 1))
    return out


@pytest.mark.parametrize("init", ["zero", "features"])
def test_matches_per_frame_reference_over_several_calls(init: str) -> None:
    sizes, dim = [3, 4, 2], 5
    torch.manual_seed(11)
    init_features = [torch.randn(n, dim) for n in sizes] if init == "features" else None
    assoc = AnchorAssociation(sizes, dim, init_features=init_features)
    intra = [a.double().clone() for a in assoc.intra_anchors]
    cross = [a.double().clone() for a in assoc.cross_anchors]
    seen = {"own": 0, "not_own": 0, "consistent": 0, "inconsistent": 0, "merged": 0}
    for features, tracklets, cameras, cross_camera in random_calls(5, sizes, dim, batch=10, calls=6):
        x = features.clone().requires_grad_()
        loss = assoc(x, tracklets, cameras, cross_camera)
        loss.backward()
        x_ref = features.double().requires_grad_()
        ref_loss, intra, cross, frames = reference_call(
            intra, cross, x_ref, tracklets.tolist(), cameras.tolist(), cross_camera
        )
        ref_loss.backward()

        torch.testing.assert_close(loss.double(), ref_loss.detach(), atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(x.grad.double(), x_ref.grad, atol=1e-5, rtol=1e-4)
        for c in range(len(sizes)):
            torch.testing.assert_close(assoc.intra_anchors[c].double(), intra[c], atol=1e-5, rtol=1e-5)
            torch.testing.assert_close(assoc.cross_anchors[c].double(), cross[c], atol=1e-5, rtol=1e-5)
        got = assoc.last_stats.frames
        assert got.matched_camera_ids.tolist() == [m[0] for m, _ in frames]
        assert got.matched_tracklet_ids.tolist() == [m[1] for m, _ in frames]
        assert got.consistent.tolist() == [ok for _, ok in frames]

        own = assoc.last_stats.nearest_own_fraction.item() * len(tracklets)
        seen["own"] += round(own)
        seen["not_own"] += len(tracklets) - round(own)
        seen["consistent"] += sum(ok for _, ok in frames)
        seen["inconsistent"] += sum(not ok for _, ok in frames)
        seen["merged"] += sum(ok for _, ok in frames) if cross_camera else 0
    # The data must exercise every branch, or this comparison proves little.
    assert all(count > 0 for count in seen.values()), seen


def _eta_calls(eta: float, init_features=None, unit_start=False) -> tuple[list[torch.Tensor], list[float]]:
    sizes, dim = [3, 4, 2], 5
    assoc = AnchorAssociation(sizes, dim, eta=eta, init_features=init_features, unit_start=unit_start)
    losses = [
        float(assoc(features, tracklets, cameras, cross_camera))
        for features, tracklets, cameras, cross_camera in random_calls(5, sizes, dim, batch=10, calls=6)
    ]
    return [l2_normalize(a) for a in assoc.intra_anchors], losses


def test_eta_only_matters_for_anchors_started_from_features() -> None:
    """A property of the update rule a <- a - eta * (normalize(a) - f), as in the reference code:
    from zero, an anchor stays eta times an eta-free vector, so its direction, the losses and the
    rankings do not depend on eta; started from unit-norm features, eta is a moving-average rate."""
    zero_a, losses_a = _eta_calls(0.5)
    zero_b, losses_b = _eta_calls(0.1)
    assert losses_a == pytest.approx(losses_b, abs=1e-5)
    for a, b in zip(zero_a, zero_b, strict=True):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)
    init = [torch.randn(n, 5, generator=torch.Generator().manual_seed(n)) for n in (3, 4, 2)]
    started_a, _ = _eta_calls(0.5, init)
    started_b, _ = _eta_calls(0.1, init)
    assert not torch.allclose(torch.cat(started_a), torch.cat(started_b), atol=1e-3)
    unit_a, _ = _eta_calls(0.5, unit_start=True)
    unit_b, _ = _eta_calls(0.1, unit_start=True)
    assert not torch.allclose(torch.cat(unit_a), torch.cat(unit_b), atol=1e-3)


def test_unit_start_begins_at_the_frames_mean_then_moves_by_eta() -> None:
    assoc = AnchorAssociation([2, 2], 3, eta=0.25, unit_start=True)
    f1, f2, f3 = l2_normalize(torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 2.0]]))
    # Tracklet 0 of camera 0 seen twice in the first batch; tracklet 1 of camera 1 once.
    assoc(torch.stack([f1, f2, f3]), torch.tensor([0, 0, 1]), torch.tensor([0, 0, 1]), False)
    torch.testing.assert_close(assoc.intra_anchors[0][0], (f1 + f2) / 2)
    torch.testing.assert_close(assoc.intra_anchors[1][1], f3)
    assert float(assoc.intra_anchors[0][1].abs().sum()) == 0.0  # never seen: still zero
    before = assoc.intra_anchors[1][1].clone()
    assoc(f1[None], torch.tensor([1]), torch.tensor([1]), False)
    torch.testing.assert_close(assoc.intra_anchors[1][1], before - 0.25 * (l2_normalize(before) - f1))


def test_state_dict_round_trip_and_init_features() -> None:
    torch.manual_seed(0)
    feats = [torch.randn(3, 4), torch.randn(2, 4)]
    assoc = AnchorAssociation([3, 2], 4, init_features=feats)
    for c in range(2):
        torch.testing.assert_close(assoc.intra_anchors[c], feats[c] / feats[c].norm(dim=1, keepdim=True))
        torch.testing.assert_close(assoc.cross_anchors[c], assoc.intra_anchors[c])
    batch = (torch.randn(6, 4), torch.tensor([0, 1, 2, 0, 1, 1]), torch.tensor([0, 0, 0, 1, 1, 1]))
    assoc(*batch, True)
    state = assoc.state_dict()
    assert sorted(state) == ["cross_anchor_0", "cross_anchor_1", "intra_anchor_0", "intra_anchor_1"]

    restored = AnchorAssociation([3, 2], 4)
    restored.load_state_dict(state)
    for a, b in zip(assoc.buffers(), restored.buffers(), strict=True):
        assert torch.equal(a, b)
    more = (torch.randn(4, 4), torch.tensor([2, 2, 0, 1]), torch.tensor([0, 0, 1, 1]))
    assert torch.equal(assoc(*more, True), restored(*more, True))
    with pytest.raises(RuntimeError):
        AnchorAssociation([3, 3], 4).load_state_dict(state)  # another dataset's tracklet counts


def test_to_device_moves_every_buffer_and_views_follow() -> None:
    assoc = AnchorAssociation([3, 2], 4).to("meta")  # stands in for cuda: every tensor must move
    assert {b.device.type for b in assoc.buffers()} == {"meta"}
    assert assoc.intra_anchors[1].device.type == "meta" and assoc.cross_anchors[0].device.type == "meta"
    assoc = AnchorAssociation([3, 2], 4)
    assoc.intra_anchors[1][0, 2] = 5.0  # the list entries are the buffers themselves
    assert assoc.state_dict()["intra_anchor_1"][0, 2] == 5.0


def test_l2_normalize_matches_tf_epsilon() -> None:
    x = torch.tensor([[3.0, 4.0], [0.0, 0.0], [1e-6, 0.0]])
    # x / sqrt(max(|x|^2, 1e-10)): a zero row stays zero, a tiny one is divided by 1e-5.
    torch.testing.assert_close(l2_normalize(x), torch.tensor([[0.6, 0.8], [0.0, 0.0], [0.1, 0.0]]))


def test_dtypes_and_autocast_compute_in_float32() -> None:
    features, tracklets, cameras = hand_batch()
    for kind in ("bfloat16-features", "float64-features", "int32-ids", "cpu-autocast"):
        assoc = hand_module()
        x, t, c = features, tracklets, cameras
        if kind == "bfloat16-features":
            x = features.bfloat16()
        elif kind == "float64-features":
            x = features.double()
        elif kind == "int32-ids":
            t, c = tracklets.int(), cameras.int()
        x = x.clone().requires_grad_()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=kind == "cpu-autocast"):
            loss = assoc(x, t, c, True)
        loss.backward()
        assert loss.dtype == torch.float32 and x.grad.dtype == x.dtype, kind
        assert all(a.dtype == torch.float32 for a in assoc.buffers() if a.is_floating_point()), kind
        # The same call in plain float32 on the same (possibly bf16-rounded) values.
        expected = hand_module()
        expected_loss = expected(x.detach().float(), tracklets, cameras, True)
        assert loss.item() == pytest.approx(expected_loss.item(), abs=1e-6), kind
        for a, b in zip(assoc.buffers(), expected.buffers(), strict=True):
            torch.testing.assert_close(a, b, atol=1e-6, rtol=1e-6)
        if kind != "bfloat16-features":  # the hand values are not exact in bf16
            assert loss.item() == pytest.approx(HAND_LOSS, abs=1e-6), kind
            assert_anchors(assoc.cross_anchors, HAND_CROSS_AFTER_ON)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_matches_cpu_and_is_deterministic() -> None:
    calls = random_calls(7, [3, 4, 2], 6, batch=16, calls=4)
    results = []
    for device, autocast in (("cpu", False), ("cuda", False), ("cuda", True), ("cuda", True)):
        assoc = AnchorAssociation([3, 4, 2], 6).to(device)
        losses = []
        for features, tracklets, cameras, cross_camera in calls:
            x = features.to(device)
            with torch.autocast(device, dtype=torch.bfloat16, enabled=autocast):
                losses.append(assoc(x, tracklets.to(device), cameras.to(device), cross_camera).item())
        results.append((losses, [a.cpu() for a in assoc.buffers() if a.is_floating_point()]))
    for losses, anchors in results[1:]:
        assert losses == pytest.approx(results[0][0], abs=1e-5)
        for a, b in zip(anchors, results[0][1], strict=True):
            torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)
    for a, b in zip(results[2][1], results[3][1], strict=True):  # same inputs, bit-identical anchors
        assert torch.equal(a, b)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"features": torch.zeros(5, 3)}, "features"),
        ({"tracklets": torch.tensor([0, 1, 1, 0, 3])}, "tracklet_ids"),  # camera 0 has 3 tracklets
        ({"tracklets": torch.tensor([0, 1, 1, 2, 1])}, "tracklet_ids"),  # camera 1 has 2
        ({"cameras": torch.tensor([0, 1, 0, 2, 0])}, "camera_ids"),
        ({"cameras": torch.tensor([0.0, 1, 0, 1, 0])}, "camera_ids"),
        ({"cameras": torch.tensor([0, 1, 0, 1])}, "camera_ids"),
    ],
)
def test_bad_inputs_are_refused_before_anything_changes(change: dict, message: str) -> None:
    assoc = hand_module()
    features, tracklets, cameras = hand_batch()
    args = {"features": features, "tracklets": tracklets, "cameras": cameras} | change
    with pytest.raises(DalError, match=message):
        assoc(args["features"], args["tracklets"], args["cameras"], True)
    assert_anchors(assoc.intra_anchors, HAND_INTRA)


def test_bad_construction_is_refused() -> None:
    with pytest.raises(DalError, match="tracklets_per_camera"):
        AnchorAssociation([4], 8)
    with pytest.raises(DalError, match="tracklets_per_camera"):
        AnchorAssociation([4, 0], 8)
    with pytest.raises(DalError, match="init_features\\[1\\]"):
        AnchorAssociation([2, 3], 4, init_features=[torch.zeros(2, 4), torch.zeros(2, 4)])
    with pytest.raises(RuntimeError, match="process group"):
        AnchorAssociation([2, 3], 4, distributed=True)(
            torch.ones(1, 4), torch.tensor([0]), torch.tensor([0]), True
        )


# ---------------------------------------------------------------------------------------------
# DDP: two gloo processes on the CPU, each with its part of a fixed global batch.
# ---------------------------------------------------------------------------------------------
DDP_SIZES, DDP_DIM = [3, 4, 2], 5
DDP_SPLITS = {"equal": (4, 4), "unequal": (3, 5)}


def _ddp_calls():
    return random_calls(21, DDP_SIZES, DDP_DIM, batch=8, calls=4)


def _run_calls(assoc: AnchorAssociation, calls, start: int, stop: int) -> list[dict]:
    records = []
    for features, tracklets, cameras, cross_camera in calls:
        x = features[start:stop].clone().requires_grad_()
        loss = assoc(x, tracklets[start:stop], cameras[start:stop], cross_camera)
        loss.backward()
        stats = assoc.last_stats
        records.append(
            {
                "loss": loss.detach(),
                "grad": x.grad,
                "anchors": [a.clone() for a in (*assoc.intra_anchors, *assoc.cross_anchors)],
                "stats": (stats.intra_loss, stats.cross_loss, stats.consistent_fraction),
                "frames": dataclasses.asdict(stats.frames),
            }
        )
    return records


def _ddp_worker(rank: int, world: int, init_file: str, out_dir: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group(
        "gloo", init_method=f"file://{init_file}", rank=rank, world_size=world, timeout=timedelta(seconds=120)
    )
    try:
        result = {}
        for name, split in DDP_SPLITS.items():
            start = sum(split[:rank])
            stop = start + split[rank]
            init = [torch.randn(n, DDP_DIM, generator=torch.Generator().manual_seed(n)) for n in DDP_SIZES]
            result[name] = _run_calls(
                AnchorAssociation(DDP_SIZES, DDP_DIM, init_features=init), _ddp_calls(), start, stop
            )
            # The override: the same math on the local batch alone, inside the process group.
            local = AnchorAssociation(DDP_SIZES, DDP_DIM, init_features=init, distributed=False)
            result[f"{name}-local"] = _run_calls(local, _ddp_calls(), start, stop)
        torch.save(result, Path(out_dir) / f"rank{rank}.pt")
    finally:
        dist.destroy_process_group()


@pytest.mark.timeout(300)
def test_ddp_matches_one_process_on_the_whole_batch(tmp_path: Path) -> None:
    world = 2
    mp.spawn(_ddp_worker, args=(world, str(tmp_path / "rendezvous"), str(tmp_path)), nprocs=world, join=True)
    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=False) for r in range(world)]

    def single(start: int, stop: int) -> list[dict]:
        init = [torch.randn(n, DDP_DIM, generator=torch.Generator().manual_seed(n)) for n in DDP_SIZES]
        return _run_calls(
            AnchorAssociation(DDP_SIZES, DDP_DIM, init_features=init), _ddp_calls(), start, stop
        )

    for name, split in DDP_SPLITS.items():
        whole = single(0, sum(split))
        for k, expected in enumerate(whole):
            got = [ranks[r][name][k] for r in range(world)]
            # Every rank holds the same anchors, those of one process on the whole batch.
            for a, b in zip(got[0]["anchors"], got[1]["anchors"], strict=True):
                assert torch.equal(a, b)
            for a, b in zip(got[0]["anchors"], expected["anchors"], strict=True):
                torch.testing.assert_close(a, b, atol=1e-6, rtol=1e-6)
            for r in range(world):
                torch.testing.assert_close(got[r]["stats"], expected["stats"], atol=1e-6, rtol=1e-6)
                for field, value in expected["frames"].items():
                    assert torch.equal(got[r]["frames"][field], value), field
            # Each rank's loss is the mean over its frames: frame-weighted, they give the whole loss.
            weighted = sum(got[r]["loss"] * split[r] for r in range(world)) / sum(split)
            torch.testing.assert_close(weighted, expected["loss"], atol=1e-6, rtol=1e-6)
            if split[0] == split[1]:
                # The all_gather backward sums every rank's loss gradient into each rank's features
                # (world x the one-process gradient); DDP's averaging of parameter gradients then
                # gives exactly the one-process gradient.
                grads = torch.cat([got[r]["grad"] for r in range(world)]) / world
                torch.testing.assert_close(grads, expected["grad"], atol=1e-6, rtol=1e-5)
        # distributed=False inside the group: the local batch alone, like one process on that slice.
        for r in range(world):
            start = sum(split[:r])
            alone = single(start, start + split[r])
            for got, expected in zip(ranks[r][f"{name}-local"], alone, strict=True):
                torch.testing.assert_close(got["loss"], expected["loss"])
                torch.testing.assert_close(got["grad"], expected["grad"])
                torch.testing.assert_close(got["anchors"], expected["anchors"])
