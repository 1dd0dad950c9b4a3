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
from collections.abc import Callable, Sequence

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor, nn

from components.common.errors import DalError

EPSILON = 1e-10  # under the square root, as tf.nn.l2_normalize(x, 1, 1e-10)
_ROW_CHUNK = 1024  # rows of anchor-to-anchor distances computed at once in cyclic_matches


def l2_normalize(x: Tensor) -> Tensor:
    return x * torch.rsqrt(x.pow(2).sum(-1, keepdim=True).clamp_min(EPSILON))


def _ranking_distances(x: Tensor, x_sq: Tensor, y: Tensor, y_sq: Tensor) -> Tensor:
    """Squared distances (n, m) by one matmul: used only to rank, never differentiated. ``x_sq`` and
    ``y_sq`` are ``x.pow(2).sum(1)`` and ``y.pow(2).sum(1)``, kept for the anchors between calls."""
    return x_sq[:, None] + y_sq - 2 * x @ y.T


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

    The anchors of all cameras are one (N, D) matrix per kind, camera-major (``_intra``, ``_cross``);
    the per-camera buffers ``intra_anchor_c`` / ``cross_anchor_c`` (the state dict) are views of
    their rows, so that a call gathers and updates the rows of a batch with one op each. The
    normalised intra anchors and their squared norms are kept between calls (``_normalized_intra``):
    a call touches at most B rows of them, while normalising all N rows at every call was most of
    the association's time at MARS's 8298 tracklets.
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
        self.register_buffer("_intra", torch.zeros(sum(sizes), feature_dim), persistent=False)
        self.register_buffer("_cross", torch.zeros(sum(sizes), feature_dim), persistent=False)
        self._normalized: tuple[Tensor, Tensor] | None = None
        self._normalized_version = -1
        self._bind_views()
        # These map the rows of the concatenated anchors to cameras and back.
        offsets = torch.tensor([0, *sizes]).cumsum(0)
        self.register_buffer("_offsets", offsets, persistent=False)
        self.register_buffer("_sizes", torch.tensor(sizes), persistent=False)
        self.register_buffer(
            "_row_camera",
            torch.repeat_interleave(torch.arange(len(sizes)), torch.tensor(sizes)),
            persistent=False,
        )
        self.register_buffer("_camera_column", torch.arange(len(sizes))[:, None], persistent=False)
        self.last_stats: AssociationStats | None = None
        if init_features is not None:
            self.init_anchors(init_features)

    def _bind_views(self) -> None:
        """(Re)make the per-camera buffers views of the concatenated anchors: a module conversion
        (``.to``, ``.double``) converts every buffer on its own, which would break the sharing."""
        intra, cross = self._intra.split(self.sizes), self._cross.split(self.sizes)
        for c in range(len(self.sizes)):
            self.register_buffer(f"intra_anchor_{c}", intra[c])
            self.register_buffer(f"cross_anchor_{c}", cross[c])
        self._normalized = None

    def _apply(self, fn: Callable[[Tensor], Tensor], recurse: bool = True) -> AnchorAssociation:
        super()._apply(fn, recurse)
        self._bind_views()
        return self

    def _load_from_state_dict(self, state_dict: dict[str, Tensor], prefix: str, *args: object) -> None:
        super()._load_from_state_dict(state_dict, prefix, *args)
        for kind in ("intra", "cross"):  # load_state_dict(assign=True) put its tensors in the views' place
            whole, parts = getattr(self, f"_{kind}"), getattr(self, f"{kind}_anchors")
            if any(p.untyped_storage().data_ptr() != whole.untyped_storage().data_ptr() for p in parts):
                setattr(self, f"_{kind}", torch.cat(parts))
        self._bind_views()

    @property
    def num_cameras(self) -> int:
        return len(self.sizes)

    @property
    def dtype(self) -> torch.dtype:
        """The anchors' dtype, in which all distances and updates are computed (float32 unless the
        module was converted, e.g. ``.double()`` for float64 reference runs)."""
        return self._intra.dtype

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

    def _normalized_intra(self) -> tuple[Tensor, Tensor]:
        """``l2_normalize(_intra)`` (N, D) and its rows' squared norms (N,), kept between calls.

        ``_update`` refreshes the rows it moves (``_refresh_normalized``); any other in-place write
        to the anchors (load_state_dict, init_anchors, a write to a buffer) moves the version counter
        that all views of ``_intra`` share, and everything is normalised again here. Normalising and
        summing run row by row (each row is reduced alone, in the same order whatever the number of
        rows), so a refreshed row is bit-identical to the row of the whole matrix normalised anew.
        (A write through ``.data`` bypasses the version counter: do not edit the anchors that way.)
        """
        if self._normalized is None or self._normalized_version != self._intra._version:
            with torch.no_grad(), torch.inference_mode(False):
                intra_n = l2_normalize(self._intra)
                self._normalized = (intra_n, intra_n.pow(2).sum(1))
            self._normalized_version = self._intra._version
        return self._normalized

    def _refresh_normalized(self, rows: Tensor, moved: Tensor) -> tuple[Tensor, Tensor]:
        """After ``_update`` moved the intra anchors of ``rows`` (unique) to ``moved``: their new
        normalised anchors and squared norms, also written into the kept normalised matrix."""
        assert self._normalized is not None, "forward normalises the anchors before it updates them"
        intra_n, intra_sq = self._normalized
        fresh = l2_normalize(moved)
        fresh_sq = fresh.pow(2).sum(1)
        intra_n.index_copy_(0, rows, fresh)
        intra_sq.index_copy_(0, rows, fresh_sq)
        self._normalized_version = self._intra._version
        return fresh, fresh_sq

    def forward(
        self, features: Tensor, tracklet_ids: Tensor, camera_ids: Tensor, cross_camera: bool
    ) -> Tensor:
        """The association loss of this (local) batch; then updates the anchors in place."""
        tracklet_ids, camera_ids = self._check_inputs(features, tracklet_ids, camera_ids)
        group = self._group()
        # Distances and anchor updates stay in the anchors' dtype (fp32) under the caller's bf16 autocast.
        with torch.autocast(device_type=features.device.type, enabled=False):
            f = l2_normalize(features.to(self.dtype))
            rows = self._offsets.index_select(0, camera_ids) + tracklet_ids  # each frame's anchor row
            intra_n, intra_sq = self._normalized_intra()  # the anchors before this call

            # Association ranking: the nearest intra anchor of the frame's own camera.
            with torch.no_grad():
                other_camera = self._row_camera[None, :] != camera_ids[:, None]
                distances = _ranking_distances(f, f.pow(2).sum(1), intra_n, intra_sq)
                nearest = distances.masked_fill_(other_camera, float("inf")).argmin(1)
            own_nearest = nearest == rows

            # d_nearest, d_cross, d_intra = |f - anchor|^2 (exact; d_nearest is differentiable like
            # tf.nn.top_k) as one (3, B) tensor: each row is its separate (B,) computation bit for bit,
            # and in the backward f's gradient sums the three parts in the order in which autograd
            # accumulated the three separate terms (d_intra last), so it is bit-identical too.
            anchors = torch.stack(
                [
                    intra_n.index_select(0, nearest),
                    l2_normalize(self._cross.index_select(0, rows)),
                    intra_n.index_select(0, rows),
                ]
            )
            distances = (f - anchors).pow(2).sum(2)
            d_nearest, d_pair = distances[0], distances[1:]  # d_pair: (d_cross, d_intra)

            if group is None:
                d_nearest_all, cam_all, own_all = d_nearest, camera_ids, own_nearest
            else:
                ids = torch.stack([tracklet_ids, camera_ids, own_nearest.long()], 1)
                details = torch.cat([f, d_pair.T], 1).detach()
                d_nearest_all, ids_all, details_all = _gather(group, d_nearest, ids, details)
                tid_all, cam_all, own_all = ids_all.unbind(1)

            # Per-camera mean nearest distance over the global batch, without atomics (deterministic).
            in_camera = (cam_all[None, :] == self._camera_column).to(self.dtype)
            camera_mean = (in_camera * d_nearest_all).sum(1) / in_camera.sum(1).clamp_min(1)
            d_neg = torch.where(own_nearest, camera_mean.index_select(0, camera_ids), d_nearest)
            # mean(relu(d_cross - d_neg + margin)) and mean(relu(d_intra - d_neg + margin)), one row each.
            term_means = F.relu(d_pair - d_neg + self.margin).mean(1)
            loss = term_means.sum()  # intra + cross

            with torch.no_grad():
                if group is None:  # the global batch is the local one: its terms are the loss's
                    cross_loss, intra_loss = term_means.detach().unbind()
                    f_all, rows_all, before = f.detach(), rows, anchors[2]
                else:
                    f_all, d_cross_all, d_intra_all = details_all.split([self.feature_dim, 1, 1], 1)
                    d_neg_all = torch.where(own_all.bool(), camera_mean[cam_all], d_nearest_all)
                    intra_loss = F.relu(d_intra_all[:, 0] - d_neg_all + self.margin).mean()
                    cross_loss = F.relu(d_cross_all[:, 0] - d_neg_all + self.margin).mean()
                    rows_all = self._offsets[cam_all] + tid_all
                    before = intra_n.index_select(0, rows_all)
                frames = self._update(f_all, rows_all, before, cross_camera)
                self.last_stats = AssociationStats(
                    intra_loss=intra_loss,
                    cross_loss=cross_loss,
                    nearest_own_fraction=own_all.float().mean(),
                    consistent_fraction=frames.consistent.float().mean(),
                    frames=frames,
                )
        return loss

    def _update(self, f: Tensor, rows: Tensor, before: Tensor, cross_camera: bool) -> CyclicMatch:
        """The anchor updates from the global batch (``rows``: each frame's anchor row, ``before``:
        those rows of the normalised intra anchors before this call): identical inputs, identical
        results on every rank."""
        delta = self.eta * (f - before)
        if self.unit_start:  # a still-zero anchor becomes the mean of its frames here, at unit scale
            unseen = before.pow(2).sum(1) == 0
            frames_per_row = torch.bincount(rows, minlength=self._intra.shape[0])[rows]
            delta = torch.where(unseen[:, None], f / frames_per_row[:, None], delta)
        _add_rows(self._intra, rows, delta)
        unique_rows, frame_to_unique = torch.unique(rows, return_inverse=True)
        moved = _flush_tiny_(self._intra.index_select(0, unique_rows))
        self._intra.index_copy_(0, unique_rows, moved)

        # Cross anchors depend only on the updated intra anchors, so each tracklet is computed once.
        own, own_sq = self._refresh_normalized(unique_rows, moved)
        intra_n, intra_sq = self._normalized_intra()
        matched, consistent = self._cyclic(own, own_sq, unique_rows, intra_n, intra_sq)
        if cross_camera:
            merged = (own + intra_n.index_select(0, matched)) / 2
            own = torch.where(consistent[:, None], merged, own)
        self._cross.index_copy_(0, unique_rows, own)
        per_frame = matched.index_select(0, frame_to_unique), consistent.index_select(0, frame_to_unique)
        return self._match(rows, *per_frame)  # each frame's tracklet's match

    def _cyclic(
        self, x: Tensor, x_sq: Tensor, rows: Tensor, intra_n: Tensor, intra_sq: Tensor
    ) -> tuple[Tensor, Tensor]:
        """Cyclic ranking of the given rows of the normalised intra anchors ``intra_n`` (``x``, ``x_sq``:
        those rows and their squared norms): each row's match in another camera, and whether the
        nearest anchor of the row's camera to that match is the row itself."""
        same_camera = self._row_camera[None, :] == self._row_camera.index_select(0, rows)[:, None]
        to_other = _ranking_distances(x, x_sq, intra_n, intra_sq).masked_fill_(same_camera, float("inf"))
        matched = to_other.argmin(1)  # first minimum: lowest camera, then lowest tracklet
        back = _ranking_distances(
            intra_n.index_select(0, matched), intra_sq.index_select(0, matched), intra_n, intra_sq
        )
        back = back.masked_fill_(~same_camera, float("inf")).argmin(1)
        return matched, back == rows

    def _match(self, rows: Tensor, matched: Tensor, consistent: Tensor) -> CyclicMatch:
        """The CyclicMatch of anchor rows, their matched rows and their consistency."""
        cameras = self._row_camera.index_select(0, rows)
        matched_cameras = self._row_camera.index_select(0, matched)
        return CyclicMatch(
            camera_ids=cameras,
            tracklet_ids=rows - self._offsets.index_select(0, cameras),
            matched_camera_ids=matched_cameras,
            matched_tracklet_ids=matched - self._offsets.index_select(0, matched_cameras),
            consistent=consistent,
        )

    @torch.no_grad()
    def cyclic_matches(self) -> CyclicMatch:
        """Cyclic match of every tracklet of every camera (camera-major order) from the current anchors."""
        device = self._intra.device
        with torch.autocast(device_type=device.type, enabled=False):
            intra_n, intra_sq = self._normalized_intra()
            rows = torch.arange(intra_n.shape[0], device=device)
            parts = [
                self._cyclic(intra_n[chunk], intra_sq[chunk], chunk, intra_n, intra_sq)
                for chunk in rows.split(_ROW_CHUNK)
            ]
            return self._match(rows, *(torch.cat(p) for p in zip(*parts, strict=True)))

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
        known = cams.clamp(0, self.num_cameras - 1)
        bad_camera = cams != known
        bad_tracklet = (tids < 0) | (tids >= self._sizes.index_select(0, known))
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


def _flush_tiny_(anchors: Tensor) -> Tensor:
    """Set the anchors' entries below eps(dtype)**2 (2**-46 in float32) times their row's largest
    magnitude to zero, in place.

    Why: a feature dimension that stays 0 (a dead ReLU channel) halves its anchor entries at every
    update (eta 0.5); within ~130 updates they are subnormal, and earlier already the features'
    gradient entries they feed (scaled down by the loss) are. x86 CPUs compute with subnormals
    many times slower: profiled on the bench's tiny test network (a 36 ms step), the backbone's
    backward took ~4.8 ms longer (batch-norm backward 3.3 ms), ~13 % of the step. Exactness:
    such an entry moves its row's norm, its distances and its update by less than eps**2
    relative, far below their eps/2 rounding, and a gradient entry by as little of the gradient's
    scale: results stay equal up to float rounding, bit-identical where no entry is that small.
    Relative to the row, so a row scaled by a power of two (anchors from zero scale with eta)
    flushes the same entries.
    """
    magnitude = anchors.abs()
    limit = magnitude.amax(1, keepdim=True) * torch.finfo(anchors.dtype).eps ** 2
    return anchors.masked_fill_(magnitude < limit, 0.0)


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
