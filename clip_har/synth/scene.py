"""One synthetic action scene: background, distractors, actors with props, camera effects.

Everything except the pose and the props is drawn from `rng` independently of the label, so
no colour, position or background gives the class away. `Shift` moves nuisance distributions
(night style, a new background family) to simulate drift.
"""

from __future__ import annotations

import io
from dataclasses import dataclass, field

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from clip_har.classes import phrase_for
from clip_har.synth import props
from clip_har.synth.figure import POSES, Outfit, draw_figure, jitter
from clip_har.synth.painter import Colour, Painter

NAMED_COLOURS: dict[str, Colour] = {
    "red": (200, 40, 40),
    "orange": (235, 130, 30),
    "yellow": (230, 210, 40),
    "green": (50, 160, 60),
    "blue": (40, 80, 200),
    "purple": (130, 50, 170),
    "pink": (240, 130, 180),
    "white": (235, 235, 235),
    "black": (35, 35, 35),
    "grey": (130, 130, 130),
    "brown": (120, 75, 40),
}
SKINS: tuple[Colour, ...] = ((255, 220, 185), (235, 190, 150), (200, 150, 110), (150, 100, 70), (95, 65, 45))
BACKGROUNDS: tuple[str, ...] = ("indoors", "park", "street", "beach")
SHIFT_BACKGROUNDS: tuple[str, ...] = ("snow",)  # never drawn unless a Shift asks for it
BG_PHRASES = {
    "indoors": "indoors",
    "park": "in a park",
    "street": "on a street",
    "beach": "on a beach",
    "snow": "in the snow",
}
CAPTION_TEMPLATES = (
    "a photo of a person {action}, {bg}.",
    "a person {action} {bg}, wearing a {shirt} shirt.",
    "someone {action}.",
    "a {style} photo of a person {action}.",
    "a person in a {shirt} shirt {action} {bg}.",
)
TWO_ACTORS = {"fighting": 0.36, "hugging": 0.19}  # distance between the two actors


@dataclass(frozen=True)
class Shift:
    """Drift knobs; the defaults are the training distribution."""

    style: str = "day"  # "day" or "night"
    backgrounds: tuple[str, ...] = BACKGROUNDS
    distractors: tuple[int, int] = (0, 3)


@dataclass
class Scene:
    image: Image.Image
    raw_jpeg: bytes  # the exact encoded bytes, so writing to disk does not re-encode
    caption: str
    attributes: dict[str, str] = field(default_factory=dict)


def _jittered(rng: np.random.Generator, base: Colour, amount: int = 25) -> Colour:
    return tuple(int(np.clip(c + rng.integers(-amount, amount + 1), 0, 255)) for c in base)  # type: ignore[return-value]


def _background(d: ImageDraw.ImageDraw, size: int, family: str, rng: np.random.Generator) -> None:
    horizon = int(size * rng.uniform(0.55, 0.75))
    if family == "indoors":
        d.rectangle((0, 0, size, horizon), fill=_jittered(rng, (215, 205, 185), 35))
        d.rectangle((0, horizon, size, size), fill=_jittered(rng, (150, 120, 90), 30))
        x = int(rng.uniform(0, size * 0.7))
        d.rectangle((x, size * 0.12, x + size * 0.25, size * 0.38), fill=_jittered(rng, (170, 200, 230), 20))
    elif family == "park":
        d.rectangle((0, 0, size, horizon), fill=_jittered(rng, (150, 200, 240), 25))
        d.rectangle((0, horizon, size, size), fill=_jittered(rng, (90, 160, 70), 25))
    elif family == "street":
        d.rectangle((0, 0, size, horizon), fill=_jittered(rng, (185, 190, 200), 25))
        for _ in range(3):
            x, w = rng.uniform(0, size), rng.uniform(0.15, 0.3) * size
            top = rng.uniform(0.1, 0.4) * size
            d.rectangle((x, top, x + w, horizon), fill=_jittered(rng, (140, 130, 125), 40))
        d.rectangle((0, horizon, size, size), fill=_jittered(rng, (95, 95, 100), 20))
    elif family == "beach":
        d.rectangle((0, 0, size, horizon), fill=_jittered(rng, (120, 190, 245), 20))
        d.rectangle((0, horizon - size * 0.08, size, horizon), fill=_jittered(rng, (40, 110, 180), 20))
        d.rectangle((0, horizon, size, size), fill=_jittered(rng, (230, 210, 150), 20))
    elif family == "snow":
        d.rectangle((0, 0, size, horizon), fill=_jittered(rng, (200, 210, 225), 15))
        d.rectangle((0, horizon, size, size), fill=_jittered(rng, (245, 248, 252), 6))
    else:
        raise ValueError(f"unknown background family {family!r}")


def _distractors(d: ImageDraw.ImageDraw, size: int, rng: np.random.Generator, count: int) -> None:
    """Label-independent clutter: trees, balls, boxes, clouds."""
    for _ in range(count):
        kind = rng.integers(0, 4)
        x, y = rng.uniform(0, size), rng.uniform(0.1 * size, 0.9 * size)
        r = rng.uniform(0.05, 0.12) * size
        colour = tuple(int(c) for c in rng.integers(0, 256, 3))
        if kind == 0:
            d.rectangle((x - r * 0.15, y, x + r * 0.15, y + 2 * r), fill=(100, 70, 40))
            d.ellipse((x - r, y - r, x + r, y + r), fill=_jittered(rng, (40, 130, 50), 30))
        elif kind == 1:
            d.ellipse((x - r * 0.5, y - r * 0.5, x + r * 0.5, y + r * 0.5), fill=colour)
        elif kind == 2:
            d.rectangle((x - r, y - r * 0.8, x + r, y + r * 0.8), fill=colour)
        else:
            for dx in (-0.6, 0.0, 0.6):
                d.ellipse((x + dx * r - r * 0.6, y - r * 0.5, x + dx * r + r * 0.6, y + r * 0.5), fill=(250, 250, 250))


def _outfit(rng: np.random.Generator) -> tuple[Outfit, str]:
    shirt_name = str(rng.choice(list(NAMED_COLOURS)))
    trousers = NAMED_COLOURS[str(rng.choice(list(NAMED_COLOURS)))]
    skin = SKINS[int(rng.integers(len(SKINS)))]
    hair = _jittered(rng, (60, 40, 25), 40)
    return Outfit(skin, _jittered(rng, NAMED_COLOURS[shirt_name], 20), _jittered(rng, trousers), hair), shirt_name


def _draw_actors(d: ImageDraw.ImageDraw, size: int, label: str, rng: np.random.Generator) -> str:
    """Draws the actor(s) with the action's props and returns the shirt colour name."""
    outfit, shirt = _outfit(rng)
    flip = bool(rng.random() < 0.5)
    scale = size * rng.uniform(0.65, 0.85)
    cx = size * rng.uniform(0.35, 0.65)
    feet = size * rng.uniform(0.82, 0.95)
    j = jitter(POSES[label], rng)
    accent = tuple(int(c) for c in rng.integers(0, 256, 3))
    if label == "sleeping":
        p = Painter(d, (cx + scale * 0.4, feet - scale * 0.1), scale * 0.85, flip, -1.5708)
        props.bed(p, _jittered(rng, accent, 0))
        draw_figure(p, j, outfit, face="asleep")
        props.sleep_marks(p, (j["head"][0] - 0.15, j["head"][1] - 0.12), (30, 30, 30))
        return shirt
    if label in TWO_ACTORS:
        gap = TWO_ACTORS[label] * scale
        left = Painter(d, (cx - gap / 2, feet), scale, False)
        right = Painter(d, (cx + gap / 2, feet), scale, True)
        other, _ = _outfit(rng)
        draw_figure(right, jitter(POSES[label], rng), other)
        draw_figure(left, j, outfit)
        return shirt
    p = Painter(d, (cx, feet), scale, flip)
    if label in ("sitting", "eating", "using_laptop"):
        props.chair(p, j["hip"], _jittered(rng, props.WOOD, 30))
    if label in ("eating", "using_laptop"):
        props.table(p, _jittered(rng, props.WOOD, 30))
    if label == "cycling":
        props.bicycle(p, _jittered(rng, accent, 0))
    draw_figure(p, j, outfit, face="laugh" if label == "laughing" else "neutral")
    if label == "laughing":
        props.laugh_marks(p, j["head"], (30, 30, 30))
    if label == "calling":
        props.phone(p, j["r_hand"], upright=True)
    elif label == "texting":
        props.phone(p, ((j["l_hand"][0] + j["r_hand"][0]) / 2, j["l_hand"][1]), upright=False)
    elif label == "drinking":
        props.cup(p, j["r_hand"], _jittered(rng, accent, 0))
    elif label == "eating":
        props.plate_and_fork(p, j["r_hand"], _jittered(rng, (200, 120, 60), 40))
    elif label == "using_laptop":
        props.laptop(p)
    elif label == "listening_to_music":
        props.headphones(p, j["head"], _jittered(rng, accent, 0))
        props.music_notes(p, j["head"], rng, (30, 30, 30))
    elif label == "clapping":
        props.clap_marks(p, j["l_hand"], (40, 40, 40))
    return shirt


def _camera(img: Image.Image, rng: np.random.Generator, style: str) -> tuple[Image.Image, int]:
    """Lighting, blur, sensor noise; returns the image and a JPEG quality to save with."""
    arr = np.asarray(img, dtype=np.float32)
    gain, bias = rng.uniform(0.75, 1.2), rng.uniform(-20, 20)
    arr = arr * gain + bias
    if style == "night":
        arr = arr * 0.32 + np.array([0.0, 5.0, 30.0], dtype=np.float32)
    arr = arr + rng.normal(0, rng.uniform(0, 8), arr.shape)
    img = Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8))
    radius = rng.uniform(0, 0.9)
    if radius > 0.3:
        img = img.filter(ImageFilter.GaussianBlur(radius))
    return img, int(rng.integers(55, 96))


def render_scene(label: str, rng: np.random.Generator, size: int = 128, shift: Shift | None = None) -> Scene:
    """Render one scene of `label` at `size` px (drawn at 2x, downsampled for smooth edges)."""
    if label not in POSES:
        raise ValueError(f"unknown action {label!r}")
    shift = shift or Shift()
    big = size * 2
    canvas = Image.new("RGB", (big, big))
    d = ImageDraw.Draw(canvas)
    family = str(rng.choice(list(shift.backgrounds)))
    _background(d, big, family, rng)
    _distractors(d, big, rng, int(rng.integers(shift.distractors[0], shift.distractors[1] + 1)))
    shirt = _draw_actors(d, big, label, rng)
    img, quality = _camera(canvas.resize((size, size), Image.Resampling.BILINEAR), rng, shift.style)
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=quality)
    attrs = {"background": family, "shirt": shirt, "style": shift.style, "jpeg_quality": str(quality)}
    template = CAPTION_TEMPLATES[int(rng.integers(len(CAPTION_TEMPLATES)))]
    caption = template.format(
        action=phrase_for(label),
        bg=BG_PHRASES[family],
        shirt=shirt,
        style="night" if shift.style == "night" else "daylight",
    )
    return Scene(Image.open(io.BytesIO(buf.getvalue())), buf.getvalue(), caption, attrs)
