"""Stick-figure actors: joint layouts per pose and how a figure is drawn.

Poses carry the action (arm at the ear, stride, seated, lying…); colours are nuisance and are
chosen by the scene, independently of the label.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from clip_har.synth.painter import Colour, Painter, Point

LIMB = 0.055  # limb thickness, in figure heights
HEAD_R = 0.085

STANDING: dict[str, Point] = {
    "head": (0.0, -0.89),
    "neck": (0.0, -0.78),
    "hip": (0.0, -0.45),
    "l_elbow": (-0.11, -0.6),
    "l_hand": (-0.13, -0.43),
    "r_elbow": (0.11, -0.6),
    "r_hand": (0.13, -0.43),
    "l_knee": (-0.06, -0.23),
    "l_foot": (-0.08, 0.0),
    "r_knee": (0.06, -0.23),
    "r_foot": (0.08, 0.0),
}

SEATED: dict[str, Point] = {
    **STANDING,
    "head": (0.0, -0.83),
    "neck": (0.0, -0.72),
    "hip": (0.0, -0.4),
    "l_elbow": (0.04, -0.52),
    "l_hand": (0.16, -0.42),
    "r_elbow": (0.06, -0.53),
    "r_hand": (0.2, -0.43),
    "l_knee": (0.22, -0.4),
    "l_foot": (0.22, 0.0),
    "r_knee": (0.25, -0.39),
    "r_foot": (0.26, 0.0),
}


def _pose(base: dict[str, Point], **changes: Point) -> dict[str, Point]:
    out = dict(base)
    out.update(changes)
    return out


# One base pose per action; the scene adds props and jitter.
POSES: dict[str, dict[str, Point]] = {
    # phone at the ear: elbow high and out, other hand on the hip
    "calling": _pose(
        STANDING, r_elbow=(0.26, -0.82), r_hand=(0.1, -0.93), l_elbow=(-0.17, -0.57), l_hand=(-0.06, -0.48)
    ),
    "texting": _pose(
        STANDING,
        head=(0.03, -0.86),
        l_elbow=(-0.12, -0.56),
        l_hand=(-0.02, -0.64),
        r_elbow=(0.12, -0.56),
        r_hand=(0.04, -0.64),
    ),
    # hands clapped together above the head
    "clapping": _pose(
        STANDING, l_elbow=(-0.16, -0.92), l_hand=(-0.015, -1.1), r_elbow=(0.16, -0.92), r_hand=(0.015, -1.1)
    ),
    # cup at the mouth: forearm upright in front of the chest, head tipped back
    "drinking": _pose(STANDING, head=(-0.05, -0.89), r_elbow=(0.12, -0.6), r_hand=(0.08, -0.82)),
    "dancing": _pose(
        STANDING,
        neck=(0.03, -0.78),
        l_elbow=(-0.17, -0.86),
        l_hand=(-0.26, -1.02),
        r_elbow=(0.2, -0.72),
        r_hand=(0.33, -0.84),
        r_knee=(0.18, -0.3),
        r_foot=(0.22, -0.12),
    ),
    "running": _pose(
        STANDING,
        head=(0.08, -0.88),
        neck=(0.06, -0.77),
        l_elbow=(-0.12, -0.66),
        l_hand=(-0.2, -0.56),
        r_elbow=(0.2, -0.6),
        r_hand=(0.24, -0.72),
        l_knee=(-0.17, -0.22),
        l_foot=(-0.3, -0.08),
        r_knee=(0.2, -0.3),
        r_foot=(0.17, -0.04),
    ),
    # doubled over with laughter: torso bent forward, both hands on the belly
    "laughing": _pose(
        STANDING,
        head=(0.2, -0.75),
        neck=(0.13, -0.68),
        l_elbow=(0.02, -0.52),
        l_hand=(0.1, -0.47),
        r_elbow=(0.2, -0.52),
        r_hand=(0.12, -0.45),
    ),
    "listening_to_music": dict(STANDING),
    "sitting": _pose(SEATED, l_hand=(0.17, -0.41), r_hand=(0.21, -0.41)),
    "eating": _pose(SEATED, r_elbow=(0.08, -0.52), r_hand=(0.07, -0.76)),
    "using_laptop": _pose(
        SEATED, l_elbow=(0.1, -0.5), l_hand=(0.3, -0.47), r_elbow=(0.12, -0.51), r_hand=(0.34, -0.47)
    ),
    "cycling": _pose(
        SEATED,
        head=(0.1, -0.86),
        neck=(0.08, -0.75),
        hip=(-0.05, -0.45),
        l_elbow=(0.2, -0.62),
        l_hand=(0.32, -0.55),
        r_elbow=(0.22, -0.63),
        r_hand=(0.34, -0.56),
        l_knee=(0.12, -0.38),
        l_foot=(0.05, -0.16),
        r_knee=(0.16, -0.32),
        r_foot=(0.1, -0.12),
    ),
    "sleeping": dict(STANDING),
    "fighting": _pose(
        STANDING,
        r_elbow=(0.17, -0.68),
        r_hand=(0.33, -0.7),
        l_elbow=(0.05, -0.63),
        l_hand=(0.14, -0.72),
        l_knee=(-0.1, -0.22),
        l_foot=(-0.17, 0.0),
    ),
    "hugging": _pose(STANDING, l_elbow=(0.1, -0.66), l_hand=(0.28, -0.62), r_elbow=(0.16, -0.63), r_hand=(0.3, -0.58)),
}


@dataclass(frozen=True)
class Outfit:
    skin: Colour
    shirt: Colour
    trousers: Colour
    hair: Colour


def jitter(pose: dict[str, Point], rng: np.random.Generator, amount: float = 0.018) -> dict[str, Point]:
    """Small random joint offsets so no two figures of a class are identical."""
    return {k: (x + float(rng.normal(0, amount)), y + float(rng.normal(0, amount))) for k, (x, y) in pose.items()}


def draw_figure(p: Painter, j: dict[str, Point], outfit: Outfit, face: str = "neutral") -> None:
    """Legs, torso, arms, head; `face` is neutral, laugh or asleep."""
    for side in ("l", "r"):
        p.line([j["hip"], j[f"{side}_knee"], j[f"{side}_foot"]], outfit.trousers, LIMB)
    p.line([j["neck"], j["hip"]], outfit.shirt, LIMB * 2.1)
    for side in ("l", "r"):
        p.line([j["neck"], j[f"{side}_elbow"], j[f"{side}_hand"]], outfit.shirt, LIMB * 0.9)
        p.disc(j[f"{side}_hand"], LIMB * 0.65, outfit.skin)
    hx, hy = j["head"]
    p.disc((hx, hy), HEAD_R, outfit.skin)
    p.arc((hx, hy), HEAD_R * 0.92, 190, 350, outfit.hair, LIMB * 0.7)
    eye_y = hy - HEAD_R * 0.15
    dark = (25, 25, 25)
    if face == "asleep":
        for dx in (-0.35, 0.35):
            p.line([(hx + (dx - 0.15) * HEAD_R, eye_y), (hx + (dx + 0.15) * HEAD_R, eye_y)], dark, 0.008)
        return
    for dx in (-0.35, 0.35):
        p.disc((hx + dx * HEAD_R, eye_y), HEAD_R * 0.12, dark)
    if face == "laugh":
        p.disc((hx, hy + HEAD_R * 0.45), HEAD_R * 0.38, (120, 20, 30))
    else:
        p.line([(hx - 0.3 * HEAD_R, hy + 0.45 * HEAD_R), (hx + 0.3 * HEAD_R, hy + 0.45 * HEAD_R)], dark, 0.008)
