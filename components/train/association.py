"""The DAL association (Chen, Zhu & Gong, BMVC 2018): anchors, losses and anchor updates, pure torch.

Each camera c holds n_c intra-camera anchors (a running summary of each of its tracklets) and
n_c cross-camera anchors (that summary merged with its cyclically consistent match in another
camera). One call computes the two margin ranking losses against the anchors as they were, then
updates the anchors in place without gradient, as in the authors' TensorFlow code:

- every vector is L2-normalised with ``x / sqrt(max(|x|^2, 1e-10))``, so a zero anchor stays zero;
  distances are squared Euclidean;
- association ranking: d_neg is the distance to the nearest intra anchor of the frame's camera,
  or, when that is the frame's own tracklet, the mean nearest distance over that camera's frames
  of the batch (which carries gradient, as in the original);
- loss = mean(relu(d_intra - d_neg + margin)) + mean(relu(d_cross - d_neg + margin));
- intra update a <- a - eta * (normalize(a) - f), frames of one tracklet adding up. From a zero
  anchor this keeps a = eta * (something eta-free), so the anchor directions, the losses and the
  rankings do not depend on eta at all (true of the reference code too): each anchor is in effect
  its tracklet's latest frames. ``unit_start`` (not in the reference) starts a zero anchor at the
  mean of its first frames instead, at unit scale, which makes eta a real moving-average rate;
- cyclic ranking on the updated normalised intra anchors: own -> nearest anchor in any other camera
  -> nearest anchor back in the own camera; if that is the own tracklet (and ``cross_camera``),
  the cross anchor becomes (own + match) / 2, else the own normalised anchor.

Under torch.distributed (world size > 1) every rank applies the same update to the gathered
batch, so all ranks hold identical anchors, and the per-camera mean in d_neg is taken over the
global batch through an autograd-aware all_gather: with equal per-rank batch sizes and DDP's
gradient averaging, the gradients are exactly those of one process on the concatenated batch.
The warm-up before cross-camera association is the caller's (it passes ``cross_camera``).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor, nn

from components.common.errors import DalError

EPSILON = 1e-10  # under the square root, as tf.nn.l2_normalize(x, 1, 1e-10)
_ROW_CHUNK = 1024  # rows of anchor-to-anchor distances computed at once in cyclic_matches


def l2_normalize(x: Tensor) -> Tensor:
    return x * torch.rsqrt(x.pow(2).sum(-1, keepdim=True).clamp_min(EPSILON))


def _ranking_distances(x: Tensor, y: Tensor) -> Tensor:
    """Squared distances (n, m) by one matmul: used only to rank, never differentiated."""
    return x.pow(2).sum(1, keepdim=True) + y.pow(2).sum(1) - 2 * x @ y.T


@dataclasses.dataclass(frozen=True)
class CyclicMatch:
    """Cyclic ranking of some tracklets (rows), all detached tensors of equal length."""

    camera_ids: Tensor
    tracklet_ids: Tensor
    matched_camera_ids: Tensor  # the nearest tracklet in any other camera
    matched_tracklet_ids: Tensor
    consistent: Tensor  # ranking back from the match lands on the own tracklet


@dataclasses.dataclass(frozen=True)
class AssociationStats:
    """Detached statistics of one call over the global (gathered, rank-ordered) batch."""

    intra_loss: Tensor  # equals the single-process loss terms on the concatenated batch
    cross_loss: Tensor
    nearest_own_fraction: Tensor  # frames whose nearest intra anchor is their own tracklet's
    consistent_fraction: Tensor  # frames whose tracklet is cyclically consistent
    frames: CyclicMatch  # per frame; consistency is reported whether or not cross_camera is on

    @property
    def loss(self) -> Tensor:
        return self.intra_loss + self.cross_loss


class AnchorAssociation(nn.Module):
    """Intra- and cross-camera anchors per camera, the association loss and the anchor updates.

    ``distributed=None`` gathers over ``process_group`` (default: the world) whenever
    torch.distributed is initialised with more than one rank; ``False`` always computes on the
    local batch alone (e.g. unit tests, or a reference computation inside a process group).
    """

    def __init__(
        self,
        tracklets_per_camera: Sequence[int],
        feature_dim: int,
        margin: float = 0.5,
        eta: float = 0.5,
        *,
        init_features: Sequence[Tensor] | None = None,
        unit_start: bool = False,
        distributed: bool | None = None,
        process_group: dist.ProcessGroup | None = None,
    ) -> None:
        super().__init__()
        sizes = [int(n) for n in tracklets_per_camera]
        if len(sizes) < 2 or min(sizes) < 1:
            raise DalError(f"tracklets_per_camera: need >= 2 cameras with >= 1 tracklet each, got {sizes}")
        if feature_dim < 1 or margin < 0 or eta <= 0:
            raise DalError(f"need feature_dim >= 1, margin >= 0, eta > 0; got {feature_dim}, {margin}, {eta}")
        self.sizes = tuple(sizes)
        self.feature_dim = int(feature_dim)
        self.margin = float(margin)
        self.eta = float(eta)
        self.unit_start = bool(unit_start)
        self._distributed = distributed
        self._process_group = process_group
        for c, n in enumerate(sizes):
            self.register_buffer(f"intra_anchor_{c}", torch.zeros(n, feature_dim))
            self.register_buffer(f"cross_anchor_{c}", torch.zeros(n, feature_dim))
        # Anchors of all cameras are ranked as one concatenated (N, D) matrix; these map its rows.
        offsets = torch.tensor([0, *sizes]).cumsum(0)
        self.register_buffer("_offsets", offsets, persistent=False)
        self.register_buffer("_sizes", torch.tensor(sizes), persistent=False)
        self.register_buffer(
            "_row_camera",
            torch.repeat_interleave(torch.arange(len(sizes)), torch.tensor(sizes)),
            persistent=False,
        )
        self.last_stats: AssociationStats | None = None
        if init_features is not None:
            self.init_anchors(init_features)

    @property
    def num_cameras(self) -> int:
        return len(self.sizes)

    @property
    def dtype(self) -> torch.dtype:
        """The anchors' dtype, in which all distances and updates are computed (float32 unless the
        module was converted, e.g. ``.double()`` for float64 reference runs)."""
        return self.intra_anchor_0.dtype

    @property
    def intra_anchors(self) -> list[Tensor]:
        """The buffers themselves: in-place changes are the module's state."""
        return [getattr(self, f"intra_anchor_{c}") for c in range(self.num_cameras)]

    @property
    def cross_anchors(self) -> list[Tensor]:
        return [getattr(self, f"cross_anchor_{c}") for c in range(self.num_cameras)]

    def extra_repr(self) -> str:
        return (
            f"tracklets_per_camera={list(self.sizes)}, feature_dim={self.feature_dim}, "
            f"margin={self.margin}, eta={self.eta}, unit_start={self.unit_start}"
        )

    @torch.no_grad()
    def init_anchors(self, features_per_camera: Sequence[Tensor]) -> None:
        """Start both anchor sets from given (e.g. pre-extracted tracklet) features, L2-normalised."""
        if len(features_per_camera) != self.num_cameras:
            raise DalError(
                f"init_features: expected {self.num_cameras} cameras, got {len(features_per_camera)}"
            )
        for c, feats in enumerate(features_per_camera):
            expected = (self.sizes[c], self.feature_dim)
            if tuple(feats.shape) != expected:
                raise DalError(f"init_features[{c}]: expected shape {expected}, got {tuple(feats.shape)}")
            for anchors in (self.intra_anchors[c], self.cross_anchors[c]):
                anchors.copy_(l2_normalize(feats.to(anchors.device, anchors.dtype)))

    def forward(
        self, features: Tensor, tracklet_ids: Tensor, camera_ids: Tensor, cross_camera: bool
    ) -> Tensor:
        """The association loss of this (local) batch; then updates the anchors in place."""
        tracklet_ids, camera_ids = self._check_inputs(features, tracklet_ids, camera_ids)
        group = self._group()
        # Distances and anchor updates stay in the anchors' dtype (fp32) under the caller's bf16 autocast.
        with torch.autocast(device_type=features.device.type, enabled=False):
            dtype = self.dtype
            f = l2_normalize(features.to(dtype))
            rows = self._offsets[camera_ids] + tracklet_ids  # each frame's row in the concatenated anchors
            intra_n = l2_normalize(torch.cat(self.intra_anchors).to(dtype))  # anchors before this call
            d_intra = (f - intra_n[rows]).pow(2).sum(1)
            d_cross = (f - l2_normalize(torch.cat(self.cross_anchors).to(dtype)[rows])).pow(2).sum(1)

            # Association ranking: the nearest intra anchor of the frame's own camera.
            with torch.no_grad():
                other_camera = self._row_camera[None, :] != camera_ids[:, None]
                nearest = _ranking_distances(f, intra_n).masked_fill_(other_camera, float("inf")).argmin(1)
            d_nearest = (f - intra_n[nearest]).pow(2).sum(1)  # exact, and differentiable like tf.nn.top_k
            own_nearest = nearest == rows

            ids = torch.stack([tracklet_ids, camera_ids, own_nearest.long()], 1)
            details = torch.cat([f, d_intra[:, None], d_cross[:, None]], 1).detach()
            d_nearest_all, ids_all, details_all = _gather(group, d_nearest, ids, details)
            tid_all, cam_all, own_all = ids_all.unbind(1)

            # Per-camera mean nearest distance over the global batch, without atomics (deterministic).
            in_camera = (cam_all[None, :] == torch.arange(self.num_cameras, device=f.device)[:, None]).to(
                dtype
            )
            camera_mean = (in_camera * d_nearest_all).sum(1) / in_camera.sum(1).clamp_min(1)
            d_neg = torch.where(own_nearest, camera_mean[camera_ids], d_nearest)
            intra_terms = F.relu(d_intra - d_neg + self.margin)
            cross_terms = F.relu(d_cross - d_neg + self.margin)
            loss = intra_terms.mean() + cross_terms.mean()

            with torch.no_grad():
                f_all, d_intra_all, d_cross_all = details_all.split([self.feature_dim, 1, 1], 1)
                d_neg_all = torch.where(own_all.bool(), camera_mean[cam_all], d_nearest_all).detach()
                frames = self._update(f_all, tid_all, cam_all, intra_n, cross_camera)
                self.last_stats = AssociationStats(
                    intra_loss=F.relu(d_intra_all[:, 0] - d_neg_all + self.margin).mean(),
                    cross_loss=F.relu(d_cross_all[:, 0] - d_neg_all + self.margin).mean(),
                    nearest_own_fraction=own_all.float().mean(),
                    consistent_fraction=frames.consistent.float().mean(),
                    frames=frames,
                )
        return loss

    def _update(
        self, f: Tensor, tids: Tensor, cams: Tensor, intra_n_before: Tensor, cross_camera: bool
    ) -> CyclicMatch:
        """The anchor updates from the global batch: identical inputs, identical results on every rank."""
        rows = self._offsets[cams] + tids
        delta = self.eta * (f - intra_n_before[rows])
        if self.unit_start:  # a still-zero anchor becomes the mean of its frames here, at unit scale
            unseen = intra_n_before[rows].pow(2).sum(1) == 0
            frames_per_row = torch.bincount(rows, minlength=int(self._offsets[-1]))[rows]
            delta = torch.where(unseen[:, None], f / frames_per_row[:, None], delta)
        for c, anchors in enumerate(self.intra_anchors):
            in_c = cams == c
            _add_rows(anchors, tids[in_c], delta[in_c].to(anchors.dtype))

        # Cross anchors depend only on the updated intra anchors, so each tracklet is computed once.
        intra_n = l2_normalize(torch.cat(self.intra_anchors).to(self.dtype))
        unique_rows, frame_to_unique = torch.unique(rows, return_inverse=True)
        match = self._cyclic(intra_n, unique_rows)
        own = intra_n[unique_rows]
        merge = match.consistent[:, None] & bool(cross_camera)
        matched_rows = self._offsets[match.matched_camera_ids] + match.matched_tracklet_ids
        new_cross = torch.where(merge, (own + intra_n[matched_rows]) / 2, own)
        for c, anchors in enumerate(self.cross_anchors):
            in_c = match.camera_ids == c
            anchors.index_copy_(0, match.tracklet_ids[in_c], new_cross[in_c].to(anchors.dtype))
        return CyclicMatch(**{k: v[frame_to_unique] for k, v in _fields(match).items()})

    def _cyclic(self, intra_n: Tensor, rows: Tensor) -> CyclicMatch:
        """Cyclic ranking of the given rows of the concatenated normalised intra anchors."""
        own_camera = self._row_camera[rows]
        same_camera = self._row_camera[None, :] == own_camera[:, None]
        to_other = _ranking_distances(intra_n[rows], intra_n).masked_fill_(same_camera, float("inf"))
        matched = to_other.argmin(1)  # first minimum: lowest camera, then lowest tracklet
        back = (
            _ranking_distances(intra_n[matched], intra_n).masked_fill_(~same_camera, float("inf")).argmin(1)
        )
        matched_camera = self._row_camera[matched]
        return CyclicMatch(
            camera_ids=own_camera,
            tracklet_ids=rows - self._offsets[own_camera],
            matched_camera_ids=matched_camera,
            matched_tracklet_ids=matched - self._offsets[matched_camera],
            consistent=back == rows,
        )

    @torch.no_grad()
    def cyclic_matches(self) -> CyclicMatch:
        """Cyclic match of every tracklet of every camera (camera-major order) from the current anchors."""
        device = self.intra_anchor_0.device
        with torch.autocast(device_type=device.type, enabled=False):
            intra_n = l2_normalize(torch.cat(self.intra_anchors).to(self.dtype))
            rows = torch.arange(intra_n.shape[0], device=device)
            parts = [_fields(self._cyclic(intra_n, chunk)) for chunk in rows.split(_ROW_CHUNK)]
        return CyclicMatch(**{k: torch.cat([p[k] for p in parts]) for k in parts[0]})

    def _check_inputs(
        self, features: Tensor, tracklet_ids: Tensor, camera_ids: Tensor
    ) -> tuple[Tensor, Tensor]:
        if features.ndim != 2 or features.shape[1] != self.feature_dim or features.shape[0] == 0:
            raise DalError(
                f"features: expected shape (B >= 1, {self.feature_dim}), got {tuple(features.shape)}"
            )
        ids = []
        for name, values in (("tracklet_ids", tracklet_ids), ("camera_ids", camera_ids)):
            if values.shape != features.shape[:1] or values.is_floating_point() or values.is_complex():
                got = f"{values.dtype} {tuple(values.shape)}"
                raise DalError(f"{name}: expected integers of shape ({features.shape[0]},), got {got}")
            ids.append(values.to(device=features.device, dtype=torch.long))
        tids, cams = ids
        bad_camera = (cams < 0) | (cams >= self.num_cameras)
        bad_tracklet = (tids < 0) | (tids >= self._sizes[cams.clamp(0, self.num_cameras - 1)])
        if bool((bad_camera | bad_tracklet).any()):  # one sync, before any index could go out of range
            raise DalError(
                f"camera_ids/tracklet_ids: out of range for tracklets_per_camera={list(self.sizes)} "
                f"(cameras {cams[bad_camera].tolist()[:5]}, tracklets {tids[bad_tracklet].tolist()[:5]})"
            )
        return tids, cams

    def _group(self) -> dist.ProcessGroup | None:
        """The process group to gather over, or None to work on the local batch alone."""
        if self._distributed is False:
            return None
        if not (dist.is_available() and dist.is_initialized()):
            if self._distributed:
                raise RuntimeError("AnchorAssociation(distributed=True) needs an initialised process group")
            return None
        group = self._process_group or dist.group.WORLD
        return group if dist.get_world_size(group) > 1 else None


def _fields(match: CyclicMatch) -> dict[str, Tensor]:
    return {field.name: getattr(match, field.name) for field in dataclasses.fields(match)}  # no copies


def _add_rows(target: Tensor, index: Tensor, rows: Tensor) -> None:
    """target[index] += rows, duplicates adding up, in a run-to-run deterministic order.

    CUDA's index_add_ adds with atomics (order varies), which would let the ranks' anchors drift
    apart; index_put_(accumulate=True) is torch's deterministic sort-based path there. On the CPU
    index_add_ is sequential.
    """
    if target.is_cuda:
        target.index_put_((index,), rows, accumulate=True)
    else:
        target.index_add_(0, index, rows)


def _gather(
    group: dist.ProcessGroup | None, d_nearest: Tensor, ids: Tensor, details: Tensor
) -> tuple[Tensor, ...]:
    """Rows of every rank in rank order: d_nearest keeps its gradient path, the rest is detached.

    Ranks may hold different batch sizes (rows are padded to the largest and trimmed again).
    """
    if group is None:
        return d_nearest, ids, details
    # Imported here: torch.distributed.nn also loads the RPC remote-module API, only needed under DDP.
    from torch.distributed.nn.functional import all_gather as all_gather_with_grad

    world = dist.get_world_size(group)
    local = torch.tensor([d_nearest.shape[0]], device=d_nearest.device)
    sizes = [torch.empty_like(local) for _ in range(world)]
    dist.all_gather(sizes, local, group=group)
    sizes = [int(s) for s in torch.cat(sizes).tolist()]
    longest = max(sizes)

    def pad(t: Tensor) -> Tensor:
        return (
            torch.cat([t, t.new_zeros((longest - t.shape[0], *t.shape[1:]))]) if t.shape[0] < longest else t
        )

    gathered = [list(all_gather_with_grad(pad(d_nearest), group=group))]
    for t in (ids, details):
        padded = pad(t).contiguous()
        parts = [torch.empty_like(padded) for _ in range(world)]
        dist.all_gather(parts, padded, group=group)
        gathered.append(parts)
    return tuple(torch.cat([p[:n] for p, n in zip(parts, sizes, strict=True)]) for parts in gathered)
