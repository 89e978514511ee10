"""Strict request readers for the service's endpoints, in place of BentoML's own.

BentoML's own reader (1.4) answers a malformed multipart body, a field name the endpoint does
not have and a non-UTF-8 field with a 500, and treats a *text* value in a file field as a URL
that the server downloads (unbounded, past the body limits). Here: the body is parsed with
bounded parts, a file field takes uploaded files only, an unknown field is named, and every
such refusal is BentoML's own 400 (`BadInput`) with a one-line reason. JSON bodies get the same
rules: unknown fields named, no type coercion.
"""

from __future__ import annotations

import json
import re
from http import HTTPStatus
from pathlib import Path
from typing import TYPE_CHECKING, Any, get_args

import numpy as np
from _bentoml_impl import serde as _serde  # BentoML picks a request's reader from ALL_SERDE by media type
from _bentoml_sdk.typing_utils import is_list_type, is_union_type
from bentoml.exceptions import BadInput, BentoMLException, InvalidArgument
from python_multipart.multipart import parse_options_header
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException
from starlette.formparsers import MultiPartException, MultiPartParser
from starlette.requests import Request

if TYPE_CHECKING:
    from clip_har.serving.predictor import Predictor
    from clip_har.settings import Settings

MEDIA_TYPES = ("multipart/form-data", "application/x-www-form-urlencoded")
MAX_TEXT_BYTES = 1024 * 1024  # a text field sent as a file part: Starlette's own cap on text parts


class StrictFormSerde(_serde.MultipartSerde):
    max_files = 100  # set by `install`: the most files any endpoint takes
    max_fields = 16

    async def parse_request(self, request: Request, cls: type[Any]) -> Any:
        if not cls.multipart_fields:  # an endpoint without files publishes a JSON body only
            raise BentoMLException(
                "this endpoint takes a JSON body (Content-Type: application/json)",
                error_code=HTTPStatus.UNSUPPORTED_MEDIA_TYPE,
            )
        try:
            if request.headers.get("content-type", "").lower().startswith("multipart/"):
                parser = _FileAwareParser(
                    request.headers, request.stream(), max_files=self.max_files, max_fields=self.max_fields
                )
                form = await parser.parse()
                request._form = form  # Starlette closes (deletes) the request's form files at its end
            else:
                form = await request.form(max_files=self.max_files, max_fields=self.max_fields)
        except (MultiPartException, HTTPException) as exc:  # Starlette's words for a broken body
            raise BadInput(f"malformed form body: {getattr(exc, 'detail', None) or exc}") from exc
        _refuse_unknown(cls, list(form))
        data: dict[str, Any] = {}
        for key in form:
            values, many = form.getlist(key), _is_list(cls, key)
            if key in cls.multipart_fields:
                if not all(isinstance(v, UploadFile) for v in values):
                    raise BadInput(f"field {key!r} takes uploaded files, not text (URLs are not fetched)")
                if len(values) > 1 and not many:
                    raise BadInput(f"field {key!r} takes one file, given {len(values)}")
                data[key] = values if many else values[0]
                continue
            texts = [await _value(key, v, _takes_text(cls, key)) for v in values]
            if len(texts) > 1 and not many:
                raise BadInput(f"field {key!r} is given {len(texts)} times")
            data[key] = texts if len(texts) > 1 else texts[0]  # a repeated field is its list
        # strict: `true` is not a top_k, nor "1" a number of frames per second once JSON is parsed
        return cls.model_validate(data, strict=True)


class _FileAwareParser(MultiPartParser):
    """A part with a binary Content-Type is a file even without a file name (RFC 7578 makes the
    name optional; Starlette would hand its bytes over as text)."""

    def on_headers_finished(self) -> None:
        part = self._current_part
        kind = dict(part.item_headers).get(b"content-type", b"").split(b";")[0].strip().lower()
        binary = kind and not kind.startswith(b"text/") and kind != b"application/json"
        if binary and part.content_disposition and b"filename" not in parse_options_header(part.content_disposition)[1]:
            part.content_disposition += b'; filename=""'
        super().on_headers_finished()


class StrictJSONSerde(_serde.JSONSerde):
    """JSON bodies: a field the endpoint does not have is named, and types are not coerced. An
    endpoint that takes files takes multipart only (a JSON body could only fail, one error per
    item of any array it holds), refused before its body is read."""

    async def parse_request(self, request: Request, cls: type[Any]) -> Any:
        if cls.multipart_fields:
            raise BentoMLException(
                "this endpoint takes multipart/form-data (files)", error_code=HTTPStatus.UNSUPPORTED_MEDIA_TYPE
            )
        return await super().parse_request(request, cls)

    def deserialize_model(self, payload: Any, cls: type[Any]) -> Any:
        body = b"".join(payload.data) or b"{}"
        try:
            data = json.loads(body)
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise BadInput(f"body is not JSON ({exc})") from exc
        if isinstance(data, dict):
            _refuse_unknown(cls, list(data))
        return cls.model_validate_json(body, strict=True)


def _refuse_unknown(cls: type[Any], keys: list[str]) -> None:
    """A field the endpoint does not have (a misspelt `image`) is named, never ignored."""
    if unknown := [k for k in keys if k not in cls.model_fields]:
        raise BadInput(f"unknown field {unknown[0]!r}; this endpoint takes {', '.join(map(repr, cls.model_fields))}")


def _is_list(cls: type[Any], key: str) -> bool:
    annotation = cls.model_fields[key].annotation
    if is_union_type(annotation):
        annotation = get_args(annotation)[0]
    return is_list_type(annotation)


def _takes_text(cls: type[Any], key: str) -> bool:
    """Whether a field takes text (`str`, `list[str]` or a union with either): its value stays text."""
    annotation = cls.model_fields[key].annotation
    options = get_args(annotation) if is_union_type(annotation) else (annotation,)
    return any(o is str or (is_list_type(o) and get_args(o) == (str,)) for o in options)


async def _value(key: str, part: str | UploadFile, text: bool) -> Any:
    """A field's value: the text itself for a text field (a label "0" is a label), else JSON
    where the part says so or the text parses as JSON (`5`, `true`), else the text."""
    declared_json = False
    if isinstance(part, UploadFile):
        declared_json = (part.content_type or "").split(";")[0].strip().lower() == "application/json"
        raw = await part.read(MAX_TEXT_BYTES + 1)
        if len(raw) > MAX_TEXT_BYTES:
            raise BadInput(f"field {key!r} is over {MAX_TEXT_BYTES} bytes of text")
        try:
            part = raw.decode()
        except UnicodeDecodeError as exc:
            raise BadInput(f"field {key!r} is not UTF-8 text") from exc
    if text:
        return part
    try:
        return json.loads(part)
    except json.JSONDecodeError as exc:
        if declared_json:
            raise BadInput(f"field {key!r} is declared application/json but is not JSON ({exc.msg})") from exc
        return part


def install(max_files: int, max_fields: int) -> None:
    """Read every form body of this process with `StrictFormSerde`."""
    StrictFormSerde.max_files, StrictFormSerde.max_fields = max_files, max_fields
    for media_type in MEDIA_TYPES:
        _serde.ALL_SERDE[media_type] = StrictFormSerde  # type: ignore[index]
    _serde.ALL_SERDE["application/json"] = StrictJSONSerde  # type: ignore[index]  # also any other type


_TEMP_PREFIX = re.compile(r"^tmp[a-z0-9_]{8}")


def upload_name(path: Path) -> str:
    """The client's file name: BentoML stores uploads as tempfile 'tmp' + 8 chars + name."""
    return _TEMP_PREFIX.sub("", Path(path).name)  # empty: the client sent no file name


def parse_labels(raw: list[str] | str) -> list[str]:
    """Labels from a list (BentoML decodes a JSON array field) or a comma-separated string."""
    if isinstance(raw, list):
        return [s.strip() for s in raw if isinstance(s, str) and s.strip()]
    raw = (raw or "").strip()
    if raw.startswith("["):
        try:
            items = json.loads(raw)
        except json.JSONDecodeError as exc:
            raise InvalidArgument(f"labels: invalid JSON array ({exc.msg})") from exc
        if not isinstance(items, list) or not all(isinstance(x, str) for x in items):
            raise InvalidArgument("labels: a JSON array must hold strings only")
    else:
        items = raw.split(",")
    return [s.strip() for s in items if s.strip()]


def decode_images(
    images: list[Path], predictor: Predictor, settings: Settings
) -> tuple[list[np.ndarray], tuple[list[dict[str, float]], list[bytes]]]:
    """uint8 [3,S,S] pixels per uploaded image for `predictor`'s input, plus the image statistics
    and the uploaded bytes (for the prediction log and the review queue); a 400 naming the file
    for anything over a limit or undecodable."""
    if not images:
        raise InvalidArgument("field 'images' needs at least one file")
    if len(images) > settings.max_files:
        raise InvalidArgument(f"too many files: {len(images)} > {settings.max_files}")
    arrays, stats, raw = [], [], []
    for i, path in enumerate(images):
        size = Path(path).stat().st_size
        if size == 0:
            raise InvalidArgument(f"file {i + 1} is empty")
        if size > settings.max_file_mb * 1e6:
            raise InvalidArgument(f"file {i + 1} is {size} bytes, over {settings.max_file_mb} MB")
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
