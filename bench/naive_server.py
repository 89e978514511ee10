"""The naive baseline: a plain FastAPI app, PyTorch eager, one image per request (what a seed
project typically ships). Used only by bench/serving.py.

Run: BENCH_NAIVE_MODEL_DIR=<model artifact dir> uvicorn bench.naive_server:app --port N
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
from fastapi import FastAPI, HTTPException, UploadFile

from clip_har.models.artifact import load_model
from clip_har.preprocess import preprocess

app = FastAPI()
MODEL, _, META = load_model(Path(os.environ["BENCH_NAIVE_MODEL_DIR"]))
PRE = META.preprocess_config()


@app.post("/predict")
async def predict(images: UploadFile) -> dict:
    try:
        x = torch.from_numpy(preprocess(await images.read(), PRE))[None]
    except ValueError as exc:
        raise HTTPException(400, str(exc)) from exc
    with torch.no_grad():
        p = torch.softmax(MODEL(x), dim=-1)[0]
    i = int(p.argmax())
    return {"label": META.classes[i], "score": float(p[i])}
