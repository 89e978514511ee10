"""The clip-har HTTP service (BentoML). Thin: decode and validate requests, call the
clip_har predictor, shape responses. Everything configurable is a setting (clip_har.settings):
the model from the BentoML store (CLIP_HAR_MODEL, default <model name>:latest), the backend
(CLIP_HAR_BACKEND: auto, or onnx | onnx-int8 | onnx-cuda | onnx-cuda-fp16 | tensorrt | pytorch),
limits, folders and the admin token. The web app (deployments/ui/, a static page over this JSON
API) is at /ui/."""

from __future__ import annotations

import asyncio
import base64
import os
import uuid
from collections.abc import Awaitable, Callable
from functools import partial
from http import HTTPStatus
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

import aiohttp
import bentoml
import numpy as np
from bentoml.exceptions import BentoMLException, InvalidArgument, ServiceUnavailable
from fastapi import FastAPI, HTTPException
from fastapi.responses import FileResponse
from fastapi.staticfiles import StaticFiles

from clip_har.monitoring.predlog import NullLog, PredictionRecord
from clip_har.monitoring.review import ReviewQueue
from clip_har.serving.card import UiLinks, latest_report, model_card
from clip_har.serving.shadow import read_current, summarize
from deployments import admin, apidoc, forms, guards
from deployments.forms import decode_images, parse_labels, upload_name
from deployments.shadowing import Inferred, ShadowScorer
from deployments.store import model_slot
from deployments.worker import MODEL_TAG, SETTINGS, SHADOW_DIR, HarModel

if TYPE_CHECKING:
    from clip_har.serving.hotswap import Loaded, ModelSlot
    from clip_har.serving.predictor import Predictor

T = TypeVar("T")

MODEL_NAME = MODEL_TAG.split(":")[0]
UI_DIR = Path(__file__).with_name("ui")
# /classify may send each label as its own part; no endpoint has more than 3 fields besides
forms.install(max_files=SETTINGS.max_files, max_fields=SETTINGS.max_labels + 4)
# Explanations run PyTorch forward and backward in the HTTP worker: a few at a time, in slots of
# their own, so a burst of them never holds up /predict.
MAX_EXPLAIN = SETTINGS.max_explain
INFO_S = 10.0  # asking the batched worker which model it serves (it answers at once, even when busy)
RELOAD_S = 110.0  # a model's load and warm-up in the batched worker, within the 120 s traffic timeout
# With every slot busy they take at most half the cores (the batched worker keeps the rest): on
# shared cores a 2-thread PyTorch op waits for its slowest thread, and single explanations of the
# demo model went from a steady 19 ms to spikes of 700 ms
EXPLAIN_THREADS = max(1, len(os.sched_getaffinity(0)) // (2 * MAX_EXPLAIN))
MAX_SHADOW = 8  # shadow scorings at once per HTTP worker; past that a request is not shadow-scored


info_app = FastAPI(title="clip-har model info")
if UI_DIR.is_dir():
    info_app.mount("/ui", StaticFiles(directory=UI_DIR, html=True), name="ui")


@bentoml.service(name="clip-har", workers=SETTINGS.http_workers, traffic={"timeout": 120})
@bentoml.asgi_app(info_app)  # at the root so GET /model needs no redirect; BentoML's routes win
class ClipHar:
    model = bentoml.depends(HarModel)

    def __init__(self) -> None:
        import torch

        from clip_har.explain import LatestExplainer
        from clip_har.monitoring.predlog import PredictionLog

        torch.set_num_threads(EXPLAIN_THREADS)  # this process runs PyTorch for explanations only

        # Labels, preprocessing and the text tower of every model the batched worker answers with;
        # the image graph lives in the batched worker only
        self.slot = model_slot(SETTINGS, MODEL_TAG, warm=False)
        state = SETTINGS.state
        self.log = PredictionLog(state.predictions) if SETTINGS.logs_predictions else NullLog()
        self.review = ReviewQueue(state.review) if SETTINGS.keeps_review_queue else None
        self._switching = asyncio.Lock()  # a reload, or following the batched worker, at a time
        self._explainer = LatestExplainer()  # the served model's, built at its first /explain
        shadow_rows = partial(self._ask_worker_for, "shadow_infer")
        self._shadow = ShadowScorer(self.slot, shadow_rows, SHADOW_DIR, MAX_SHADOW)
        self._links = UiLinks(SETTINGS.prefect_url, SETTINGS.tracking_server or SETTINGS.mlflow_url)
        _Served.slot = self.slot

    @bentoml.on_shutdown
    def _flush_log(self) -> None:
        self.log.close()  # graceful shutdown writes every queued prediction

    async def _ask_worker(self, call: Callable[[], Awaitable[T]], deadline_s: float | None = None) -> T:
        # BentoML's inter-service client can reuse a keep-alive connection the model service
        # has just closed (bentoml/BentoML#4971): retry the idempotent call on resets. A call
        # past its deadline is not retried (it would queue again behind the work that made it
        # late): the caller gets a 503 with Retry-After.
        for attempt in range(3):
            try:
                return await asyncio.wait_for(call(), deadline_s or SETTINGS.infer_timeout_s)
            except aiohttp.ClientConnectionError:
                if attempt == 2:
                    raise
            except TimeoutError as exc:
                raise ServiceUnavailable(f"no answer within {deadline_s or SETTINGS.infer_timeout_s} s") from exc
        raise AssertionError("unreachable")

    async def _ask_worker_for(self, api: str, pixels: list[np.ndarray]) -> list[np.ndarray]:
        return await self._ask_worker(partial(getattr(self.model.to_async, api), pixels))

    async def _infer(self, prepare: Callable[[Predictor], tuple[list[np.ndarray], T]]) -> Inferred:
        """Probabilities and embeddings from the batched worker. `prepare` makes one pixel array
        per image for a model's input, off the event loop; when the batched worker serves another
        model by then (another HTTP worker switched it), this process follows it and prepares
        them again."""
        from clip_har.serving.hotswap import generations, read_rows

        for _ in range(3):  # a third time only if the model was switched twice during the request
            pixels, extra = await asyncio.to_thread(prepare, self.slot.current.predictor)
            rows = await self._ask_worker(partial(self.model.to_async.infer, pixels))
            if generations(rows) != {self.slot.current.generation}:
                await self._follow(generations(rows))
            result = await asyncio.to_thread(read_rows, rows, self.slot)  # may load the model that answered
            if result is not None:
                return Inferred(*result, extra, pixels)
        raise ServiceUnavailable("the served model changed during the request")

    async def _follow(self, seen: set[int] | None = None) -> None:
        """Prepare images, and read results, for the model the batched worker serves now. `seen`:
        the models a result came from; once another request has followed to that one, no need to ask."""
        async with self._switching:
            if seen is not None and seen == {self.slot.current.generation}:
                return
            tag = await self._ask_worker(self.model.to_async.serving)
            if tag != self.slot.current.tag:
                self.slot.activate(await asyncio.to_thread(self.slot.prepare, tag))

    @bentoml.api(route="/predict")
    async def predict(self, images: list[Path], top_k: int = 5) -> dict:
        """Action label, score and top-k for each uploaded image (`top_k`: at most the model's labels)."""
        if top_k < 1:
            raise InvalidArgument("top_k must be at least 1")
        # decoding is CPU work: off the event loop, which keeps answering (/readyz included)
        done = await self._infer(partial(decode_images, images, settings=SETTINGS))
        (stats, raw), loaded = done.extra, done.loaded
        classes, version = loaded.classes, loaded.tag
        results = []
        request_id = uuid.uuid4().hex
        for path, data, p, e, st in zip(images, raw, done.probs, done.emb, stats, strict=True):
            order = np.argsort(-p)[:top_k]
            top = [{"label": classes[i], "score": float(p[i])} for i in order]
            results.append(
                {"filename": upload_name(path), "label": top[0]["label"], "score": top[0]["score"], "top_k": top}
            )
            self.log.append(PredictionRecord(request_id, version, top[0]["label"], top[0]["score"], e.tolist(), **st))
            novel = loaded.novelty.reason(st) if loaded.novelty else None
            if self.review is not None and (novel or self.review.is_uncertain(p)):  # wait for a person to label
                self.review.offer(data, p, classes, version, Path(path).suffix, novel)
        pixels = partial(_pixels_of, raw)  # from the bytes: the uploads are gone once this answers
        self._shadow.after("/predict", request_id, done, pixels)
        return {"model_version": version, "results": results}

    @bentoml.api(route="/classify")
    async def classify(self, images: list[Path], labels: list[str] | str) -> dict:
        """Zero-shot scores over free-text candidate labels (through the text tower).

        `labels`: a JSON array of strings, or one string with labels separated by commas."""
        labels = parse_labels(labels)
        if not labels:
            raise InvalidArgument("field 'labels' needs at least one non-empty label")
        if len(labels) > SETTINGS.max_labels or max(len(s) for s in labels) > SETTINGS.max_label_chars:
            raise InvalidArgument(f"at most {SETTINGS.max_labels} labels of {SETTINGS.max_label_chars} characters")
        done = await self._infer(partial(decode_images, images, settings=SETTINGS))  # image side: the batched worker
        scores = await asyncio.to_thread(done.loaded.predictor.zero_shot, done.emb, labels)  # its text tower
        results = [
            {"filename": upload_name(p), "scores": {lab: float(s) for lab, s in zip(labels, row, strict=True)}}
            for p, row in zip(images, scores, strict=True)
        ]
        return {"model_version": done.loaded.tag, "results": results}

    @bentoml.api(route="/predict_video")
    async def predict_video(self, video: Path, fps: float = 1.0) -> dict:
        """Per-sampled-frame labels and smoothed segments [{start_s, end_s, label, score}]."""
        from dataclasses import asdict

        from clip_har.serving.video import sample_frames, smooth_segments

        size = Path(video).stat().st_size
        if size == 0 or size > SETTINGS.max_video_mb * 1e6:
            raise InvalidArgument(f"video must be 1 byte to {SETTINGS.max_video_mb} MB, got {size} bytes")
        from clip_har.preprocess import to_pixels

        def frames(predictor: Predictor, path: Path = video) -> tuple[list[np.ndarray], list[float]]:
            # each frame becomes the model's uint8 pixels as it is decoded: memory bounded by the model
            pixels = partial(to_pixels, cfg=predictor.preprocess)
            try:
                sampled = sample_frames(Path(path), fps, SETTINGS.max_frames, pixels, SETTINGS.max_pixels)
            except ValueError as exc:
                raise InvalidArgument(str(exc)) from exc
            return [px for _, px in sampled], [t for t, _ in sampled]

        done = await self._infer(frames)
        classes, times = done.loaded.classes, done.extra
        per_frame = [
            {"t": t, "label": classes[int(p.argmax())], "score": float(p.max())}
            for t, p in zip(times, done.probs, strict=True)
        ]
        segments = [asdict(s) for s in smooth_segments(times, done.probs, classes, fps)]
        if self._shadow.challenger(done.loaded.tag) and (kept := await self._shadow.keep(Path(video))):
            self._shadow.after("/predict_video", uuid.uuid4().hex, done, lambda p: frames(p, kept)[0], (kept,))
        return {"model_version": done.loaded.tag, "frames": per_frame, "segments": segments}

    @bentoml.api(route="/explain")
    async def explain(self, image: Path, label: str = "") -> dict:
        """Heat map of the image regions that drive `label` (default: the predicted label): a grid
        in [0, 1] over the centre square the model sees, and that square with the heat over it
        (base64 PNG). Computed on the served model's PyTorch weights, in this process."""
        size = Path(image).stat().st_size
        if size == 0 or size > SETTINGS.max_file_mb * 1e6:
            raise InvalidArgument(f"image must be 1 byte to {SETTINGS.max_file_mb} MB, got {size} bytes")
        await self._follow()  # explain the model the batched worker serves, as /predict would answer
        loaded = self.slot.current
        try:
            explainer = await asyncio.to_thread(self._explainer.get, loaded.tag, loaded.path)
        except FileNotFoundError as exc:
            raise BentoMLException(str(exc), error_code=HTTPStatus.CONFLICT) from exc
        try:
            data = Path(image).read_bytes()
            found = await asyncio.to_thread(explainer.explain_bytes, data, label or None, SETTINGS.max_pixels)
        except ValueError as exc:  # undecodable, over a limit, or an unknown label
            raise InvalidArgument(str(exc)) from exc
        return {
            "model_version": loaded.tag,
            "filename": upload_name(image),
            **found.to_dict(),
            "overlay_png": base64.b64encode(found.overlay_png).decode(),
        }

    @bentoml.api(route="/feedback")
    async def feedback(self, image: Path, label: str, predicted: str = "", model_version: str = "") -> dict:
        """A user says the prediction for `image` is wrong and `label` is right: the image waits in
        the review queue with that label, for a reviewer to confirm before it goes to data-ingest
        (anyone who can reach the service can send one). The served model scores it again (what it
        predicts is kept beside the label); `predicted` and `model_version` are what the user saw."""
        if self.review is None:
            raise BentoMLException("the review queue is off (CLIP_HAR_REVIEW_DIR=off)", error_code=HTTPStatus.CONFLICT)
        done = await self._infer(partial(decode_images, [image], settings=SETTINGS))
        (_, (data,)), loaded = done.extra, done.loaded
        try:
            item = await asyncio.to_thread(
                self.review.feedback, data, done.probs[0], loaded.classes, loaded.tag, Path(image).suffix, label
            )
        except ValueError as exc:  # a label the model does not have
            raise InvalidArgument(str(exc)) from exc
        except (OverflowError, OSError) as exc:  # full, or the folder cannot be written: nothing kept
            raise ServiceUnavailable(f"feedback not kept: {exc}") from exc
        seen = {"predicted": predicted or None, "model_version": model_version or None}
        return {
            "id": item.id,
            "label": item.label,
            "model_predicted": item.predicted,
            "seen": seen,
            "state": "pending",
        }

    @bentoml.api(route="/admin/reload")
    async def reload(self, ctx: bentoml.Context, model: str = f"{MODEL_NAME}:latest") -> dict:
        """Switch to another model from the store (what `clip-har.model.promoted` triggers).

        The new model is loaded and warmed here and in the batched worker before it serves;
        requests in flight finish on the previous one, so none fails during the switch."""
        admin.check(ctx, SETTINGS, "/admin/reload")
        async with self._switching:  # the batched worker serialises reloads from every HTTP worker
            try:
                loaded = await asyncio.to_thread(self.slot.prepare, model)
            except ValueError as exc:  # nothing moved
                raise InvalidArgument(str(exc)) from exc
            # the batched worker loads and warms the image side; a 400 from it (the model does
            # not run) reaches the caller as a 400, and nothing has moved
            try:  # idempotent: retried on a reset connection, like inference
                switched = await self._ask_worker(partial(self.model.to_async.switch, tag=loaded.tag), RELOAD_S)
            except BentoMLException as exc:
                raise admin.refusal(exc) from exc
            # the other HTTP workers follow at their next request, when the batched worker's
            # answer names this model
            self.slot.activate(loaded)
        self._shadow.watch.invalidate()  # a switch ends shadowing
        return switched

    @bentoml.api(route="/admin/shadow")
    async def set_shadow(self, ctx: bentoml.Context, model: str = "") -> dict:
        """Score `model` (a stored model other than the served one) in shadow on live traffic: it
        sees every request /predict and /predict_video answer, only the served model answers.
        `""` stops. What the rollout decides on is GET /shadow."""
        admin.check(ctx, SETTINGS, "/admin/shadow")
        tag = ""
        if model:
            try:  # resolved here first: a malformed or unknown tag is a 400 or 404 that moves nothing
                tag = (await asyncio.to_thread(self.slot.prepare, model)).tag
            except ValueError as exc:
                raise InvalidArgument(str(exc)) from exc
        try:
            result = await self._ask_worker(partial(self.model.to_async.set_shadow, tag=tag), RELOAD_S)
        except BentoMLException as exc:
            raise admin.refusal(exc) from exc
        self._shadow.watch.invalidate()
        return result

    @info_app.get("/model")
    async def model_info(self) -> dict:
        """Version, labels and lineage of the model the batched worker is serving now."""
        loaded = await self._served()
        info = bentoml.models.get(loaded.tag).info
        return {
            "model_version": loaded.tag,
            "labels": loaded.classes,
            "backend": loaded.predictor.backend,  # what serves (`auto` resolved)
            "backend_reason": loaded.predictor.why,  # "configured", or why `auto` chose it
            "lineage": dict(info.metadata),
        }

    async def _served(self) -> Loaded:
        # not an inference: its own deadline, so /model answers while inference is overloaded
        tag = await self._ask_worker(self.model.to_async.serving, INFO_S)
        return await asyncio.to_thread(self.slot.prepare, tag)

    @info_app.get("/model/card")
    async def card(self) -> dict:
        """What the web app shows about the served model: version, backend, held-out metrics and
        confusion matrix, data version and lineage, the latest drift verdict, the shadow
        challenger, and the Prefect and MLflow UIs when they answer."""
        loaded = await self._served()
        metadata = dict(bentoml.models.get(loaded.tag).info.metadata)
        links = await asyncio.to_thread(self._links.get, metadata.get("mlflow_run_id"))
        args = (loaded.tag, loaded.predictor.backend, loaded.classes, loaded.path, metadata, SETTINGS.state.reports)
        card = await asyncio.to_thread(model_card, *args, links)
        shadow = await asyncio.to_thread(lambda: summarize(SHADOW_DIR, read_current(SHADOW_DIR)))
        return {**card, "shadow": {k: shadow[k] for k in ("challenger", "requests", "agreement")}}

    @info_app.get("/shadow")
    async def shadow_status(self) -> dict:
        """The challenger scoring in shadow (if any) and its record since it started: requests
        and images scored, agreement with the served model, each model's mean confidence."""
        champion = await self._ask_worker(self.model.to_async.serving, INFO_S)
        found = await asyncio.to_thread(lambda: summarize(SHADOW_DIR, read_current(SHADOW_DIR)))
        return {"champion": champion, **found}

    @info_app.get("/drift/report")
    async def drift_report(self) -> FileResponse:
        """The Evidently report of the latest drift check (HTML, self-contained)."""
        html = await asyncio.to_thread(latest_report, SETTINGS.state.reports)
        if html is None:
            raise HTTPException(404, "no drift report yet: the drift-monitor flow writes one per check")
        # Evidently's page runs its own scripts: sandboxed, so they cannot act as this origin (whose
        # loopback callers may reload models without a token)
        csp = {"Content-Security-Policy": "sandbox allow-scripts"}
        return FileResponse(html, media_type="text/html", headers=csp)


def _pixels_of(images: list[bytes], predictor: Predictor) -> list[np.ndarray]:
    return [predictor.decode_pixels_with_stats(data)[0] for data in images]


_BATCHED = ("/predict", "/classify", "/predict_video", "/feedback")  # through the batched worker
_INFERENCE = (*_BATCHED, "/explain")


class _Served:
    """The model slot of this process's service instance: the document is built by a middleware,
    outside the instance, and publishes the served model's labels."""

    slot: ModelSlot | None = None


def _document(spec: dict) -> dict:
    """The published OpenAPI document: our description, error shape and limits."""
    return apidoc.document(spec, SETTINGS, _INFERENCE, _Served.slot.current.classes if _Served.slot else [])


guards.install(ClipHar, SETTINGS, _document, batched=_BATCHED, image_routes=("/predict", "/classify"))
