"""Props that carry an action: phone, cup, bicycle, laptop, chair, bed, headphones…

Each function draws in the actor's frame (see painter.py) and takes the posed joints, so a
phone sits in the hand wherever jitter put it.
"""

from __future__ import annotations

import numpy as np

from clip_har.synth.painter import Colour, Painter, Point

DARK: Colour = (30, 30, 35)
SCREEN: Colour = (150, 210, 255)
WOOD: Colour = (130, 85, 45)


def phone(p: Painter, hand: Point, upright: bool) -> None:
    x, y = hand
    if upright:  # held against the ear
        p.rect(x - 0.04, y - 0.11, x + 0.04, y + 0.05, DARK)
        p.rect(x - 0.025, y - 0.09, x + 0.025, y + 0.03, SCREEN)
    else:  # held low in both hands, glowing screen up
        p.rect(x - 0.09, y - 0.08, x + 0.09, y + 0.015, DARK)
        p.rect(x - 0.072, y - 0.065, x + 0.072, y, SCREEN)


def cup(p: Painter, hand: Point, colour: Colour) -> None:
    x, y = hand
    p.poly([(x - 0.075, y - 0.11), (x + 0.075, y - 0.11), (x + 0.055, y + 0.1), (x - 0.055, y + 0.1)], colour)
    p.rect(x - 0.065, y - 0.105, x + 0.065, y - 0.07, (245, 245, 250))  # the drink's surface


def chair(p: Painter, hip: Point, colour: Colour) -> None:
    x, y = hip
    p.rect(x - 0.1, y + 0.01, x + 0.2, y + 0.05, colour)  # seat
    p.rect(x - 0.12, y - 0.3, x - 0.08, y + 0.05, colour)  # backrest
    for lx in (x - 0.1, x + 0.17):
        p.rect(lx, y + 0.05, lx + 0.03, 0.0, colour)


def table(p: Painter, colour: Colour) -> None:
    p.rect(0.24, -0.47, 0.62, -0.43, colour)
    p.rect(0.55, -0.43, 0.59, 0.0, colour)


def plate_and_fork(p: Painter, hand: Point, food: Colour) -> None:
    p.rect(0.27, -0.49, 0.55, -0.465, (245, 245, 245))  # wide plate
    p.disc((0.36, -0.52), 0.04, food)
    p.disc((0.46, -0.52), 0.035, (90, 170, 60))
    x, y = hand
    p.line([(x + 0.01, y + 0.05), (x - 0.03, y - 0.04)], (200, 200, 210), 0.012)


def laptop(p: Painter) -> None:
    p.rect(0.26, -0.495, 0.5, -0.465, (90, 90, 100))  # keyboard base
    p.poly([(0.44, -0.49), (0.52, -0.49), (0.6, -0.74), (0.52, -0.74)], (60, 60, 70))
    p.poly([(0.455, -0.5), (0.51, -0.5), (0.585, -0.725), (0.53, -0.725)], SCREEN)


def bicycle(p: Painter, frame: Colour) -> None:
    for cx in (-0.3, 0.38):
        p.ring((cx, -0.15), 0.15, DARK, 0.022)
    p.line([(-0.3, -0.15), (0.05, -0.15), (-0.05, -0.43), (-0.3, -0.15)], frame, 0.022)
    p.line([(0.05, -0.15), (0.3, -0.45), (-0.05, -0.43)], frame, 0.022)
    p.line([(0.3, -0.45), (0.38, -0.15)], frame, 0.022)
    p.line([(0.26, -0.56), (0.3, -0.45)], frame, 0.02)  # handlebar stem
    p.rect(-0.1, -0.47, 0.02, -0.43, DARK)  # saddle


def bed(p: Painter, cover: Colour) -> None:
    """In the lying actor's frame: the bed runs along the body (rotated with it)."""
    p.rect(0.02, -1.05, 0.2, 0.08, (110, 70, 40))
    p.rect(0.04, -1.02, 0.17, 0.05, (240, 240, 235))
    p.rect(-0.02, -0.72, 0.12, 0.02, cover)
    p.rect(-0.05, -1.02, 0.06, -0.8, (250, 250, 250))  # pillow


def sleep_marks(p: Painter, at: Point, colour: Colour) -> None:
    x, y = at
    for i, s in enumerate((0.05, 0.04, 0.03)):
        ox, oy = x + i * 0.07, y - i * 0.08
        p.line([(ox, oy), (ox + s, oy), (ox, oy + s), (ox + s, oy + s)], colour, 0.012)


def headphones(p: Painter, head: Point, colour: Colour) -> None:
    hx, hy = head
    p.arc((hx, hy), 0.12, 180, 360, colour, 0.035)
    for dx in (-0.105, 0.105):
        p.rect(hx + dx - 0.045, hy - 0.055, hx + dx + 0.045, hy + 0.06, colour)


def music_notes(p: Painter, head: Point, rng: np.random.Generator, colour: Colour) -> None:
    hx, hy = head
    for _ in range(int(rng.integers(1, 3))):
        nx, ny = hx + float(rng.uniform(0.14, 0.3)), hy + float(rng.uniform(-0.15, 0.05))
        p.disc((nx, ny), 0.035, colour)
        p.line([(nx + 0.03, ny), (nx + 0.03, ny - 0.13), (nx + 0.08, ny - 0.1)], colour, 0.018)


def clap_marks(p: Painter, hands: Point, colour: Colour) -> None:
    x, y = hands
    for dx, dy in ((-0.12, -0.06), (0.12, -0.06), (0.0, -0.13), (-0.1, 0.05), (0.1, 0.05)):
        p.line([(x + dx * 0.5, y + dy * 0.5), (x + dx, y + dy)], colour, 0.016)


def laugh_marks(p: Painter, head: Point, colour: Colour) -> None:
    """'ha ha' strokes beside the head."""
    hx, hy = head
    for i in range(2):
        ox, oy = hx + 0.13 + i * 0.09, hy - 0.1 - i * 0.06
        p.line([(ox, oy - 0.05), (ox, oy + 0.03)], colour, 0.015)
        p.line([(ox, oy - 0.01), (ox + 0.045, oy - 0.01)], colour, 0.015)
        p.line([(ox + 0.045, oy - 0.05), (ox + 0.045, oy + 0.03)], colour, 0.015)
