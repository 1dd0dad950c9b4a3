"""The identity layer of ``dal synth``: who a person is, and their walk-cycle sprites.

An **identity** (key: seed, person) is clothing colours from a small shared palette (a single
colour never identifies anybody), upper-body texture (stripes of two widths and three
orientations, checks, colour blocks, a chest logo), sleeve and leg wear, skin, hair or hat, body
width and height, a bag or backpack on one side, shoes and gait. It is drawn once per view side as
a few walk-cycle sprites, before any camera's colours (see ``synthetic_camera``).
"""

from __future__ import annotations

import dataclasses

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

# Body landmarks, in person heights from the top of the head.
HEAD_V, SHOULDER_V, HIP_V, SOLE_V = 0.078, 0.165, 0.52, 0.985
# How far down the leg (0 hip .. 1 foot) the lower clothing reaches; shorts and skirts show skin.
LEG_COVER = {"trousers": 1.01, "shorts": 0.45, "skirt": 0.3}


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


# ---------------------------------------------------------------------------------------------
# Sprites


Array = np.ndarray | float  # anything that broadcasts


@dataclasses.dataclass(frozen=True)
class _Canvas:
    """The WALK_PHASES poses being painted, and where their pixels are on the body.

    v runs 0 (top of the head) to 1 (soles), u is horizontal, 0 at the body axis, positive to the
    image's right, both in person heights; ``swing`` is each pose's walk-cycle sine.
    """

    u: np.ndarray  # (1, 1, Ws)
    v: np.ndarray  # (1, Hs, 1)
    swing: np.ndarray  # (K, 1, 1)
    rgb: np.ndarray  # (K, Hs, Ws, 3) float32, painted in place
    alpha: np.ndarray  # (K, Hs, Ws) bool, painted in place

    @classmethod
    def blank(cls, height: int) -> _Canvas:
        hs, ws = height, max(height // 2, 4)
        v = ((np.arange(hs, dtype=np.float32) + 0.5) / hs)[None, :, None]
        u = ((np.arange(ws, dtype=np.float32) + 0.5 - ws / 2) / hs)[None, None, :]
        phase = (2 * np.pi * np.arange(WALK_PHASES, dtype=np.float32) / WALK_PHASES)[:, None, None]
        shape = (WALK_PHASES, hs, ws)
        rgb = np.zeros((*shape, 3), dtype=np.float32)
        return cls(u, v, np.sin(phase), rgb, np.zeros(shape, dtype=bool))

    def paint(self, mask: np.ndarray, colour: np.ndarray) -> None:
        np.copyto(self.rgb, colour, where=mask[..., None])
        np.logical_or(self.alpha, mask, out=self.alpha)


def _segment_distance(u: Array, v: Array, u0: Array, v0: Array, u1: Array, v1: Array) -> tuple[Array, Array]:
    """Distance of each (u, v) to the segment, and where along it (0..1) the nearest point is."""
    du, dv = u1 - u0, v1 - v0
    t = np.clip(((u - u0) * du + (v - v0) * dv) / (du * du + dv * dv + 1e-9), 0.0, 1.0)
    return np.hypot(u - u0 - t * du, v - v0 - t * dv), t


def _side(back: bool) -> float:
    """+1 from the front, -1 from behind: the body's right/left swap sides of the image."""
    return -1.0 if back else 1.0


def render_sprites(identity: Identity, back: bool, height: int) -> np.ndarray:
    """The person in WALK_PHASES poses: float32 (K, height, height // 2, 4) RGBA in 0..1.

    Coordinates are in person heights (see ``_Canvas``). The back view mirrors the body's sides.
    """
    canvas = _Canvas.blank(height)
    torso_w = 0.095 * identity.width
    # The order matters: a later part covers an earlier one where they overlap.
    _paint_legs(canvas, identity, torso_w)
    _paint_torso(canvas, identity, back, torso_w)
    _paint_backpack(canvas, identity, back, torso_w)
    _paint_arms(canvas, identity, torso_w)
    _paint_shoulder_bag(canvas, identity, back, torso_w)
    _paint_head(canvas, identity, back)
    return _shaded_rgba(canvas, torso_w)


def _paint_legs(canvas: _Canvas, identity: Identity, torso_w: float) -> None:
    """Lower clothing on the swinging legs (skin below shorts and skirts), shoes, the skirt."""
    u, v, swing = canvas.u, canvas.v, canvas.swing
    w = identity.width
    leg_r = 0.034 * w
    for sign in (-1.0, 1.0):
        hip_u = sign * 0.042 * w
        foot_u = hip_u + sign * 0.01 + identity.stride * swing * sign
        foot_v = SOLE_V - 0.03 - 0.02 * np.maximum(0.0, swing * sign)
        dist, t = _segment_distance(u, v, hip_u, HIP_V, foot_u, foot_v)
        leg = dist < leg_r
        covered = t < LEG_COVER[identity.legwear]
        canvas.paint(leg & ~covered, SKIN[identity.skin])
        canvas.paint(leg & covered, PALETTE[identity.lower])
        shoe = np.hypot((u - foot_u) / 0.04, (v - foot_v - 0.012) / 0.022) < 1.0
        canvas.paint(shoe, PALETTE[identity.shoes])
    if identity.legwear == "skirt":
        skirt = (
            (v >= HIP_V - 0.02)
            & (v < HIP_V + 0.17)
            & (np.abs(u) < torso_w * (1.0 + 2.2 * (v - HIP_V + 0.02)))
        )
        canvas.paint(skirt, PALETTE[identity.lower])


def _torso_pattern(canvas: _Canvas, identity: Identity, back: bool) -> np.ndarray:
    """Where the upper texture shows its second colour, (1, Hs, Ws) bool."""
    u, v = canvas.u, canvas.v
    _, hs, ws = canvas.alpha.shape
    period = identity.stripe_period
    texture = identity.texture
    second = np.zeros((1, hs, ws), dtype=bool)
    if texture == "hstripes":
        second = ((v - SHOULDER_V) / period) % 1.0 < 0.5
    elif texture == "vstripes":
        second = (u / period + 0.25) % 1.0 < 0.5
    elif texture == "diagonal":
        second = ((_side(back) * identity.stripe_sign * u + v) / period) % 1.0 < 0.5
    elif texture == "checks":
        second = (((v - SHOULDER_V) / period) % 1.0 < 0.5) ^ ((u / period + 0.25) % 1.0 < 0.5)
    elif texture == "block":
        second = v > (SHOULDER_V + HIP_V) / 2
    elif texture == "logo" and not back:  # the logo is on the chest: not seen from behind
        cu, cv = 0.03 * identity.width, 0.27
        if identity.logo_round:
            second = np.hypot(u - cu, v - cv) < 0.035
        else:
            second = (np.abs(u - cu) < 0.032) & (np.abs(v - cv) < 0.03)
    return np.broadcast_to(second, (1, hs, ws))


def _paint_torso(canvas: _Canvas, identity: Identity, back: bool, torso_w: float) -> None:
    u, v = canvas.u, canvas.v
    torso = (v >= SHOULDER_V) & (v < HIP_V + 0.01) & (np.abs(u) < torso_w * (1.0 - 0.25 * (v - SHOULDER_V)))
    second = _torso_pattern(canvas, identity, back)
    canvas.paint(torso & ~second, PALETTE[identity.upper])
    canvas.paint(torso & second, PALETTE[identity.upper2])


def _paint_backpack(canvas: _Canvas, identity: Identity, back: bool, torso_w: float) -> None:
    """From behind a backpack covers the back; from the front only its straps show."""
    if identity.bag != "backpack":
        return
    u, v = canvas.u, canvas.v
    if back:
        pack = (np.abs(u) < torso_w * 0.8) & (v > SHOULDER_V + 0.02) & (v < SHOULDER_V + 0.26)
        canvas.paint(pack, PALETTE[identity.bag_colour])
    else:
        straps = (np.abs(np.abs(u) - torso_w * 0.55) < 0.012) & (v > SHOULDER_V) & (v < SHOULDER_V + 0.2)
        canvas.paint(straps, PALETTE[identity.bag_colour])


def _paint_arms(canvas: _Canvas, identity: Identity, torso_w: float) -> None:
    """Arms swing against the legs; sleeves cover part or all of them."""
    u, v, swing = canvas.u, canvas.v, canvas.swing
    arm_r = 0.026 * identity.width
    for sign in (-1.0, 1.0):
        shoulder_u = sign * (torso_w + arm_r * 0.6)
        hand_u = shoulder_u + sign * 0.012 - identity.arm_swing * swing * sign
        hand_v = SHOULDER_V + 0.3
        dist, t = _segment_distance(u, v, shoulder_u, SHOULDER_V + 0.015, hand_u, hand_v)
        arm = dist < arm_r
        sleeve = t < (0.92 if identity.long_sleeves else 0.35)
        canvas.paint(arm & sleeve, PALETTE[identity.upper])
        canvas.paint(arm & ~sleeve, SKIN[identity.skin])


def _paint_shoulder_bag(canvas: _Canvas, identity: Identity, back: bool, torso_w: float) -> None:
    """A shoulder bag hangs on one side with a strap across the chest."""
    if identity.bag != "shoulder":
        return
    u, v = canvas.u, canvas.v
    bag_side = identity.bag_side * _side(back)
    bag_u = bag_side * (torso_w + 0.035)
    bag = (np.abs(u - bag_u) < 0.04) & (v > HIP_V - 0.14) & (v < HIP_V - 0.02)
    strap, _ = _segment_distance(u, v, -bag_side * torso_w * 0.7, SHOULDER_V, bag_u, HIP_V - 0.14)
    canvas.paint(bag | ((strap < 0.008) & (v < HIP_V - 0.13)), PALETTE[identity.bag_colour])


def _paint_head(canvas: _Canvas, identity: Identity, back: bool) -> None:
    """Neck, head, hair (all of the head from behind) or a hat."""
    u, v = canvas.u, canvas.v
    skin = SKIN[identity.skin]
    neck = (np.abs(u) < 0.022) & (v > HEAD_V + 0.04) & (v < SHOULDER_V + 0.005)
    canvas.paint(neck, skin)
    head = np.hypot(u / 0.047, (v - HEAD_V) / 0.068) < 1.0
    canvas.paint(head, skin)
    hair_colour = HAIR[identity.hair]
    if identity.long_hair:
        long_hair = (np.abs(u) < 0.058) & (v > HEAD_V - 0.02) & (v < 0.21) & ((np.abs(u) > 0.04) | back)
        canvas.paint(long_hair, hair_colour)
    hair = head & ((v < HEAD_V - 0.015) | (back & (v < HEAD_V + 0.05)))
    canvas.paint(hair, hair_colour)
    if identity.hat >= 0:
        hat = (np.hypot(u / 0.054, (v - HEAD_V + 0.01) / 0.07) < 1.0) & (v < HEAD_V - 0.02)
        brim = (np.abs(u) < 0.065) & (np.abs(v - HEAD_V + 0.02) < 0.008)
        canvas.paint(hat | brim, PALETTE[identity.hat])


def _shaded_rgba(canvas: _Canvas, torso_w: float) -> np.ndarray:
    """Round-body shading so that clothes are not flat colour, then RGBA."""
    shade = np.clip(1.0 - 0.3 * (canvas.u / (torso_w + 0.04)) ** 2, 0.65, 1.0).astype(np.float32)
    rgb = canvas.rgb * shade[..., None]
    return np.concatenate([rgb, canvas.alpha[..., None].astype(np.float32)], axis=-1)
