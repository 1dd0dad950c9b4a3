"""The tracklet layer of ``dal synth``: a planned tracklet's frames, as uint8 arrays.

A **tracklet** (key: seed, person, camera, tracklet) draws its walking direction (mirror),
walk-cycle phase and speed, box jitter, scale drift, illumination, and sometimes a passing
occluder. Each frame then only gathers sprite and scene pixels, composites, and adds noise, for a
whole block of frames at once. The person comes from ``synthetic_person``, the scene, colours and
blur from ``synthetic_camera``.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterator, Sequence

import numpy as np

from components.ingest.synthetic_camera import (
    NOISE_BANK,
    CameraView,
    Sprites,
    apply_camera_colour,
    camera_sprites,
    camera_view,
)
from components.ingest.synthetic_config import SynthConfig
from components.ingest.synthetic_person import PALETTE, WALK_PHASES, Identity, render_sprites, sample_identity
from components.ingest.synthetic_random import KEY_TRACKLET, keyed_rng
from components.ingest.synthetic_tracklets import Tracklet

FRAME_BLOCK = 64  # frames rendered at once (bounds memory for MARS's 900-frame tracklets)


@dataclasses.dataclass(frozen=True)
class RenderSettings:
    """What a worker process needs to render (picklable)."""

    layout: str
    seed: int
    height: int
    width: int
    color_cast: float
    clutter: float
    back_view_prob: float
    occlusion_prob: float

    @classmethod
    def of(cls, config: SynthConfig) -> RenderSettings:
        return cls(
            config.layout,
            config.seed,
            config.image_height,
            config.image_width,
            config.color_cast,
            config.clutter,
            config.back_view_prob,
            config.occlusion_prob,
        )


def render_tracklet(settings: RenderSettings, tracklet: Tracklet, cache: dict) -> Iterator[np.ndarray]:
    """The tracklet's kept frames, in blocks of up to FRAME_BLOCK, as uint8 (T, H, W, 3).

    ``cache`` keeps identities and sprites between the tracklets of one task (one person).
    """
    view = camera_view(
        settings.seed,
        tracklet.camera,
        settings.height,
        settings.width,
        settings.color_cast,
        settings.clutter,
        settings.back_view_prob,
    )
    identity, sprites = _person(settings, tracklet, view, cache) if tracklet.appearance else (None, None)
    motion = draw_motion(
        keyed_rng(settings.seed, KEY_TRACKLET, tracklet.person + 2, tracklet.camera, tracklet.number),
        view,
        tracklet.length,
        settings.height,
        settings.width,
        identity.height if identity else 1.0,
        settings.occlusion_prob if tracklet.person > 0 else 0.5,
        offset=tracklet.offset,
        zoom=tracklet.zoom,
    )
    for start in range(0, len(tracklet.positions), FRAME_BLOCK):
        yield render_frames(sprites, view, motion, tracklet.positions[start : start + FRAME_BLOCK])


def _person(
    settings: RenderSettings, tracklet: Tracklet, view: CameraView, cache: dict
) -> tuple[Identity, Sprites]:
    """The tracklet's identity and its sprites as this camera records them, drawn once per task.

    Poses depend on the identity and the view side; their colours and blur on the camera.
    """
    key, back = tracklet.appearance, view.camera.back_view
    if key not in cache:
        cache[key] = sample_identity(keyed_rng(settings.seed, *key))
    identity = cache[key]
    if (key, back) not in cache:
        cache[(key, back)] = render_sprites(identity, back, settings.height)
    seen_by = (key, back, tracklet.camera)
    if seen_by not in cache:
        cache[seen_by] = camera_sprites(cache[(key, back)], view, settings.height)
    return identity, cache[seen_by]


# ---------------------------------------------------------------------------------------------
# Motion


@dataclasses.dataclass(frozen=True)
class Motion:
    """Per-frame parameters of one tracklet, drawn for all of its original frames."""

    mirrored: bool
    phase: np.ndarray  # sprite index per frame
    scale: np.ndarray  # person height / frame height
    dx: np.ndarray  # person centre offset, pixels
    dy: np.ndarray  # box vertical offset, pixels
    scene_x: np.ndarray  # scene column of the crop's left edge
    gain: np.ndarray  # illumination gain
    noise_index: np.ndarray
    occluder: np.ndarray | None  # (frames, 4): x0, x1, y0, y1 in pixels (empty when x0 >= x1)
    occluder_colour: np.ndarray | None  # (3,) in camera colours


def draw_motion(
    rng: np.random.Generator,
    view: CameraView,
    length: int,
    height: int,
    width: int,
    person_height: float,
    occlusion_prob: float,
    offset: float = 0.0,
    zoom: float = 1.0,
) -> Motion:
    """Per-frame parameters for ``length`` frames (all of them, so any subsample matches).

    ``offset`` moves the person sideways (fraction of the width) and ``zoom`` enlarges it: bad
    detections (MARS junk and distractors) show only part of a person.
    """
    camera = view.camera
    frames = np.arange(length, dtype=np.float64)
    mirrored = bool(rng.random() < 0.5)
    phase0, speed = rng.uniform(0, 2 * np.pi), rng.uniform(2 * np.pi / 16, 2 * np.pi / 9)
    phase = (np.floor((phase0 + speed * frames) / (2 * np.pi) * WALK_PHASES) % WALK_PHASES).astype(np.intp)
    base = camera.person_scale * person_height * math.exp(rng.normal(0.0, 0.04)) * zoom
    drift = rng.uniform(-0.06, 0.06) * frames / max(length - 1, 1)
    scale = base * (1.0 + drift + rng.normal(0.0, 0.012, length))
    dx = (offset + rng.normal(0.0, 0.02)) * width + rng.normal(0.0, camera.jitter * width, length)
    dy = camera.vertical_offset * height + rng.normal(0.0, 0.012 * height, length)
    walk = rng.uniform(0.3, 1.2) * height / 128 * (-1.0 if mirrored else 1.0)
    scene_x = rng.uniform(0, view.scene_shape[1]) + walk * frames
    gain = math.exp(rng.normal(0.0, 0.07)) * (1.0 + rng.normal(0.0, 0.01, length))
    noise_index = rng.integers(0, NOISE_BANK, length)
    occluder = colour = None
    if rng.random() < occlusion_prob:
        occluder, colour = _draw_occluder(rng, view, length, height, width)
    return Motion(
        mirrored=mirrored,
        phase=phase,
        scale=scale.astype(np.float32),
        dx=dx.astype(np.float32),
        dy=dy.astype(np.float32),
        scene_x=scene_x,
        gain=gain.astype(np.float32),
        noise_index=noise_index,
        occluder=occluder,
        occluder_colour=colour,
    )


def _draw_occluder(
    rng: np.random.Generator, view: CameraView, length: int, height: int, width: int
) -> tuple[np.ndarray, np.ndarray]:
    """An object crossing the box during part of the tracklet: a low block or a tall one."""
    frames = np.arange(length, dtype=np.float64)
    low = rng.random() < 0.6
    block_w = rng.uniform(0.35, 0.8) * width
    if low:  # bench, car, barrier: the lower part of the body
        y0, y1 = height * rng.uniform(0.45, 0.75), float(height)
    else:  # pole, passer-by: a vertical band
        y0, y1, block_w = 0.0, float(height), rng.uniform(0.2, 0.45) * width
    span = max(1.0, length * rng.uniform(0.3, 0.8))
    start = rng.uniform(-0.2, 1.0) * length
    direction = rng.choice((-1.0, 1.0))
    progress = (frames - start) / span  # 0..1 while crossing
    centre = np.where(
        direction > 0,
        -block_w / 2 + progress * (width + block_w),
        width + block_w / 2 - progress * (width + block_w),
    )
    visible = (progress >= 0) & (progress <= 1)
    x0 = np.where(visible, centre - block_w / 2, 0.0)
    x1 = np.where(visible, centre + block_w / 2, 0.0)
    boxes = np.stack([x0, x1, np.full(length, y0), np.full(length, y1)], axis=1).astype(np.float32)
    colour = PALETTE[int(rng.integers(len(PALETTE)))] * rng.uniform(0.5, 1.0)
    return boxes, apply_camera_colour(view.camera, colour.astype(np.float32))


# ---------------------------------------------------------------------------------------------
# Compositing


def render_frames(
    sprites: Sprites | None, view: CameraView, motion: Motion, positions: Sequence[int] | np.ndarray
) -> np.ndarray:
    """Frames at ``positions`` (0-based, into the tracklet's original frames): uint8 (T, H, W, 3).

    ``sprites`` is None for an empty detection (background only).
    """
    index = np.asarray(positions, dtype=np.intp)
    noise = view.noise
    _, height, width, _ = noise.shape
    ys = np.arange(height, dtype=np.float32) + 0.5
    xs = np.arange(width, dtype=np.float32) + 0.5

    # Background: the crop follows the walk through the camera's scene (flat gathers are ~8x
    # faster than 2-D fancy indexing).
    scene_h, scene_w = view.scene_shape
    rows = np.rint(ys[None, :] - 0.5 + view.margin + motion.dy[index][:, None] * 0.5)
    rows = np.clip(rows, 0, scene_h - 1).astype(np.intp)
    cols = np.floor(motion.scene_x[index][:, None] + xs[None, :]).astype(np.intp) % scene_w
    images = np.take(view.scene, rows[:, :, None] * scene_w + cols[:, None, :], axis=0)

    if sprites is not None:
        k, hs, ws = sprites.shape
        person_h = motion.scale[index] * height
        top = (height - person_h) / 2 + motion.dy[index]
        centre = width / 2 + motion.dx[index]
        sy = np.floor((ys[None, :] - top[:, None]) / person_h[:, None] * hs).astype(np.intp)
        sx = np.floor((xs[None, :] - centre[:, None]) / person_h[:, None] * hs + ws / 2).astype(np.intp)
        if motion.mirrored:
            sx = ws - 1 - sx
        inside = ((sy >= 0) & (sy < hs))[:, :, None] & ((sx >= 0) & (sx < ws))[:, None, :]
        flat = (motion.phase[index][:, None, None] * hs + sy[:, :, None]) * ws + sx[:, None, :]
        flat = np.where(inside, flat, k * hs * ws)
        images *= 1.0 - np.take(sprites.alpha, flat)[..., None]
        images += np.take(sprites.colour, flat, axis=0)

    if motion.occluder is not None:
        box = motion.occluder[index]
        covered = ((xs[None, :] >= box[:, 0:1]) & (xs[None, :] < box[:, 1:2]))[:, None, :] & (
            (ys[None, :] >= box[:, 2:3]) & (ys[None, :] < box[:, 3:4])
        )[:, :, None]
        shade = (0.85 + 0.15 * ys / height)[None, :, None, None]
        images = np.where(covered[..., None], motion.occluder_colour * shade, images)

    images *= motion.gain[index][:, None, None, None] * 255.0
    images += noise[motion.noise_index[index]]
    images += 0.5
    return np.clip(images, 0, 255, out=images).astype(np.uint8)
