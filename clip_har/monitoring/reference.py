"""The reference window stored with each trained model: validation-split embeddings, predicted
labels and image statistics, in the same columns as the prediction log, so drift checks compare
like with like."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import torch

from clip_har.data.manifest import read_manifest
from clip_har.models.artifact import load_model
from clip_har.monitoring.predlog import image_stats
from clip_har.preprocess import load_image, to_array

REFERENCE = "reference.parquet"


@torch.no_grad()
def build_reference(model_dir: Path, data_root: Path, split: str = "val", batch_size: int = 128) -> pd.DataFrame:
    model, _, meta = load_model(Path(model_dir))
    pre = meta.preprocess_config()
    df = read_manifest(Path(data_root))
    paths = df.loc[df["split"] == split, "path"].tolist()
    if not paths:
        raise ValueError(f"no {split} images under {data_root} for the reference window")
    rows: list[dict] = []
    for start in range(0, len(paths), batch_size):
        images = [load_image(Path(data_root) / p) for p in paths[start : start + batch_size]]
        x = torch.from_numpy(np.stack([to_array(im, pre) for im in images]))
        emb = model.embed(x)
        probs = torch.softmax(model.head(emb), dim=-1)
        for im, e, p in zip(images, emb.numpy(), probs.numpy(), strict=True):
            k = int(p.argmax())
            rows.append({"label": meta.classes[k], "score": float(p[k]), "embedding": e.tolist(), **image_stats(im)})
    return pd.DataFrame(rows)


def save_reference(model_dir: Path, data_root: Path, out: Path) -> Path:
    out = Path(out)
    tmp = out.with_suffix(".tmp")
    build_reference(model_dir, data_root).to_parquet(tmp, index=False)
    tmp.replace(out)
    return out
