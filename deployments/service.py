"""The clip-har HTTP service (BentoML). Thin: decode and validate requests, call the
clip_har predictor, shape responses. Everything configurable is a setting (clip_har.settings):
the model from the BentoML store (CLIP_HAR_MODEL, default <model name>:latest), the backend
(CLIP_HAR_BACKEND: onnx | onnx-int8 | pytorch), limits, folders and the admin token."""

from __future__ import annotations

import asyncio
import base64
import hmac
import os
import re
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
from fastapi import FastAPI

from clip_har.monitoring.predlog import NullLog, PredictionRecord
from clip_har.monitoring.review import ReviewQueue
from clip_har.serving.admission import Admission
from clip_har.serving.bodylimit import BodyLimit
from clip_har.serving.errors import ErrorContract, error_message
from clip_har.settings import is_loopback, load_settings
from deployments import apidoc, forms
from deployments.forms import parse_labels, upload_name
from deployments.store import model_slot

if TYPE_CHECKING:
    from clip_har.serving.hotswap import Loaded, ModelSlot
    from clip_har.serving.predictor import Predictor

T = TypeVar("T")

SETTINGS = load_settings()  # read once per process: every process of the service sees the same environment
MODEL_TAG = SETTINGS.serving_model
MODEL_NAME = MODEL_TAG.split(":")[0]
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


@bentoml.service(name="clip-har-model", workers=1, traffic={"timeout": 120})
class HarModel:
    """The batched inference worker: callers' images are merged into one ONNX Runtime run. One
    worker on purpose: it is the single place that decides which model is served."""

    def __init__(self) -> None:
        self.slot = model_slot(SETTINGS, MODEL_TAG, warm=True)

    @bentoml.api(batchable=True, max_batch_size=32, max_latency_ms=SETTINGS.max_latency_ms)
    def infer(self, batch: list[np.ndarray]) -> list[np.ndarray]:
        """One uint8 [3,S,S] array per image → one row per image (hotswap.run_items): images
        prepared for another model's input are answered stale, so callers prepare them again."""
        from clip_har.serving.hotswap import run_items

        return run_items(self.slot.current, batch)  # one read: the whole batch runs on one model

    # Both async: BentoML runs sync endpoints, the batched `infer` included, on one thread here, so
    # a load in `switch` would stop inference for its whole length, and `serving` would queue
    # behind the batch in progress.
    @bentoml.api
    async def switch(self, tag: str) -> dict:
        """Load, warm and then serve `tag` (off the loop: batches keep running meanwhile); in-flight
        batches finish on the previous model."""
        try:
            loaded, previous = await asyncio.to_thread(self.slot.switch, tag)
        except ValueError as exc:  # the model does not load or run: keep serving the current one
            raise InvalidArgument(str(exc)) from exc
        return {"model_version": loaded.tag, "previous": previous.tag if previous else None}

    @bentoml.api
    async def serving(self) -> str:
        return self.slot.current.tag


def _from_this_machine(request: object) -> bool:
    """A loopback client that addressed a loopback host: without an admin token, only such a
    request may reload (a web page whose DNS name was rebound to 127.0.0.1 sends its own Host)."""
    client = getattr(getattr(request, "client", None), "host", "") or ""
    host = request.headers.get("host", "").rsplit(":", 1)[0].strip("[]")  # type: ignore[attr-defined]
    return is_loopback(client) and is_loopback(host)


info_app = FastAPI(title="clip-har model info")


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
        _Served.slot = self.slot

    @bentoml.on_shutdown
    def _flush_log(self) -> None:
        self.log.close()  # graceful shutdown writes every queued prediction

    @staticmethod
    def _decode(
        images: list[Path], predictor: Predictor
    ) -> tuple[list[np.ndarray], tuple[list[dict[str, float]], list[bytes]]]:
        """uint8 [3,S,S] pixels per image for `predictor`'s input, plus the image statistics and
        the uploaded bytes (for the prediction log and the review queue)."""
        if not images:
            raise InvalidArgument("field 'images' needs at least one file")
        if len(images) > SETTINGS.max_files:
            raise InvalidArgument(f"too many files: {len(images)} > {SETTINGS.max_files}")
        arrays, stats, raw = [], [], []
        for i, path in enumerate(images):
            size = Path(path).stat().st_size
            if size == 0:
                raise InvalidArgument(f"file {i + 1} is empty")
            if size > SETTINGS.max_file_mb * 1e6:
                raise InvalidArgument(f"file {i + 1} is {size} bytes, over {SETTINGS.max_file_mb} MB")
            try:
                # uint8 pixels: a quarter of the bytes to the batched worker, which normalises
                data = Path(path).read_bytes()
                array, stat = predictor.decode_pixels_with_stats(data)
            except ValueError as exc:
                raise InvalidArgument(f"file {i + 1}: {exc}") from exc
            arrays.append(array)
            stats.append(stat)
            raw.append(data)
        return arrays, (stats, raw)

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

    async def _infer(
        self, prepare: Callable[[Predictor], tuple[list[np.ndarray], T]]
    ) -> tuple[np.ndarray, np.ndarray, Loaded, T]:
        """(probabilities, embeddings, the model that computed them, what `prepare` gave besides
        the pixels) from the batched worker. `prepare` makes one pixel array per image for a
        model's input, off the event loop; when the batched worker serves another model by then
        (another HTTP worker switched it), this process follows it and prepares them again."""
        from clip_har.serving.hotswap import generations, read_rows

        for _ in range(3):  # a third time only if the model was switched twice during the request
            pixels, extra = await asyncio.to_thread(prepare, self.slot.current.predictor)
            rows = await self._ask_worker(partial(self.model.to_async.infer, pixels))
            if generations(rows) != {self.slot.current.generation}:
                await self._follow(generations(rows))
            result = await asyncio.to_thread(read_rows, rows, self.slot)  # may load the model that answered
            if result is not None:
                return (*result, extra)
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
        probs, emb, loaded, (stats, raw) = await self._infer(partial(self._decode, images))
        classes, version = loaded.classes, loaded.tag
        results = []
        request_id = uuid.uuid4().hex
        for path, data, p, e, st in zip(images, raw, probs, emb, stats, strict=True):
            order = np.argsort(-p)[:top_k]
            top = [{"label": classes[i], "score": float(p[i])} for i in order]
            results.append(
                {"filename": upload_name(path), "label": top[0]["label"], "score": top[0]["score"], "top_k": top}
            )
            self.log.append(PredictionRecord(request_id, version, top[0]["label"], top[0]["score"], e.tolist(), **st))
            novel = loaded.novelty.reason(st) if loaded.novelty else None
            if self.review is not None and (novel or self.review.is_uncertain(p)):  # wait for a person to label
                self.review.offer(data, p, classes, version, Path(path).suffix, novel)
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
        _, emb, loaded, _ = await self._infer(partial(self._decode, images))  # image side: the batched worker
        scores = await asyncio.to_thread(loaded.predictor.zero_shot, emb, labels)  # the same model's text tower
        results = [
            {"filename": upload_name(p), "scores": {lab: float(s) for lab, s in zip(labels, row, strict=True)}}
            for p, row in zip(images, scores, strict=True)
        ]
        return {"model_version": loaded.tag, "results": results}

    @bentoml.api(route="/predict_video")
    async def predict_video(self, video: Path, fps: float = 1.0) -> dict:
        """Per-sampled-frame labels and smoothed segments [{start_s, end_s, label, score}]."""
        from dataclasses import asdict

        from clip_har.serving.video import sample_frames, smooth_segments

        size = Path(video).stat().st_size
        if size == 0 or size > SETTINGS.max_video_mb * 1e6:
            raise InvalidArgument(f"video must be 1 byte to {SETTINGS.max_video_mb} MB, got {size} bytes")
        from clip_har.preprocess import to_pixels

        def frames(predictor: Predictor) -> tuple[list[np.ndarray], list[float]]:
            # each frame becomes the model's uint8 pixels as it is decoded: memory bounded by the model
            pixels = partial(to_pixels, cfg=predictor.preprocess)
            try:
                sampled = sample_frames(Path(video), fps, SETTINGS.max_frames, pixels, SETTINGS.max_pixels)
            except ValueError as exc:
                raise InvalidArgument(str(exc)) from exc
            return [px for _, px in sampled], [t for t, _ in sampled]

        probs, _, loaded, times = await self._infer(frames)
        classes = loaded.classes
        per_frame = [
            {"t": t, "label": classes[int(p.argmax())], "score": float(p.max())}
            for t, p in zip(times, probs, strict=True)
        ]
        segments = [asdict(s) for s in smooth_segments(times, probs, classes, fps)]
        return {"model_version": loaded.tag, "frames": per_frame, "segments": segments}

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

    @bentoml.api(route="/admin/reload")
    async def reload(self, ctx: bentoml.Context, model: str = f"{MODEL_NAME}:latest") -> dict:
        """Switch to another model from the store (what `clip-har.model.promoted` triggers).

        The new model is loaded and warmed here and in the batched worker before it serves;
        requests in flight finish on the previous one, so none fails during the switch."""
        token, given = SETTINGS.admin_token, ctx.request.headers.get("x-admin-token", "")
        # constant time; the server decoded the header's bytes as latin-1, the token is UTF-8 text
        if token and not hmac.compare_digest(given.encode("latin-1", "replace"), token.encode()):
            raise BentoMLException("missing or wrong X-Admin-Token header", error_code=HTTPStatus.FORBIDDEN)
        if not token and not _from_this_machine(ctx.request):
            raise BentoMLException(
                "without CLIP_HAR_ADMIN_TOKEN, reloads come from this machine only", error_code=HTTPStatus.FORBIDDEN
            )
        # JSON only: a cross-site form or text/plain POST needs no CORS preflight
        if ctx.request.headers.get("content-type", "").split(";")[0].strip().lower() != "application/json":
            raise BentoMLException(
                "POST /admin/reload takes a JSON body (Content-Type: application/json)",
                error_code=HTTPStatus.UNSUPPORTED_MEDIA_TYPE,
            )
        async with self._switching:  # the batched worker serialises reloads from every HTTP worker
            try:
                loaded = await asyncio.to_thread(self.slot.prepare, model)
            except ValueError as exc:  # nothing moved
                raise InvalidArgument(str(exc)) from exc
            # the batched worker loads and warms the image side; a 400 from it (the model does
            # not run) reaches the caller as a 400, and nothing has moved
            try:  # idempotent: retried on a reset connection, like inference
                switched = await self._ask_worker(partial(self.model.to_async.switch, tag=loaded.tag), RELOAD_S)
            except BentoMLException as exc:  # the worker's refusal: "Error making request: <status>: <its body>"
                if exc.error_code >= 500:
                    raise
                body = re.sub(r"^Error making request: \d+: ", "", str(exc))
                raise InvalidArgument(error_message(exc.error_code, body.encode())) from exc
            # the other HTTP workers follow at their next request, when the batched worker's
            # answer names this model
            self.slot.activate(loaded)
        return switched

    @info_app.get("/model")
    async def model_info(self) -> dict:
        """Version, labels and lineage of the model the batched worker is serving now."""
        # not an inference: its own deadline, so /model answers while inference is overloaded
        tag = await self._ask_worker(self.model.to_async.serving, INFO_S)
        loaded = await asyncio.to_thread(self.slot.prepare, tag)
        info = bentoml.models.get(loaded.tag).info
        return {
            "model_version": loaded.tag,
            "labels": loaded.classes,
            "backend": loaded.predictor.backend,
            "lineage": dict(info.metadata),
        }


_BATCHED = ("/predict", "/classify", "/predict_video")  # through the batched worker
_INFERENCE = (*_BATCHED, "/explain")


class _Served:
    """The model slot of this process's service instance: the document is built by a middleware,
    outside the instance, and publishes the served model's labels."""

    slot: ModelSlot | None = None


def _document(spec: dict) -> dict:
    """The published OpenAPI document: our description, error shape and limits."""
    return apidoc.document(spec, SETTINGS, _INFERENCE, _Served.slot.current.classes if _Served.slot else [])


# First added, outermost: every answer (the guards' below included) leaves in one error shape.
ClipHar.add_asgi_middleware(ErrorContract, retry_after_s=SETTINGS.retry_after_s, document=_document)
ClipHar.add_asgi_middleware(apidoc.IndexPage)  # our page at `/`, in place of BentoML's
# Bodies over what a route can use are refused before BentoML reads them into memory and temp
# files: images (plus 1 MB for the other fields), one video, 1 MB for anything else; and a
# multipart body may hold at most the files and labels allowed plus a few fields.
_MB = 1_000_000
ClipHar.add_asgi_middleware(
    BodyLimit,
    limits={
        "/predict": int(SETTINGS.max_files * SETTINGS.max_file_mb * _MB) + _MB,
        "/classify": int(SETTINGS.max_files * SETTINGS.max_file_mb * _MB) + _MB,
        "/predict_video": int(SETTINGS.max_video_mb * _MB) + _MB,
        "/explain": int(SETTINGS.max_file_mb * _MB) + _MB,
    },
    default=_MB,
    max_parts=SETTINGS.max_files + SETTINGS.max_labels + 4,
)
# Inside the body limit (an oversized body is refused at once, busy or not): a bounded number of
# inference requests at work per process, a bounded queue, a 503 for the rest. Explanations have
# slots of their own: they never take one of /predict's.
for paths, max_inflight in ((_BATCHED, SETTINGS.max_inflight), (("/explain",), MAX_EXPLAIN)):
    ClipHar.add_asgi_middleware(
        Admission,
        paths=paths,
        max_inflight=max_inflight,
        max_queue=SETTINGS.max_queue,
        retry_after_s=SETTINGS.retry_after_s,
        max_wait_s=SETTINGS.infer_timeout_s,  # a wait as long as an inference deadline is overload too
    )
