"""The 15 action classes of the public HAR photo dataset and how prompts name them."""

from __future__ import annotations

# Order matters: it is the label index everywhere (head rows, confusion matrix, metadata).
HAR_CLASSES: tuple[str, ...] = (
    "calling",
    "clapping",
    "cycling",
    "dancing",
    "drinking",
    "eating",
    "fighting",
    "hugging",
    "laughing",
    "listening_to_music",
    "running",
    "sitting",
    "sleeping",
    "texting",
    "using_laptop",
)

# Natural-language phrase per class: shared by the synthetic captions and the zero-shot prompts,
# so the text tower is pre-trained on exactly the words the prompts later use.
DEFAULT_PHRASES: dict[str, str] = {
    "calling": "calling on the phone",
    "clapping": "clapping",
    "cycling": "cycling",
    "dancing": "dancing",
    "drinking": "drinking",
    "eating": "eating",
    "fighting": "fighting",
    "hugging": "hugging",
    "laughing": "laughing",
    "listening_to_music": "listening to music",
    "running": "running",
    "sitting": "sitting",
    "sleeping": "sleeping",
    "texting": "texting",
    "using_laptop": "using a laptop",
}

DEFAULT_TEMPLATES: tuple[str, ...] = (
    "a photo of a person {}.",
    "a person {}.",
    "someone {}.",
)


def phrase_for(label: str) -> str:
    """The prompt phrase for a class name (falls back to the name with spaces)."""
    return DEFAULT_PHRASES.get(label, label.replace("_", " "))
