"""The keyed random generators of ``dal synth``, and every key domain in one place.

Each thing drawn (a person's structure, an identity, a camera, a tracklet, ...) has its own
generator keyed by (seed, domain, ids), so a subset of persons renders the same bytes as a bigger
set. Keeping the domains together keeps them from colliding.
"""

from __future__ import annotations

import numpy as np

# Domains of the appearance: one per kind of thing drawn.
KEY_IDENTITY, KEY_CAMERA, KEY_TRACKLET, KEY_SCENE, KEY_NOISE = 1, 2, 3, 4, 5
# Domains of the dataset structure (which tracklets exist) and of the persons outside the
# identities: PRID2011's single-camera persons and MARS's junk and distractors.
KEY_STRUCTURE, KEY_QUERY, KEY_SOLO, KEY_EXTRA = 11, 12, 13, 14


def keyed_rng(seed: int, *key: int) -> np.random.Generator:
    """A generator that depends only on (seed, key): the basis of subset-stable rendering.

    The key goes in as a spawn key: a plain entropy list would pad short keys with zeros, so
    (..., 1) and (..., 1, 0) would give the same stream.
    """
    if min(key, default=0) < 0:
        raise ValueError(f"random keys must be >= 0, got {key}")
    return np.random.default_rng(np.random.SeedSequence(seed, spawn_key=key))
