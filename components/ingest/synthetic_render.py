"""Vectorised numpy rendering of synthetic pedestrians seen by synthetic cameras.

The appearance model, in three layers, each drawn from its own keyed random generator so that a
subset of persons renders the same bytes as in a bigger set:

* an **identity** (key: seed, person): clothing colours from a small shared palette (a single
  colour never identifies anybody), upper-body texture (stripes of two widths and three
  orientations, checks, colour blocks, a chest logo), sleeve and leg wear, skin, hair or hat,
  body width and height, a bag or backpack on one side, shoes and gait;
* a **camera** (key: seed, camera): a scene (wall and floor gradients, tiles, palette-coloured
  clutter), a colour cast (channel gains, hue rotation, saturation, gain, gamma, haze), the person
  scale, blur, sensor noise and whether it sees people from behind;
* a **tracklet** (key: seed, person, camera, tracklet): walking direction (mirror), walk-cycle
  phase and speed, box jitter, scale drift, illumination, and sometimes a passing occluder.

Persons are drawn once per identity and camera view as a few walk-cycle sprites (RGBA, already in
the camera's colours); each frame then only gathers sprite and scene pixels, composites, blurs and
adds noise, for a whole block of frames at once.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Sequence

import numpy as np

# A small palette shared by clothing, bags and scene clutter (linear-ish RGB in 0..1).
PALETTE = np.array(
    [
        (0.08, 0.08, 0.09),  # black
        (0.92, 0.92, 0.90),  # white
        (0.50, 0.50, 0.52),  # grey
        (0.80, 0.12, 0.12),  # red
        (0.15, 0.25, 0.75),  # blue
        (0.12, 0.55, 0.20),  # green
        (0.92, 0.80, 0.15),  # yellow
        (0.50, 0.20, 0.60),  # purple
        (0.45, 0.28, 0.14),  # brown
        (0.95, 0.50, 0.10),  # orange
    ],
    dtype=np.float32,
)
SKIN = np.array(
    [(0.96, 0.80, 0.69), (0.87, 0.67, 0.52), (0.72, 0.52, 0.38), (0.55, 0.38, 0.26), (0.36, 0.24, 0.16)],
    dtype=np.float32,
)
HAIR = np.array(
    [(0.05, 0.04, 0.04), (0.22, 0.13, 0.07), (0.42, 0.27, 0.14), (0.80, 0.66, 0.38), (0.62, 0.62, 0.62)],
    dtype=np.float32,
)
UPPER_TEXTURES = ("solid", "hstripes", "vstripes", "diagonal", "checks", "block", "logo")
UPPER_TEXTURE_P = (0.28, 0.14, 0.10, 0.10, 0.12, 0.12, 0.14)
LEGWEAR = ("trousers", "shorts", "skirt")
BAGS = ("none", "shoulder", "backpack")
WALK_PHASES = 8  # sprites per walk cycle

# Domains of the keyed random generators: one per kind of thing drawn.
KEY_IDENTITY, KEY_CAMERA, KEY_TRACKLET, KEY_SCENE, KEY_NOISE = 1, 2, 3, 4, 5


def keyed_rng(seed: int, *key: int) -> np.random.Generator:
    """A generator that depends only on (seed, key): the basis of subset-stable rendering.

    The key goes in as a spawn key: a plain entropy list would pad short keys with zeros, so
    (..., 1) and (..., 1, 0) would give the same stream.
    """
    if min(key, default=0) < 0:
        raise ValueError(f"random keys must be >= 0, got {key}")
    return np.random.default_rng(np.random.SeedSequence(seed, spawn_key=key))


@dataclasses.dataclass(frozen=True)
class Identity:
    upper: int  # palette indices
    upper2: int
    lower: int
    texture: str
    stripe_period: float  # in person heights
    stripe_sign: float  # diagonal orientation
    logo_round: bool
    long_sleeves: bool
    legwear: str
    skin: int
    hair: int
    long_hair: bool
    hat: int  # palette index, -1 none
    width: float  # torso/leg width factor
    height: float  # body height factor (scale of the person in the frame)
    bag: str
    bag_side: int  # +1 right of the image (front view), -1 left
    bag_colour: int
    shoes: int  # palette index
    stride: float
    arm_swing: float


def sample_identity(rng: np.random.Generator) -> Identity:
    n = len(PALETTE)
    upper, upper2 = (int(i) for i in rng.choice(n, size=2, replace=False))
    texture = str(rng.choice(UPPER_TEXTURES, p=UPPER_TEXTURE_P))
    hat = int(rng.integers(n)) if rng.random() < 0.18 else -1
    bag = str(rng.choice(BAGS, p=(0.4, 0.3, 0.3)))
    return Identity(
        upper=upper,
        upper2=upper2,
        lower=int(rng.integers(n)),
        texture=texture,
        stripe_period=float(rng.choice((0.045, 0.08))),
        stripe_sign=float(rng.choice((-1.0, 1.0))),
        logo_round=bool(rng.random() < 0.5),
        long_sleeves=bool(rng.random() < 0.55),
        legwear=str(rng.choice(LEGWEAR, p=(0.6, 0.25, 0.15))),
        skin=int(rng.integers(len(SKIN))),
        hair=int(rng.integers(len(HAIR))),
        long_hair=bool(rng.random() < 0.3),
        hat=hat,
        width=float(rng.uniform(0.82, 1.22)),
        height=float(rng.uniform(0.88, 1.0)),
        bag=bag,
        bag_side=int(rng.choice((-1, 1))),
        bag_colour=int(rng.integers(n)),
        shoes=int(rng.choice((0, 1, 8, int(rng.integers(n))))),
        stride=float(rng.uniform(0.04, 0.08)),
        arm_swing=float(rng.uniform(0.03, 0.07)),
    )


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
# Persons


Array = np.ndarray | float  # anything that broadcasts


def _segment_distance(u: Array, v: Array, u0: Array, v0: Array, u1: Array, v1: Array) -> tuple[Array, Array]:
    """Distance of each (u, v) to the segment, and where along it (0..1) the nearest point is."""
    du, dv = u1 - u0, v1 - v0
    t = np.clip(((u - u0) * du + (v - v0) * dv) / (du * du + dv * dv + 1e-9), 0.0, 1.0)
    return np.hypot(u - u0 - t * du, v - v0 - t * dv), t


def render_sprites(identity: Identity, back: bool, height: int) -> np.ndarray:
    """The person in WALK_PHASES poses: float32 (K, height, height // 2, 4) RGBA in 0..1.

    Coordinates are in person heights: v runs 0 (top of the head) to 1 (soles), u is horizontal,
    0 at the body axis, positive to the image's right. The back view mirrors the body's sides.
    """
    hs, ws = height, max(height // 2, 4)
    v = ((np.arange(hs, dtype=np.float32) + 0.5) / hs)[None, :, None]
    u = ((np.arange(ws, dtype=np.float32) + 0.5 - ws / 2) / hs)[None, None, :]
    phase = (2 * np.pi * np.arange(WALK_PHASES, dtype=np.float32) / WALK_PHASES)[:, None, None]
    swing = np.sin(phase)
    shape = (WALK_PHASES, hs, ws)
    rgb = np.zeros((*shape, 3), dtype=np.float32)
    alpha = np.zeros(shape, dtype=bool)
    side = -1.0 if back else 1.0  # the body's right/left swap sides of the image from behind

    def paint(mask: np.ndarray, colour: np.ndarray) -> None:
        np.copyto(rgb, colour, where=mask[..., None])
        np.logical_or(alpha, mask, out=alpha)

    palette = PALETTE
    skin = SKIN[identity.skin]
    upper, upper2, lower = palette[identity.upper], palette[identity.upper2], palette[identity.lower]
    w = identity.width
    torso_w = 0.095 * w
    shoulder_v, hip_v, sole_v = 0.165, 0.52, 0.985

    # Legs: lower clothing, swinging; shorts and skirts show skin below.
    leg_r = 0.034 * w
    for sign in (-1.0, 1.0):
        hip_u = sign * 0.042 * w
        foot_u = hip_u + sign * 0.01 + identity.stride * swing * sign
        foot_v = sole_v - 0.03 - 0.02 * np.maximum(0.0, swing * sign)
        dist, t = _segment_distance(u, v, hip_u, hip_v, foot_u, foot_v)
        leg = dist < leg_r
        covered = t < (
            0.45 if identity.legwear == "shorts" else (0.3 if identity.legwear == "skirt" else 1.01)
        )
        paint(leg & ~covered, skin)
        paint(leg & covered, lower)
        shoe = np.hypot((u - foot_u) / 0.04, (v - foot_v - 0.012) / 0.022) < 1.0
        paint(shoe, palette[identity.shoes])
    if identity.legwear == "skirt":
        skirt = (
            (v >= hip_v - 0.02)
            & (v < hip_v + 0.17)
            & (np.abs(u) < torso_w * (1.0 + 2.2 * (v - hip_v + 0.02)))
        )
        paint(skirt, lower)

    # Torso with the upper texture.
    torso = (v >= shoulder_v) & (v < hip_v + 0.01) & (np.abs(u) < torso_w * (1.0 - 0.25 * (v - shoulder_v)))
    second = np.zeros((1, hs, ws), dtype=bool)
    period = identity.stripe_period
    texture = identity.texture
    if texture == "hstripes":
        second = ((v - shoulder_v) / period) % 1.0 < 0.5
    elif texture == "vstripes":
        second = (u / period + 0.25) % 1.0 < 0.5
    elif texture == "diagonal":
        second = ((side * identity.stripe_sign * u + v) / period) % 1.0 < 0.5
    elif texture == "checks":
        second = (((v - shoulder_v) / period) % 1.0 < 0.5) ^ ((u / period + 0.25) % 1.0 < 0.5)
    elif texture == "block":
        second = v > (shoulder_v + hip_v) / 2
    elif texture == "logo" and not back:
        cu, cv = 0.03 * w, 0.27
        if identity.logo_round:
            second = np.hypot(u - cu, v - cv) < 0.035
        else:
            second = (np.abs(u - cu) < 0.032) & (np.abs(v - cv) < 0.03)
    second = np.broadcast_to(second, (1, hs, ws))
    paint(torso & ~second, upper)
    paint(torso & second, upper2)

    # Backpack from behind covers the back; from the front only its straps show.
    bag_colour = palette[identity.bag_colour]
    if identity.bag == "backpack":
        if back:
            pack = (np.abs(u) < torso_w * 0.8) & (v > shoulder_v + 0.02) & (v < shoulder_v + 0.26)
            paint(pack, bag_colour)
        else:
            straps = (np.abs(np.abs(u) - torso_w * 0.55) < 0.012) & (v > shoulder_v) & (v < shoulder_v + 0.2)
            paint(straps, bag_colour)

    # Arms swing against the legs; sleeves cover part or all of them.
    arm_r = 0.026 * w
    for sign in (-1.0, 1.0):
        shoulder_u = sign * (torso_w + arm_r * 0.6)
        hand_u = shoulder_u + sign * 0.012 - identity.arm_swing * swing * sign
        hand_v = shoulder_v + 0.3
        dist, t = _segment_distance(u, v, shoulder_u, shoulder_v + 0.015, hand_u, hand_v)
        arm = dist < arm_r
        sleeve = t < (0.92 if identity.long_sleeves else 0.35)
        paint(arm & sleeve, upper)
        paint(arm & ~sleeve, skin)

    # Shoulder bag hangs on one side with a strap across the chest.
    if identity.bag == "shoulder":
        bag_side = identity.bag_side * side
        bag_u = bag_side * (torso_w + 0.035)
        bag = (np.abs(u - bag_u) < 0.04) & (v > hip_v - 0.14) & (v < hip_v - 0.02)
        strap, _ = _segment_distance(u, v, -bag_side * torso_w * 0.7, shoulder_v, bag_u, hip_v - 0.14)
        paint(bag | ((strap < 0.008) & (v < hip_v - 0.13)), bag_colour)

    # Neck, head, hair or hat.
    head_u, head_v = 0.0, 0.078
    neck = (np.abs(u) < 0.022) & (v > head_v + 0.04) & (v < shoulder_v + 0.005)
    paint(neck, skin)
    head = np.hypot((u - head_u) / 0.047, (v - head_v) / 0.068) < 1.0
    paint(head, skin)
    hair_colour = HAIR[identity.hair]
    if identity.long_hair:
        long_hair = (np.abs(u) < 0.058) & (v > head_v - 0.02) & (v < 0.21) & ((np.abs(u) > 0.04) | back)
        paint(long_hair, hair_colour)
    hair = head & ((v < head_v - 0.015) | (back & (v < head_v + 0.05)))
    paint(hair, hair_colour)
    if identity.hat >= 0:
        hat = (np.hypot(u / 0.054, (v - head_v + 0.01) / 0.07) < 1.0) & (v < head_v - 0.02)
        brim = (np.abs(u) < 0.065) & (np.abs(v - head_v + 0.02) < 0.008)
        paint(hat | brim, palette[identity.hat])

    # Round-body shading so that clothes are not flat colour.
    shade = np.clip(1.0 - 0.3 * (u / (torso_w + 0.04)) ** 2, 0.65, 1.0).astype(np.float32)
    rgb *= shade[..., None]
    return np.concatenate([rgb, alpha[..., None].astype(np.float32)], axis=-1)


# ---------------------------------------------------------------------------------------------
# Cameras


@dataclasses.dataclass(frozen=True)
class CameraView:
    """What a camera needs per frame, rendered once: its scene and its noise bank."""

    camera: Camera
    scene: np.ndarray  # (rows * columns, 3) float32, in camera colours, blurred
    scene_shape: tuple[int, int]  # (H + 2 * margin, SCENE_WIDTHS * W)
    margin: int
    noise: np.ndarray  # (NOISE_BANK, H, W, 3) float32 in 0..255 units, the camera's sigma


SCENE_WIDTHS = 8
NOISE_BANK = 48


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


# ---------------------------------------------------------------------------------------------
# Tracklets


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
