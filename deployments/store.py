"""The service's models from the BentoML store: a tag resolved (4xx for a malformed or unknown
one), a result's generation traced back to its model, and the slot a service process serves from."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import bentoml
from bentoml.exceptions import BentoMLException, InvalidArgument, NotFound

if TYPE_CHECKING:
    from clip_har.serving.hotswap import ModelSlot
    from clip_har.settings import Settings


def resolve(tag: str) -> tuple[str, Path]:
    """The exact tag and directory of a model in the store."""
    try:
        bentoml.Tag.from_taglike(tag)
    except (ValueError, BentoMLException) as exc:  # BentoML's words for a malformed tag
        raise InvalidArgument(f"model {tag!r} is not a valid BentoML tag (name:version)") from exc
    try:
        model = bentoml.models.get(tag)
    except (bentoml.exceptions.NotFound, FileNotFoundError) as exc:  # an unknown version, or name
        raise NotFound(f"model {tag!r} is not in the BentoML model store") from exc
    return str(model.tag), Path(model.path)


def find(name: str, generation: int) -> str | None:
    """The tag of the stored model `name:*` whose generation id is `generation`."""
    from clip_har.serving.hotswap import generation_id

    return next((str(m.tag) for m in bentoml.models.list(name) if generation_id(str(m.tag)) == generation), None)


def model_slot(settings: Settings, tag: str, warm: bool) -> ModelSlot:
    """A slot serving `tag`; `warm=False` for a process that never runs the image side."""
    from clip_har.serving.hotswap import ModelSlot  # heavy imports kept out of module import
    from clip_har.serving.predictor import Predictor

    backend, max_pixels, name = settings.backend, settings.max_pixels, tag.split(":")[0]
    # no spinning: the entry process and the HTTP servers share these cores with ONNX Runtime
    slot = ModelSlot(
        resolve,
        lambda path: Predictor(path, backend, max_pixels=max_pixels, spin=False),
        lambda generation: find(name, generation),
        warm=warm,
    )
    slot.switch(tag)
    return slot
