"""Drawing in a person's own coordinate frame.

A scene places one or two actors; each actor is drawn in a frame where the figure is one unit
tall, feet at y=0 and y grows downwards. The painter maps that frame to pixels (scale, flip,
rotation, offset), so poses and props are written once and every nuisance transform is free.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from PIL import ImageDraw

Point = tuple[float, float]
Colour = tuple[int, int, int]


@dataclass(frozen=True)
class Painter:
    draw: ImageDraw.ImageDraw
    origin: Point  # pixel position of the frame's (0, 0)
    scale: float  # pixels per unit (the figure's height)
    flip: bool = False
    angle: float = 0.0  # radians, rotation of the whole frame (lying figures)

    def to_px(self, p: Point) -> Point:
        x, y = (-p[0] if self.flip else p[0]), p[1]
        c, s = math.cos(self.angle), math.sin(self.angle)
        xr, yr = x * c - y * s, x * s + y * c
        return (self.origin[0] + xr * self.scale, self.origin[1] + yr * self.scale)

    def px(self, length: float) -> float:
        return max(1.0, length * self.scale)

    def line(self, points: list[Point], colour: Colour, width: float) -> None:
        pts = [self.to_px(p) for p in points]
        w = int(round(self.px(width)))
        self.draw.line(pts, fill=colour, width=w, joint="curve")
        r = w / 2.0  # round caps so limbs join smoothly
        for x, y in (pts[0], pts[-1]):
            self.draw.ellipse((x - r, y - r, x + r, y + r), fill=colour)

    def disc(self, centre: Point, radius: float, colour: Colour, outline: Colour | None = None) -> None:
        x, y = self.to_px(centre)
        r = self.px(radius)
        width = max(1, int(r / 4)) if outline else 0
        self.draw.ellipse((x - r, y - r, x + r, y + r), fill=colour, outline=outline, width=width)

    def ring(self, centre: Point, radius: float, colour: Colour, width: float) -> None:
        x, y = self.to_px(centre)
        r = self.px(radius)
        self.draw.ellipse((x - r, y - r, x + r, y + r), outline=colour, width=int(round(self.px(width))))

    def poly(self, points: list[Point], colour: Colour) -> None:
        self.draw.polygon([self.to_px(p) for p in points], fill=colour)

    def rect(self, x0: float, y0: float, x1: float, y1: float, colour: Colour) -> None:
        self.poly([(x0, y0), (x1, y0), (x1, y1), (x0, y1)], colour)

    def arc(self, centre: Point, radius: float, start: float, end: float, colour: Colour, width: float) -> None:
        """An arc drawn as a polyline (angles in degrees, frame orientation)."""
        n = 10
        pts = [
            (
                centre[0] + radius * math.cos(math.radians(start + (end - start) * i / n)),
                centre[1] + radius * math.sin(math.radians(start + (end - start) * i / n)),
            )
            for i in range(n + 1)
        ]
        self.line(pts, colour, width)
