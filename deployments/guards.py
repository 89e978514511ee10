"""The service's ASGI middlewares, outermost first: one error shape, our API page, body limits,
admission. They run before BentoML reads a body, so every refusal here costs next to nothing."""

from __future__ import annotations

from collections.abc import Callable

from clip_har.serving.admission import Admission
from clip_har.serving.bodylimit import BodyLimit
from clip_har.serving.errors import ErrorContract
from clip_har.settings import Settings
from deployments import apidoc

_MB = 1_000_000


def install(
    service: object,
    settings: Settings,
    document: Callable[[dict], dict],
    batched: tuple[str, ...],
    image_routes: tuple[str, ...],
) -> None:
    """`batched`: the routes that run the batched worker; `image_routes`: those taking images
    (the limit of their body)."""
    add = service.add_asgi_middleware  # type: ignore[attr-defined]
    # First added, outermost: every answer (the guards' below included) leaves in one error shape.
    add(ErrorContract, retry_after_s=settings.retry_after_s, document=document)
    add(apidoc.IndexPage)  # our page at `/`, in place of BentoML's
    # Bodies over what a route can use are refused before BentoML reads them into memory and temp
    # files: images (plus 1 MB for the other fields), one video, 1 MB for anything else; and a
    # multipart body may hold at most the files and labels allowed plus a few fields.
    images = int(settings.max_files * settings.max_file_mb * _MB) + _MB
    one_file = int(settings.max_file_mb * _MB) + _MB
    add(
        BodyLimit,
        limits={
            **dict.fromkeys(image_routes, images),
            "/predict_video": int(settings.max_video_mb * _MB) + _MB,
            "/explain": one_file,
            "/feedback": one_file,
        },
        default=_MB,
        max_parts=settings.max_files + settings.max_labels + 4,
    )
    # Inside the body limit (an oversized body is refused at once, busy or not): a bounded number
    # of inference requests at work per process, a bounded queue, a 503 for the rest. Explanations
    # have slots of their own: they never take one of /predict's.
    for paths, max_inflight in ((batched, settings.max_inflight), (("/explain",), settings.max_explain)):
        add(
            Admission,
            paths=paths,
            max_inflight=max_inflight,
            max_queue=settings.max_queue,
            retry_after_s=settings.retry_after_s,
            max_wait_s=settings.infer_timeout_s,  # a wait as long as an inference deadline is overload too
        )
