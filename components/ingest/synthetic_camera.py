"""The camera layer of ``dal synth``: what each camera sees and how it records it.

A **camera** (key: seed, camera) is a scene (wall and floor gradients, tiles, palette-coloured
clutter), a colour cast (channel gains, hue rotation, saturation, gain, gamma, haze), the person
scale, blur, sensor noise and whether it sees people from behind. ``camera_view`` renders its
scene and noise once; ``camera_sprites`` recolours and blurs a person's sprites as it records them.
"""

from __future__ import annotations

import dataclasses
import functools
import math

import numpy as np

from components.ingest.synthetic_person import PALETTE
from components.ingest.synthetic_random import KEY_CAMERA, KEY_NOISE, KEY_SCENE, keyed_rng

SCENE_WIDTHS = 8  # the scene is this many frames wide: crops pan across it as people walk
NOISE_BANK = 48  # noise frames drawn once per camera; a frame picks one (cheaper than fresh noise)


@dataclasses.dataclass(frozen=True)
class Camera:
    matrix: tuple[tuple[float, ...], ...]  # 3x3 colour transform (gains, hue, saturation)
    gamma: float
    haze: tuple[float, ...]  # RGB
    person_scale: float  # person height / frame height for an average person
    vertical_offset: float  # box centre offset, fraction of the frame height
    jitter: float  # box jitter, fraction of the frame width
    blur: float  # Gaussian sigma in pixels at a 128-pixel frame height
    noise: float  # sensor noise sigma, 0..1 intensity
    back_view: bool
    wall: tuple[float, ...]  # RGB before the colour cast
    floor: tuple[float, ...]
    horizon: float  # fraction of the frame height where the floor starts


def _hue_rotation(angle: float) -> np.ndarray:
    """Rotation about the grey axis (Rodrigues): a hue shift that keeps greys grey."""
    axis = np.ones(3) / math.sqrt(3.0)
    cross = np.array([[0, -axis[2], axis[1]], [axis[2], 0, -axis[0]], [-axis[1], axis[0], 0]])
    return (
        np.eye(3) * math.cos(angle) + math.sin(angle) * cross + (1 - math.cos(angle)) * np.outer(axis, axis)
    )


def sample_camera(rng: np.random.Generator, color_cast: float, back_view_prob: float) -> Camera:
    # Unit draws first, scaled by the knobs after, so a knob moves each camera continuously.
    gains_unit = rng.normal(0.0, 1.0, 3)
    hue_unit, sat_unit, gain_unit, gamma_unit, haze_unit = rng.uniform(-1.0, 1.0, 5)
    haze_colour = PALETTE[int(rng.integers(len(PALETTE)))] * 0.5 + 0.25
    back_draw = rng.random()
    strength = color_cast
    gains = np.exp(0.32 * strength * gains_unit)
    saturation = 1.0 + 0.45 * strength * sat_unit
    grey = np.full((3, 3), 1.0 / 3.0)
    matrix = (
        math.exp(0.35 * strength * gain_unit)
        * np.diag(gains)
        @ _hue_rotation(0.75 * strength * hue_unit)
        @ (grey + saturation * (np.eye(3) - grey))
    )
    wall = rng.uniform(0.25, 0.8) * (0.6 + 0.4 * rng.random(3))
    floor = rng.uniform(0.2, 0.7) * (0.7 + 0.3 * rng.random(3))
    return Camera(
        matrix=tuple(tuple(float(x) for x in row) for row in matrix),
        gamma=float(math.exp(0.3 * strength * gamma_unit)),
        haze=tuple(float(x) for x in haze_colour * 0.1 * strength * (haze_unit + 1.0)),
        person_scale=float(rng.uniform(0.72, 0.92)),
        vertical_offset=float(rng.uniform(-0.03, 0.03)),
        jitter=float(rng.uniform(0.01, 0.035)),
        blur=float(rng.choice((0.0, 0.5, 0.9, 1.4))),
        noise=float(rng.uniform(0.008, 0.03)),
        back_view=bool(back_draw < back_view_prob),
        wall=tuple(float(x) for x in wall),
        floor=tuple(float(x) for x in floor),
        horizon=float(rng.uniform(0.55, 0.75)),
    )


def apply_camera_colour(camera: Camera, rgb: np.ndarray) -> np.ndarray:
    """Scene/object colours (..., 3) in 0..1 -> as this camera records them."""
    matrix = np.asarray(camera.matrix, dtype=np.float32)
    out = np.clip(rgb @ matrix.T, 0.0, 1.0)
    if camera.gamma != 1.0:
        out = out**camera.gamma
    out = out + np.asarray(camera.haze, dtype=np.float32)
    return np.clip(out, 0.0, 1.0).astype(np.float32)


# ---------------------------------------------------------------------------------------------
# Scene and noise, rendered once per camera


@dataclasses.dataclass(frozen=True)
class CameraView:
    """What a camera needs per frame, rendered once: its scene and its noise bank."""

    camera: Camera
    scene: np.ndarray  # (rows * columns, 3) float32, in camera colours, blurred
    scene_shape: tuple[int, int]  # (H + 2 * margin, SCENE_WIDTHS * W)
    margin: int
    noise: np.ndarray  # (NOISE_BANK, H, W, 3) float32 in 0..255 units, the camera's sigma


def render_scene(
    camera: Camera, rng: np.random.Generator, height: int, width: int, clutter: float
) -> np.ndarray:
    """A wide backdrop of the camera's place (before its colour cast): walls, floor, clutter."""
    margin = max(height // 16, 1)
    hb, wb = height + 2 * margin, SCENE_WIDTHS * width
    y = (np.arange(hb, dtype=np.float32) / hb)[:, None]
    x = (np.arange(wb, dtype=np.float32) / wb)[None, :]
    wall = np.asarray(camera.wall, dtype=np.float32)
    floor = np.asarray(camera.floor, dtype=np.float32)
    # Wall with vertical and slow horizontal light gradients.
    light = 0.8 + 0.3 * y + 0.15 * np.sin(2 * np.pi * (x * rng.integers(1, 4) + rng.random()))
    scene = wall[None, None, :] * light[..., None]
    # Clutter in palette colours: windows, doors, signs, shelves, poles.
    count = int(round(clutter * 6 * SCENE_WIDTHS))
    for _ in range(count):
        colour = PALETTE[int(rng.integers(len(PALETTE)))] * rng.uniform(0.6, 1.0)
        kind = rng.random()
        if kind < 0.25:  # pole or door frame
            x0, w0, y0, h0 = rng.random(), rng.uniform(0.004, 0.015), 0.0, camera.horizon
        else:
            x0, w0 = rng.random(), rng.uniform(0.01, 0.06)
            y0, h0 = rng.uniform(0.05, camera.horizon - 0.1), rng.uniform(0.08, 0.4)
        box = (x >= x0) & (x < x0 + w0) & (y >= y0) & (y < min(y0 + h0, camera.horizon))
        mix = rng.uniform(0.55, 1.0)
        patch = colour * mix + scene * (1 - mix)
        if rng.random() < 0.3:  # striped signs/shelves
            patch = np.where(((y * hb / rng.integers(2, 6)) % 2 < 1)[..., None], patch, scene)
        scene = np.where(box[..., None], patch, scene)
    # Floor: darker towards the camera's far side, with perspective tile lines.
    on_floor = y >= camera.horizon
    depth = np.clip((y - camera.horizon) / (1 - camera.horizon + 1e-6), 0.0, 1.0)
    tiles = (np.abs(((x * wb) / (width * rng.uniform(0.4, 1.0))) % 1 - 0.5) < 0.03) | (
        np.abs(((depth**0.5) * rng.integers(3, 7)) % 1 - 0.5) < 0.04
    )
    floor_img = floor[None, None, :] * (0.75 + 0.35 * depth)[..., None] * np.where(tiles, 0.8, 1.0)[..., None]
    scene = np.where(on_floor[..., None], floor_img, scene)
    return np.clip(scene, 0.0, 1.0).astype(np.float32)


@functools.lru_cache(maxsize=16)
def camera_view(
    seed: int,
    camera_id: int,
    height: int,
    width: int,
    color_cast: float,
    clutter: float,
    back_view_prob: float,
) -> CameraView:
    """The camera, its scene and noise: a pure function of its arguments (memoised per process)."""
    camera = sample_camera(keyed_rng(seed, KEY_CAMERA, camera_id), color_cast, back_view_prob)
    scene = render_scene(camera, keyed_rng(seed, KEY_SCENE, camera_id), height, width, clutter)
    scene = _blur(apply_camera_colour(camera, scene)[None], camera.blur * height / 128)[0]
    noise_rng = keyed_rng(seed, KEY_NOISE, camera_id)
    noise = noise_rng.standard_normal((NOISE_BANK, height, width, 3), dtype=np.float32) * (camera.noise * 255)
    return CameraView(
        camera=camera,
        scene=np.ascontiguousarray(scene.reshape(-1, 3)),
        scene_shape=scene.shape[:2],
        margin=max(height // 16, 1),
        noise=noise,
    )


def _blur(images: np.ndarray, sigma: float) -> np.ndarray:
    if sigma < 0.25:
        return images
    from scipy.ndimage import gaussian_filter1d

    images = gaussian_filter1d(images, sigma, axis=1, mode="nearest", truncate=2.5)
    return gaussian_filter1d(images, sigma, axis=2, mode="nearest", truncate=2.5)


@dataclasses.dataclass(frozen=True)
class Sprites:
    """A person's walk-cycle poses as one camera records them, flattened for ``np.take``.

    Colours are premultiplied by alpha and both are blurred with the camera's blur, so a frame is
    just ``background * (1 - alpha) + colour``. The last entry is transparent: pixels outside
    the sprite point at it.
    """

    colour: np.ndarray  # (K * Hs * Ws + 1, 3) float32
    alpha: np.ndarray  # (K * Hs * Ws + 1,) float32
    shape: tuple[int, int, int]  # K, Hs, Ws


def camera_sprites(poses: np.ndarray, view: CameraView, height: int) -> Sprites:
    """Walk-cycle poses from ``render_sprites`` as this camera records them (colours, blur)."""
    alpha = poses[..., 3:]
    rgba = np.concatenate([apply_camera_colour(view.camera, poses[..., :3]) * alpha, alpha], axis=-1)
    # A sprite pixel is about 1 / person_scale frame pixels: blur by the camera's sigma in frame pixels.
    rgba = _blur(rgba, view.camera.blur * height / 128 / view.camera.person_scale)
    k, hs, ws, _ = rgba.shape
    flat = np.concatenate([rgba.reshape(-1, 4), np.zeros((1, 4), np.float32)])
    return Sprites(np.ascontiguousarray(flat[:, :3]), np.ascontiguousarray(flat[:, 3]), (k, hs, ws))
